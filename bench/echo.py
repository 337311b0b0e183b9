"""A trivial KVP "daemon" that answers from canned bytes: the harness's ceiling.

It speaks the simulator's socket protocol (hvguest.testing.wire) directly,
registers like tools/hv/hv_kvp_daemon.c, and answers every request with
status 0 and no work: ENUMERATE gets one fixed record (the shape of a
prefilled one, so the simulated kernel converts as much text as for a real
daemon), anything else is echoed back. Whatever rate the harness reaches
with it is the most any daemon can show. Run as ``python -m bench.echo SOCKET``.
"""

from __future__ import annotations

import socket
import sys

from bench.pools import record_key, record_value
from hvguest.abi.constants import KVP_OP_REGISTER1, KvpOp
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.testing import kvp_kernel as kvp
from hvguest.testing.wire import (
    MAX_DATAGRAM,
    TAG_CONSUMED,
    TAG_HANGUP,
    TAG_MESSAGE,
    TAG_OPEN,
    TAG_WRITE,
    decode_int32,
)


def _enumerate_reply() -> bytes:
    reply = bytearray(KVP_MSG_SIZE)  # error (offset 0) = 0: HV_S_OK
    key, value = record_key(0).encode(), record_value(0).encode()
    reply[kvp.ENUM_KEY : kvp.ENUM_KEY + len(key)] = key
    reply[kvp.ENUM_VALUE : kvp.ENUM_VALUE + len(value)] = value
    return TAG_WRITE + bytes(reply)


def serve(path: str) -> int:
    """Register on the device at ``path`` and answer until it goes away."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    buffer = bytearray(MAX_DATAGRAM)
    size = sock.recv_into(buffer)
    if buffer[:1] != TAG_OPEN or decode_int32(buffer) != 0:
        return 1
    registration = bytearray(KVP_MSG_SIZE)
    registration[kvp.OPERATION] = KVP_OP_REGISTER1
    canned_enumerate = _enumerate_reply()
    message, consumed, hangup = TAG_MESSAGE[0], TAG_CONSUMED, TAG_HANGUP[0]
    sock.send(TAG_WRITE + registration)
    registered = False
    while True:
        size = sock.recv_into(buffer)
        if size == 0 or buffer[0] == hangup:
            return 0
        if buffer[0] != message:
            continue  # an R: the echo never needs a write's result
        sock.send(consumed)
        if not registered:  # the kernel's answer to the registration
            registered = True
            continue
        if buffer[1 + kvp.OPERATION] == KvpOp.ENUMERATE:
            sock.send(canned_enumerate)
        else:
            buffer[1:5] = bytes(4)  # error = 0 overlays operation/pool/pad
            buffer[0] = TAG_WRITE[0]
            sock.send(memoryview(buffer)[:size])


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
