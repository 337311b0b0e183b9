"""Pool record format and the crash-ordered write plans of hvguest.linux.pools.

The plans are checked by replaying them piece by piece on a byte buffer: a
SIGKILL can stop a buffered write only between pages, so a page-confined
piece lands whole or not at all, and every prefix of a plan is a state a
crash can leave behind.
"""

from __future__ import annotations

import errno
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.linux.errno_status import status_for_errno
from hvguest.linux.pools import (
    RECORD_SIZE,
    Piece,
    check_settable,
    decode_record,
    encode_record,
    page_cut,
    plan_append,
    plan_overwrite,
)

PAGE = 4096
#: 8 consecutive slots cover every phase of 2560-byte records against 4 KiB pages.
SLOTS = range(8)
LENGTHS = (0, 1, 200, 511, 512, 513, 1000, 1023, 1024, 1500, 1535, 1536, 2000, 2047)


def value_of(length: int, fill: bytes) -> bytes:
    return (fill * length)[:length]


def apply(buffer: bytearray, piece: Piece) -> None:
    offset, data = piece
    if len(buffer) < offset:
        buffer.extend(bytes(offset - len(buffer)))  # a hole reads as zeros
    buffer[offset : offset + len(data)] = data


def assert_page_confined(piece: Piece) -> None:
    offset, data = piece
    assert offset // PAGE == (offset + len(data) - 1) // PAGE, f"piece at {offset} crosses a page"


def test_record_is_byte_identical_to_struct_512s2048s() -> None:
    key, value = "clé".encode(), b"value with spaces"
    assert encode_record(key, value) == struct.pack("512s2048s", key, value)
    assert len(encode_record(key, value)) == RECORD_SIZE == 2560


def test_decode_reads_each_field_up_to_its_first_nul_and_ignores_stale_bytes() -> None:
    stale = b"key\0STALE".ljust(512, b"\xaa") + b"val\0junk".ljust(2048, b"\xbb")
    assert decode_record(stale) == (b"key", b"val")


def test_decode_accepts_fields_without_nul_from_foreign_writers() -> None:
    raw = b"k" * 512 + b"v" * 2048
    assert decode_record(raw) == (b"k" * 512, b"v" * 2048)
    assert encode_record(b"k" * 512, b"v" * 2048) == raw


def test_encode_refuses_what_a_record_cannot_hold() -> None:
    for key, value in ((b"k" * 513, b""), (b"k", b"v" * 2049), (b"a\0b", b""), (b"k", b"\0")):
        with pytest.raises(ValueError, match="does not fit"):
            encode_record(key, value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"k" * 512, b"v"),  # fits the field, but leaves no room for the NUL
        (b"k", b"v" * 2048),
        (b"", b"v"),  # an empty key is a blank slot
        (b"a\0b", b"v"),
        (b"k", b"v\0w"),
    ],
)
def test_set_limits_answer_s_cont_like_the_reference(key: bytes, value: bytes) -> None:
    with pytest.raises(OperationFailed) as caught:
        check_settable(key, value)
    assert caught.value.status == HvStatus.S_CONT


def test_longest_settable_key_and_value_are_accepted() -> None:
    check_settable(b"k" * 511, b"v" * 2047)


def test_errno_table() -> None:
    assert status_for_errno(errno.ENOSPC) == HvStatus.ERROR_DISK_FULL
    assert status_for_errno(errno.EDQUOT) == HvStatus.ERROR_DISK_FULL
    assert status_for_errno(errno.EEXIST) == HvStatus.ERROR_ALREADY_EXISTS
    assert status_for_errno(errno.EIO) == HvStatus.E_FAIL
    assert status_for_errno(None) == HvStatus.E_FAIL


def test_page_cut_falls_on_multiples_of_512_inside_straddling_records() -> None:
    cuts = [page_cut(slot * RECORD_SIZE, PAGE) for slot in SLOTS]
    assert cuts == [0, 1536, 0, 512, 2048, 0, 1024, 0]


