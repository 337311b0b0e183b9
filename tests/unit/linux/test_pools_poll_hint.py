"""The pool store's poll hint: a query right after the daemon's poll trusts what the poll found.

``after_poll`` says the inotify queue was empty (or has just been emptied) at
the poll, so the next query answers from the caches without a syscall, as of
that moment; ``after_serving`` ends the hint, so queries not preceded by a
poll check the queue themselves.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvguest.abi.constants import KvpPool
from hvguest.linux.pools import LinuxPoolStore, pool_path

GUEST = KvpPool.GUEST
_RECORD = struct.Struct("512s2048s")


def foreign_append(state_dir: Path, key: bytes, value: bytes) -> None:
    """Another program's append, as cloud-init writes (no lock needed for the test)."""
    with pool_path(state_dir, GUEST).open("ab") as pool:
        pool.write(_RECORD.pack(key, value))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LinuxPoolStore]:
    with LinuxPoolStore(tmp_path / "state", fsync=False) as opened:
        assert opened.watching
        assert opened.change_fd() is not None
        opened.set(GUEST, b"mine", b"1")
        yield opened


def test_a_quiet_poll_answers_from_the_caches_as_of_the_poll(
    store: LinuxPoolStore, tmp_path: Path
) -> None:
    reads = store.full_reads
    store.after_poll(readable=False)
    # A write that completes after the poll is concurrent with the request
    # the poll woke up for: answering without it is linearizable.
    foreign_append(tmp_path / "state", b"late", b"2")
    assert store.get(GUEST, b"late") is None
    assert store.record_at(GUEST, 1) is None
    assert store.full_reads == reads  # no syscall, no re-read
    store.after_serving()
    # The next request was not preceded by a poll: it checks the queue itself.
    assert store.get(GUEST, b"late") == b"2"
    assert store.full_reads == reads + 1


def test_a_readable_poll_applies_the_events_before_the_request(
    store: LinuxPoolStore, tmp_path: Path
) -> None:
    foreign_append(tmp_path / "state", b"early", b"3")
    store.after_poll(readable=True)
    assert store.get(GUEST, b"early") == b"3"
    assert store.record_at(GUEST, 1) == (b"early", b"3")
    store.after_serving()


def test_an_edit_checks_the_queue_under_its_lock_whatever_the_hint(
    store: LinuxPoolStore, tmp_path: Path
) -> None:
    store.after_poll(readable=False)
    foreign_append(tmp_path / "state", b"early", b"3")
    # SET must not rewrite the file from stale caches: the foreign record survives.
    store.set(GUEST, b"mine", b"4")
    store.after_serving()
    assert store.get(GUEST, b"early") == b"3"
    assert store.get(GUEST, b"mine") == b"4"
    data = pool_path(tmp_path / "state", GUEST).read_bytes()
    assert [_RECORD.unpack_from(data, o)[0].rstrip(b"\0") for o in (0, 2560)] == [b"mine", b"early"]


def test_without_inotify_there_is_no_descriptor_and_the_hint_changes_nothing(
    tmp_path: Path,
) -> None:
    with LinuxPoolStore(tmp_path / "state", fsync=False, watch_changes=False) as store:
        assert store.change_fd() is None
        store.set(GUEST, b"k", b"1")
        store.after_poll(readable=False)
        foreign_append(tmp_path / "state", b"late", b"2")
        assert store.get(GUEST, b"late") == b"2"  # every query re-reads, hint or not
        store.after_serving()


def test_a_failing_queue_read_at_the_poll_distrusts_the_caches_instead_of_raising(
    store: LinuxPoolStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign_append(tmp_path / "state", b"early", b"3")
    inotify = store._inotify
    assert inotify is not None

    def broken(*, expected: bool = False) -> list[object]:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(inotify, "read_events", broken)
    store.after_poll(readable=True)  # the event loop must survive this
    monkeypatch.undo()
    # No hint was given, and every table is distrusted: the query re-reads.
    assert store.get(GUEST, b"early") == b"3"
    store.after_serving()
