"""hvguest.protocol.fcopy_uio: IC framing, negotiation and FCOPY decoding (protocol.md 1.2, 6.4).

Packets are built with the host-side helpers of hvguest.testing.uio_sim, and
checked at literal offsets: icmsg status at 20, icflags at 25, icmsgsize at 18.
"""

from __future__ import annotations

import struct

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.protocol.fcopy_messages import FcopyCancel, FcopyComplete, FcopyStart, FcopyWrite
from hvguest.protocol.fcopy_uio import (
    CopyRequest,
    Negotiation,
    Rejected,
    Unanswerable,
    decode_packet,
    set_reply_status,
)
from hvguest.testing.uio_sim import (
    header_message,
    negotiate_message,
    start_message,
    util_packet,
    write_message,
)

E_FAIL = int(HvStatus.E_FAIL)


def status_of(packet: bytearray) -> int:
    return int(struct.unpack_from("<I", packet, 20)[0])


def negotiate_packet(
    frameworks: tuple[tuple[int, int], ...], services: tuple[tuple[int, int], ...]
) -> bytearray:
    return bytearray(util_packet(0, negotiate_message(frameworks, services)))


def negotiated_versions(packet: bytearray) -> tuple[tuple[int, int], ...]:
    counts = struct.unpack_from("<HH", packet, 28)
    first = struct.unpack_from("<HH", packet, 36)
    second = struct.unpack_from("<HH", packet, 40)
    return counts, first, second


# --- negotiation -----------------------------------------------------------------------


def test_negotiation_picks_framework_3_0_and_fcopy_1_1_from_the_host_lists() -> None:
    packet = negotiate_packet(((1, 0), (3, 0)), ((1, 0), (1, 1)))
    event = decode_packet(packet)
    assert event == Negotiation(framework=(3, 0), service=(1, 1))
    assert event.ok
    assert status_of(packet) == 0
    assert packet[25] == 5  # TRANSACTION | RESPONSE
    assert struct.unpack_from("<H", packet, 18) == (0x10,)
    assert negotiated_versions(packet) == ((1, 1), (3, 0), (1, 1))


def test_negotiation_without_a_common_framework_fails_with_host_counts_as_artefact() -> None:
    packet = negotiate_packet(((1, 0), (2, 0)), ((1, 1),))
    event = decode_packet(packet)
    assert event == Negotiation(framework=None, service=None)
    assert not event.ok
    assert status_of(packet) == E_FAIL
    assert packet[25] == 5
    assert negotiated_versions(packet) == ((0, 0), (2, 0), (1, 0))


def test_negotiation_without_a_common_fcopy_version_fails() -> None:
    packet = negotiate_packet(((3, 0),), ((1, 0), (2, 0), (3, 0)))
    event = decode_packet(packet)
    assert isinstance(event, Negotiation)
    assert not event.ok
    assert status_of(packet) == E_FAIL
    assert negotiated_versions(packet) == ((0, 0), (3, 0), (3, 0))


def test_negotiation_with_more_than_100_versions_fails() -> None:
    packet = negotiate_packet(((3, 0),) * 101, ((1, 1),))
    assert not decode_packet(packet).ok  # type: ignore[union-attr]
    assert status_of(packet) == E_FAIL


def test_negotiation_listing_more_versions_than_the_packet_holds_fails() -> None:
    packet = negotiate_packet(((3, 0),), ((1, 1),))
    struct.pack_into("<H", packet, 30, 5)  # claims 5 service versions, carries 1
    assert not decode_packet(packet).ok  # type: ignore[union-attr]
    assert status_of(packet) == E_FAIL


def test_negotiation_too_short_for_the_counts_is_answered_with_failure() -> None:
    packet = bytearray(util_packet(0, b"\x01"))
    before = bytes(packet[26:])
    assert decode_packet(packet) == Negotiation(None, None)
    assert status_of(packet) == E_FAIL
    assert packet[25] == 5
    assert bytes(packet[26:]) == before


# --- FCOPY messages --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["plain.txt", "café-naïve.txt", "日本語のファイル.bin", "emoji-\U0001f600-𝄞.dat", "a" * 259],
)
def test_start_names_decode_from_utf16_exactly(name: str) -> None:
    packet = bytearray(
        util_packet(7, start_message("/srv/ünïcode/目录", name, flags=3, file_size=2**40 + 5))
    )
    event = decode_packet(packet)
    assert event == CopyRequest(
        FcopyStart(file_name=name, path_name="/srv/ünïcode/目录", copy_flags=3, file_size=2**40 + 5)
    )
    assert status_of(packet) == E_FAIL  # pre-set until the writer answers


