"""Fixed-width, NUL-padded text fields of the hyperv.h messages, encoded strictly.

The C daemons read these fields with ``strcpy``/``strlen`` and write them with
``memcpy`` into stack buffers, and tools/hv/hv_fcopy_daemon.c's
``wcstoutf8`` turns every non-ASCII UTF-16 unit into 'X'. Here a field either
holds exactly what was asked for, or the call raises ``ValueError``: nothing is
silently truncated, mangled or left with stale bytes.

Two shapes exist on the wire:

* byte fields (``__u8 key[512]``, and the ``__u16`` arrays into which the
  kernel writes UTF-8 *byte-wise*): ``c_string`` / ``terminated_c_string`` /
  ``pad``;
* real UTF-16LE fields (``__u16 file_name[W_MAX_PATH]`` as the host sends it):
  ``utf16_field`` / ``from_utf16_field``.

Pure functions over ``bytes``; callers decide which ``ValueError`` becomes
which Hyper-V status.
"""

from __future__ import annotations

from typing import Final

_NUL: Final = b"\0"
_UTF16_UNIT: Final = 2
_NUL_UNIT: Final = _NUL * _UTF16_UNIT


def c_string(field: bytes) -> bytes:
    """The bytes of ``field`` before its first NUL, or the whole field if it has none.

    This is what C's ``strnlen(field, sizeof field)`` sees; a full field
    without a terminator is legal in pool records (a 512-byte key).
    """
    return field.partition(_NUL)[0]


def terminated_c_string(field: bytes) -> bytes:
    """The bytes of ``field`` before its first NUL; ``ValueError`` if there is none.

    For fields the kernel always terminates (it zero-fills the message and
    converts at most size-1 bytes), so a missing NUL means the message is not
    what the kernel sends.
    """
    value, nul, _ = field.partition(_NUL)
    if not nul:
        raise ValueError(f"{len(field)}-byte field has no NUL terminator")
    return value


def pad(value: bytes, size: int, *, allow_full: bool = False) -> bytes:
    """``value`` followed by NUL bytes up to exactly ``size`` bytes.

    The field must hold the value *and* its NUL, so ``len(value) <= size - 1``;
    with ``allow_full`` a value of exactly ``size`` bytes is stored without a
    terminator (what the pool file format and the ENUMERATE reply allow). A
    value containing a NUL would be cut short by every C reader, so it is
    refused rather than silently truncated.
    """
    if _NUL in value:
        raise ValueError(f"value contains a NUL byte at {value.index(_NUL)}")
    limit = size if allow_full else size - 1
    if len(value) > limit:
        raise ValueError(f"{len(value)} bytes do not fit a {size}-byte field (at most {limit})")
    return value.ljust(size, _NUL)


def utf16_field(text: str, units: int, *, allow_full: bool = False) -> bytes:
    """``text`` as UTF-16LE plus a NUL unit, zero-padded to ``units`` 16-bit units.

    Characters outside the BMP take two units (a surrogate pair). Lone
    surrogates in ``text`` cannot be encoded and raise ``ValueError``, as do
    NUL characters and text that does not fit (``units - 1`` units, or
    ``units`` with ``allow_full``).
    """
    if "\0" in text:
        raise ValueError(f"text contains a NUL character at {text.index(chr(0))}")
    try:
        encoded = text.encode("utf-16-le")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not encodable as UTF-16: {exc.reason}") from exc
    used = len(encoded) // _UTF16_UNIT
    limit = units if allow_full else units - 1
    if used > limit:
        raise ValueError(f"{used} UTF-16 units do not fit a {units}-unit field (at most {limit})")
    return encoded.ljust(units * _UTF16_UNIT, _NUL)


def from_utf16_field(raw: bytes) -> str:
    """The text of a UTF-16LE field, up to its first NUL unit (or the whole field).

    Unlike the kernel's ``utf16s_to_utf8s``, which skips unpaired surrogates
    silently, an unpaired or reversed surrogate raises ``ValueError``; so does
    an odd byte count, which no ``__u16`` array can have.
    """
    if len(raw) % _UTF16_UNIT:
        raise ValueError(f"a UTF-16 field cannot be {len(raw)} bytes long (odd)")
    # Only a NUL pair on a unit boundary ends the text: b"\x00\x00" at an odd
    # offset is the high byte of one character and the low byte of the next.
    end = raw.find(_NUL_UNIT)
    while end > 0 and end % _UTF16_UNIT:
        end = raw.find(_NUL_UNIT, end + 1)
    if end < 0:
        end = len(raw)
    try:
        return raw[:end].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-16 at byte {exc.start}: {exc.reason}") from exc
