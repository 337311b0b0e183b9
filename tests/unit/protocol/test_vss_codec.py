"""VssCodec: registration, the kernel's version answer, requests and replies byte by byte."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvguest.abi.constants import VSS_HBU_NO_AUTO_RECOVERY, HvStatus, VssOp
from hvguest.abi.structs import VSS_MSG_SIZE, hv_vss_msg
from hvguest.errors import WireError
from hvguest.protocol.channel import Channel, KernelVersion, Malformed
from hvguest.protocol.vss import (
    VssCodec,
    VssFreeze,
    VssHotBackup,
    VssOther,
    VssReply,
    VssThaw,
)

CODEC = VssCodec()


def request(operation: int) -> bytes:
    return bytes([operation]) + bytes(VSS_MSG_SIZE - 1)


def test_registration_is_a_12_byte_register1_message() -> None:
    message = hv_vss_msg.from_buffer_copy(CODEC.registration())
    assert len(CODEC.registration()) == 12
    assert message.vss_hdr.operation == 129
    assert bytes(CODEC.registration())[1:] == bytes(11)


def test_version_answer_is_a_bare_u32_129() -> None:
    assert CODEC.decode_version(struct.pack("<I", 129)) == KernelVersion("129")


@pytest.mark.parametrize(
    "answer", [struct.pack("<I", 128), request(129), b"\x81\x00", b""], ids=repr
)
def test_other_version_answers_are_wire_errors(answer: bytes) -> None:
    with pytest.raises(WireError):
        CODEC.decode_version(answer)


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (VssOp.FREEZE, VssFreeze()),
        (VssOp.THAW, VssThaw()),
        (VssOp.HOT_BACKUP, VssHotBackup()),
        (VssOp.CREATE, VssOther(0)),
        (VssOp.GET_DM_INFO, VssOther(3)),
        (VssOp.AUTO_RECOVER, VssOther(7)),
    ],
)
def test_requests_decode_by_operation_byte(operation: int, expected: object) -> None:
    assert CODEC.decode_request(request(operation)) == expected


@pytest.mark.parametrize("size", [0, 4, 11, 13, 7432])
def test_wrong_sized_request_is_e_fail(size: int) -> None:
    with pytest.raises(WireError) as caught:
        CODEC.decode_request(bytes([VssOp.FREEZE]) + bytes(max(0, size - 1)))
    assert caught.value.status is HvStatus.E_FAIL


@pytest.mark.parametrize("operation", [8, 128, 255])
def test_unknown_operation_is_not_supported(operation: int) -> None:
    with pytest.raises(WireError) as caught:
        CODEC.decode_request(request(operation))
    assert caught.value.status is HvStatus.ERROR_NOT_SUPPORTED


def test_reply_puts_status_in_error_over_the_operation_byte() -> None:
    reply = CODEC.encode_reply(request(VssOp.FREEZE), VssReply(HvStatus.E_FAIL))
    message = hv_vss_msg.from_buffer_copy(reply)
    assert len(reply) == 12
    assert message.error & 0xFFFFFFFF == HvStatus.E_FAIL
    assert message.vss_cf.flags == 0


def test_hot_backup_reply_carries_the_flags() -> None:
    reply = CODEC.encode_reply(
        request(VssOp.HOT_BACKUP), VssReply(HvStatus.S_OK, VSS_HBU_NO_AUTO_RECOVERY)
    )
    assert reply == bytes(8) + struct.pack("<I", 5)


def test_failure_reply_over_a_short_request_is_a_whole_message() -> None:
    reply = CODEC.encode_failure(b"\x05", HvStatus.ERROR_NOT_SUPPORTED)
    assert reply == struct.pack("<I", HvStatus.ERROR_NOT_SUPPORTED) + bytes(8)


def test_channel_session_with_the_vss_codec() -> None:
    channel = Channel(CODEC)
    assert channel.registration() == CODEC.registration()
    assert channel.receive(struct.pack("<I", 129)) == KernelVersion("129")
    assert channel.receive(request(VssOp.FREEZE)) == VssFreeze()
    assert channel.reply(VssReply(HvStatus.S_OK)) == bytes(12)
    bad = channel.receive(request(200))
    assert isinstance(bad, Malformed)
    assert channel.reply_failure(bad.error.status)[:4] == struct.pack("<I", 0x80070032)


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    outcome: object
    try:
        outcome = CODEC.decode_request(data)
    except WireError as error:
        outcome = error.status
    if len(data) == VSS_MSG_SIZE and data[0] < VssOp.COUNT:
        assert isinstance(outcome, VssFreeze | VssThaw | VssHotBackup | VssOther)
    else:
        assert isinstance(outcome, HvStatus)
    try:
        outcome = CODEC.decode_version(data)
    except WireError:
        outcome = None
    assert outcome == (KernelVersion("129") if data == struct.pack("<I", 129) else None)


@given(
    st.binary(min_size=12, max_size=12), st.sampled_from(list(HvStatus)), st.integers(0, 2**32 - 1)
)
def test_reply_changes_only_error_and_flags(data: bytes, status: HvStatus, flags: int) -> None:
    reply = CODEC.encode_reply(data, VssReply(status, flags))
    assert reply[4:8] == data[4:8]
    assert struct.unpack_from("<I", reply, 0)[0] == status.value
    assert struct.unpack_from("<I", reply, 8)[0] == flags