@pytest.mark.parametrize(
    "raw",
    [
        b"b\x00\x00\xd8n\x00",  # lone high surrogate
        b"b\x00\x00\xdcn\x00",  # lone low surrogate
        b"\x00\xdc\x00\xd8",  # reversed pair
    ],
)
def test_start_with_lone_surrogates_is_rejected_not_mangled(raw: bytes) -> None:
    packet = bytearray(util_packet(7, start_message("/tmp", raw, file_size=1)))
    event = decode_packet(packet)
    assert isinstance(event, Rejected)
    assert "file_name is not valid UTF-16" in str(event.error)
    assert event.error.status == HvStatus.E_FAIL
    assert status_of(packet) == E_FAIL
    assert packet[25] == 5


def test_start_with_bad_path_name_names_the_field() -> None:
    raw = "x\ud800".encode("utf-16-le", "surrogatepass")
    event = decode_packet(bytearray(util_packet(7, start_message(raw, "f", file_size=1))))
    assert isinstance(event, Rejected)
    assert "path_name" in str(event.error)


def test_start_name_filling_the_whole_field_is_taken_whole() -> None:
    name = "n" * 260
    event = decode_packet(bytearray(util_packet(7, start_message("/tmp", name, file_size=0))))
    assert isinstance(event, CopyRequest)
    assert isinstance(event.request, FcopyStart)
    assert event.request.file_name == name


def test_short_start_is_rejected() -> None:
    event = decode_packet(bytearray(util_packet(7, start_message("/t", "f")[:1000])))
    assert isinstance(event, Rejected)
    assert "START_FILE_COPY of 1000 bytes" in str(event.error)


def test_write_carries_offset_and_a_view_of_the_data() -> None:
    data = bytes(range(256)) * 24
    packet = bytearray(util_packet(7, write_message(123456789, data)))
    event = decode_packet(packet)
    assert isinstance(event, CopyRequest)
    request = event.request
    assert isinstance(request, FcopyWrite)
    assert request.offset == 123456789
    assert bytes(request.data) == data
    assert isinstance(request.data, memoryview)


def test_write_of_a_short_fragment_takes_only_its_size() -> None:
    event = decode_packet(bytearray(util_packet(7, write_message(0, b"tail"))))
    assert isinstance(event, CopyRequest)
    assert isinstance(event.request, FcopyWrite)
    assert bytes(event.request.data) == b"tail"


def test_write_larger_than_a_fragment_is_rejected_not_read_past() -> None:
    packet = bytearray(util_packet(7, write_message(0, b"x", size=6145)))
    event = decode_packet(packet)
    assert isinstance(event, Rejected)
    assert "at most 6144" in str(event.error)
    assert status_of(packet) == E_FAIL


def test_write_claiming_more_than_it_carries_is_rejected() -> None:
    event = decode_packet(bytearray(util_packet(7, write_message(0, b"abc", size=100)[:60])))
    assert isinstance(event, Rejected)
    assert "carries" in str(event.error)


def test_write_without_its_fields_is_rejected() -> None:
    event = decode_packet(bytearray(util_packet(7, write_message(0, b"abc")[:40])))
    assert isinstance(event, Rejected)


@pytest.mark.parametrize(("operation", "expected"), [(2, FcopyComplete()), (3, FcopyCancel())])
def test_complete_and_cancel_decode(operation: int, expected: object) -> None:
    assert decode_packet(bytearray(util_packet(7, header_message(operation)))) == CopyRequest(
        expected  # type: ignore[arg-type]
    )


def test_unknown_operation_is_rejected() -> None:
    event = decode_packet(bytearray(util_packet(7, header_message(4))))
    assert isinstance(event, Rejected)
    assert "unknown FCOPY operation 4" in str(event.error)


def test_fcopy_header_cut_short_is_rejected() -> None:
    packet = bytearray(util_packet(7, header_message(2)[:20]))
    event = decode_packet(packet)
    assert isinstance(event, Rejected)
    assert status_of(packet) == E_FAIL


@pytest.mark.parametrize("icmsgtype", [1, 2, 3, 5, 9, 0xFFFF])
def test_other_message_types_are_answered_with_failure(icmsgtype: int) -> None:
    packet = bytearray(util_packet(icmsgtype, header_message(2)))
    event = decode_packet(packet)
    assert isinstance(event, Rejected)
    assert status_of(packet) == E_FAIL
    assert packet[25] == 5


def test_packet_without_an_icmsg_header_cannot_be_answered_and_is_left_alone() -> None:
    packet = bytearray(b"\x07" * 27)
    assert decode_packet(packet) == Unanswerable(27)
    assert packet == bytearray(b"\x07" * 27)


def test_reply_status_sets_status_and_response_flags_and_keeps_the_rest() -> None:
    packet = bytearray(util_packet(7, header_message(2), transaction=9))
    original = bytes(packet)
    set_reply_status(packet, HvStatus.ERROR_DISK_FULL)
    assert status_of(packet) == 0x80070070
    assert packet[25] == 5
    changed = [i for i in range(len(packet)) if packet[i] != original[i]]
    assert set(changed) <= {20, 21, 22, 23, 25}
    assert packet[24] == 9  # ictransaction_id echoed
