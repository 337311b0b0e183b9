"""FIFREEZE / FITHAW on a mount point, and the state file naming what may be frozen.

Replaces the open()/ioctl()/close() sequence of vss_operate() in
tools/hv/hv_vss_daemon.c. The state file (``<run>/hvguest/vss-frozen``) is
new: the reference keeps "frozen" only in memory, so a killed daemon leaves
filesystems frozen with no record of which (sharp edge S20).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from pathlib import Path
from typing import Final

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.services.ports import FreezeOutcome, FrozenRecord

#: _IOWR('X', 119, int) and _IOWR('X', 120, int) from include/uapi/linux/fs.h.
FIFREEZE: Final = 0xC0045877
FITHAW: Final = 0xC0045878

#: O_NOFOLLOW: a mount point replaced by a symlink must not redirect the ioctl.
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def describe_errno(error: OSError) -> str:
    """ "EOPNOTSUPP (Operation not supported)" for an OSError."""
    # ENOTSUP and EOPNOTSUPP share a number; the kernel's freeze code says EOPNOTSUPP.
    number = error.errno or 0
    name = "EOPNOTSUPP" if number == errno.EOPNOTSUPP else errno.errorcode.get(number, str(number))
    return f"{name} ({error.strerror})" if error.strerror else name


class LinuxFreezer:
    """``Freezer`` with the ioctls; EBUSY on freeze and EINVAL on thaw mean ALREADY."""

    def freeze(self, mountpoint: str) -> FreezeOutcome:
        """FIFREEZE; EBUSY (frozen already, e.g. a second mount) counts as success."""
        return _ioctl(mountpoint, FIFREEZE, "FIFREEZE", errno.EBUSY)

    def thaw(self, mountpoint: str) -> FreezeOutcome:
        """FITHAW; EINVAL (not frozen) counts as success."""
        return _ioctl(mountpoint, FITHAW, "FITHAW", errno.EINVAL)


def _ioctl(mountpoint: str, request: int, name: str, already: int) -> FreezeOutcome:
    try:
        fd = os.open(mountpoint, _OPEN_FLAGS)
    except OSError as error:
        raise OperationFailed(
            HvStatus.E_FAIL, f"cannot open {mountpoint}: {describe_errno(error)}"
        ) from None
    try:
        fcntl.ioctl(fd, request, 0)
    except OSError as error:
        if error.errno == already:
            return FreezeOutcome.ALREADY
        raise OperationFailed(HvStatus.E_FAIL, f"{name}: {describe_errno(error)}") from None
    finally:
        os.close(fd)
    return FreezeOutcome.DONE


#: Where the state file lives under [paths] run; /run is tmpfs, never frozen.
STATE_FILE: Final = Path("hvguest") / "vss-frozen"


def state_file_path(run_root: Path) -> Path:
    """The VSS state file under ``run_root`` (normally /run)."""
    return run_root / STATE_FILE


#: Characters escaped in the state file the way mountinfo escapes them.
#: ASCII only: every escape is then three octal digits, as _ESCAPED reads them
#: back (a Unicode space such as U+00A0 would need more).
_UNSAFE: Final = re.compile(r"[\\\s]", re.ASCII)
_ESCAPED: Final = re.compile(r"\\([0-7]{3})")


def _escape(text: str) -> str:
    return _UNSAFE.sub(lambda match: f"\\{ord(match.group()):03o}", text)


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda match: chr(int(match.group(1), 8)), text)


def format_record(record: FrozenRecord) -> str:
    """One "mount <path>" or "hook <name>" line each, escaped like mountinfo (\\040)."""
    lines = [f"mount {_escape(path)}\n" for path in record.mountpoints]
    lines += [f"hook {_escape(name)}\n" for name in record.hooks]
    return "".join(lines) or "\n"


def parse_record(text: str) -> FrozenRecord | None:
    """The record ``format_record`` wrote; None for an empty or damaged file."""
    mountpoints: list[str] = []
    hooks: list[str] = []
    for line in text.split("\n"):
        kind, _, value = line.partition(" ")
        if kind == "mount" and value:
            mountpoints.append(_unescape(value))
        elif kind == "hook" and value:
            hooks.append(_unescape(value))
        elif line:
            return None
    if not text.strip():
        return None
    return FrozenRecord(tuple(mountpoints), tuple(hooks))


class StateFileJournal:
    """``FrozenJournal`` as a small text file, kept open and rewritten in place.

    No fsync: the record only has to outlive the daemon (kill -9), not the
    machine; it lives on tmpfs and no filesystem stays frozen across a reboot.
    The descriptor stays open so a FREEZE costs two syscalls here, not five.
    An empty file means "nothing recorded".
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def record(self, record: FrozenRecord) -> None:
        """Write ``record`` before anything is frozen."""
        data = format_record(record).encode("utf-8", errors="surrogateescape")
        fd = self._open()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def recorded(self) -> FrozenRecord | None:
        """The record, or None if there is none or it is unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            return None
        return parse_record(text)

    def clear(self) -> None:
        """Empty the record (the daemon keeps the file); remove it if not open here."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        """Close the descriptor, removing the file if it records nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        empty = os.fstat(fd).st_size == 0
        os.close(fd)
        if empty:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
