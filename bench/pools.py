"""Prefilled KVP pool files, so that filling a big pool is not part of what is measured.

Writes the reference daemon's on-disk format (tools/hv/hv_kvp_daemon.c,
kvp_file_init()): a flat array of 2560-byte records, 512-byte key then
2048-byte value, each a NUL-terminated string padded with NULs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from hvguest.abi.constants import HV_KVP_EXCHANGE_MAX_KEY_SIZE, HV_KVP_EXCHANGE_MAX_VALUE_SIZE
from hvguest.abi.structs import KVP_POOL_RECORD_SIZE

#: Value length of a prefilled record: a typical short guest fact, not a worst case.
VALUE_LENGTH: Final = 64
#: File mode the daemons create pools with.
POOL_MODE: Final = 0o644


def record_key(index: int) -> str:
    """The key of prefilled record ``index``."""
    return f"bench-key-{index:05d}"


def record_value(index: int, generation: int = 0) -> str:
    """A value for record ``index``; ``generation`` varies it for updates of the same length."""
    return f"bench-value-{index:05d}-{generation:04d}-".ljust(VALUE_LENGTH, "x")


def encode_record(key: str, value: str) -> bytes:
    """One 2560-byte pool record."""
    record = key.encode().ljust(HV_KVP_EXCHANGE_MAX_KEY_SIZE, b"\0") + value.encode().ljust(
        HV_KVP_EXCHANGE_MAX_VALUE_SIZE, b"\0"
    )
    assert len(record) == KVP_POOL_RECORD_SIZE
    return record


def prefill_pool(state_dir: Path, pool: int, count: int) -> Path:
    """Write ``<state_dir>/.kvp_pool_<pool>`` with ``count`` records; its path."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f".kvp_pool_{pool}"
    path.write_bytes(b"".join(encode_record(record_key(i), record_value(i)) for i in range(count)))
    path.chmod(POOL_MODE)
    return path
