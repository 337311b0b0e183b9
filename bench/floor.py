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
``python -m bench.floor SOCKET STATE_DIR [--write-file]``.

A SET must also reach the pool file, which peers read. With
``--write-file`` it does the least of that: the record is written at its
slot (or appended) with one pwrite, under the two exclusive locks pool
peers take (flock, as cloud-init does, and fcntl, as the C daemon and
kvp_client do). Still no fsync and no look for other writers' changes, both
of which hvguest does.
"""

from __future__ import annotations

import fcntl
import os
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


def _guest_pool(state_dir: Path) -> Path:
    return state_dir / f".kvp_pool_{int(KvpPool.GUEST)}"


def _load(state_dir: Path) -> dict[bytes, bytes]:
    data = _guest_pool(state_dir).read_bytes()
    return {
        key.rstrip(b"\0"): value.rstrip(b"\0")
        for key, value in _RECORD.iter_unpack(data[: len(data) - len(data) % _RECORD.size])
    }


class _PoolFile:
    """The GUEST pool file, written record by record under both lock kinds."""

    def __init__(self, state_dir: Path, keys: list[bytes]) -> None:
        self._fd = os.open(_guest_pool(state_dir), os.O_RDWR | os.O_CLOEXEC)
        self._slots = {key: slot for slot, key in enumerate(keys)}

    def write(self, key: bytes, value: bytes) -> None:
        slot = self._slots.setdefault(key, len(self._slots))
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            os.pwrite(fd, _RECORD.pack(key, value), slot * _RECORD.size)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            fcntl.flock(fd, fcntl.LOCK_UN)


def serve(path: str, state_dir: Path, *, write_file: bool = False) -> int:
    """Register on the device at ``path`` and answer until it goes away."""
    pool = _load(state_dir)
    keys = list(pool)
    pool_file = _PoolFile(state_dir, keys) if write_file else None
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
        key = _answer(message, pool, keys, unpack, pack)
        if key is not None and pool_file is not None:
            pool_file.write(key, pool[key])
        if not write(message):
            return 0
    return 0


def _answer(
    message: Buffer,
    pool: dict[bytes, bytes],
    keys: list[bytes],
    unpack: Callable[[Buffer, int], tuple[int, ...]],
    pack: Callable[[Buffer, int, int], None],
) -> bytes | None:
    """GET / ENUMERATE from ``pool``, SET into it, in the request's buffer; the key SET."""
    operation, status = message[kvp.OPERATION], 0
    value: bytes | None = None
    stored: bytes | None = None
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
        stored = bytes(message[kvp.SET_KEY : kvp.SET_KEY + key_size]).rstrip(b"\0")
        pool[stored] = bytes(message[kvp.SET_VALUE : kvp.SET_VALUE + value_size]).rstrip(b"\0")
    if operation != KvpOp.SET:
        if value is None:
            status = _S_CONT
        else:
            message[kvp.ENUM_VALUE : kvp.ENUM_VALUE + 2048] = value.ljust(2048, b"\0")
            pack(message, kvp.ENUM_VALUE_TYPE, REG_SZ)
            pack(message, kvp.ENUM_VALUE_SIZE, len(value) + 1)
    pack(message, kvp.ERROR, status)
    return stored


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], Path(sys.argv[2]), write_file="--write-file" in sys.argv[3:]))
