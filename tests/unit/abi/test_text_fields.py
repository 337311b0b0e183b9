"""hvguest.abi.text: fixed-width fields are exact or refused, never mangled."""

from __future__ import annotations

import pytest

from hvguest.abi.text import c_string, from_utf16_field, pad, terminated_c_string, utf16_field


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (b"abc\0\0\0", b"abc"),
        (b"abc\0def\0", b"abc"),  # bytes after the first NUL are stale, not data
        (b"\0abc", b""),
        (b"abcd", b"abcd"),  # a full field without NUL is the whole field
        (b"", b""),
        (b"\xff\xfe\0", b"\xff\xfe"),  # not UTF-8: kept byte-exact
    ],
)
def test_c_string_stops_at_the_first_nul(field: bytes, expected: bytes) -> None:
    assert c_string(field) == expected


def test_terminated_c_string_requires_a_nul() -> None:
    assert terminated_c_string(b"ab\0cd") == b"ab"
    assert terminated_c_string(b"\0") == b""
    with pytest.raises(ValueError, match="no NUL"):
        terminated_c_string(b"abcd")


def test_pad_fills_with_nul_to_the_exact_size() -> None:
    assert pad(b"ab", 5) == b"ab\0\0\0"
    assert pad(b"", 3) == b"\0\0\0"
    assert pad(b"abcd", 5) == b"abcd\0"


def test_pad_keeps_room_for_the_terminator_unless_full_is_allowed() -> None:
    with pytest.raises(ValueError, match="at most 4"):
        pad(b"abcde", 5)
    assert pad(b"abcde", 5, allow_full=True) == b"abcde"
    with pytest.raises(ValueError, match="at most 5"):
        pad(b"abcdef", 5, allow_full=True)


def test_pad_refuses_an_embedded_nul_instead_of_truncating() -> None:
    with pytest.raises(ValueError, match="NUL byte at 1"):
        pad(b"a\0b", 8)


def test_pad_round_trips_through_c_string() -> None:
    for value in (b"", b"k", b"\x80\xff", b"x" * 511):
        assert c_string(pad(value, 512)) == value


def test_utf16_field_encodes_little_endian_with_a_nul_unit() -> None:
    assert utf16_field("Ab", 4) == b"A\0b\0\0\0\0\0"
    assert utf16_field("", 1) == b"\0\0"


def test_utf16_field_counts_surrogate_pairs_as_two_units() -> None:
    raw = utf16_field("\U0001f600", 3)
    assert raw == "\U0001f600".encode("utf-16-le") + b"\0\0"
    with pytest.raises(ValueError, match="2 UTF-16 units do not fit a 2-unit field"):
        utf16_field("\U0001f600", 2)
    assert utf16_field("\U0001f600", 2, allow_full=True) == "\U0001f600".encode("utf-16-le")


@pytest.mark.parametrize("text", ["\ud800", "a\udc00b"])
def test_utf16_field_refuses_lone_surrogates(text: str) -> None:
    with pytest.raises(ValueError, match="not encodable"):
        utf16_field(text, 10)


def test_utf16_field_refuses_nul_and_overflow() -> None:
    with pytest.raises(ValueError, match="NUL character at 1"):
        utf16_field("a\0", 10)
    with pytest.raises(ValueError, match="at most 2"):
        utf16_field("abc", 3)


def test_from_utf16_field_stops_at_a_nul_unit() -> None:
    assert from_utf16_field(b"h\0i\0\0\0x\0") == "hi"
    assert from_utf16_field(b"h\0i\0") == "hi"
    assert from_utf16_field(b"") == ""


def test_from_utf16_field_ignores_nul_bytes_that_straddle_two_units() -> None:
    # U+0001 U+0100 is 01 00 00 01: a "00 00" at offset 1 is no terminator.
    straddling = "\u0001\u0100".encode("utf-16-le")
    assert straddling == b"\x01\x00\x00\x01"
    assert from_utf16_field(straddling + b"\0\0z\0") == "\u0001\u0100"
    # Same again after an aligned "00 00" is found past it.
    assert from_utf16_field(straddling + b"\x01\x00\x00\x01") == "\u0001\u0100" * 2


def test_from_utf16_field_decodes_surrogate_pairs() -> None:
    assert from_utf16_field("\U0001f600!".encode("utf-16-le")) == "\U0001f600!"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\xd8",  # lone high surrogate
        b"\x00\xdca\x00",  # lone low surrogate
        b"\x00\xdc\x00\xd8",  # reversed pair
    ],
)
def test_from_utf16_field_refuses_unpaired_surrogates(raw: bytes) -> None:
    with pytest.raises(ValueError, match="invalid UTF-16"):
        from_utf16_field(raw)


def test_from_utf16_field_refuses_an_odd_length() -> None:
    with pytest.raises(ValueError, match="odd"):
        from_utf16_field(b"a\0b")


def test_utf16_round_trip() -> None:
    for text in ("", "path/to/file.txt", "Grüße \U0001f600", "x" * 259):
        assert from_utf16_field(utf16_field(text, 260)) == text
