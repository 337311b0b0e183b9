"""LinuxPoolStore on real files: format, modes, semantics, freshness, errors.

Most tests run twice: with the inotify change tracking and with it disabled
(the fallback that re-reads the file for every operation).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.errors import OperationFailed
from hvguest.linux.pools import RECORD_SIZE, LinuxPoolStore

GUEST = KvpPool.GUEST


def pack(key: bytes, value: bytes) -> bytes:
    return struct.pack("512s2048s", key, value)


def stale(key: bytes, value: bytes) -> bytes:
    """A record as hv_kvp_daemon may write it: garbage after each NUL (bug S9)."""
    return (key + b"\0").ljust(512, b"\xab") + (value + b"\0").ljust(2048, b"\xcd")


def pool_path(state_dir: Path, pool: KvpPool = GUEST) -> Path:
    return state_dir / f".kvp_pool_{int(pool)}"


def seed(state_dir: Path, *records: bytes, tail: bytes = b"", pool: KvpPool = GUEST) -> Path:
    state_dir.mkdir(exist_ok=True)
    path = pool_path(state_dir, pool)
    path.write_bytes(b"".join(records) + tail)
    return path


def chunks(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [data[i : i + RECORD_SIZE] for i in range(0, len(data), RECORD_SIZE)]


def cloud_init_append(path: Path, key: bytes, value: bytes) -> None:
    """Append one record the way cloud-init's KVP reporter does (flock only)."""
    with path.open("ab") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        stream.write(pack(key, value))
        stream.flush()
        fcntl.flock(stream, fcntl.LOCK_UN)


