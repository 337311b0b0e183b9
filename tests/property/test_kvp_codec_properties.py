"""Hypothesis properties of the KVP codec.

(a) any bytes decode to a request or raise WireError, nothing else (h11's fuzz
invariant); (b) the same for whole 7432-byte messages with a real operation,
to get past the size and operation checks; (c) requests built from random
fields with the ctypes mirror decode to the same fields, and replies read back
through the mirror carry what was encoded.
"""

from __future__ import annotations

import ctypes

from hypothesis import given
from hypothesis import strategies as st

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.abi.structs import KVP_MSG_SIZE, hv_kvp_msg
from hvguest.errors import ChannelError, WireError
from hvguest.protocol.channel import KernelVersion
from hvguest.protocol.kvp import (
    KvpCodec,
    KvpDelete,
    KvpEnumerate,
    KvpGet,
    KvpGetIpInfo,
    KvpIpInfo,
    KvpRecord,
    KvpRequest,
    KvpSet,
    KvpSetIpInfo,
    KvpValue,
)

codec = KvpCodec()
REQUEST_TYPES = (KvpGet, KvpSet, KvpDelete, KvpEnumerate, KvpGetIpInfo, KvpSetIpInfo)
WIRE_STATUSES = {HvStatus.E_FAIL, HvStatus.ERROR_NOT_SUPPORTED, HvStatus.INVALIDARG}


def check_request(request: KvpRequest) -> None:
    """What every decoded request promises the services."""
    assert isinstance(request, REQUEST_TYPES)
    match request:
        case KvpGet(pool, key) | KvpDelete(pool, key):
            assert pool in set(KvpPool) - {KvpPool.COUNT}
            assert len(key) <= 512
            assert b"\0" not in key
        case KvpSet(pool, key, value):
            assert pool in set(KvpPool) - {KvpPool.COUNT}
            assert len(key) <= 512
            assert len(value) <= 2048
            assert b"\0" not in key + value
        case KvpEnumerate(pool, index):
            assert pool in set(KvpPool) - {KvpPool.COUNT}
            assert 0 <= index < 2**32
        case KvpGetIpInfo(adapter_id, addr_family):
            assert "\0" not in adapter_id
            assert 0 <= addr_family <= 255
        case KvpSetIpInfo():
            assert 0 <= request.addr_family <= 255
            strings = (request.ip_addr, request.sub_net, request.gate_way, request.dns_addr)
            assert all("\0" not in text for text in (request.adapter_id, *strings))


def decode_outcome(datagram: bytes) -> KvpRequest | WireError:
    """The decoded request or the WireError; any other exception escapes (and fails)."""
    try:
        return codec.decode_request(datagram)
    except WireError as error:
        return error


def version_outcome(datagram: bytes) -> KernelVersion | WireError:
    try:
        return codec.decode_version(datagram)
    except WireError as error:
        return error


def decode_or_wire_error(datagram: bytes) -> None:
    outcome = decode_outcome(datagram)
    if isinstance(outcome, WireError):
        assert outcome.status in WIRE_STATUSES
        assert "\n" not in str(outcome)
        assert len(codec.encode_failure(datagram, outcome.status)) == KVP_MSG_SIZE
    else:
        check_request(outcome)


# --- (a) any bytes ------------------------------------------------------------------


@given(st.binary(max_size=8192))
def test_any_bytes_decode_to_a_request_or_raise_wire_error(datagram: bytes) -> None:
    decode_or_wire_error(datagram)


@given(st.binary(max_size=8192))
def test_any_bytes_decode_to_a_version_or_raise_wire_error(datagram: bytes) -> None:
    assert isinstance(version_outcome(datagram), KernelVersion | WireError)


# --- (b) whole messages with a real operation ------------------------------------------

#: u32 values that land inside, on and beyond the size checks.
sizes = st.one_of(
    st.integers(0, 3),
    st.integers(505, 520),
    st.integers(2040, 2056),
    st.integers(0, 2**32 - 1),
)
patches = st.lists(st.tuples(st.integers(0, KVP_MSG_SIZE - 1), st.binary(max_size=64)), max_size=8)
#: Runs of one byte value, long enough to fill a whole field and remove its NUL.
runs = st.lists(
    st.tuples(st.integers(0, KVP_MSG_SIZE - 1), st.integers(0, 255), st.integers(1, 2100)),
    max_size=3,
)


