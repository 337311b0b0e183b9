"""The KVP pool files ``.kvp_pool_0`` … ``.kvp_pool_4``: records, crash-safe edits, freshness.

Replaces kvp_file_init(), kvp_update_mem_state(), kvp_update_file(),
kvp_key_add_or_modify(), kvp_key_delete(), kvp_get_value() and
kvp_pool_enumerate() of tools/hv/hv_kvp_daemon.c, and offers the same record
logic to other programs (``read_pool``, ``PoolFile``).

Format (shared with cloud-init, azure-init, kvp_client, WALinuxAgent,
Ignition): a flat array of 2560-byte records, key[512] + value[2048], each a
NUL-terminated string; no header. Appenders create duplicate keys, and the
last record of a key wins. A trailing partial record is not a record: it is
ignored on read and never destroyed.

Theory of operation
-------------------
*Locks.* Every access takes flock and a POSIX lock (see ``locks``), so no
cooperating peer runs while we read or write.

*Freshness.* hv_kvp_daemon re-reads the whole file before every operation. We
keep an index instead and re-read only after a change: an inotify watch on the
state directory reports every write(), truncate() or rename that touches a
pool file, and the kernel queues that event before the writer's syscall
returns. So once we hold the lock, "no event for this file" means "no
completed foreign write since our last read". A (size, mtime, inode)
fingerprint would not do: mtime has the granularity of the kernel's coarse
clock tick, so an in-place rewrite within one tick keeps size, mtime and inode
(and a peer may even restore mtime with utime()). Reads with no pending event
skip the locks: the answer is the file's content as of the moment we drained
the queue, and every write that completed before that moment has an event
there, so the read is linearizable at that moment (writes still in flight are
concurrent with it and may be ordered after it). Our own writes' events are
drained while we still hold the lock. In the daemon the queue's descriptor is
polled together with the device (``after_poll``), so a request that the poll
woke up for is answered without asking the queue again: the poll already
saw it empty, or emptied it. A queue overflow marks every pool stale
once; without inotify, or while the directory is gone, every operation
re-reads the file under the lock, like the C daemon. Under each lock we also
check that the directory is still the inode we watch: after rmdir + mkdir the
kernel delays IN_DELETE_SELF for as long as our open pool files pin the old
directory. Writers that go through mmap or through a hard link outside the
directory produce no event on our watch; no known peer does either.

*Crash safety.* We never truncate-and-rewrite (hv_kvp_daemon does, bug S9).
SIGKILL can stop a buffered write() at any page boundary (the kernel checks
for fatal signals between pages: measured on this project's test machine, a
tight loop of 2560-byte appends killed at random left a torn record about one
time in twenty), so a record that straddles a page is written as two
page-confined pieces, in the order whose intermediate state is harmless:
the old record, the new one, or a *blank slot* (a record whose key is empty).
A blank slot is not a KVP item: no known writer makes one on purpose and we
refuse to, so readers here skip it (a DELETE drops those it shifts past). New records are
appended back to front, so a crash leaves a blank slot instead of a partial
record (which would misalign every later cloud-init append). When an in-place
SET has no safe order (old and new value both reach past the cut and differ
there), a copy of the new record is parked at the end first, so the key stays
readable, and cut away afterwards. DELETE shifts later records up and only
then truncates, so a crash leaves at worst a duplicate of a surviving record.
What is left is behind a foreign partial tail (itself the trace of someone
else's crash): an append there is one pwrite of record + tail and can tear,
the SET above cannot park its copy and can tear its record, and a DELETE can
leave other bytes in the tail's place. Power loss can tear within a piece at
sector granularity; ``fsync=True`` orders the steps that matter (parked copy
and shifted records reach the disk before what depends on them).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from hvguest.abi.constants import (
    HV_KVP_EXCHANGE_MAX_KEY_SIZE,
    HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    HvStatus,
    KvpPool,
)
from hvguest.abi.structs import KVP_POOL_RECORD_SIZE
from hvguest.errors import OperationFailed
from hvguest.linux.errno_status import status_for_errno
from hvguest.linux.inotify import Inotify, InotifyMask
from hvguest.linux.locks import acquire_pool_lock, release_pool_lock
from hvguest.records import record

_log = logging.getLogger(__name__)

#: Where hv_kvp_daemon keeps the pools (historic daemons used /var/opt/hyperv).
DEFAULT_STATE_DIR: Final = Path("/var/lib/hyperv")
#: File name of pool N is this prefix followed by N.
POOL_FILE_PREFIX: Final = ".kvp_pool_"
RECORD_SIZE: Final = KVP_POOL_RECORD_SIZE
KEY_FIELD: Final = HV_KVP_EXCHANGE_MAX_KEY_SIZE
VALUE_FIELD: Final = HV_KVP_EXCHANGE_MAX_VALUE_SIZE
#: The longest key / value a SET accepts: the field minus its NUL.
MAX_KEY_LEN: Final = KEY_FIELD - 1
MAX_VALUE_LEN: Final = VALUE_FIELD - 1

_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
# A record then straddles at most one page boundary, which the write plans assume.
assert _PAGE_SIZE >= RECORD_SIZE
#: How often a lock is retried because the file was replaced under us.
_REOPEN_ATTEMPTS: Final = 8
#: Whole records per read: the file is decoded as it streams in, so a 10,000-record
#: pool (25 MB) never sits in memory as bytes, only as its short keys and values.
#: 40 KiB stays below glibc's mmap threshold, so every read reuses one heap block
#: (measured: 64 records per read raised the daemon's peak RSS by up to 0.1 MB).
_READ_CHUNK: Final = 16 * RECORD_SIZE

_WATCH_MASK: Final = (
    InotifyMask.MODIFY
    | InotifyMask.ATTRIB
    | InotifyMask.MOVED_FROM
    | InotifyMask.MOVED_TO
    | InotifyMask.CREATE
    | InotifyMask.DELETE
    | InotifyMask.DELETE_SELF
    | InotifyMask.MOVE_SELF
    | InotifyMask.ONLYDIR
)
# Event tests use plain ints: IntFlag's & is Python code, slow on the hot path.
#: The file's content may have changed (IN_ATTRIB too: utime() can hide a write's mtime).
_CONTENT_CHANGED: Final = int(InotifyMask.MODIFY | InotifyMask.ATTRIB)
#: The name may now refer to another inode.
_NAME_CHANGED: Final = int(
    InotifyMask.MOVED_FROM | InotifyMask.MOVED_TO | InotifyMask.CREATE | InotifyMask.DELETE
)
_WATCH_GONE: Final = int(
    InotifyMask.DELETE_SELF | InotifyMask.MOVE_SELF | InotifyMask.IGNORED | InotifyMask.UNMOUNT
)
_OVERFLOW: Final = int(InotifyMask.Q_OVERFLOW)

_T = TypeVar("_T")


def pool_path(state_dir: Path, pool: KvpPool) -> Path:
    """``<state_dir>/.kvp_pool_<pool>``."""
    return state_dir / f"{POOL_FILE_PREFIX}{int(pool)}"


# --------------------------------------------------------------------------- records


def encode_record(key: bytes, value: bytes) -> bytes:
    """One 2560-byte record with clean NUL padding (never stale bytes, bug S9).

    Accepts what the file can hold (a 512-byte key has no NUL); SET's
    stricter limits are checked by the callers.
    """
    if len(key) > KEY_FIELD or len(value) > VALUE_FIELD or b"\0" in key or b"\0" in value:
        raise ValueError("key/value does not fit a pool record")
    return key.ljust(KEY_FIELD, b"\0") + value.ljust(VALUE_FIELD, b"\0")


def decode_record(data: bytes, offset: int = 0) -> tuple[bytes, bytes]:
    """Key and value of the record at ``offset``: each field up to its first NUL."""
    key_end = data.find(0, offset, offset + KEY_FIELD)
    key = data[offset : key_end if key_end >= 0 else offset + KEY_FIELD]
    start = offset + KEY_FIELD
    value_end = data.find(0, start, start + VALUE_FIELD)
    value = data[start : value_end if value_end >= 0 else start + VALUE_FIELD]
    return key, value


def check_settable(key: bytes, value: bytes) -> None:
    """Refuse what hv_kvp_daemon refuses (HV_S_CONT), plus what no reader could read back."""
    if len(key) > MAX_KEY_LEN or len(value) > MAX_VALUE_LEN:
        raise OperationFailed(
            HvStatus.S_CONT,
            f"KVP SET refused: key {len(key)} bytes (max {MAX_KEY_LEN}), "
            f"value {len(value)} bytes (max {MAX_VALUE_LEN})",
        )
    if not key:
        # An empty key marks a blank slot (see the module docstring).
        raise OperationFailed(HvStatus.S_CONT, "KVP SET refused: empty key")
    if b"\0" in key or b"\0" in value:
        raise OperationFailed(HvStatus.S_CONT, "KVP SET refused: NUL inside key or value")


# --------------------------------------------------------------------- write plans

#: One pwrite: (file offset, bytes), never crossing a page boundary unless noted.
Piece = tuple[int, bytes]


def page_cut(offset: int, page_size: int = _PAGE_SIZE) -> int:
    """Where (relative to the record) a page boundary cuts the record at ``offset``, or 0."""
    cut = page_size - offset % page_size
    return cut if cut < RECORD_SIZE else 0


def plan_overwrite(
    offset: int,
    old: tuple[bytes, bytes],
    new: tuple[bytes, bytes],
    *,
    old_expendable: bool,
    page_size: int = _PAGE_SIZE,
) -> list[Piece] | None:
    """Pieces that turn record ``old`` at ``offset`` into ``new`` (key, value pairs).

    Ordered so that a crash after any piece leaves a record that reads as
    ``old``, as ``new``, or (only if ``old_expendable``) as a blank slot.
    None when no order is safe: the caller must park a copy first.
    """
    record = encode_record(*new)
    cut = page_cut(offset, page_size)
    if not cut:
        return [(offset, record)]
    # Cuts fall on multiples of 512 within a record (page sizes and 2560 are), so
    # the key field always lies in the head; ``in_head`` value bytes do too.
    assert cut >= KEY_FIELD
    in_head = cut - KEY_FIELD
    head, rest = (offset, record[:cut]), (offset + cut, record[cut:])
    (old_key, old_value), (new_key, new_value) = old, new
    if len(new_value) < in_head:
        return [head, rest]  # new head + old rest reads as new: its NUL is in the head
    if len(old_value) < in_head:
        return [rest, head]  # old head + new rest reads as old: its NUL is in the head
    if old_key == new_key and old_value[:in_head] == new_value[:in_head]:
        return [head, rest]  # new head + old rest reads as old: same key, same head bytes
    if old_expendable:
        return [(offset, b"\0"), rest, head]  # in between, a blank slot
    return None


def plan_append(
    offset: int, record: bytes, tail: bytes, page_size: int = _PAGE_SIZE
) -> list[Piece]:
    """Pieces that append ``record`` at the aligned end ``offset``, keeping the partial ``tail``.

    Back to front: the first piece extends the file with a hole at the head,
    which reads as a blank slot until the head lands. With a tail the single
    pwrite of record + tail can still tear (see the module docstring).
    """
    if tail:
        return [(offset, record + tail)]
    cut = page_cut(offset, page_size)
    if not cut:
        return [(offset, record)]
    return [(offset + cut, record[cut:]), (offset, record[:cut])]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view = view[written:]
        offset += written


def _read_records(fd: int) -> tuple[list[bytes], list[bytes], bytes]:
    """The keys and the values of every whole record of the file, and the partial tail."""
    keys: list[bytes] = []
    values: list[bytes] = []
    carry = b""
    offset = 0
    while chunk := os.pread(fd, _READ_CHUNK, offset):
        offset += len(chunk)
        data = carry + chunk if carry else chunk
        whole = len(data) - len(data) % RECORD_SIZE
        for at in range(0, whole, RECORD_SIZE):
            key, value = decode_record(data, at)
            keys.append(key)
            values.append(value)
        carry = data[whole:]
    return keys, values, carry


# ----------------------------------------------------------------------- the engine


class _PoolTable:
    """One pool file, kept open, and an index of its records.

    The index is only as current as the last ``reload()`` or own write;
    ``fresh`` says whether the owner may trust it. Every method that touches
    the file expects the caller to hold the file's lock (``locked()``).
    """

    def __init__(self, path: Path, *, file_mode: int, fsync: bool, readonly: bool = False) -> None:
        self.path = path
        self.fresh = False
        self.maybe_replaced = False
        self.full_reads = 0
        self._file_mode = file_mode
        self._fsync = fsync
        self._readonly = readonly
        self._fd: int | None = None
        #: The descriptor ``lock()`` locked, until ``unlock()``.
        self._locked_fd: int | None = None
        #: Key and value of every whole record in file order; key b"" is a blank
        #: slot. Two lists rather than one of (key, value) tuples: a tuple would
        #: cost about 64 bytes more per record.
        self._keys: list[bytes] = []
        self._values: list[bytes] = []
        #: key -> its last slot (the record that counts).
        self._where: dict[bytes, int] = {}
        #: key -> its earlier slots, ascending, for the few keys stored more than
        #: once (appenders' duplicates). Kept apart so that the usual single
        #: record costs no list: about 80 bytes per record (0.8 MB at 10,000).
        self._earlier: dict[bytes, list[int]] = {}
        #: The ENUMERATE view: each key once, ordered by its last slot.
        self._view: list[bytes] = []
        self._tail = b""
        self._reported_tail = 0

    # -- file handle

    def open(self) -> int:
        """The descriptor, opening (O_CREAT with the mode, umask applies) if needed."""
        if self._fd is None:
            if self._readonly:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            else:
                # Never O_TRUNC and never chmod: a 0600 file (Ignition) stays 0600.
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                try:
                    self._fd = os.open(self.path, flags, self._file_mode)
                except FileNotFoundError:  # the state directory itself was removed
                    self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    self._fd = os.open(self.path, flags, self._file_mode)
            self.fresh = False
        return self._fd

    def close(self) -> None:
        """Close the descriptor (dropping our locks); the index becomes stale."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self.fresh = False
            os.close(fd)

    def is_current_file(self) -> bool:
        """Whether ``path`` still names the inode we hold open."""
        try:
            named = self.path.stat()
        except FileNotFoundError:
            return False
        held = os.fstat(self.open())
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    @contextmanager
    def locked(
        self, *, exclusive: bool, tracked: Callable[[], bool] | None = None
    ) -> Iterator[None]:
        """``lock()`` for the ``with`` body, then ``unlock()``."""
        self.lock(exclusive=exclusive, tracked=tracked)
        try:
            yield
        finally:
            self.unlock()

    def lock(self, *, exclusive: bool, tracked: Callable[[], bool] | None = None) -> None:
        """Lock the file that ``path`` names now and make the index current.

        ``tracked`` runs first under the lock; it returns True when change
        tracking vouches for ``fresh`` and ``maybe_replaced``. Otherwise the
        file's identity is checked and the file re-read. Plain calls rather
        than a ``with`` block because the daemon takes this path per request.
        """
        if exclusive and self._readonly:
            raise OSError(errno.EBADF, "opened read-only")
        for _attempt in range(_REOPEN_ATTEMPTS):
            fd = self.open()
            acquire_pool_lock(fd, exclusive=exclusive)
            try:
                trusted = tracked() if tracked is not None else False
                replaced = (self.maybe_replaced or not trusted) and not self.is_current_file()
                if not replaced:
                    self.maybe_replaced = False
                    if not (trusted and self.fresh):
                        self.reload()
                    self._locked_fd = fd
                    return
            except BaseException:
                release_pool_lock(fd)
                raise
            release_pool_lock(fd)
            # Locked a file that was renamed over or unlinked meanwhile: peers lock the new one.
            self.close()
        raise OSError(errno.ESTALE, f"replaced {_REOPEN_ATTEMPTS} times while locking")

    def unlock(self) -> None:
        """Release what ``lock()`` took."""
        fd, self._locked_fd = self._locked_fd, None
        if fd is not None:
            release_pool_lock(fd)

    def reload(self) -> None:
        """Re-read the whole file and rebuild the index."""
        self.fresh = False
        self._keys, self._values, self._tail = _read_records(self.open())
        self._rebuild()
        self.full_reads += 1
        self.fresh = True
        if self._tail and len(self._tail) != self._reported_tail:
            _log.warning(
                "%s ends in a partial record of %d bytes; ignoring it (and keeping it)",
                self.path,
                len(self._tail),
            )
        self._reported_tail = len(self._tail)

    def _rebuild(self) -> None:
        where: dict[bytes, int] = {}
        earlier: dict[bytes, list[int]] = {}
        for slot, key in enumerate(self._keys):
            if key:
                previous = where.get(key)
                if previous is not None:
                    earlier.setdefault(key, []).append(previous)
                where[key] = slot
        self._where = where
        self._earlier = earlier
        self._view = [key for slot, key in enumerate(self._keys) if key and where[key] == slot]

    def _slots_of(self, key: bytes) -> list[int]:
        """Every slot of ``key``, ascending (empty if none)."""
        last = self._where.get(key)
        if last is None:
            return []
        return [*self._earlier.get(key, ()), last]

    # -- queries on the index

    def get(self, key: bytes) -> bytes | None:
        """The value of the last record of ``key``."""
        slot = self._where.get(key)
        return None if slot is None else self._values[slot]

    def record_at(self, index: int) -> tuple[bytes, bytes] | None:
        """The ``index``-th entry of the ENUMERATE view (negative: None, unlike S8)."""
        if not 0 <= index < len(self._view):
            return None
        key = self._view[index]
        return key, self._values[self._where[key]]

    def items(self) -> list[tuple[bytes, bytes]]:
        """The ENUMERATE view: (key, last value), ordered by each key's last record."""
        return [(key, self._values[self._where[key]]) for key in self._view]

    def slots(self) -> list[tuple[bytes, bytes]]:
        """Every whole record, duplicates and blank slots included."""
        return list(zip(self._keys, self._values, strict=True))

    @property
    def tail(self) -> bytes:
        """The trailing partial record's bytes (usually b"")."""
        return self._tail

    # -- edits (exclusive lock held, index fresh)

    def set(self, key: bytes, value: bytes) -> None:
        """Rewrite every record of ``key`` in place, or append one; durable on return."""
        check_settable(key, value)
        self._editing()
        slots = self._slots_of(key)
        if not slots:
            self._append(key, value, encode_record(key, value))
        else:
            for slot in slots:
                # With other records of the key around, this one may pass through blank.
                self._overwrite(slot, (key, value), others=len(slots) > 1)
                self._values[slot] = value
        self._flush()

    def append(self, key: bytes, value: bytes) -> None:
        """Append a record even if ``key`` exists (cloud-init style); durable on return."""
        check_settable(key, value)
        self._editing()
        self._append(key, value, encode_record(key, value))
        self._flush()

    def delete(self, key: bytes) -> bool:
        """Remove every record of ``key`` keeping the others' order; False if none."""
        slots = self._slots_of(key)
        if not slots:
            return False
        self._editing()
        fd = self.open()
        first = slots[0]
        # Blank slots are dropped with the key: they are crash residue, not records.
        survivors = [
            (k, v)
            for k, v in zip(self._keys[first:], self._values[first:], strict=True)
            if k and k != key
        ]
        for slot, (k, v) in enumerate(survivors, start=first):
            old_key, old_value = self._keys[slot], self._values[slot]
            if (old_key, old_value) == (k, v):
                continue
            # The old content is expendable: a record of ``key``, a blank slot, or a
            # survivor already copied to an earlier slot (we fill slots in order).
            plan = plan_overwrite(
                slot * RECORD_SIZE, (old_key, old_value), (k, v), old_expendable=True
            )
            assert plan is not None  # an expendable old record always has a plan
            self._write(plan)
        end = (first + len(survivors)) * RECORD_SIZE
        if self._fsync:
            os.fdatasync(fd)  # the shifted records must be on disk before the truncate
        tail = self._tail
        # Cut inside stale records first, then move the tail there: a crash in
        # between leaves only a partial record of other bytes, never a bogus record.
        os.ftruncate(fd, end + len(tail))
        if tail:
            _pwrite_all(fd, tail, end)
        del self._keys[first:], self._values[first:]
        self._keys.extend(k for k, _v in survivors)
        self._values.extend(v for _k, v in survivors)
        self._rebuild()
        self._flush()
        return True

    def _editing(self) -> None:
        # Until this edit completes the index may not match the file.
        self.fresh = False

    def _flush(self) -> None:
        if self._fsync:
            os.fdatasync(self.open())
        self.fresh = True

    def _write(self, pieces: list[Piece]) -> None:
        fd = self.open()
        for offset, data in pieces:
            _pwrite_all(fd, data, offset)

    def _append(self, key: bytes, value: bytes, record: bytes) -> None:
        end = len(self._keys) * RECORD_SIZE
        try:
            self._write(plan_append(end, record, self._tail))
        except OSError:
            self._undo_append(end)
            raise
        slot = len(self._keys)
        self._keys.append(key)
        self._values.append(value)
        previous = self._where.get(key)
        if previous is not None:
            self._earlier.setdefault(key, []).append(previous)
            self._view.remove(key)  # a raw append moves the key to the end
        self._where[key] = slot
        self._view.append(key)

    def _undo_append(self, end: int) -> None:
        """Put the tail back and cut the file to its old size (e.g. after ENOSPC)."""
        fd = self.open()
        try:
            if self._tail:
                _pwrite_all(fd, self._tail, end)
            os.ftruncate(fd, end + len(self._tail))
        except OSError as err:
            _log.error("%s: could not undo a failed append: %s", self.path, err)

    def _overwrite(self, slot: int, new: tuple[bytes, bytes], *, others: bool) -> None:
        offset = slot * RECORD_SIZE
        old = (self._keys[slot], self._values[slot])
        plan = plan_overwrite(offset, old, new, old_expendable=others)
        if plan is not None:
            self._write(plan)
        elif self._tail:
            # Parking a copy would have to move the foreign tail: accept the tear risk.
            self._write([(offset, encode_record(*new))])
        else:
            self._overwrite_via_copy(offset, old, new)

    def _overwrite_via_copy(
        self, offset: int, old: tuple[bytes, bytes], new: tuple[bytes, bytes]
    ) -> None:
        """Both values reach past the cut and differ there: park a copy at the end meanwhile."""
        fd = self.open()
        end = len(self._keys) * RECORD_SIZE
        try:
            self._write(plan_append(end, encode_record(*new), b""))
            if self._fsync:
                os.fdatasync(fd)  # the copy must be durable before the original is blanked
        except OSError:
            self._undo_append(end)
            raise
        # From here a failure leaves the parked copy in place: a duplicate, never a loss.
        plan = plan_overwrite(offset, old, new, old_expendable=True)
        assert plan is not None
        self._write(plan)
        if self._fsync:
            os.fdatasync(fd)
        os.ftruncate(fd, end)


