"""FakePoolStore and LinuxPoolStore answer the same scenarios the same way.

The services are tested against the fake, so the fake must not drift from
the real store: every scenario here runs against both.
"""

from __future__ import annotations

import fcntl
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.errors import OperationFailed
from hvguest.linux.pools import LinuxPoolStore
from hvguest.services.ports import PoolStore
from hvguest.testing.fakes.pools import FakePoolStore, PoolCall

GUEST = KvpPool.GUEST
#: Appends a record the way another program (cloud-init) would.
ForeignAppend = Callable[[KvpPool, bytes, bytes], None]


@pytest.fixture(params=["fake", "linux"])
def store_and_peer(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[PoolStore, ForeignAppend]]:
    if request.param == "fake":
        fake = FakePoolStore()
        yield fake, fake.add_foreign_record
        return

    def append(pool: KvpPool, key: bytes, value: bytes) -> None:
        with (tmp_path / f".kvp_pool_{int(pool)}").open("ab") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX)
            stream.write(struct.pack("512s2048s", key, value))
            stream.flush()
            fcntl.flock(stream, fcntl.LOCK_UN)

    with LinuxPoolStore(tmp_path, fsync=False) as store:
        yield store, append


def view(store: PoolStore, pool: KvpPool = GUEST) -> list[tuple[bytes, bytes]]:
    entries: list[tuple[bytes, bytes]] = []
    while (entry := store.record_at(pool, len(entries))) is not None:
        entries.append(entry)
    return entries


def test_same_answers_for_a_session_with_foreign_duplicates(
    store_and_peer: tuple[PoolStore, ForeignAppend],
) -> None:
    store, foreign_append = store_and_peer
    store.set(GUEST, b"a", b"1")
    foreign_append(GUEST, b"b", b"2")
    foreign_append(GUEST, b"a", b"3")
    foreign_append(GUEST, b"", b"blank slot")
    assert store.get(GUEST, b"a") == b"3"
    assert store.get(GUEST, b"") is None
    assert view(store) == [(b"b", b"2"), (b"a", b"3")]
    store.set(GUEST, b"a", b"4")
    store.set(GUEST, b"c", b"5")
    assert view(store) == [(b"b", b"2"), (b"a", b"4"), (b"c", b"5")]
    assert store.delete(GUEST, b"b") is True
    assert store.delete(GUEST, b"b") is False
    assert view(store) == [(b"a", b"4"), (b"c", b"5")]
    assert store.record_at(GUEST, -1) is None
    assert view(store, KvpPool.EXTERNAL) == []


@pytest.mark.parametrize(
    ("key", "value"), [(b"k" * 512, b"v"), (b"k", b"v" * 2048), (b"", b"v"), (b"a\0b", b"v")]
)
def test_same_refusals(
    store_and_peer: tuple[PoolStore, ForeignAppend], key: bytes, value: bytes
) -> None:
    store, _ = store_and_peer
    with pytest.raises(OperationFailed) as caught:
        store.set(GUEST, key, value)
    assert caught.value.status == HvStatus.S_CONT
    assert view(store) == []


def test_same_answer_for_an_unknown_pool(store_and_peer: tuple[PoolStore, ForeignAppend]) -> None:
    store, _ = store_and_peer
    with pytest.raises(OperationFailed) as caught:
        store.get(KvpPool.COUNT, b"k")
    assert caught.value.status == HvStatus.E_FAIL


def test_the_fake_records_calls_and_fails_on_demand() -> None:
    fake = FakePoolStore()
    fake.set(GUEST, b"k", b"v")
    fake.fail_next = OperationFailed(HvStatus.ERROR_DISK_FULL, "disk full")
    with pytest.raises(OperationFailed) as caught:
        fake.set(GUEST, b"k2", b"v2")
    assert caught.value.status == HvStatus.ERROR_DISK_FULL
    assert fake.get(GUEST, b"k2") is None  # the failure happened once, and changed nothing
    assert fake.calls == [
        PoolCall("set", GUEST, key=b"k", value=b"v"),
        PoolCall("set", GUEST, key=b"k2", value=b"v2"),
        PoolCall("get", GUEST, key=b"k2"),
    ]
    assert fake.items(GUEST) == [(b"k", b"v")]
