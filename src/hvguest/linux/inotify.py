"""A minimal, non-blocking inotify(7) binding over libc (ctypes); no C counterpart.

hv_kvp_daemon.c has no change tracking: it re-reads every pool file before
every operation (kvp_update_mem_state()). The pool store uses this module to
learn *whether* a pool file changed since it last read it, so that it re-reads
only then. The standard library has no inotify, and the syscalls are three, so
a dependency is not worth it.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from enum import IntFlag
from pathlib import Path
from typing import Final

from hvguest.records import record

_EVENT_HEADER: Final = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len
#: Room for many events per read(); the kernel never splits an event.
_READ_SIZE: Final = 64 * 1024
#: ioctl FIONREAD (<asm-generic/ioctls.h>): bytes of events queued.
_FIONREAD: Final = 0x541B
_NATIVE_INT: Final = struct.Struct("i")


class InotifyMask(IntFlag):
    """The IN_* bits of <sys/inotify.h> that the pool store uses."""

    MODIFY = 0x00000002  #: IN_MODIFY: write(), truncate()
    ATTRIB = 0x00000004  #: IN_ATTRIB: chmod, utime, link count
    MOVED_FROM = 0x00000040  #: IN_MOVED_FROM: renamed out of the directory
    MOVED_TO = 0x00000080  #: IN_MOVED_TO: renamed into the directory (a replaced file)
    CREATE = 0x00000100  #: IN_CREATE
    DELETE = 0x00000200  #: IN_DELETE
    DELETE_SELF = 0x00000400  #: IN_DELETE_SELF: the watched directory itself
    MOVE_SELF = 0x00000800  #: IN_MOVE_SELF: the watched directory itself
    UNMOUNT = 0x00002000  #: IN_UNMOUNT
    Q_OVERFLOW = 0x00004000  #: IN_Q_OVERFLOW: events were lost (wd is -1)
    IGNORED = 0x00008000  #: IN_IGNORED: the watch is gone
    ONLYDIR = 0x01000000  #: IN_ONLYDIR (add_watch flag)


#: inotify_init1() flags; they equal O_NONBLOCK and O_CLOEXEC on Linux.
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC


@record
class InotifyEvent:
    """One struct inotify_event; ``name`` is "" for events on the watched object itself."""

    wd: int
    #: The IN_* bits as a plain int: test them with ``InotifyMask`` members (or
    #: ints made from them); an IntFlag per event costs microseconds on the hot path.
    mask: int
    name: str


class _Libc:
    """The three libc entry points, loaded on first use."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int


_libc: _Libc | None = None


def _load() -> _Libc:
    global _libc
    if _libc is None:
        try:
            _libc = _Libc()
        except (OSError, AttributeError) as err:  # no libc symbol: treat as "no inotify"
            raise OSError(0, f"inotify is not available: {err}") from err
    return _libc


def _raise_errno(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


class Inotify:
    """An inotify instance opened IN_NONBLOCK|IN_CLOEXEC; raises OSError if unavailable."""

    def __init__(self) -> None:
        libc = _load()
        fd = libc.init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            _raise_errno("inotify_init1")
        self._fd: int | None = fd
        self._libc = libc

    def fileno(self) -> int:
        """The descriptor, for a selector; raises ValueError once closed."""
        if self._fd is None:
            raise ValueError("inotify instance is closed")
        return self._fd

    def add_watch(self, path: Path, mask: InotifyMask) -> int:
        """Watch ``path`` for ``mask``; returns the watch descriptor."""
        wd = self._libc.add_watch(self.fileno(), os.fsencode(path), int(mask))
        if wd < 0:
            _raise_errno(f"inotify_add_watch {path}")
        return int(wd)

    def read_events(self, *, expected: bool = False) -> list[InotifyEvent]:
        """Every event queued now, oldest first; [] if none (never blocks).

        One FIONREAD ioctl when nothing is queued (the common case: no
        exception, no second read), one read() more otherwise: a read at
        least as large as what FIONREAD reported returns all of it.
        ``expected``: the caller knows events are queued (it just wrote a
        watched file), so the ioctl is skipped and only the read is made.
        """
        fd = self.fileno()
        size = _READ_SIZE
        if not expected:
            queued = bytearray(_NATIVE_INT.size)
            fcntl.ioctl(fd, _FIONREAD, queued)
            (size,) = _NATIVE_INT.unpack(queued)
            if not size:
                return []
        try:
            data = os.read(fd, max(size, _READ_SIZE))
        except BlockingIOError:
            return []
        return _parse(data)

    def close(self) -> None:
        """Close the descriptor (drops every watch); idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _parse(data: bytes) -> list[InotifyEvent]:
    events = []
    offset = 0
    while offset + _EVENT_HEADER.size <= len(data):
        wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
        offset += _EVENT_HEADER.size
        raw_name = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(InotifyEvent(wd, mask, os.fsdecode(raw_name)))
    return events
