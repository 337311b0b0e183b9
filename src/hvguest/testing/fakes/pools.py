"""In-memory ``PoolStore`` with the pool files' semantics; the fake of ``linux.pools``.

Each pool is a list of (key, value) records, like the file: duplicates are
allowed (``add_foreign_record`` plays cloud-init appending), the last record
of a key wins, SET rewrites every record of a key in place or appends, DELETE
removes every record keeping the others' order, and ENUMERATE sees each key
once at the position of its last record. Calls are recorded in ``calls``;
``fail_next`` makes the next call raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hvguest.abi.constants import (
    HV_KVP_EXCHANGE_MAX_KEY_SIZE,
    HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    HvStatus,
    KvpPool,
)
from hvguest.errors import OperationFailed


@dataclass(frozen=True, slots=True)
class PoolCall:
    """One recorded call: the method name and its arguments."""

    method: str
    pool: KvpPool
    key: bytes | None = None
    value: bytes | None = None
    index: int | None = None


@dataclass
class FakePoolStore:
    """``PoolStore`` in memory; same limits and statuses as ``LinuxPoolStore``."""

    records: dict[KvpPool, list[tuple[bytes, bytes]]] = field(
        default_factory=lambda: {pool: [] for pool in KvpPool if pool is not KvpPool.COUNT}
    )
    calls: list[PoolCall] = field(default_factory=list)
    #: Raised (once) by the next call, e.g. OperationFailed(HvStatus.ERROR_DISK_FULL, ...).
    fail_next: OperationFailed | None = None

    def get(self, pool: KvpPool, key: bytes) -> bytes | None:
        """The value of the last record of ``key``, or None."""
        records = self._enter(PoolCall("get", pool, key=key))
        for stored_key, value in reversed(records):
            if stored_key == key and key:
                return value
        return None

    def set(self, pool: KvpPool, key: bytes, value: bytes) -> None:
        """Rewrite every record of ``key`` in place, or append one."""
        records = self._enter(PoolCall("set", pool, key=key, value=value))
        _check_settable(key, value)
        found = False
        for position, (stored_key, _old) in enumerate(records):
            if stored_key == key:
                records[position] = (key, value)
                found = True
        if not found:
            records.append((key, value))

    def delete(self, pool: KvpPool, key: bytes) -> bool:
        """Remove every record of ``key``; False if there was none."""
        records = self._enter(PoolCall("delete", pool, key=key))
        kept = [record for record in records if record[0] != key]
        found = len(kept) != len(records)
        records[:] = kept
        return found

    def record_at(self, pool: KvpPool, index: int) -> tuple[bytes, bytes] | None:
        """The ``index``-th entry of the ENUMERATE view, or None."""
        records = self._enter(PoolCall("record_at", pool, index=index))
        view = _view(records)
        return view[index] if 0 <= index < len(view) else None

    def add_foreign_record(self, pool: KvpPool, key: bytes, value: bytes) -> None:
        """Append a record as another program would (duplicates allowed); not recorded."""
        self.records[pool].append((key, value))

    def items(self, pool: KvpPool) -> list[tuple[bytes, bytes]]:
        """The ENUMERATE view of ``pool`` (for assertions; not recorded)."""
        return _view(self.records[pool])

    def _enter(self, call: PoolCall) -> list[tuple[bytes, bytes]]:
        self.calls.append(call)
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        records = self.records.get(call.pool)
        if records is None:
            raise OperationFailed(HvStatus.E_FAIL, f"no KVP pool {int(call.pool)}")
        return records


def _view(records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    last = {key: position for position, (key, _value) in enumerate(records)}
    # An empty key is a blank slot in the files, not an item.
    return [
        (key, value)
        for position, (key, value) in enumerate(records)
        if key and last[key] == position
    ]


def _check_settable(key: bytes, value: bytes) -> None:
    # The same rules as hvguest.linux.pools.check_settable (which this layer may not import).
    if len(key) >= HV_KVP_EXCHANGE_MAX_KEY_SIZE or len(value) >= HV_KVP_EXCHANGE_MAX_VALUE_SIZE:
        raise OperationFailed(HvStatus.S_CONT, "KVP SET refused: key or value too long")
    if not key or b"\0" in key or b"\0" in value:
        raise OperationFailed(HvStatus.S_CONT, "KVP SET refused: empty key or NUL inside")