@st.composite
def whole_messages(draw: st.DrawFn, operations: st.SearchStrategy[int]) -> bytes:
    message = bytearray(KVP_MSG_SIZE)
    for offset, value, length in draw(runs):
        message[offset : offset + length] = bytes([value]) * min(length, KVP_MSG_SIZE - offset)
    for offset, data in draw(patches):
        message[offset : offset + len(data)] = data[: KVP_MSG_SIZE - offset]
    for offset in (4, 8, 12):
        if draw(st.booleans()):
            message[offset : offset + 4] = draw(sizes).to_bytes(4, "little")
    message[0] = draw(operations)
    message[1] = draw(st.one_of(st.integers(0, 5), st.integers(0, 255)))
    assert len(message) == KVP_MSG_SIZE
    return bytes(message)


@given(whole_messages(st.one_of(st.integers(0, 5), st.integers(0, 255))))
def test_whole_messages_decode_to_a_request_or_raise_wire_error(datagram: bytes) -> None:
    decode_or_wire_error(datagram)


@given(whole_messages(st.just(100)))
def test_whole_version_answers_decode_or_raise_wire_error(datagram: bytes) -> None:
    outcome = version_outcome(datagram)
    if isinstance(outcome, WireError):
        assert "not UTF-8" in str(outcome)
    else:
        assert "\0" not in outcome.text


# --- (c) round trips through the ctypes mirror -------------------------------------------

pools = st.sampled_from([pool for pool in KvpPool if pool is not KvpPool.COUNT])
no_nul = st.binary(max_size=2048).map(lambda raw: raw.replace(b"\0", b"\x01"))
keys = st.one_of(no_nul.map(lambda raw: raw[:511]), st.just(b"K" * 512))
values = st.one_of(no_nul.map(lambda raw: raw[:2047]), st.just(b"V" * 2048))
texts = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"))


def short_text(limit: int) -> st.SearchStrategy[str]:
    """Texts whose UTF-8 form fits ``limit`` bytes including the NUL."""
    return texts.filter(lambda text: len(text.encode()) < limit)


def new_message(operation: int, pool: int = 0) -> hv_kvp_msg:
    message = hv_kvp_msg()
    message.kvp_hdr.operation = operation
    message.kvp_hdr.pool = pool
    return message


def fill(array: ctypes.Array[ctypes.c_uint8] | ctypes.Array[ctypes.c_uint16], data: bytes) -> None:
    ctypes.memmove(ctypes.addressof(array), data, len(data))


def raw(array: ctypes.Array[ctypes.c_uint8] | ctypes.Array[ctypes.c_uint16]) -> bytes:
    return ctypes.string_at(ctypes.addressof(array), ctypes.sizeof(array))


@given(pools, keys)
def test_get_round_trip(pool: KvpPool, key: bytes) -> None:
    message = new_message(0, pool)
    fill(message.body.kvp_get.data.key, key)
    message.body.kvp_get.data.key_size = min(len(key) + 1, 512)
    assert codec.decode_request(bytes(message)) == KvpGet(pool, key)


@given(pools, keys, values, st.integers(0, 2**32 - 1))
def test_set_round_trip(pool: KvpPool, key: bytes, value: bytes, value_type: int) -> None:
    message = new_message(1, pool)
    data = message.body.kvp_set.data
    fill(data.key, key)
    fill(data.value, value)
    data.key_size = min(len(key) + 1, 512)
    data.value_size = min(len(value) + 1, 2048)
    data.value_type = value_type
    assert codec.decode_request(bytes(message)) == KvpSet(pool, key, value)


@given(pools, keys)
def test_delete_round_trip(pool: KvpPool, key: bytes) -> None:
    message = new_message(2, pool)
    fill(message.body.kvp_delete.key, key)
    message.body.kvp_delete.key_size = min(len(key) + 1, 512)
    assert codec.decode_request(bytes(message)) == KvpDelete(pool, key)


@given(pools, st.integers(0, 2**32 - 1))
def test_enumerate_round_trip(pool: KvpPool, index: int) -> None:
    message = new_message(3, pool)
    message.body.kvp_enum_data.index = index
    assert codec.decode_request(bytes(message)) == KvpEnumerate(pool, index)


