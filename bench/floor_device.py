"""The simulated device as the benchmark's floor daemons use it: the calls, and nothing else.

:mod:`bench.floor` (KVP) and :mod:`bench.fcopy_floor` make, per request,
exactly the calls a daemon must make on the simulated device (the protocol of
hvguest.testing.wire): poll, read and acknowledge the message, write the
answer and wait for the write's result. A message that arrives while a write
waits for its result is kept and served before the next poll, as
``hvguest.linux.device.SimulatedDevice`` does.
"""

from __future__ import annotations

import select
import socket
from collections import deque

from hvguest.testing.wire import (
    MAX_DATAGRAM,
    TAG_CONSUMED,
    TAG_HANGUP,
    TAG_MESSAGE,
    TAG_OPEN,
    TAG_RESULT,
    TAG_WRITE,
    decode_int32,
)


class FloorDevice:
    """One open of the simulated device; ``next_message`` and ``write`` run per request."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buffer)
        self._poller = select.epoll()
        self._poller.register(sock.fileno(), select.EPOLLIN)
        self._held: deque[bytearray] = deque()

    @classmethod
    def open(cls, path: str) -> FloorDevice | None:
        """Connect to the device socket at ``path``; None if the simulator refused the open."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        answer = bytearray(MAX_DATAGRAM)
        sock.recv_into(answer)
        if answer[:1] != TAG_OPEN or decode_int32(answer) != 0:
            sock.close()
            return None
        return cls(sock)

    def next_message(self) -> bytearray | memoryview | None:
        """The next message, acknowledged as read; None at hangup.

        A view of the receive buffer (valid until the next call) or a held copy.
        """
        if self._held:
            message: bytearray | memoryview = self._held.popleft()
        else:
            buffer = self._buffer
            while True:
                self._poller.poll()
                size = self._sock.recv_into(buffer)
                if size == 0 or buffer[0] == TAG_HANGUP[0]:
                    return None
                if buffer[0] == TAG_MESSAGE[0]:
                    break
            message = self._view[1:size]
        self._sock.send(TAG_CONSUMED)
        return message

    def write(self, reply: bytes | bytearray | memoryview) -> bool:
        """Send ``reply`` and wait for the write's result; False at hangup."""
        buffer = self._buffer
        self._sock.sendmsg([TAG_WRITE, reply])
        while size := self._sock.recv_into(buffer):
            tag = buffer[0]
            if tag == TAG_RESULT[0]:
                return True
            if tag == TAG_HANGUP[0]:
                return False
            self._held.append(bytearray(buffer[1:size]))
        return False
