"""The least a Python KVP daemon can do per request: the floor under hvguest's numbers.

Unlike :mod:`bench.echo` (which measures the harness), this one makes exactly
the calls every daemon makes on the simulated device, in the same order, and
waits for each write's result as hv_kvp_daemon and hvguest do: poll, read
(receive the message, acknowledge it), answer, write (send, receive the
result). The pool is a dict read once from the prefilled file; GET and
ENUMERATE answer from it, SET stores into it, in the request's buffer. No
locks, no file I/O, no checks: whatever hvguest adds over this is the price
of its work, and whatever this loses to the C daemon is the price of Python
alone. Run as ``python -m bench.floor SOCKET STATE_DIR``.
"""

from __future__ import annotations

import select
import socket
import struct
import sys
from pathlib import Path

from hvguest.abi.constants import KVP_OP_REGISTER1, REG_SZ, KvpOp, KvpPool
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.testing import kvp_kernel as kvp
from hvguest.testing.wire import (
    MAX_DATAGRAM,
    TAG_CONSUMED,
    TAG_HANGUP,
    TAG_OPEN,
    TAG_WRITE,
    decode_int32,
)

_U32 = struct.Struct("<I")
_RECORD = struct.Struct("512s2048s")
_S_CONT = 0x80070103


def _load(state_dir: Path) -> dict[bytes, bytes]:
    data = (state_dir / f".kvp_pool_{int(KvpPool.GUEST)}").read_bytes()
    return {
        key.rstrip(b"\0"): value.rstrip(b"\0")
        for key, value in _RECORD.iter_unpack(data[: len(data) - len(data) % _RECORD.size])
    }


def serve(path: str, state_dir: Path) -> int:
    """Register on the device at ``path`` and answer until it goes away."""
    pool = _load(state_dir)
    keys = list(pool)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    buffer = bytearray(MAX_DATAGRAM)
    view = memoryview(buffer)
    sock.recv_into(buffer)
    if buffer[:1] != TAG_OPEN or decode_int32(buffer) != 0:
        return 1
    registration = bytearray(KVP_MSG_SIZE)
    registration[kvp.OPERATION] = KVP_OP_REGISTER1
    sock.sendmsg([TAG_WRITE, registration])
    sock.recv_into(buffer)  # the write's result
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    poll, recv_into, send, sendmsg = poller.poll, sock.recv_into, sock.send, sock.sendmsg
    unpack, pack = _U32.unpack_from, _U32.pack_into
    hangup, registered = TAG_HANGUP[0], False
    while True:
        poll()
        size = recv_into(buffer)
        if size == 0 or buffer[0] == hangup:
            return 0
        send(TAG_CONSUMED)
        if not registered:  # the kernel's answer to the registration
            registered = True
            continue
        message = view[1:size]
        operation, status = message[kvp.OPERATION], 0
        if operation == KvpOp.GET:
            key_size = unpack(message, kvp.GET_KEY_SIZE)[0]
            key = bytes(message[kvp.GET_KEY : kvp.GET_KEY + key_size]).rstrip(b"\0")
            value = pool.get(key)
        elif operation == KvpOp.ENUMERATE:
            index = unpack(message, kvp.ENUM_INDEX)[0]
            key = keys[index] if index < len(keys) else b""
            value = pool.get(key)
            if value is not None:
                message[kvp.ENUM_KEY : kvp.ENUM_KEY + 512] = key.ljust(512, b"\0")
        else:  # SET
            key_size = unpack(message, kvp.SET_KEY_SIZE)[0]
            value_size = unpack(message, kvp.SET_VALUE_SIZE)[0]
            key = bytes(message[kvp.SET_KEY : kvp.SET_KEY + key_size]).rstrip(b"\0")
            pool[key] = bytes(message[kvp.SET_VALUE : kvp.SET_VALUE + value_size]).rstrip(b"\0")
            value = None
        if operation != KvpOp.SET:
            if value is None:
                status = _S_CONT
            else:
                message[kvp.ENUM_VALUE : kvp.ENUM_VALUE + 2048] = value.ljust(2048, b"\0")
                pack(message, kvp.ENUM_VALUE_TYPE, REG_SZ)
                pack(message, kvp.ENUM_VALUE_SIZE, len(value) + 1)
        pack(message, kvp.ERROR, status)
        sendmsg([TAG_WRITE, message])
        recv_into(buffer)  # the write's result, as every daemon waits for it


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], Path(sys.argv[2])))