@given(short_text(256), st.integers(0, 255), st.integers(0, 255))
def test_get_ip_info_round_trip(adapter_id: str, addr_family: int, pool: int) -> None:
    message = new_message(4, pool)
    fill(message.body.kvp_ip_val.adapter_id, adapter_id.encode())
    message.body.kvp_ip_val.addr_family = addr_family
    assert codec.decode_request(bytes(message)) == KvpGetIpInfo(adapter_id, addr_family)


@st.composite
def ip_infos(draw: st.DrawFn) -> KvpIpInfo:
    return KvpIpInfo(
        adapter_id=draw(short_text(256)),
        addr_family=draw(st.integers(0, 255)),
        dhcp_enabled=draw(st.booleans()),
        ip_addr=draw(short_text(2048)),
        sub_net=draw(short_text(2048)),
        gate_way=draw(short_text(1024)),
        dns_addr=draw(short_text(2048)),
    )


@given(ip_infos())
def test_set_ip_info_round_trip(info: KvpIpInfo) -> None:
    message = new_message(5)
    ip_val = message.body.kvp_ip_val
    fill(ip_val.adapter_id, info.adapter_id.encode())
    ip_val.addr_family = info.addr_family
    ip_val.dhcp_enabled = info.dhcp_enabled
    fill(ip_val.ip_addr, info.ip_addr.encode())
    fill(ip_val.sub_net, info.sub_net.encode())
    fill(ip_val.gate_way, info.gate_way.encode())
    fill(ip_val.dns_addr, info.dns_addr.encode())
    decoded = codec.decode_request(bytes(message))
    assert decoded == KvpSetIpInfo(
        info.adapter_id,
        info.addr_family,
        info.dhcp_enabled,
        info.ip_addr,
        info.sub_net,
        info.gate_way,
        info.dns_addr,
    )


@given(keys, values, st.integers(0, 2**32 - 1))
def test_record_reply_reads_back_through_the_mirror(key: bytes, value: bytes, index: int) -> None:
    request = new_message(3, 1)
    request.body.kvp_enum_data.index = index
    reply = hv_kvp_msg.from_buffer_copy(codec.encode_reply(bytes(request), KvpRecord(key, value)))
    data = reply.body.kvp_enum_data.data
    assert reply.error == 0
    assert reply.body.kvp_enum_data.index == index
    assert raw(data.key) == key.ljust(512, b"\0")
    assert raw(data.value) == value.ljust(2048, b"\0")
    assert (data.key_size, data.value_size, data.value_type) == (
        min(len(key) + 1, 512),
        min(len(value) + 1, 2048),
        1,
    )


@given(keys, values)
def test_get_reply_value_reads_back_from_the_enumerate_layout(key: bytes, value: bytes) -> None:
    request = new_message(0, 0)
    fill(request.body.kvp_get.data.key, key)
    reply = hv_kvp_msg.from_buffer_copy(codec.encode_reply(bytes(request), KvpValue(value)))
    assert reply.error == 0
    assert raw(reply.body.kvp_enum_data.data.value) == value.ljust(2048, b"\0")
    assert reply.body.kvp_get.data.value[:4] == request.body.kvp_get.data.value[:4]


@given(ip_infos())
def test_ip_info_reply_decodes_back_to_the_same_strings(info: KvpIpInfo) -> None:
    request = new_message(4)
    fill(request.body.kvp_ip_val.adapter_id, b"00:15:5D:00:00:01")
    reply = bytearray(codec.encode_reply(bytes(request), info))
    assert reply[:4] == bytes(4)
    reply[0] = 5  # read the reply's fields back with the SET_IP_INFO decoder
    assert codec.decode_request(bytes(reply)) == KvpSetIpInfo(
        info.adapter_id,
        info.addr_family,
        info.dhcp_enabled,
        info.ip_addr,
        info.sub_net,
        info.gate_way,
        info.dns_addr,
    )


@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_record_replies_either_fit_or_raise_channel_error(key: bytes, value: bytes) -> None:
    try:
        reply = codec.encode_reply(bytes(new_message(3)), KvpRecord(key, value))
    except ChannelError:
        assert len(key) > 512 or len(value) > 2048 or b"\0" in key + value
    else:
        assert len(reply) == KVP_MSG_SIZE
