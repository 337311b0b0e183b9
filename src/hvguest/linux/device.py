"""The /dev/vmbus/hv_{kvp,vss,fcopy} character devices, real or simulated.

Replaces the open()/read()/write()/close() calls on the device in
tools/hv/hv_kvp_daemon.c (and the VSS/FCOPY daemons). The daemon loop sees a
:class:`Device`: one open of the node, one read = one whole message, errors
as ``OSError`` with the kernel's errno (drivers/hv/hv_utils_transport.c).

:func:`open_device` picks the adapter by what the path is: a character device
is the real driver (:class:`CharDevice`); a Unix socket is the simulator of
``hvguest.testing`` (:class:`SimulatedDevice`), which speaks the small
datagram protocol documented in ``hvguest.testing.wire``. The tags are
repeated below because ``hvguest.linux`` may not import ``hvguest.testing``
(import-linter keeps them independent); a unit test checks both copies agree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
from collections import deque
from pathlib import Path
from typing import Final, NoReturn, Protocol


class Device(Protocol):
    """One open of a Hyper-V util device."""

    def fileno(self) -> int:
        """For the event loop's poll: readable when a message is queued (or the device hung up)."""

    def pending(self) -> bool:
        """A message (or hangup) is already buffered in user space: read before selecting."""

    def read(self, size: int) -> bytes:
        """Exactly one message; blocks. EINVAL if ``size`` is too small (message kept)."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """One message to the kernel; OSError with the kernel's errno on failure."""

    def close(self) -> None:
        """close(fd): the kernel resets the service (fails any pending host request)."""


