"""The deliberate-difference predicates accept their own shape and nothing else.

Pure tests (no daemons, no root): a predicate that accepted too much would let
a real regression through the differential tests unnoticed.
"""

from __future__ import annotations

from hvguest.abi.constants import HvStatus
from hvguest.abi.structs import KVP_POOL_RECORD_SIZE

from .kvp_deliberate import Context, explain
from .kvp_sessions import Difference, Observation, Session, Step, kv_enumerate, kv_get, kv_set


def _record(key: bytes, value: bytes, padding: bytes = b"\0") -> bytes:
    return (
        key.ljust(512, b"\0") + value + b"\0" + padding * (KVP_POOL_RECORD_SIZE - 513 - len(value))
    )


def _field_difference(step: Step, name: str, ref: Observation, ours: Observation) -> Difference:
    return Difference(0, step, name, ref.get(name), ours.get(name), ref, ours)


def _get_reply(status: int, value: str) -> Observation:
    units = len(value.encode("utf-16-le")) // 2
    return {"status": status, "key": "k", "value": value, "value_size": 2 * (units + 1)}


def test_k1_accepts_an_empty_reference_get_and_nothing_else() -> None:
    context = Context(Session("s", ()))
    step = kv_get(1, "k")
    empty, stored = _get_reply(0, ""), _get_reply(0, "v")
    assert explain(_field_difference(step, "value", empty, stored), context) == {"K1"}
    # The reference returning a value we do not, or a status change, is not K1.
    assert explain(_field_difference(step, "value", stored, empty), context) is None
    failed = _get_reply(HvStatus.S_CONT, "")
    assert explain(_field_difference(step, "status", failed, stored), context) is None


def test_status_differences_on_plain_operations_are_never_deliberate() -> None:
    context = Context(Session("s", ()))
    for step in (kv_set(1, "k", "v"), kv_enumerate(1, 0), kv_get(0, "k")):
        ref: Observation = {"status": HvStatus.S_OK, "key": "", "value": ""}
        ours: Observation = {"status": HvStatus.E_FAIL, "key": "", "value": ""}
        assert explain(_field_difference(step, "status", ref, ours), context) is None


def _pool_difference(reference: bytes, ours: bytes) -> Difference:
    return Difference(None, None, "pool_file", reference, ours, {}, {}, pool=1)


def test_pool_padding_is_k11_but_different_strings_are_not() -> None:
    context = Context(Session("s", ()))
    clean = _record(b"key", b"short")
    stale = _record(b"key", b"short", padding=b"x")
    assert explain(_pool_difference(stale, clean), context) == {"K11"}
    # Dirty padding on *our* side, or another value, is a bug.
    assert explain(_pool_difference(clean, stale), context) is None
    assert explain(_pool_difference(clean, _record(b"key", b"other")), context) is None
    assert explain(_pool_difference(clean, clean + clean), context) is None


def test_duplicates_and_partial_tails_need_a_seed_that_has_them() -> None:
    duplicate_seed = {1: _record(b"d", b"1") + _record(b"o", b"x") + _record(b"d", b"2")}
    with_duplicates = Context(Session("s", (), seed=duplicate_seed))
    reference = _record(b"o", b"x") + _record(b"d", b"2")
    ours = _record(b"o", b"x")
    assert explain(_pool_difference(reference, ours), with_duplicates) == {"K10"}
    assert explain(_pool_difference(reference, ours), Context(Session("s", ()))) is None

    tail = b"torn" * 5
    with_tail = Context(Session("s", (), seed={1: _record(b"a", b"b") + tail}))
    assert explain(
        _pool_difference(_record(b"a", b"b"), _record(b"a", b"b") + tail), with_tail
    ) == {"K20"}
    other_tail = _record(b"a", b"b") + b"other"
    assert explain(_pool_difference(_record(b"a", b"b"), other_tail), with_tail) is None
