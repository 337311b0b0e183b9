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
from collections import deque
from collections.abc import Callable
from pathlib import Path

from hvguest.abi.constants import KVP_OP_REGISTER1, REG_SZ, KvpOp, KvpPool
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.testing import kvp_kernel as kvp
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

_U32 = struct.Struct("<I")
_RECORD = struct.Struct("512s2048s")
_S_CONT = 0x80070103
Buffer = bytearray | memoryview


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
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    poll, recv_into, send, sendmsg = poller.poll, sock.recv_into, sock.send, sock.sendmsg
    unpack, pack = _U32.unpack_from, _U32.pack_into
    # Messages that arrived while a write waited for its result (the simulated
    # device allows that, as SimulatedDevice does): served before polling again.
    held: deque[bytearray] = deque()
    message_tag, result_tag, hangup = TAG_MESSAGE[0], TAG_RESULT[0], TAG_HANGUP[0]

    def write(reply: bytes | bytearray | memoryview) -> None:
        sendmsg([TAG_WRITE, reply])
        while (size := recv_into(buffer)) and buffer[0] != result_tag:
            if buffer[0] == hangup:
                raise EOFError
            held.append(bytearray(buffer[1:size]))

    registration = bytearray(KVP_MSG_SIZE)
    registration[kvp.OPERATION] = KVP_OP_REGISTER1
    try:
        write(registration)
        registered = False
        while True:
            if held:
                message: bytearray | memoryview = held.popleft()
            else:
                poll()
                size = recv_into(buffer)
                if size == 0 or buffer[0] == hangup:
                    return 0
                if buffer[0] != message_tag:
                    continue
                message = view[1:size]
            send(TAG_CONSUMED)
            if not registered:  # the kernel's answer to the registration
                registered = True
                continue
            _answer(message, pool, keys, unpack, pack)
            write(message)
    except EOFError:
        return 0


def _answer(
    message: bytearray | memoryview,
    pool: dict[bytes, bytes],
    keys: list[bytes],
    unpack: Callable[[Buffer, int], tuple[int, ...]],
    pack: Callable[[Buffer, int, int], None],
) -> None:
    """GET / ENUMERATE from ``pool``, SET into it, in the request's buffer."""
    operation, status = message[kvp.OPERATION], 0
    value: bytes | None = None
    if operation == KvpOp.GET:
        key_size = unpack(message, kvp.GET_KEY_SIZE)[0]
        value = pool.get(bytes(message[kvp.GET_KEY : kvp.GET_KEY + key_size]).rstrip(b"\0"))
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
    if operation != KvpOp.SET:
        if value is None:
            status = _S_CONT
        else:
            message[kvp.ENUM_VALUE : kvp.ENUM_VALUE + 2048] = value.ljust(2048, b"\0")
            pack(message, kvp.ENUM_VALUE_TYPE, REG_SZ)
            pack(message, kvp.ENUM_VALUE_SIZE, len(value) + 1)
    pack(message, kvp.ERROR, status)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], Path(sys.argv[2])))
