"""hvguest.protocol.fcopy: golden datagrams built at the offsets of protocol.md section 1.3.

Offsets are literal numbers on purpose: the codec takes its own from the
ctypes mirror, so agreement here cross-checks the mirror too.
"""

from __future__ import annotations

import struct

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.errors import WireError
from hvguest.protocol.channel import Channel, KernelVersion, Malformed
from hvguest.protocol.fcopy import FcopyCodec
from hvguest.protocol.fcopy_messages import (
    FcopyCancel,
    FcopyComplete,
    FcopyStart,
    FcopyWrite,
)

codec = FcopyCodec()


def start(
    file_name: bytes = b"a.txt", path_name: bytes = b"/tmp", flags: int = 0, size: int = 10
) -> bytes:
    message = bytearray(1088)
    struct.pack_into("<I", message, 0, 0)
    message[36 : 36 + len(file_name)] = file_name
    message[556 : 556 + len(path_name)] = path_name
    struct.pack_into("<IQ", message, 1076, flags, size)
    return bytes(message)


def write(offset: int, data: bytes, size: int | None = None) -> bytes:
    message = bytearray(6196)
    struct.pack_into("<I", message, 0, 1)
    struct.pack_into("<QI", message, 40, offset, len(data) if size is None else size)
    message[52 : 52 + len(data)] = data
    return bytes(message)


def bare(operation: int, length: int = 64) -> bytes:
    return struct.pack("<I", operation).ljust(length, b"\xaa")


def test_registration_is_a_bare_version_1() -> None:
    assert codec.registration() == b"\x01\x00\x00\x00"


def test_version_answer_1_is_accepted() -> None:
    assert codec.decode_version(b"\x01\x00\x00\x00") == KernelVersion("1")


@pytest.mark.parametrize("answer", [b"\x00\x00\x00\x00", b"\x02\x00\x00\x00", b"\x01\x00", b""])
def test_other_version_answers_are_wire_errors(answer: bytes) -> None:
    with pytest.raises(WireError):
        codec.decode_version(answer)


def test_start_decodes_utf8_names_flags_and_size() -> None:
    name = "Grüße 報告 📄.txt".encode()
    request = codec.decode_request(start(name, "/srv/ünï".encode(), flags=3, size=1 << 40))
    assert request == FcopyStart("Grüße 報告 📄.txt", "/srv/ünï", 3, 1 << 40)
    assert isinstance(request, FcopyStart)
    assert request.overwrite
    assert request.create_path


def test_start_accepts_names_of_519_bytes_plus_nul() -> None:
    request = codec.decode_request(start(b"n" * 519, b"/" + b"p" * 518))
    assert isinstance(request, FcopyStart)
    assert len(request.file_name) == 519


def test_start_without_nul_in_a_name_is_refused() -> None:
    with pytest.raises(WireError, match="file_name has no NUL") as caught:
        codec.decode_request(start(b"n" * 520))
    assert caught.value.status is HvStatus.E_FAIL
    with pytest.raises(WireError, match="path_name has no NUL"):
        codec.decode_request(start(path_name=b"p" * 520))


def test_start_with_invalid_utf8_is_refused() -> None:
    with pytest.raises(WireError, match="not UTF-8 at byte 1"):
        codec.decode_request(start(b"a\xff.txt"))


@pytest.mark.parametrize("length", [1087, 1089, 36, 4])
def test_start_of_the_wrong_size_is_refused(length: int) -> None:
    datagram = start()[:length].ljust(length, b"\0")
    with pytest.raises(WireError, match="START is"):
        codec.decode_request(datagram)


def test_write_decodes_offset_and_a_view_of_the_data() -> None:
    datagram = write(1 << 33, b"hello")
    request = codec.decode_request(datagram)
    assert isinstance(request, FcopyWrite)
    assert request.offset == 1 << 33
    assert isinstance(request.data, memoryview)
    assert request.data.obj is datagram  # zero-copy: a window on the datagram
    assert bytes(request.data) == b"hello"


def test_write_of_a_full_fragment_and_of_nothing() -> None:
    full = codec.decode_request(write(0, b"x" * 6144))
    empty = codec.decode_request(write(0, b""))
    assert isinstance(full, FcopyWrite)
    assert isinstance(empty, FcopyWrite)
    assert len(full.data) == 6144
    assert len(empty.data) == 0


def test_write_size_above_a_fragment_is_refused() -> None:
    with pytest.raises(WireError, match="size 6145 exceeds 6144"):
        codec.decode_request(write(0, b"", size=6145))


@pytest.mark.parametrize("length", [6195, 6197, 64])
def test_write_of_the_wrong_size_is_refused(length: int) -> None:
    with pytest.raises(WireError, match="WRITE_TO_FILE is"):
        codec.decode_request(write(0, b"x")[:length].ljust(length, b"\0"))


@pytest.mark.parametrize("length", [36, 64, 100])
def test_complete_and_cancel_carry_any_length_from_the_header_on(length: int) -> None:
    assert codec.decode_request(bare(2, length)) == FcopyComplete()
    assert codec.decode_request(bare(3, length)) == FcopyCancel()


def test_complete_and_cancel_shorter_than_the_header_are_refused() -> None:
    with pytest.raises(WireError, match="COMPLETE_FCOPY is 35 bytes"):
        codec.decode_request(bare(2, 35))
    with pytest.raises(WireError, match="CANCEL_FCOPY is 4 bytes"):
        codec.decode_request(bare(3, 4))


@pytest.mark.parametrize("operation", [4, 100, 0xFFFFFFFF])
def test_unknown_operations_are_refused(operation: int) -> None:
    with pytest.raises(WireError, match=f"operation {operation} is unknown"):
        codec.decode_request(bare(operation))


@pytest.mark.parametrize("datagram", [b"", b"\x00", b"\x01\x00\x00"])
def test_datagrams_too_short_for_an_operation_are_refused(datagram: bytes) -> None:
    with pytest.raises(WireError, match="too short"):
        codec.decode_request(datagram)


@pytest.mark.parametrize("status", list(HvStatus))
def test_replies_are_the_bare_status(status: HvStatus) -> None:
    assert codec.encode_reply(b"ignored", status) == struct.pack("<I", status)
    assert codec.encode_failure(b"ignored", status) == struct.pack("<I", status)


def test_a_channel_with_the_codec_answers_malformed_requests_with_e_fail() -> None:
    channel = Channel(codec)
    assert channel.registration() == b"\x01\x00\x00\x00"
    assert channel.receive(b"\x01\x00\x00\x00") == KernelVersion("1")
    event = channel.receive(bare(9))
    assert isinstance(event, Malformed)
    assert channel.reply_failure(event.error.status) == struct.pack("<I", HvStatus.E_FAIL)
    assert channel.receive(bare(3)) == FcopyCancel()
    assert channel.reply(HvStatus.S_OK) == b"\0\0\0\0"