class CharDevice:
    """The real character device: os.open(O_RDWR | O_CLOEXEC), os.read, os.write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # O_CLOEXEC as hv_kvp_daemon does: helper scripts must not inherit the device.
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._read_buffer = bytearray()

    def fileno(self) -> int:
        """The device's file descriptor."""
        return self._fd

    def pending(self) -> bool:
        """The kernel buffers nothing in user space."""
        return False

    def read(self, size: int) -> bytes:
        """One read(2) returns one whole message (the driver never splits them)."""
        return os.read(self._fd, size)

    def read_view(self, size: int) -> memoryview:
        """``read`` into a buffer kept for the purpose: valid until the next call here.

        For a daemon's hot path (FCOPY WRITE_TO_FILE): no new bytes object
        per message.
        """
        if len(self._read_buffer) < size:
            self._read_buffer = bytearray(size)
        view = memoryview(self._read_buffer)
        return view[: os.readv(self._fd, [view[:size]])]

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """One write(2); the driver accepts all of it or fails."""
        return os.write(self._fd, data)

    def close(self) -> None:
        """Close once; later calls do nothing."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


# The simulated-device protocol, as documented in hvguest.testing.wire.
_TAG_OPEN: Final = ord("O")
_TAG_MESSAGE: Final = ord("M")
_TAG_CONSUMED: Final = b"A"
_TAG_WRITE: Final = b"W"
_TAG_RESULT: Final = ord("R")
_TAG_HANGUP: Final = ord("H")
_MAX_PAYLOAD: Final = 65536
_INT32: Final = struct.Struct("<i")
#: Up to this size a write's bytes are joined to the tag and sent with send(),
#: cheaper than sendmsg()'s gather (an FCOPY reply is 4 bytes, once per fragment).
_SMALL_WRITE: Final = 64
#: How long open() waits for the simulator's answer; a real open never blocks,
#: so a simulator that does not answer is a bug worth an error.
_OPEN_TIMEOUT: Final = 10.0


class SimulatedDevice:
    """The simulator's device over AF_UNIX/SOCK_SEQPACKET, with the kernel's semantics."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._buffer = bytearray(1 + _MAX_PAYLOAD)
        self._view = memoryview(self._buffer)
        # A message that arrived while a write waited for its result stays in
        # the buffer it was received into, which is swapped with this one
        # (no copy); _held is that datagram's size, 0 for none. Allocated on
        # first use: most daemons never see a message during a write, and
        # 64 KiB per device counts against the RSS budget.
        self._held_buffer = bytearray()
        self._held_view = memoryview(self._held_buffer)
        self._held = 0
        # Later messages (behind the held one), and those a too-small read
        # left queued; pending() reports them.
        self._stash: deque[bytes] = deque()
        self._hung_up = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self._sock.settimeout(_OPEN_TIMEOUT)
            self._sock.connect(str(path))
            size = self._sock.recv_into(self._buffer)
            if size < 1 + _INT32.size or self._buffer[0] != _TAG_OPEN:
                raise OSError(errno.EPROTO, "simulated device did not answer the open", str(path))
            (open_errno,) = _INT32.unpack_from(self._buffer, 1)
            if open_errno:
                raise OSError(open_errno, os.strerror(open_errno), str(path))
            self._sock.settimeout(None)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        """The socket: readable when the simulator queued a message or hung up."""
        return self._sock.fileno()

    def pending(self) -> bool:
        """A held or stashed message, or a hangup that the next read reports as EBADF."""
        return bool(self._held or self._stash) or self._hung_up

    def read(self, size: int) -> bytes:
        """One message; EINVAL (message kept) if ``size`` is smaller, EBADF once destroyed."""
        if self._hung_up:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if self._held:
            return bytes(self.read_view(size))
        if self._stash:
            message = self._stash[0]
            if size < len(message):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            self._stash.popleft()
        else:
            # The common case, inlined: one recv_into, one copy of the payload.
            received = self._sock.recv_into(self._buffer)
            if received == 0 or self._buffer[0] != _TAG_MESSAGE:
                self._unexpected(received)
            message = bytes(self._view[1:received])
            if size < received - 1:
                self._stash.appendleft(message)
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self._sock.send(_TAG_CONSUMED)
        return message

    def read_view(self, size: int) -> memoryview:
        """``read`` without copying the message: valid until the next call here."""
        held = self._held
        if not held or self._hung_up:
            if self._stash or self._hung_up:
                return memoryview(self.read(size))
            received = self._sock.recv_into(self._buffer)
            if received == 0 or self._buffer[0] != _TAG_MESSAGE:
                self._unexpected(received)
            if size < received - 1:
                self._stash.appendleft(bytes(self._view[1:received]))
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            self._sock.send(_TAG_CONSUMED)
            return self._view[1:received]
        if size < held - 1:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self._held = 0
        self._sock.send(_TAG_CONSUMED)
        return self._held_view[1:held]

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """One message to the simulated kernel; waits for its result."""
        if self._hung_up:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if len(data) > _MAX_PAYLOAD:
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        if len(data) <= _SMALL_WRITE:
            self._sock.send(_TAG_WRITE + data)
        else:
            self._sock.sendmsg([_TAG_WRITE, data])
        buffer = self._buffer
        while True:
            size = self._sock.recv_into(buffer)
            tag = buffer[0] if size else _TAG_HANGUP
            if tag == _TAG_RESULT:
                (result,) = _INT32.unpack_from(buffer, 1)
                if result < 0:
                    raise OSError(-result, os.strerror(-result))
                return int(result)
            if tag == _TAG_MESSAGE:
                if self._held or self._stash:
                    self._stash.append(bytes(self._view[1:size]))
                else:
                    # Keep it where it is; receive on into the other buffer.
                    if not self._held_buffer:
                        self._held_buffer = bytearray(1 + _MAX_PAYLOAD)
                        self._held_view = memoryview(self._held_buffer)
                    self._held = size
                    self._buffer, self._held_buffer = self._held_buffer, self._buffer
                    self._view, self._held_view = self._held_view, self._view
                    buffer = self._buffer
            else:
                self._unexpected(size)

    def close(self) -> None:
        """Close the connection: the simulator runs the kernel's release."""
        # shutdown() first, so that the release happens now even if another
        # thread is still blocked in a read on this device.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _unexpected(self, size: int) -> NoReturn:
        """The datagram of ``size`` bytes in the buffer is not the one expected.

        A hangup (or the simulator going away: ``size`` 0) is EBADF from now
        on; any other tag is a protocol error.
        """
        if size == 0 or self._buffer[0] == _TAG_HANGUP:
            self._hung_up = True
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        tag = self._buffer[0]
        raise OSError(errno.EPROTO, f"unexpected datagram tag {tag:#x} from the simulator")


def open_device(path: Path) -> Device:
    """Open a util device node: a character device, or a simulator socket.

    FileNotFoundError when the node does not exist (the driver is not bound
    or the host has not offered the device yet).
    """
    mode = Path(path).stat().st_mode
    if stat.S_ISCHR(mode):
        return CharDevice(path)
    if stat.S_ISSOCK(mode):
        return SimulatedDevice(path)
    raise OSError(errno.ENODEV, "neither a character device nor a simulator socket", str(path))
