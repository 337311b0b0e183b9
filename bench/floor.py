"""The least a Python KVP daemon can do per request: the floor under hvguest's numbers.

Unlike :mod:`bench.echo` (which measures the harness), this one makes exactly
the calls every daemon makes on the simulated device, in the same order, and
waits for each write's result as hv_kvp_daemon and hvguest do
(:class:`bench.floor_device.FloorDevice`): poll, read (receive the message,
acknowledge it), answer, write (send, receive the result). The pool is a
dict read once from the prefilled file; GET and ENUMERATE answer from it,
SET stores into it, in the request's buffer. No locks, no file I/O, no
checks: whatever hvguest adds over this is the price of its work, and
whatever this loses to the C daemon is the price of Python alone. Run as
``python -m bench.floor SOCKET STATE_DIR``.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path

from bench.floor_device import FloorDevice
from hvguest.abi.constants import KVP_OP_REGISTER1, REG_SZ, KvpOp, KvpPool
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.testing import kvp_kernel as kvp

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
    device = FloorDevice.open(path)
    if device is None:
        return 1
    registration = bytearray(KVP_MSG_SIZE)
    registration[kvp.OPERATION] = KVP_OP_REGISTER1
    if not device.write(registration) or device.next_message() is None:
        return 0  # the second: the kernel's answer to the registration
    next_message, write = device.next_message, device.write
    unpack, pack = _U32.unpack_from, _U32.pack_into
    while (message := next_message()) is not None:
        _answer(message, pool, keys, unpack, pack)
        if not write(message):
            return 0
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
