"""Hypothesis properties of the FCOPY char-device codec.

(a) any bytes decode to a request or raise WireError, nothing else; (b) the
same for datagrams of the real sizes with a real operation, to get past the
size and operation checks; (c) START and WRITE built field by field with the
ctypes mirror decode to the same fields.
"""

from __future__ import annotations

import ctypes

from hypothesis import given
from hypothesis import strategies as st

from hvguest.abi.structs import FCOPY_START_SIZE, FCOPY_WRITE_SIZE, hv_do_fcopy, hv_start_fcopy
from hvguest.errors import WireError
from hvguest.protocol.fcopy import FcopyCodec
from hvguest.protocol.fcopy_messages import (
    FcopyCancel,
    FcopyComplete,
    FcopyRequest,
    FcopyStart,
    FcopyWrite,
)

codec = FcopyCodec()


def decodes_or_wire_error(datagram: bytes) -> FcopyRequest | None:
    try:
        request = codec.decode_request(datagram)
    except WireError:
        return None
    assert isinstance(request, FcopyStart | FcopyWrite | FcopyComplete | FcopyCancel)
    return request


@given(st.binary(max_size=7000))
def test_arbitrary_bytes_decode_or_raise_wire_error(datagram: bytes) -> None:
    decodes_or_wire_error(datagram)


@given(
    st.sampled_from([0, 1, 2, 3, 4]),
    st.sampled_from([FCOPY_START_SIZE, FCOPY_WRITE_SIZE, 36, 64]),
    st.binary(min_size=0, max_size=64),
    st.integers(min_value=0, max_value=7000),
)
def test_real_sizes_with_noise_decode_or_raise_wire_error(
    operation: int, size: int, noise: bytes, where: int
) -> None:
    datagram = bytearray(size)
    datagram[0:4] = operation.to_bytes(4, "little")
    at = min(where, max(0, size - len(noise)))
    datagram[at : at + len(noise)] = noise[: size - at]
    decodes_or_wire_error(bytes(datagram[:size]))


names = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=60
).filter(lambda text: len(text.encode("utf-8")) <= 519)


@given(names, names, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_start_fields_roundtrip_through_the_ctypes_mirror(
    file_name: str, path_name: str, flags: int, size: int
) -> None:
    # The kernel writes UTF-8 byte-wise into the __u16 arrays: fill them as bytes.
    raw = bytearray(FCOPY_START_SIZE)
    encoded_file, encoded_path = file_name.encode("utf-8"), path_name.encode("utf-8")
    raw[36 : 36 + len(encoded_file)] = encoded_file
    raw[556 : 556 + len(encoded_path)] = encoded_path
    message = hv_start_fcopy.from_buffer(raw)
    message.hdr.operation = 0
    message.copy_flags = flags
    message.file_size = size
    assert codec.decode_request(bytes(raw)) == FcopyStart(file_name, path_name, flags, size)


@given(st.integers(0, 2**64 - 1), st.binary(max_size=6144))
def test_write_fields_roundtrip_through_the_ctypes_mirror(offset: int, data: bytes) -> None:
    message = hv_do_fcopy()
    message.hdr.operation = 1
    message.offset = offset
    message.size = len(data)
    ctypes.memmove(message.data, data, len(data))
    request = codec.decode_request(bytes(message))
    assert isinstance(request, FcopyWrite)
    assert request.offset == offset
    assert bytes(request.data) == data
