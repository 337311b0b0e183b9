"""hvguest.records: what ``@dataclass(frozen=True, slots=True)`` gave the daemons, without it."""

from __future__ import annotations

import copy
import pickle

import pytest

from hvguest.abi.constants import KvpPool
from hvguest.config import Config, KvpConfig
from hvguest.protocol.kvp import KvpGet
from hvguest.records import FrozenRecordError, field, record, replace


@record
class Point:
    """A record with a required field, a default and a factory."""

    x: int
    label: str = "origin"
    tags: list[str] = field(default_factory=list)

    @property
    def twice(self) -> int:
        return 2 * self.x


@record(frozen=False)
class Counter:
    count: int = 0


def test_init_takes_fields_by_position_or_name_with_defaults() -> None:
    assert Point(1) == Point(x=1, label="origin", tags=[])
    assert Point(1, "a", ["t"]).tags == ["t"]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]


def test_each_instance_gets_its_own_factory_value() -> None:
    first, second = Point(1), Point(2)
    first.tags.append("mine")
    assert second.tags == []


def test_equality_needs_the_same_class_and_equal_fields() -> None:
    assert Point(1, "a") == Point(1, "a")
    assert Point(1, "a") != Point(1, "b")
    same_fields: object = (1, "origin", [])
    assert Point(1) != same_fields


def test_frozen_records_hash_by_value_and_refuse_changes() -> None:
    guest, auto = KvpPool.GUEST, KvpPool.AUTO
    assert hash(KvpGet(guest, b"key")) == hash(KvpGet(guest, b"key"))
    assert len({KvpGet(guest, b"key"), KvpGet(guest, b"key"), KvpGet(auto, b"key")}) == 2
    point = Point(1)
    with pytest.raises(FrozenRecordError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.label
    assert point.x == 1


def test_slots_leave_no_instance_dict() -> None:
    assert vars(Point)["__slots__"] == ("x", "label", "tags")
    assert not hasattr(Point(1), "__dict__")
    with pytest.raises(AttributeError):
        Counter().other = 1  # type: ignore[attr-defined]


def test_mutable_records_can_change_and_are_unhashable() -> None:
    counter = Counter()
    counter.count += 1
    assert counter == Counter(1)
    with pytest.raises(TypeError):
        hash(counter)


def test_repr_names_the_class_and_every_field() -> None:
    assert repr(Point(1, "a")) == "Point(x=1, label='a', tags=[])"
    assert repr(KvpGet(KvpPool.GUEST, b"k")) == f"KvpGet(pool={KvpPool.GUEST!r}, key=b'k')"


def test_positional_match_patterns_follow_the_field_order() -> None:
    match Point(3, "p"):
        case Point(x, label):
            assert (x, label) == (3, "p")
        case _:
            pytest.fail("the pattern did not match")


def test_methods_properties_and_docstrings_are_kept() -> None:
    assert Point(4).twice == 8
    assert Point.__doc__ == "A record with a required field, a default and a factory."
    assert Point.__qualname__ == "Point"


def test_replace_copies_with_changes_and_rejects_unknown_fields() -> None:
    config = Config()
    changed = replace(config, kvp=replace(config.kvp, fsync=False))
    assert changed.kvp == KvpConfig(fsync=False)
    assert config.kvp.fsync is True
    with pytest.raises(TypeError, match="no field"):
        replace(config, colour="red")


def test_copies_and_pickles_are_equal_records() -> None:
    point = Point(5, "p", ["a"])
    assert copy.copy(point) == point
    assert copy.deepcopy(point) == point
    assert pickle.loads(pickle.dumps(point)) == point


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default"):

        @record
        class Wrong:
            first: int = 0
            second: int  # type: ignore[misc]
