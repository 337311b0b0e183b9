"""The host side of a file copy: Windows' Guest Services pushing a file through FCOPY.

Counterpart of the host half of drivers/hv/hv_fcopy.c (there is no C source
for the host; the layout is include/uapi/linux/hyperv.h). Like
Copy-VMFile, a copy is START_FILE_COPY (names as UTF-16LE, at most 260
units), WRITE_TO_FILE fragments of at most 6144 bytes, then COMPLETE_FCOPY;
CANCEL_FCOPY abandons it. Each helper sends one request on the "fcopy"
channel of a :class:`~hvguest.testing.host.FakeHost` and returns the status
from icmsg_hdr.

Two bulk paths for many fragments: :class:`WriteStream` keeps one message
buffer and rewrites only offset, size and data per fragment;
:func:`stream_writes` also drops the host thread from the loop (each answer
posts the next fragment from the simulator's own thread, through
:meth:`~hvguest.testing.host.VmbusChannel.post`), so a benchmark measures
the daemon rather than thread switches in the harness.

:data:`CONTROL_OPS` exposes the same helpers to
:class:`~hvguest.testing.simulator.ControlClient`, with ``bytes`` arguments
(``data``, ``payload``) passed as hex strings.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any, Final

from hvguest.abi.constants import DATA_FRAGMENT, W_MAX_PATH, FcopyOp
from hvguest.abi.structs import FCOPY_HDR_SIZE, FCOPY_START_SIZE, FCOPY_WRITE_SIZE, hv_do_fcopy
from hvguest.testing.fcopy_kernel import (
    START_COPY_FLAGS,
    START_FILE_NAME,
    START_FILE_SIZE,
    START_PATH_NAME,
)
from hvguest.testing.host import (
    FakeHost,
    HostAbortedError,
    HostTimeoutError,
    build_packet,
    utf16_units,
)
from hvguest.testing.transport import ICMSG_HDR, ICMSG_STATUS_OFFSET, ICMSGTYPE_FCOPY

#: Offsets in struct hv_do_fcopy.
WRITE_OFFSET: Final = hv_do_fcopy.offset.offset
WRITE_SIZE: Final = hv_do_fcopy.size.offset
WRITE_DATA: Final = hv_do_fcopy.data.offset
#: The service name of the channel.
FCOPY: Final = "fcopy"

_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")


# --- messages as Windows builds them (pure functions) ------------------------


def start_message(
    path_name: str | bytes, file_name: str | bytes, *, flags: int = 0, file_size: int
) -> bytearray:
    """A zeroed hv_start_fcopy; names as UTF-16LE (``bytes`` are raw units), NUL-padded."""
    message = _header(FcopyOp.START_FILE_COPY, FCOPY_START_SIZE)
    _put_name(message, START_FILE_NAME, file_name, "file_name")
    _put_name(message, START_PATH_NAME, path_name, "path_name")
    _U32.pack_into(message, START_COPY_FLAGS, flags)
    _U64.pack_into(message, START_FILE_SIZE, file_size)
    return message


def write_message(offset: int, data: bytes | memoryview, *, size: int | None = None) -> bytearray:
    """A full 6196-byte hv_do_fcopy; ``size`` overrides the byte count the host claims."""
    if len(data) > DATA_FRAGMENT:
        raise ValueError(f"a fragment holds {DATA_FRAGMENT} bytes, not {len(data)}")
    message = _header(FcopyOp.WRITE_TO_FILE, FCOPY_WRITE_SIZE)
    _U64.pack_into(message, WRITE_OFFSET, offset)
    _U32.pack_into(message, WRITE_SIZE, len(data) if size is None else size)
    message[WRITE_DATA : WRITE_DATA + len(data)] = data
    return message


def header_message(operation: int) -> bytearray:
    """A bare hv_fcopy_hdr (COMPLETE_FCOPY, CANCEL_FCOPY, or any other operation)."""
    return _header(operation, FCOPY_HDR_SIZE)


def _put_name(message: bytearray, offset: int, name: str | bytes, what: str) -> None:
    units = utf16_units(name)
    if len(units) > 2 * W_MAX_PATH:
        raise ValueError(f"{what} is {len(units) // 2} UTF-16 units; the field holds {W_MAX_PATH}")
    message[offset : offset + len(units)] = units


def _header(operation: int, size: int) -> bytearray:
    message = bytearray(size)
    _U32.pack_into(message, 0, operation)
    return message


# --- one request each --------------------------------------------------------


def fcopy_raw(host: FakeHost, payload: bytes | bytearray, timeout: float | None = None) -> int:
    """Send any FCOPY service message as it is; the status."""
    return host.transact(FCOPY, ICMSGTYPE_FCOPY, payload, timeout).status


def fcopy_start(
    host: FakeHost,
    path_name: str,
    file_name: str,
    *,
    flags: int = 0,
    file_size: int,
    timeout: float | None = None,
) -> int:
    """START_FILE_COPY of ``path_name``/``file_name`` with ``flags``; the status."""
    message = start_message(path_name, file_name, flags=flags, file_size=file_size)
    return fcopy_raw(host, message, timeout)


def fcopy_write(host: FakeHost, offset: int, data: bytes, timeout: float | None = None) -> int:
    """WRITE_TO_FILE of ``data`` (at most 6144 bytes) at ``offset``; the status."""
    return fcopy_raw(host, write_message(offset, data), timeout)


def fcopy_complete(host: FakeHost, timeout: float | None = None) -> int:
    """COMPLETE_FCOPY; the status."""
    return fcopy_raw(host, header_message(FcopyOp.COMPLETE_FCOPY), timeout)


def fcopy_cancel(host: FakeHost, timeout: float | None = None) -> int:
    """CANCEL_FCOPY; the status."""
    return fcopy_raw(host, header_message(FcopyOp.CANCEL_FCOPY), timeout)


def copy_bytes(
    host: FakeHost,
    data: bytes,
    path_name: str,
    file_name: str,
    *,
    flags: int = 0,
    fragment: int = DATA_FRAGMENT,
    timeout: float | None = None,
) -> int:
    """A whole copy as the host does it: START, WRITEs, COMPLETE; the first non-zero status.

    The host stops at the first failure; a failed WRITE is followed by a
    CANCEL (whose own status is not reported). What Windows sends after a
    failure was never observed (protocol.md section 11): this is an assumption.
    """
    status = fcopy_start(
        host, path_name, file_name, flags=flags, file_size=len(data), timeout=timeout
    )
    if status:
        return status
    status = WriteStream(host, timeout).send_all(data, fragment)
    if status:
        fcopy_cancel(host, timeout)
        return status
    return fcopy_complete(host, timeout)


class WriteStream:
    """WRITE_TO_FILE fragments from one reused message: no per-fragment message building."""

    def __init__(self, host: FakeHost, timeout: float | None = None) -> None:
        self._host = host
        self._timeout = timeout
        self._message = write_message(0, b"")
        self._view = memoryview(self._message)

    def send(self, offset: int, data: bytes | memoryview) -> int:
        """One fragment (at most 6144 bytes) at ``offset``; the status."""
        size = len(data)
        if size > DATA_FRAGMENT:
            raise ValueError(f"a fragment holds {DATA_FRAGMENT} bytes, not {size}")
        _U64.pack_into(self._message, WRITE_OFFSET, offset)
        _U32.pack_into(self._message, WRITE_SIZE, size)
        self._view[WRITE_DATA : WRITE_DATA + size] = data
        # Bytes past ``size`` keep the previous fragment's data: a daemon
        # must use only ``size`` bytes, and a short last fragment shows it.
        return self._host.transact(FCOPY, ICMSGTYPE_FCOPY, self._message, self._timeout).status

    def send_all(self, data: bytes, fragment: int = DATA_FRAGMENT, start: int = 0) -> int:
        """``data`` in fragments of ``fragment`` bytes from file offset ``start``; first failure."""
        view = memoryview(data)
        for position in range(0, len(data), fragment):
            status = self.send(start + position, view[position : position + fragment])
            if status:
                return status
        return 0


class _Pump:
    """Posts the next fragment from each answer's callback (under the simulator lock)."""

    def __init__(
        self, host: FakeHost, data: memoryview, total: int, start: int, fragment: int
    ) -> None:
        self.channel = host.channel(FCOPY)
        self.data = data
        self.total = total
        self.start = start
        self.fragment = fragment
        self.sent = 0  #: bytes posted so far
        self.answered = 0  #: fragments answered so far
        self.status = 0
        self.aborted = False
        self.done = threading.Event()
        self.packet = bytearray(build_packet(ICMSGTYPE_FCOPY, write_message(0, b"")))

    def post_next(self) -> None:
        position = self.sent
        size = min(self.fragment, self.total - position)
        chunk = position % len(self.data)
        base = ICMSG_HDR
        _U64.pack_into(self.packet, base + WRITE_OFFSET, self.start + position)
        _U32.pack_into(self.packet, base + WRITE_SIZE, size)
        self.packet[base + WRITE_DATA : base + WRITE_DATA + size] = self.data[chunk : chunk + size]
        self.sent += size
        self.channel.post(bytes(self.packet), self.on_answer)

    def on_answer(self, reply: bytes | None) -> None:
        self.answered += 1
        if reply is None:
            self.aborted = True
            self.done.set()
            return
        (self.status,) = _U32.unpack_from(reply, ICMSG_STATUS_OFFSET)
        if self.status or self.sent >= self.total:
            self.done.set()  # the host stops at the first failure
        else:
            self.post_next()


