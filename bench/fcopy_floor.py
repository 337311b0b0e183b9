"""The least a Python FCOPY daemon can do per fragment: the floor under hvguest's numbers.

The same calls as hv_fcopy_daemon, in the same order, on the simulated char
device: poll, read (receive the message, acknowledge it), pwrite the fragment
at its offset, write the 4-byte status (send it, receive the write's result).
START opens the target (no temporary file, no policy, no checks), COMPLETE
closes it. Whatever hvguest adds over this is the price of its checks and
crash safety; whatever this loses to the C daemon is the price of Python
alone. Run as ``python -m bench.fcopy_floor SOCKET``.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
from collections import deque
from pathlib import Path

from hvguest.abi.constants import FCOPY_VERSION_1
from hvguest.protocol.fcopy import FcopyCodec, decode_write_fragment
from hvguest.protocol.fcopy_messages import FcopyStart
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

_STATUS = struct.Struct("<I")
_OK = TAG_WRITE + _STATUS.pack(0)


def serve(path: str) -> int:
    """Register on the device at ``path`` and answer until it goes away."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    buffer = bytearray(MAX_DATAGRAM)
    sock.recv_into(buffer)
    if buffer[:1] != TAG_OPEN or decode_int32(buffer) != 0:
        return 1
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    poll, recv_into, send = poller.poll, sock.recv_into, sock.send
    codec, pwrite = FcopyCodec(), os.pwrite
    # Messages that arrived while a write waited for its result (the simulated
    # device allows that, as SimulatedDevice does): served before polling again.
    held: deque[bytes] = deque()
    message_tag, result_tag, hangup = TAG_MESSAGE[0], TAG_RESULT[0], TAG_HANGUP[0]

    def write(reply: bytes) -> None:
        send(reply)
        while (size := recv_into(buffer)) and buffer[0] != result_tag:
            if buffer[0] == hangup:
                raise EOFError
            held.append(bytes(buffer[1:size]))

    try:
        write(TAG_WRITE + _STATUS.pack(FCOPY_VERSION_1))
        registered, target = False, -1
        while True:
            if held:
                message: bytes | memoryview = held.popleft()
            else:
                poll()
                size = recv_into(buffer)
                if size == 0 or buffer[0] == hangup:
                    return 0
                if buffer[0] != message_tag:
                    continue
                message = memoryview(buffer)[1:size]
            send(TAG_CONSUMED)
            if not registered:  # the kernel's answer to the registration
                registered = True
                continue
            fragment = decode_write_fragment(message)
            if fragment is not None:
                pwrite(target, fragment[1], fragment[0])
            else:
                request = codec.decode_request(bytes(message))
                if isinstance(request, FcopyStart):
                    name = Path(request.path_name) / request.file_name
                    target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                elif target >= 0:  # COMPLETE or CANCEL
                    os.close(target)
                    target = -1
            write(_OK)
    except EOFError:
        return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
