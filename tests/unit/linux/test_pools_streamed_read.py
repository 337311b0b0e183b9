"""Pool files larger than one read chunk decode the same, partial tail included."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvguest.abi.constants import KvpPool
from hvguest.linux.pools import (
    _READ_CHUNK,
    RECORD_SIZE,
    LinuxPoolStore,
    encode_record,
    pool_path,
    read_pool,
)


def records(count: int) -> list[tuple[bytes, bytes]]:
    return [(f"key-{i:05d}".encode(), f"value-{i}".encode() * (i % 7 + 1)) for i in range(count)]


@pytest.mark.parametrize("tail", [b"", b"partial-record-bytes"])
def test_a_pool_spanning_several_chunks_reads_whole(tmp_path: Path, tail: bytes) -> None:
    count = 3 * (_READ_CHUNK // RECORD_SIZE) + 5
    path = pool_path(tmp_path, KvpPool.GUEST)
    path.write_bytes(b"".join(encode_record(k, v) for k, v in records(count)) + tail)
    contents = read_pool(path)
    assert [(r.key, r.value) for r in contents.records] == records(count)
    assert contents.partial_tail == tail


def test_the_store_answers_from_a_multi_chunk_pool(tmp_path: Path) -> None:
    count = 2 * (_READ_CHUNK // RECORD_SIZE) + 1
    path = pool_path(tmp_path, KvpPool.GUEST)
    path.write_bytes(b"".join(encode_record(k, v) for k, v in records(count)))
    with LinuxPoolStore(tmp_path, fsync=False) as store:
        assert store.record_at(KvpPool.GUEST, count - 1) == records(count)[-1]
        assert store.get(KvpPool.GUEST, b"key-00000") == records(count)[0][1]
        assert store.record_at(KvpPool.GUEST, count) is None
