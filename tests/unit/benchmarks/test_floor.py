"""bench.floor answers correctly, and with --write-file its SETs reach the pool file."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from bench.daemons import floor_daemon, start, stop
from bench.pools import prefill_pool, record_key, record_value

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.testing.simulator import Simulator

RECORD = struct.Struct("512s2048s")


def records(path: Path) -> list[tuple[bytes, bytes]]:
    return [
        (key.rstrip(b"\0"), value.rstrip(b"\0"))
        for key, value in RECORD.iter_unpack(path.read_bytes())
    ]


@pytest.mark.parametrize("write_file", [False, True], ids=["dict-only", "write-file"])
def test_the_floor_answers_and_writes_the_file_only_when_asked(
    tmp_path: Path, write_file: bool
) -> None:
    state = tmp_path / "state"
    pool = prefill_pool(state, int(KvpPool.GUEST), 3)
    before = pool.read_bytes()
    with Simulator(tmp_path / "dev") as sim:
        started = start(floor_daemon(write_file=write_file), sim, state, tmp_path / "floor.log")
        try:
            host = sim.host
            host.kvp_negotiate(timeout=10)
            assert host.kvp_set(KvpPool.GUEST, record_key(1), "changed", timeout=10).ok
            assert host.kvp_set(KvpPool.GUEST, "new key", "new value", timeout=10).ok
            got = host.kvp_get(KvpPool.GUEST, record_key(1), timeout=10)
            assert (got.status, got.value) == (HvStatus.S_OK, "changed")
            missing = host.kvp_get(KvpPool.GUEST, "absent", timeout=10)
            assert missing.status == HvStatus.S_CONT
        finally:
            stop(started, sim)
    if not write_file:
        assert pool.read_bytes() == before
        return
    expected = [(record_key(i).encode(), record_value(i).encode()) for i in range(3)]
    expected[1] = (record_key(1).encode(), b"changed")
    expected.append((b"new key", b"new value"))
    assert records(pool) == expected