@pytest.mark.parametrize("slot", SLOTS)
@pytest.mark.parametrize("same_key", [True, False])
@pytest.mark.parametrize("old_expendable", [True, False])
def test_every_crash_point_of_an_overwrite_reads_old_new_or_blank(
    slot: int, same_key: bool, old_expendable: bool
) -> None:
    offset = slot * RECORD_SIZE
    for old_len, new_len in itertools.product(LENGTHS, LENGTHS):
        old = (b"key-a", value_of(old_len, b"o"))
        new = (b"key-a" if same_key else b"key-b", value_of(new_len, b"n"))
        # Stale bytes after the NULs, as hv_kvp_daemon leaves them (bug S9).
        stale = bytearray(b"\xee" * offset + encode_record(*old).replace(b"\0", b"\xcc"))
        stale[offset + len(old[0])] = 0
        if old_len < 2048:
            stale[offset + 512 + old_len] = 0
        plan = plan_overwrite(offset, old, new, old_expendable=old_expendable, page_size=PAGE)
        if plan is None:
            assert not old_expendable
            continue
        allowed = {old, new} | ({(b"", b"")} if old_expendable else set())
        buffer = stale
        for piece in plan:
            assert_page_confined(piece)
            apply(buffer, piece)
            key, value = decode_record(bytes(buffer), offset)
            assert (key, value) in allowed or (old_expendable and key == b""), (
                f"slot {slot} old {old_len} new {new_len}: torn record"
            )
        assert bytes(buffer[offset:]) == encode_record(*new)
        assert bytes(buffer[:offset]) == b"\xee" * offset


def test_overwrite_without_a_safe_order_needs_a_parked_copy() -> None:
    offset = 1 * RECORD_SIZE  # cut at 1536: 1024 value bytes in the head
    old, new = (b"k", value_of(1500, b"o")), (b"k", value_of(1400, b"n"))
    assert plan_overwrite(offset, old, new, old_expendable=False, page_size=PAGE) is None


@pytest.mark.parametrize("slot", SLOTS)
@pytest.mark.parametrize("length", LENGTHS)
def test_every_crash_point_of_an_append_is_aligned_and_reads_new_or_blank(
    slot: int, length: int
) -> None:
    offset = slot * RECORD_SIZE
    record = encode_record(b"new-key", value_of(length, b"n"))
    buffer = bytearray(b"\x11" * offset)
    for piece in plan_append(offset, record, b"", page_size=PAGE):
        assert_page_confined(piece)
        apply(buffer, piece)
        assert len(buffer) == offset + RECORD_SIZE, "a crash here would leave a partial record"
        key, _value = decode_record(bytes(buffer), offset)
        assert key in (b"", b"new-key")
    assert bytes(buffer[offset:]) == record


def test_append_behind_a_partial_tail_rewrites_the_tail_after_the_record() -> None:
    tail = b"torn-key\0half a va"
    record = encode_record(b"k", b"v")
    assert plan_append(RECORD_SIZE, record, tail, page_size=PAGE) == [(RECORD_SIZE, record + tail)]


@given(
    old_value=st.binary(max_size=2047).filter(lambda v: b"\0" not in v),
    new_value=st.binary(max_size=2047).filter(lambda v: b"\0" not in v),
    slot=st.integers(min_value=0, max_value=15),
)
def test_in_place_set_of_a_key_with_other_copies_never_tears(
    old_value: bytes, new_value: bytes, slot: int
) -> None:
    offset = slot * RECORD_SIZE
    old, new = (b"k", old_value), (b"k", new_value)
    plan = plan_overwrite(offset, old, new, old_expendable=True, page_size=PAGE)
    assert plan is not None
    buffer = bytearray(bytes(offset) + encode_record(*old))
    for piece in plan:
        apply(buffer, piece)
        assert decode_record(bytes(buffer), offset) in (
            old,
            new,
            (b"", old_value),
            (b"", new_value),
        )
