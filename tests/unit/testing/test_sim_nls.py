"""The kernel's UTF-16 <-> UTF-8 rules (fs/nls/nls_base.c) against Python's codecs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvguest.testing.nls import InvalidUtf8Error, utf8s_to_utf16s, utf16s_to_utf8s

# Text the kernel and Python agree on: no NUL (both stop there) and no lone surrogates.
clean_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"))
BIG = 1 << 20


def units(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def unit_count(text: str) -> int:
    return len(units(text)) // 2


@given(clean_text)
def test_utf16_to_utf8_agrees_with_codecs(text: str) -> None:
    assert utf16s_to_utf8s(units(text), unit_count(text), BIG) == text.encode()


@given(clean_text)
def test_utf8_to_utf16_agrees_with_codecs(text: str) -> None:
    data = text.encode()
    assert utf8s_to_utf16s(data, len(data), BIG) == units(text)


@given(clean_text, st.integers(min_value=0, max_value=40))
def test_utf16_to_utf8_truncates_to_whole_characters(text: str, maxout: int) -> None:
    expected = b""
    for char in text:
        if len(expected) + len(char.encode()) > maxout:
            break  # the kernel stops at the first character that does not fit
        expected += char.encode()
    assert utf16s_to_utf8s(units(text), unit_count(text), maxout) == expected


@given(clean_text, st.integers(min_value=0, max_value=40))
def test_utf8_to_utf16_truncates_to_whole_characters(text: str, maxout: int) -> None:
    expected = b""
    for char in text:
        if len(expected) // 2 + len(units(char)) // 2 > maxout:
            break  # a pair needing two units with one left stops too
        expected += units(char)
    data = text.encode()
    assert utf8s_to_utf16s(data, len(data), maxout) == expected


@given(st.lists(st.integers(min_value=1, max_value=0xFFFF), max_size=40))
def test_utf16_to_utf8_drops_every_unpaired_surrogate(raw_units: list[int]) -> None:
    data = b"".join(unit.to_bytes(2, "little") for unit in raw_units)
    decoded = data.decode("utf-16-le", "surrogatepass")  # pairs combine, strays stay
    expected = "".join(c for c in decoded if not 0xD800 <= ord(c) <= 0xDFFF).encode()
    assert utf16s_to_utf8s(data, len(raw_units), BIG) == expected


def test_utf16_to_utf8_stops_at_a_nul_unit() -> None:
    assert utf16s_to_utf8s(units("ab\0cd"), 5, BIG) == b"ab"


def test_utf16_to_utf8_reads_at_most_inlen_units_and_a_pair_counts_two() -> None:
    assert utf16s_to_utf8s(units("abcd"), 2, BIG) == b"ab"
    assert utf16s_to_utf8s(units("\U0001f600x"), 2, BIG) == "\U0001f600".encode()
    assert utf16s_to_utf8s(units("abcd"), 0, BIG) == b""
    assert utf16s_to_utf8s(units("abcd"), -1, BIG) == b""  # a u32 size >= 2**31 as C int


def test_utf16_to_utf8_never_reads_past_the_buffer() -> None:
    assert utf16s_to_utf8s(units("ab"), 1000, BIG) == b"ab"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\udc00b", b"ab"),  # lone low surrogate skipped
        ("x\ud800y", b"xy"),  # high surrogate followed by a non-surrogate skipped
        ("a\udc00\ud800b", b"ab"),  # reversed pair: both skipped
        ("a\ud83d\ude00", "a\U0001f600".encode()),  # a pair is one 4-byte character
        ("a\ud800", b"a"),  # high surrogate as the last unit ends the conversion
    ],
)
def test_utf16_to_utf8_surrogate_rules(text: str, expected: bytes) -> None:
    assert utf16s_to_utf8s(units(text), unit_count(text), BIG) == expected


def test_utf16_to_utf8_high_surrogate_at_inlen_stops_even_if_a_low_follows() -> None:
    assert utf16s_to_utf8s(units("a\ud83d\ude00"), 2, BIG) == b"a"


def test_utf16_to_utf8_stops_at_a_character_that_does_not_fit() -> None:
    # Since 6.19 a character that does not fit ends the conversion (-EOVERFLOW),
    # so the ASCII after the euro sign is not squeezed in.
    assert utf16s_to_utf8s(units("ab€c"), 4, 4) == b"ab"


@pytest.mark.parametrize(
    "bad",
    [
        b"\xc0\x80",  # overlong NUL
        b"\xe0\x80\xaf",  # overlong
        b"\xed\xa0\x80",  # encoded surrogate
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b"\xf8\x88\x80\x80\x80",  # 5-byte sequence
        b"\x80",  # stray continuation byte
        b"\xff",
        b"\xe2\x82",  # truncated sequence
        b"\xe2(\xac",  # bad continuation
    ],
)
def test_utf8_to_utf16_rejects_invalid_sequences(bad: bytes) -> None:
    data = b"ok" + bad + b"tail"
    with pytest.raises(InvalidUtf8Error) as raised:
        utf8s_to_utf16s(data, len(data), BIG)
    # The kernel writes as it goes: the units before the error are in the output buffer.
    assert raised.value.partial == units("ok")


def test_utf8_to_utf16_ignores_invalid_bytes_beyond_the_limits() -> None:
    assert utf8s_to_utf16s(b"ab\xff", 2, BIG) == units("ab")  # inlen
    assert utf8s_to_utf16s(b"ab\xff", 3, 2) == units("ab")  # maxout
    assert utf8s_to_utf16s(b"ab\0\xff", 4, BIG) == units("ab")  # NUL


def test_utf8_to_utf16_supplementary_character_needs_two_units() -> None:
    data = "a\U0001f600".encode()
    assert utf8s_to_utf16s(data, len(data), 2) == units("a")
    assert utf8s_to_utf16s(data, len(data), 3) == units("a\U0001f600")