def view(store: LinuxPoolStore, pool: KvpPool = GUEST) -> list[tuple[bytes, bytes]]:
    entries: list[tuple[bytes, bytes]] = []
    while (entry := store.record_at(pool, len(entries))) is not None:
        entries.append(entry)
    return entries


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(params=[True, False], ids=["inotify", "reread"])
def watch(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "hyperv"


#: Opens a store on ``state_dir`` once the test has seeded it; closed after the test.
StoreFactory = Callable[[], LinuxPoolStore]


@pytest.fixture
def open_store(state_dir: Path, watch: bool) -> Iterator[StoreFactory]:
    stores: list[LinuxPoolStore] = []

    def factory() -> LinuxPoolStore:
        stores.append(LinuxPoolStore(state_dir, fsync=False, watch_changes=watch))
        return stores[-1]

    yield factory
    for store in stores:
        store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> LinuxPoolStore:
    return open_store()


# ---------------------------------------------------------------- files and modes


def test_creates_state_dir_0755_and_pool_files_0644(state_dir: Path) -> None:
    with umask(0o022), LinuxPoolStore(state_dir / "sub", fsync=False):
        pass
    assert (state_dir / "sub").stat().st_mode & 0o777 == 0o755
    for pool in range(5):
        assert pool_path(state_dir / "sub", KvpPool(pool)).stat().st_mode & 0o777 == 0o644


def test_new_pool_files_respect_the_umask(state_dir: Path) -> None:
    with umask(0o027), LinuxPoolStore(state_dir, file_mode=0o666, fsync=False):
        pass
    assert pool_path(state_dir).stat().st_mode & 0o777 == 0o640


def test_existing_modes_are_never_widened(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    path = seed(state_dir, pack(b"ignition.config", b"secret"))
    path.chmod(0o600)  # as Ignition leaves it
    inode = path.stat().st_ino
    with LinuxPoolStore(state_dir, fsync=False) as store:
        store.set(GUEST, b"k", b"v")
        store.delete(GUEST, b"ignition.config")
    assert path.stat().st_mode & 0o777 == 0o600
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_ino == inode


def test_set_writes_the_struct_pack_record(store: LinuxPoolStore, state_dir: Path) -> None:
    store.set(GUEST, "clé".encode(), b"value")
    assert pool_path(state_dir).read_bytes() == pack("clé".encode(), b"value")


def test_durable_mode_writes_and_deletes(state_dir: Path) -> None:
    with LinuxPoolStore(state_dir) as store:  # fsync=True: every edit ends in fdatasync
        store.set(GUEST, b"a", b"1")
        store.set(GUEST, b"a", b"2")
        assert store.delete(GUEST, b"a")
    assert pool_path(state_dir).read_bytes() == b""


# ------------------------------------------------------------------------ semantics


def test_last_record_wins_and_enumerate_lists_each_key_at_its_last_record(
    state_dir: Path, open_store: StoreFactory
) -> None:
    seed(state_dir, pack(b"a", b"1"), pack(b"b", b"2"), pack(b"a", b"3"), pack(b"c", b"4"))
    store = open_store()
    assert store.get(GUEST, b"a") == b"3"
    assert view(store) == [(b"b", b"2"), (b"a", b"3"), (b"c", b"4")]
    assert store.record_at(GUEST, -1) is None  # S8: no negative indexing
    assert store.get(GUEST, b"missing") is None


def test_set_of_an_existing_key_rewrites_every_copy_in_place(
    state_dir: Path, open_store: StoreFactory
) -> None:
    before = [stale(b"a", b"old-1"), stale(b"b", b"2"), pack(b"a", b"old-2"), pack(b"c", b"4")]
    path = seed(state_dir, *before)
    store = open_store()
    store.set(GUEST, b"a", b"new")
    after = chunks(path)
    assert len(after) == 4
    assert after[0] == after[2] == pack(b"a", b"new")  # first- and last-match readers agree
    assert after[1] == before[1]  # untouched, stale padding and all
    assert after[3] == before[3]
    assert view(store) == [(b"b", b"2"), (b"a", b"new"), (b"c", b"4")]


def test_set_of_a_new_key_appends_one_record(store: LinuxPoolStore, state_dir: Path) -> None:
    store.set(GUEST, b"a", b"1")
    store.set(GUEST, b"b", b"2")
    assert chunks(pool_path(state_dir)) == [pack(b"a", b"1"), pack(b"b", b"2")]
    assert view(store) == [(b"a", b"1"), (b"b", b"2")]


def test_long_value_over_long_value_on_a_straddling_record(
    store: LinuxPoolStore, state_dir: Path
) -> None:
    # Slot 1 straddles a page at 1536 bytes; both values reach past it and differ there,
    # so the store parks a copy at the end while it rewrites the original.
    store.set(GUEST, b"k0", b"short")
    store.set(GUEST, b"k1", b"o" * 1500)
    store.set(GUEST, b"k1", b"n" * 1400)
    assert chunks(pool_path(state_dir)) == [pack(b"k0", b"short"), pack(b"k1", b"n" * 1400)]
    assert store.get(GUEST, b"k1") == b"n" * 1400


def test_delete_removes_every_copy_and_keeps_the_order_of_the_rest(
    state_dir: Path, open_store: StoreFactory
) -> None:
    path = seed(
        state_dir,
        pack(b"a", b"1"),
        pack(b"b", b"2"),
        pack(b"a", b"3"),
        pack(b"c", b"4"),
        pack(b"d", b"5"),
    )
    store = open_store()
    assert store.delete(GUEST, b"a") is True
    assert chunks(path) == [pack(b"b", b"2"), pack(b"c", b"4"), pack(b"d", b"5")]
    assert store.delete(GUEST, b"a") is False
    assert store.delete(GUEST, b"d") is True  # the last record: just cut
    assert chunks(path) == [pack(b"b", b"2"), pack(b"c", b"4")]
    assert view(store) == [(b"b", b"2"), (b"c", b"4")]


def test_stale_padding_is_never_written(state_dir: Path, open_store: StoreFactory) -> None:
    path = seed(
        state_dir,
        stale(b"a", b"a long old value"),
        stale(b"gone", b"x"),
        stale(b"b", b"2"),
        stale(b"c", b"3"),
    )
    store = open_store()
    store.set(GUEST, b"a", b"short")  # in place over stale bytes
    store.delete(GUEST, b"gone")  # shifts b and c up
    store.set(GUEST, b"d", b"4")  # appended
    assert chunks(path) == [
        pack(b"a", b"short"),
        pack(b"b", b"2"),
        pack(b"c", b"3"),
        pack(b"d", b"4"),
    ]


def test_a_512_byte_key_from_the_file_is_readable_and_deletable(
    state_dir: Path, open_store: StoreFactory
) -> None:
    long_key = b"k" * 512
    path = seed(state_dir, pack(long_key, b"v"), pack(b"b", b"2"))
    store = open_store()
    assert store.get(GUEST, long_key) == b"v"
    with pytest.raises(OperationFailed) as caught:
        store.set(GUEST, long_key, b"w")
    assert caught.value.status == HvStatus.S_CONT
    assert store.delete(GUEST, long_key)
    assert chunks(path) == [pack(b"b", b"2")]


def test_oversized_set_answers_s_cont_and_changes_nothing(
    store: LinuxPoolStore, state_dir: Path
) -> None:
    for key, value in ((b"k" * 512, b"v"), (b"k", b"v" * 2048)):
        with pytest.raises(OperationFailed) as caught:
            store.set(GUEST, key, value)
        assert caught.value.status == HvStatus.S_CONT
    store.set(GUEST, b"k" * 511, b"v" * 2047)
    assert chunks(pool_path(state_dir)) == [pack(b"k" * 511, b"v" * 2047)]


def test_unknown_pool_number_is_refused(store: LinuxPoolStore) -> None:
    with pytest.raises(OperationFailed) as caught:
        store.get(KvpPool.COUNT, b"k")
    assert caught.value.status == HvStatus.E_FAIL


def test_blank_slots_are_not_items_and_go_with_the_next_delete(
    state_dir: Path, open_store: StoreFactory
) -> None:
    blank = bytes(512) + b"x".ljust(2048, b"\0")  # what a crashed append leaves
    path = seed(state_dir, pack(b"a", b"1"), blank, pack(b"b", b"2"))
    store = open_store()
    assert view(store) == [(b"a", b"1"), (b"b", b"2")]
    assert store.get(GUEST, b"") is None
    store.delete(GUEST, b"a")
    assert chunks(path) == [pack(b"b", b"2")]


# -------------------------------------------------------------------- partial tail


def test_partial_tail_is_ignored_logged_once_and_kept_on_append(
    state_dir: Path, open_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    tail = b"torn\0" + b"\x01" * 995
    path = seed(state_dir, pack(b"a", b"1"), tail=tail)
    store = open_store()
    with caplog.at_level(logging.WARNING, logger="hvguest.linux.pools"):
        assert view(store) == [(b"a", b"1")]
        store.set(GUEST, b"b", b"2")
        store.set(GUEST, b"a", b"3")
        assert store.get(GUEST, b"b") == b"2"
    assert path.read_bytes() == pack(b"a", b"3") + pack(b"b", b"2") + tail
    assert len([r for r in caplog.records if "partial record" in r.getMessage()]) == 1


def test_partial_tail_is_kept_on_delete(state_dir: Path, open_store: StoreFactory) -> None:
    tail = b"\x02" * 2559
    path = seed(state_dir, pack(b"a", b"1"), pack(b"b", b"2"), pack(b"c", b"3"), tail=tail)
    store = open_store()
    store.delete(GUEST, b"a")
    assert path.read_bytes() == pack(b"b", b"2") + pack(b"c", b"3") + tail
    store.delete(GUEST, b"c")
    assert path.read_bytes() == pack(b"b", b"2") + tail


# ---------------------------------------------------------- other writers' changes


def test_a_cloud_init_append_is_seen(store: LinuxPoolStore, state_dir: Path) -> None:
    store.set(GUEST, b"a", b"1")
    cloud_init_append(pool_path(state_dir), b"CLOUD_INIT|event", b'{"result":"ok"}')
    assert store.get(GUEST, b"CLOUD_INIT|event") == b'{"result":"ok"}'
    store.set(GUEST, b"b", b"2")  # appended after the foreign record, not over it
    assert chunks(pool_path(state_dir)) == [
        pack(b"a", b"1"),
        pack(b"CLOUD_INIT|event", b'{"result":"ok"}'),
        pack(b"b", b"2"),
    ]


def test_an_in_place_rewrite_that_keeps_size_mtime_and_inode_is_seen(
    store: LinuxPoolStore, state_dir: Path
) -> None:
    store.set(GUEST, b"a", b"old")
    store.set(GUEST, b"b", b"2")
    assert store.get(GUEST, b"a") == b"old"
    path = pool_path(state_dir)
    before = path.stat()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, pack(b"a", b"new"), 0)
    finally:
        os.close(fd)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    # A (size, mtime, inode) fingerprint cannot tell these two files apart.
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert store.get(GUEST, b"a") == b"new"


def test_a_file_replaced_by_rename_is_followed(store: LinuxPoolStore, state_dir: Path) -> None:
    store.set(GUEST, b"a", b"1")
    path = pool_path(state_dir)
    old_fd = os.open(path, os.O_RDONLY)
    try:
        replacement = state_dir / "new-pool"
        replacement.write_bytes(pack(b"replaced", b"yes"))
        replacement.replace(path)
        assert store.get(GUEST, b"replaced") == b"yes"
        assert store.get(GUEST, b"a") is None
        store.set(GUEST, b"b", b"2")
        assert chunks(path) == [pack(b"replaced", b"yes"), pack(b"b", b"2")]
        assert os.pread(old_fd, 2 * RECORD_SIZE, 0) == pack(b"a", b"1")  # old inode untouched
    finally:
        os.close(old_fd)


def test_a_deleted_pool_file_is_recreated(store: LinuxPoolStore, state_dir: Path) -> None:
    store.set(GUEST, b"a", b"1")
    pool_path(state_dir).unlink()
    assert store.get(GUEST, b"a") is None
    store.set(GUEST, b"b", b"2")
    assert chunks(pool_path(state_dir)) == [pack(b"b", b"2")]


def test_a_removed_state_dir_is_recreated_and_watched_again(
    store: LinuxPoolStore, state_dir: Path, watch: bool
) -> None:
    store.set(GUEST, b"a", b"1")
    shutil.rmtree(state_dir)
    store.set(GUEST, b"b", b"2")
    assert chunks(pool_path(state_dir)) == [pack(b"b", b"2")]
    assert store.get(GUEST, b"a") is None
    cloud_init_append(pool_path(state_dir), b"c", b"3")
    assert store.get(GUEST, b"c") == b"3"
    assert store.watching is watch


# ------------------------------------------------------------------ cost of freshness


def test_nothing_is_reread_while_nobody_else_writes(state_dir: Path) -> None:
    with LinuxPoolStore(state_dir, fsync=False) as store:
        for pool in range(5):
            store.get(KvpPool(pool), b"warm-up")
        reads = store.full_reads
        for n in range(50):
            store.set(GUEST, b"k%d" % (n % 7), b"v%d" % n)
            store.get(GUEST, b"k3")
            store.record_at(GUEST, 2)
            store.delete(GUEST, b"k%d" % (n % 5))
        assert store.full_reads == reads
        cloud_init_append(pool_path(state_dir), b"foreign", b"1")
        assert store.get(GUEST, b"foreign") == b"1"
        assert store.full_reads == reads + 1


def test_the_reread_fallback_reads_for_every_operation(state_dir: Path) -> None:
    with LinuxPoolStore(state_dir, fsync=False, watch_changes=False) as store:
        assert not store.watching
        store.get(GUEST, b"k")
        reads = store.full_reads
        store.get(GUEST, b"k")
        store.set(GUEST, b"k", b"v")
        assert store.full_reads == reads + 2


def _get_in_thread(store: LinuxPoolStore) -> tuple[threading.Thread, list[bytes | None]]:
    results: list[bytes | None] = []
    thread = threading.Thread(target=lambda: results.append(store.get(GUEST, b"a")), daemon=True)
    thread.start()
    return thread, results


def test_an_unchanged_pool_answers_get_without_waiting_for_locks(state_dir: Path) -> None:
    with LinuxPoolStore(state_dir, fsync=False) as store:
        store.set(GUEST, b"a", b"1")
        with pool_path(state_dir).open("rb") as peer:
            fcntl.flock(peer, fcntl.LOCK_EX)  # a peer busy writing, say cloud-init
            thread, results = _get_in_thread(store)
            thread.join(timeout=10)
            assert results == [b"1"]


def test_without_inotify_get_waits_for_the_peer_lock(state_dir: Path) -> None:
    with LinuxPoolStore(state_dir, fsync=False, watch_changes=False) as store:
        store.set(GUEST, b"a", b"1")
        with pool_path(state_dir).open("rb") as peer:
            fcntl.flock(peer, fcntl.LOCK_EX)
            thread, results = _get_in_thread(store)
            thread.join(timeout=0.5)
            assert thread.is_alive()  # blocked on flock
            assert results == []
            fcntl.flock(peer, fcntl.LOCK_UN)
            thread.join(timeout=10)
        assert results == [b"1"]


def test_an_inotify_overflow_makes_every_pool_reread(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 200_000:
        pytest.skip(f"max_queued_events is {limit}; flooding it would take too long")
    with LinuxPoolStore(state_dir, fsync=False) as store:
        store.set(GUEST, b"a", b"old")
        assert store.get(GUEST, b"a") == b"old"
        # Alternate two names so that inotify cannot merge the events, until the queue is full.
        fds = [os.open(state_dir / name, os.O_WRONLY | os.O_CREAT, 0o600) for name in "xy"]
        try:
            for n in range(limit + 100):
                os.pwrite(fds[n % 2], b"!", 0)
        finally:
            for fd in fds:
                os.close(fd)
        fd = os.open(pool_path(state_dir), os.O_WRONLY)
        try:
            os.pwrite(fd, pack(b"a", b"new"), 0)  # its event is dropped: the queue is full
        finally:
            os.close(fd)
        with caplog.at_level(logging.INFO, logger="hvguest.linux.pools"):
            assert store.get(GUEST, b"a") == b"new"
        assert any("overflow" in record.getMessage() for record in caplog.records)
        assert store.watching


# ---------------------------------------------------------------------------- errors


def test_an_os_error_names_the_file_and_the_store_stays_usable(
    store: LinuxPoolStore, state_dir: Path
) -> None:
    store.set(GUEST, b"a", b"1")
    store.set(KvpPool.EXTERNAL, b"host", b"kept")
    path = pool_path(state_dir)
    path.unlink()
    path.mkdir()  # the name now refers to a directory: opening it fails with EISDIR
    with pytest.raises(OperationFailed) as caught:
        store.set(GUEST, b"b", b"2")
    assert caught.value.status == HvStatus.E_FAIL
    assert str(path) in str(caught.value)
    assert store.get(KvpPool.EXTERNAL, b"host") == b"kept"
    path.rmdir()
    store.set(GUEST, b"b", b"2")
    assert store.get(GUEST, b"b") == b"2"


@contextmanager
def tiny_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


@pytest.mark.root
def test_a_full_disk_answers_disk_full_and_loses_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with tiny_tmpfs(tmp_path / "tmpfs", "16k") as mount:
        state_dir = mount / "hyperv"
        with LinuxPoolStore(state_dir, fsync=True) as store:
            stored: dict[bytes, bytes] = {}
            with pytest.raises(OperationFailed) as caught:  # noqa: PT012 - fill until it fails
                for n in range(100):
                    key, value = b"key-%d" % n, b"value-%d" % n * 100
                    store.set(GUEST, key, value)
                    stored[key] = value
            assert caught.value.status == HvStatus.ERROR_DISK_FULL
            assert ".kvp_pool_1" in str(caught.value)
            assert 1 < len(stored) < 100
            assert view(store) == list(stored.items())
            path = pool_path(state_dir)
            assert path.read_bytes() == b"".join(pack(k, v) for k, v in stored.items())
            first = next(iter(stored))
            store.set(GUEST, first, b"rewritten in place needs no new space")
            assert store.get(GUEST, first) == b"rewritten in place needs no new space"
            assert store.delete(GUEST, first)
            assert path.stat().st_size == (len(stored) - 1) * RECORD_SIZE