def stream_writes(
    host: FakeHost,
    data: bytes | memoryview,
    *,
    total: int | None = None,
    start: int = 0,
    fragment: int = DATA_FRAGMENT,
    timeout: float | None = None,
) -> int:
    """WRITE_TO_FILE of ``total`` bytes (default ``len(data)``) back to back; the first failure.

    The file content at ``start + i`` is ``data[i % len(data)]``, so a short
    pattern can stand for a large file (its length must then be a multiple
    of ``fragment``). One fragment is outstanding at a time, as with a real
    host, but the next one is posted by the answer's callback rather than by
    a waiting thread. ``timeout`` bounds the wait for any single answer.
    Raises HostAbortedError if the channel closes, HostTimeoutError if the
    guest stops answering.
    """
    view = memoryview(data).cast("B")
    size = len(view) if total is None else total
    if size <= 0:
        return 0
    if size > len(view) and len(view) % fragment:
        raise ValueError("a repeated pattern must be a whole number of fragments")
    if not 0 < fragment <= DATA_FRAGMENT:
        raise ValueError(f"a fragment holds 1 to {DATA_FRAGMENT} bytes, not {fragment}")
    pump = _Pump(host, view, size, start, fragment)
    wait = host.default_timeout if timeout is None else timeout
    pump.post_next()
    answered = -1
    while not pump.done.wait(wait):
        if pump.answered == answered:
            raise HostTimeoutError(f"no answer within {wait} s after {answered} fragments")
        answered = pump.answered
    if pump.aborted:
        raise HostAbortedError("the fcopy channel closed during the stream")
    return int(pump.status)


# --- the control-socket face ---------------------------------------------------


def _raw_op(host: FakeHost, payload: str, timeout: float | None = None) -> int:
    return fcopy_raw(host, bytes.fromhex(payload), timeout)


def _write_op(host: FakeHost, offset: int, data: str, timeout: float | None = None) -> int:
    return fcopy_write(host, offset, bytes.fromhex(data), timeout)


def _copy_op(
    host: FakeHost,
    data: str,
    path_name: str,
    file_name: str,
    *,
    flags: int = 0,
    fragment: int = DATA_FRAGMENT,
    timeout: float | None = None,
) -> int:
    return copy_bytes(
        host,
        bytes.fromhex(data),
        path_name,
        file_name,
        flags=flags,
        fragment=fragment,
        timeout=timeout,
    )


#: ControlClient ops: name -> callable(host, **json_args). Bytes travel as hex strings.
CONTROL_OPS: Final[dict[str, Callable[..., Any]]] = {
    "fcopy_start": fcopy_start,
    "fcopy_write": _write_op,
    "fcopy_complete": fcopy_complete,
    "fcopy_cancel": fcopy_cancel,
    "fcopy_raw": _raw_op,
    "copy_bytes": _copy_op,
}
