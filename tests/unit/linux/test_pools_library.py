"""The library API of hvguest.linux.pools for other programs: read_pool, PoolFile, text."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.errors import OperationFailed
from hvguest.linux.pools import (
    LinuxPoolStore,
    PoolFile,
    PoolRecord,
    decode_text,
    encode_text,
    read_pool,
)


def pack(key: bytes, value: bytes) -> bytes:
    return struct.pack("512s2048s", key, value)


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    return tmp_path / ".kvp_pool_1"


def test_read_pool_returns_every_record_raw_with_the_partial_tail(pool: Path) -> None:
    blank = bytes(512) + bytes(2048)
    pool.write_bytes(pack(b"a", b"1") + pack(b"a", b"2") + blank + pack(b"b", b"3") + b"torn")
    contents = read_pool(pool)
    assert contents.records == [
        PoolRecord(0, 0, b"a", b"1"),
        PoolRecord(1, 2560, b"a", b"2"),
        PoolRecord(2, 5120, b"", b""),
        PoolRecord(3, 7680, b"b", b"3"),
    ]
    assert contents.records[2].blank
    assert contents.partial_tail == b"torn"
    assert contents.partial_tail_size == 4


def test_read_pool_never_creates_a_missing_file(pool: Path) -> None:
    with pytest.raises(OperationFailed) as caught:
        read_pool(pool)
    assert caught.value.status == HvStatus.E_FAIL
    assert str(pool) in str(caught.value)
    assert not pool.exists()


def test_pool_file_items_get_set_append_delete(pool: Path) -> None:
    with PoolFile(pool, fsync=False) as pool_file:
        pool_file.append(b"a", b"1")
        pool_file.append(b"b", b"2")
        pool_file.append(b"a", b"3")  # a duplicate, as cloud-init would leave it
        assert pool_file.items() == [(b"b", b"2"), (b"a", b"3")]
        assert pool_file.get(b"a") == b"3"
        pool_file.set(b"a", b"4")  # both copies, in place
        assert pool.read_bytes() == pack(b"a", b"4") + pack(b"b", b"2") + pack(b"a", b"4")
        assert pool_file.delete(b"a")
        assert not pool_file.delete(b"a")
        assert pool.read_bytes() == pack(b"b", b"2")


def test_pool_file_creates_a_missing_file_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / ".kvp_pool_1"
    with PoolFile(path, file_mode=0o600) as pool_file:
        pool_file.set(b"k", b"v")
    assert path.read_bytes() == pack(b"k", b"v")
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_read_only_pool_file_refuses_edits(pool: Path) -> None:
    pool.write_bytes(pack(b"k", b"v"))
    with PoolFile(pool, readonly=True) as pool_file:
        assert pool_file.get(b"k") == b"v"
        with pytest.raises(OperationFailed, match="read-only"):
            pool_file.set(b"k", b"w")
    assert pool.read_bytes() == pack(b"k", b"v")


def test_pool_file_and_daemon_store_see_each_others_edits(tmp_path: Path) -> None:
    with (
        LinuxPoolStore(tmp_path, fsync=False) as store,
        PoolFile(tmp_path / ".kvp_pool_1", fsync=False) as pool_file,
    ):
        store.set(KvpPool.GUEST, b"from-daemon", b"1")
        assert pool_file.get(b"from-daemon") == b"1"
        pool_file.set(b"from-library", b"2")
        assert store.get(KvpPool.GUEST, b"from-library") == b"2"
        pool_file.delete(b"from-daemon")
        assert store.get(KvpPool.GUEST, b"from-daemon") is None


def test_text_helpers_use_utf8(pool: Path) -> None:
    with PoolFile(pool, fsync=False) as pool_file:
        pool_file.set_text("clé", "välue")
        pool_file.append_text("zwei", "2")
        assert pool_file.get_text("clé") == "välue"
        assert pool_file.items_text() == [("clé", "välue"), ("zwei", "2")]
        assert pool_file.delete_text("zwei")
        assert pool_file.get_text("zwei") is None
    assert pool.read_bytes() == pack("clé".encode(), "välue".encode())
    assert read_pool(pool).records[0].key_text == "clé"


def test_non_utf8_bytes_round_trip_through_text(pool: Path) -> None:
    raw_key, raw_value = b"k\xff\xfe", b"\x80v"
    with PoolFile(pool, fsync=False) as pool_file:
        pool_file.set(raw_key, raw_value)
        assert pool_file.get_text(decode_text(raw_key)) == decode_text(raw_value)
        pool_file.set_text(decode_text(raw_key), decode_text(b"\xc3"))
        assert pool_file.get(raw_key) == b"\xc3"


@given(st.binary(max_size=64))
def test_decode_then_encode_gives_back_any_bytes(raw: bytes) -> None:
    assert encode_text(decode_text(raw)) == raw
