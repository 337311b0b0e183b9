"""The kernel's UTF-16 <-> UTF-8 conversions, rule for rule (fs/nls/nls_base.c).

Python counterparts of utf16s_to_utf8s() and utf8s_to_utf16s() as
drivers/hv/hv_kvp.c calls them: host strings arrive as UTF-16LE and go to the
daemon as UTF-8; daemon answers go back as UTF-16LE. The rules differ from
Python's codecs where it matters for a faithful simulator:

* UTF-16 -> UTF-8 stops at a NUL unit, after ``inlen`` units, or when the next
  character does not fit in what is left of ``maxout`` bytes (never a partial
  character). Unpaired or reversed surrogates are skipped silently; a high
  surrogate as the very last input unit ends the conversion.
* UTF-8 -> UTF-16 stops at a NUL byte, after ``inlen`` bytes, or when ``maxout``
  units are used; a supplementary character that needs two units when one is
  left ends the conversion. Any invalid sequence met before that aborts the
  whole conversion (the kernel returns -EINVAL) - although the units converted
  so far have already been written to the output buffer, which
  :class:`InvalidUtf8Error` carries as ``partial``.

Both functions try Python's codecs first and fall back to a unit-by-unit walk
only when a string is invalid or has to be truncated, so the common case stays
cheap. Output is bytes without a terminator, as in C.
"""

from __future__ import annotations

import struct
from typing import Final

_PLANE_SIZE: Final = 0x10000
_UNICODE_MAX: Final = 0x10FFFF
_SURROGATE_MASK: Final = 0xFFFFF800
_SURROGATE_PAIR: Final = 0xD800
_SURROGATE_LOW: Final = 0x0400
_SURROGATE_BITS: Final = 0x03FF

#: utf8_table of nls_base.c: (cmask, cval, lmask, lval) per sequence length 1..6.
_UTF8_TABLE: Final = (
    (0x80, 0x00, 0x7F, 0),
    (0xE0, 0xC0, 0x7FF, 0x80),
    (0xF0, 0xE0, 0xFFFF, 0x800),
    (0xF8, 0xF0, 0x1FFFFF, 0x10000),
    (0xFC, 0xF8, 0x3FFFFFF, 0x200000),
    (0xFE, 0xFC, 0x7FFFFFFF, 0x4000000),
)

_UNIT: Final = struct.Struct("<H")
_PAIR: Final = struct.Struct("<HH")

Buffer = bytes | bytearray | memoryview


class InvalidUtf8Error(ValueError):
    """utf8s_to_utf16s() met an invalid sequence (the kernel's -EINVAL).

    ``partial`` holds the UTF-16LE units written before the error: the kernel
    writes as it goes, so they land in the host's buffer anyway.
    """

    def __init__(self, partial: bytes) -> None:
        super().__init__("invalid UTF-8 sequence")
        self.partial = partial


def utf16s_to_utf8s(src: Buffer, inlen: int, maxout: int) -> bytes:
    """Convert at most ``inlen`` UTF-16LE units of ``src`` into at most ``maxout`` bytes.

    ``src`` may be longer than ``inlen`` units (the kernel gets a pointer into
    its receive buffer); it is never read past its end.
    """
    count = min(inlen, len(src) // 2)
    if count <= 0 or maxout <= 0:
        return b""
    text = bytes(src[: 2 * count]).decode("utf-16-le", "surrogatepass")
    nul = text.find("\0")
    if nul >= 0:
        text = text[:nul]
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        pass  # a lone or reversed surrogate: the slow path skips it like the kernel
    else:
        if len(encoded) <= maxout:
            return encoded
    units = struct.unpack_from(f"<{count}H", src)
    return _utf16_units_to_utf8(units, maxout)


def _utf16_units_to_utf8(units: tuple[int, ...], maxout: int) -> bytes:
    """The unit-by-unit loop of utf16s_to_utf8s()."""
    out = bytearray()
    i, count = 0, len(units)
    while i < count and maxout > 0:
        u = units[i]
        if u == 0:
            break
        i += 1
        if u <= 0x7F:
            out.append(u)
            maxout -= 1
            continue
        if (u & _SURROGATE_MASK) == _SURROGATE_PAIR:
            if u & _SURROGATE_LOW:
                continue  # low surrogate without a high one: skipped
            if i >= count:
                break  # high surrogate as the last unit: the kernel stops
            v = units[i]
            if (v & _SURROGATE_MASK) != _SURROGATE_PAIR or not v & _SURROGATE_LOW:
                continue  # high surrogate not followed by a low one: skipped
            u = _PLANE_SIZE + ((u & _SURROGATE_BITS) << 10) + (v & _SURROGATE_BITS)
            i += 1
        # u is now a valid scalar value, so utf32_to_utf8() can only fail with
        # -EOVERFLOW (does not fit), which since 6.19 stops the conversion.
        encoded = chr(u).encode("utf-8")
        if len(encoded) > maxout:
            break
        out += encoded
        maxout -= len(encoded)
    return bytes(out)


def utf8s_to_utf16s(src: Buffer, inlen: int, maxout: int) -> bytes:
    """Convert at most ``inlen`` bytes of UTF-8 into at most ``maxout`` UTF-16LE units.

    Raises :class:`InvalidUtf8Error` for an invalid sequence met before a limit.
    """
    count = min(inlen, len(src))
    if count <= 0 or maxout <= 0:
        return b""
    data = bytes(src[:count])
    nul = data.find(b"\0")
    if nul >= 0:
        data = data[:nul]
    try:
        encoded = data.decode("utf-8").encode("utf-16-le")
    except UnicodeDecodeError:
        pass  # may still succeed if the bad bytes lie beyond the output limit
    else:
        if len(encoded) <= 2 * maxout:
            return encoded
    return _utf8_to_utf16_units(data, maxout)


def _utf8_to_utf16_units(data: bytes, maxout: int) -> bytes:
    """The byte-by-byte loop of utf8s_to_utf16s(); ``data`` holds no NUL."""
    out = bytearray()
    i, count = 0, len(data)
    while i < count and maxout > 0:
        c = data[i]
        if not c & 0x80:
            out += _UNIT.pack(c)
            i += 1
            maxout -= 1
            continue
        size, u = _utf8_to_utf32(data, i, count - i)
        if size < 0:
            raise InvalidUtf8Error(bytes(out))
        i += size
        if u >= _PLANE_SIZE:
            if maxout < 2:
                break
            u -= _PLANE_SIZE
            high = _SURROGATE_PAIR | ((u >> 10) & _SURROGATE_BITS)
            low = _SURROGATE_PAIR | _SURROGATE_LOW | (u & _SURROGATE_BITS)
            out += _PAIR.pack(high, low)
            maxout -= 2
        else:
            out += _UNIT.pack(u)
            maxout -= 1
    return bytes(out)


def _utf8_to_utf32(data: bytes, start: int, inlen: int) -> tuple[int, int]:
    """utf8_to_utf32(): (sequence length, code point), or (-1, 0) if invalid."""
    c0 = data[start]
    value = c0
    for length, (cmask, cval, lmask, lval) in enumerate(_UTF8_TABLE, start=1):
        if (c0 & cmask) == cval:
            value &= lmask
            if value < lval or value > _UNICODE_MAX or (value & _SURROGATE_MASK) == _SURROGATE_PAIR:
                return -1, 0
            return length, value
        if inlen <= length:
            return -1, 0
        c = (data[start + length] ^ 0x80) & 0xFF
        if c & 0xC0:
            return -1, 0
        value = (value << 6) | c
    return -1, 0