def _failure(table: _PoolTable, action: str, err: OSError) -> OperationFailed:
    """The OperationFailed naming the file; the index is distrusted from now on."""
    table.fresh = False
    reason = err.strerror or str(err)
    return OperationFailed(
        status_for_errno(err.errno), f"KVP pool {action} failed on {table.path}: {reason}"
    )


@contextmanager
def _translated(table: _PoolTable, action: str) -> Iterator[None]:
    """OSError -> OperationFailed naming the file (see ``_failure``)."""
    try:
        yield
    except OSError as err:
        raise _failure(table, action, err) from err


# ------------------------------------------------------------------------ the store


class LinuxPoolStore:
    """``PoolStore`` over ``<state_dir>/.kvp_pool_0..4``, shared with other programs.

    Creates ``state_dir`` (0755) and missing pool files (``file_mode``, umask
    applies) and keeps them open; never changes an existing file's mode.
    ``watch_changes=False`` disables inotify: every operation then re-reads
    the file under the lock, as hv_kvp_daemon does. Not thread-safe.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        file_mode: int = 0o644,
        fsync: bool = True,
        watch_changes: bool = True,
    ) -> None:
        self._dir = Path(state_dir)
        self._tables: dict[KvpPool, _PoolTable] = {
            pool: _PoolTable(pool_path(self._dir, pool), file_mode=file_mode, fsync=fsync)
            for pool in KvpPool
            if pool is not KvpPool.COUNT
        }
        self._by_name = {table.path.name: table for table in self._tables.values()}
        self._inotify: Inotify | None = None
        self._watch: int | None = None
        #: (st_dev, st_ino) of the directory the watch is on.
        self._watched_dir: tuple[int, int] | None = None
        #: The daemon's poll just emptied or found empty the inotify queue (``after_poll``).
        self._quiet = False
        try:
            self._dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as err:
            raise OperationFailed(
                status_for_errno(err.errno), f"cannot create {self._dir}: {err.strerror}"
            ) from err
        if watch_changes:
            self._start_watching()
        try:
            for table in self._tables.values():
                with _translated(table, "open"):
                    table.open()
        except OperationFailed:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pool files and the inotify instance."""
        for table in self._tables.values():
            table.close()
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
            self._watch = None

    @property
    def watching(self) -> bool:
        """Whether inotify currently vouches for the caches (False: re-read every time)."""
        return self._watch is not None

    # -- the event loop's side of change tracking

    def change_fd(self) -> int | None:
        """The inotify descriptor, for the daemon's poll; None without change tracking."""
        return None if self._inotify is None else self._inotify.fileno()

    def after_poll(self, readable: bool) -> None:
        """The daemon's poll on ``change_fd()`` just returned, before it serves any request.

        Events found queued are applied now. Either way the queue is then
        known to hold nothing as of this moment, so the next query may skip
        its own check of the queue: every write that completed before the
        poll collected its events has an event there, and answering from the
        caches linearizes the query at that moment, which lies between the
        request's arrival and its reply. ``after_serving()`` ends the hint.
        """
        if readable:
            try:
                self._collect_changes()
            except OSError as err:
                # Called from the event loop, not from a request: no status to
                # answer, so distrust the caches (queries re-read) and go on.
                _log.warning("reading the inotify queue failed (%s); re-reading pools", err)
                self._distrust_all()
                return
        self._quiet = True

    def after_serving(self) -> None:
        """The requests that woke the last poll are served: its news is old now."""
        self._quiet = False

    @property
    def full_reads(self) -> int:
        """How many times a pool file was read in full (for tests and measurements)."""
        return sum(table.full_reads for table in self._tables.values())

    # -- PoolStore

    def get(self, pool: KvpPool, key: bytes) -> bytes | None:
        """The value of ``key`` (last record wins), or None."""
        return self._query(pool, "GET", lambda table: table.get(key))

    def record_at(self, pool: KvpPool, index: int) -> tuple[bytes, bytes] | None:
        """The ``index``-th live record (one per key, file order), or None past the end."""
        return self._query(pool, "ENUMERATE", lambda table: table.record_at(index))

    def set(self, pool: KvpPool, key: bytes, value: bytes) -> None:
        """Add or replace ``key``; durable when it returns (with ``fsync``)."""
        check_settable(key, value)
        self._edit(pool, "SET", lambda table: table.set(key, value))

    def delete(self, pool: KvpPool, key: bytes) -> bool:
        """Remove every record of ``key``; False if there was none."""
        return self._edit(pool, "DELETE", lambda table: table.delete(key))

    # -- internals

    def _table(self, pool: KvpPool) -> _PoolTable:
        table = self._tables.get(pool)
        if table is None:  # S7: the C daemon indexes past its table here
            raise OperationFailed(HvStatus.E_FAIL, f"no KVP pool {int(pool)}")
        return table

    # _query and _edit run once per request: plain try blocks, no context managers.

    def _query(self, pool: KvpPool, action: str, query: Callable[[_PoolTable], _T]) -> _T:
        table = self._table(pool)
        try:
            if not self._quiet:
                self._collect_changes()
            if self._watch is not None and table.fresh and not table.maybe_replaced:
                return query(table)  # lock-free: see "Freshness" in the module docstring
            table.lock(exclusive=False, tracked=self._tracked)
            try:
                return query(table)
            finally:
                table.unlock()
        except OSError as err:
            raise _failure(table, action, err) from err

    def _edit(self, pool: KvpPool, action: str, edit: Callable[[_PoolTable], _T]) -> _T:
        table = self._table(pool)
        try:
            table.lock(exclusive=True, tracked=self._tracked)
            try:
                result = edit(table)
                # Still under the lock, so the pending events for this file are our own.
                self._collect_changes(written=table)
                return result
            finally:
                table.unlock()
        except OSError as err:
            raise _failure(table, action, err) from err

    def _tracked(self) -> bool:
        """Under a lock: apply pending events; True if the watch still vouches for the caches."""
        self._collect_changes()
        if self._watch is not None and self._dir_identity() != self._watched_dir:
            # rmdir + mkdir: the kernel delays IN_DELETE_SELF while our open pool files
            # pin the old directory, so its watch would stay silent. Watch the new one.
            self._rewatch()
        return self.watching

    def _dir_identity(self) -> tuple[int, int] | None:
        try:
            info = self._dir.stat()
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def _start_watching(self) -> None:
        try:
            self._inotify = Inotify()
        except OSError as err:
            _log.warning("inotify unavailable (%s): pool files are re-read for every request", err)
            return
        self._rewatch()

    def _rewatch(self) -> None:
        assert self._inotify is not None
        # Identity first: if the directory is replaced before add_watch, the next check
        # sees a mismatch and watches again, instead of vouching for a dead watch.
        self._watched_dir = self._dir_identity()
        try:
            self._watch = self._inotify.add_watch(self._dir, _WATCH_MASK)
        except OSError as err:
            _log.warning("cannot watch %s (%s): re-reading pool files every time", self._dir, err)
            self._watch = None
            return
        self._distrust_all()  # events before the watch existed were not seen

    def _distrust_all(self) -> None:
        for table in self._tables.values():
            table.fresh = False
            table.maybe_replaced = True

    def _collect_changes(self, written: _PoolTable | None = None) -> None:
        """Apply queued inotify events to the tables' ``fresh``/``maybe_replaced`` flags.

        ``written``: the table we just wrote under its lock; its content
        events are ours and do not make it stale.
        """
        if self._inotify is None:
            return
        if self._watch is None:
            self._rewatch()
        # After our own write its events are certainly queued: one read, no FIONREAD.
        for event in self._inotify.read_events(expected=written is not None):
            if event.mask & _OVERFLOW:
                _log.info("inotify queue overflowed; re-reading every pool once")
                self._distrust_all()
                continue
            if event.wd != self._watch:
                continue  # a watch we replaced
            if event.mask & _WATCH_GONE:
                _log.warning("%s went away; re-reading pool files until it is back", self._dir)
                self._watch = None
                self._distrust_all()
                continue
            table = self._by_name.get(event.name)
            if table is None:
                continue
            if event.mask & _NAME_CHANGED:
                table.fresh = False
                table.maybe_replaced = True
            elif event.mask & _CONTENT_CHANGED and table is not written:
                table.fresh = False


# ---------------------------------------------------------------------- library API


def encode_text(text: str) -> bytes:
    """UTF-8 with surrogateescape, so text from ``decode_text`` gives back the same bytes."""
    return text.encode("utf-8", "surrogateescape")


def decode_text(raw: bytes) -> str:
    """UTF-8 with surrogateescape: any bytes round-trip through ``encode_text``."""
    return raw.decode("utf-8", "surrogateescape")


@record
class PoolRecord:
    """One whole 2560-byte record as stored (duplicates and blank slots included)."""

    index: int
    offset: int
    key: bytes
    value: bytes

    @property
    def blank(self) -> bool:
        """A slot with an empty key: crash residue, not a KVP item."""
        return not self.key

    @property
    def key_text(self) -> str:
        """The key as text (surrogateescape)."""
        return decode_text(self.key)

    @property
    def value_text(self) -> str:
        """The value as text (surrogateescape)."""
        return decode_text(self.value)


@record
class PoolContents:
    """Everything in a pool file: the whole records and the partial tail after them."""

    records: list[PoolRecord]
    partial_tail: bytes

    @property
    def partial_tail_size(self) -> int:
        """Bytes after the last whole record (0 for a well-formed file)."""
        return len(self.partial_tail)


class PoolFile:
    """One pool file for other programs: every call locks (flock + POSIX), re-reads, acts.

    ``readonly`` opens O_RDONLY and never creates the file (kvp_client
    style; works for any user allowed to read it). Otherwise the file is
    created with ``file_mode`` if missing. Edits have the same crash safety
    as the daemon's, and raise ``OperationFailed`` like it.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        readonly: bool = False,
        file_mode: int = 0o644,
        fsync: bool = True,
    ) -> None:
        self._table = _PoolTable(Path(path), file_mode=file_mode, fsync=fsync, readonly=readonly)
        with _translated(self._table, "open"):
            self._table.open()

    @property
    def path(self) -> Path:
        """The pool file's path."""
        return self._table.path

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._table.close()

    def _run(self, action: str, exclusive: bool, body: Callable[[_PoolTable], _T]) -> _T:
        with _translated(self._table, action), self._table.locked(exclusive=exclusive):
            return body(self._table)

    def contents(self) -> PoolContents:
        """Every whole record (duplicates and blank slots too) and the partial tail."""

        def read(table: _PoolTable) -> PoolContents:
            records = [
                PoolRecord(index, index * RECORD_SIZE, key, value)
                for index, (key, value) in enumerate(table.slots())
            ]
            return PoolContents(records, table.tail)

        return self._run("read", False, read)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Each key once with its last value, ordered by each key's last record."""
        return self._run("read", False, lambda table: table.items())

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` (last record wins), or None."""
        return self._run("read", False, lambda table: table.get(key))

    def set(self, key: bytes, value: bytes) -> None:
        """Replace every record of ``key`` in place, or append one."""
        self._run("SET", True, lambda table: table.set(key, value))

    def append(self, key: bytes, value: bytes) -> None:
        """Append a record even if ``key`` exists (what cloud-init does)."""
        self._run("append", True, lambda table: table.append(key, value))

    def delete(self, key: bytes) -> bool:
        """Remove every record of ``key``; False if there was none."""
        return self._run("DELETE", True, lambda table: table.delete(key))

    def items_text(self) -> list[tuple[str, str]]:
        """``items()`` decoded with surrogateescape."""
        return [(decode_text(key), decode_text(value)) for key, value in self.items()]

    def get_text(self, key: str) -> str | None:
        """``get()`` for text keys and values (surrogateescape)."""
        value = self.get(encode_text(key))
        return None if value is None else decode_text(value)

    def set_text(self, key: str, value: str) -> None:
        """``set()`` for text keys and values (surrogateescape)."""
        self.set(encode_text(key), encode_text(value))

    def append_text(self, key: str, value: str) -> None:
        """``append()`` for text keys and values (surrogateescape)."""
        self.append(encode_text(key), encode_text(value))

    def delete_text(self, key: str) -> bool:
        """``delete()`` for a text key (surrogateescape)."""
        return self.delete(encode_text(key))


def read_pool(path: Path | str) -> PoolContents:
    """Read a pool file under a shared lock, raw: duplicates, blank slots, partial tail."""
    with PoolFile(path, readonly=True) as pool:
        return pool.contents()
