"""hvguest.protocol.kvp: golden messages built at the offsets of protocol.md section 1.3.

The offsets below are literal numbers on purpose: the codec derives its own
from the ctypes mirror, so agreement here cross-checks the mirror as well.
"""

from __future__ import annotations

import struct

import pytest

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.errors import ChannelError, WireError
from hvguest.protocol.channel import KernelVersion
from hvguest.protocol.kvp import (
    KVP_HOST_KEY_UNITS,
    KVP_HOST_VALUE_UNITS,
    KvpCodec,
    KvpDelete,
    KvpEnumerate,
    KvpGet,
    KvpGetIpInfo,
    KvpIpInfo,
    KvpRecord,
    KvpReply,
    KvpSet,
    KvpSetIpInfo,
    KvpStatus,
    KvpValue,
)

SIZE = 7432
codec = KvpCodec()


# --- golden request builders (protocol.md 1.3) ---------------------------------------


def message(operation: int, pool: int = 0) -> bytearray:
    buffer = bytearray(SIZE)
    buffer[0] = operation
    buffer[1] = pool
    return buffer


def put(buffer: bytearray, offset: int, data: bytes) -> bytearray:
    buffer[offset : offset + len(data)] = data
    return buffer


def put_u32(buffer: bytearray, offset: int, value: int) -> bytearray:
    struct.pack_into("<I", buffer, offset, value)
    return buffer


def get_request(pool: int, key: bytes, key_size: int | None = None) -> bytes:
    buffer = message(0, pool)
    put_u32(buffer, 8, len(key) + 1 if key_size is None else key_size)
    return bytes(put(buffer, 16, key))


def set_request(
    pool: int,
    key: bytes,
    value: bytes,
    *,
    key_size: int | None = None,
    value_size: int | None = None,
    value_type: int = 0,
) -> bytes:
    buffer = message(1, pool)
    put_u32(buffer, 4, value_type)
    put_u32(buffer, 8, len(key) + 1 if key_size is None else key_size)
    put_u32(buffer, 12, len(value) + 1 if value_size is None else value_size)
    put(buffer, 16, key)
    return bytes(put(buffer, 528, value))


def delete_request(pool: int, key: bytes, key_size: int | None = None) -> bytes:
    buffer = message(2, pool)
    put_u32(buffer, 4, len(key) + 1 if key_size is None else key_size)
    return bytes(put(buffer, 8, key))


def enumerate_request(pool: int, index: int) -> bytes:
    return bytes(put_u32(message(3, pool), 4, index))


def get_ip_request(adapter_id: bytes, addr_family: int = 0, pool: int = 0) -> bytes:
    buffer = put(message(4, pool), 4, adapter_id)
    buffer[260] = addr_family
    return bytes(buffer)


def set_ip_request(
    adapter_id: bytes = b"{guid}",
    *,
    addr_family: int = 1,
    dhcp: int = 0,
    ip_addr: bytes = b"",
    sub_net: bytes = b"",
    gate_way: bytes = b"",
    dns_addr: bytes = b"",
) -> bytes:
    buffer = put(message(5), 4, adapter_id)
    buffer[260] = addr_family
    buffer[261] = dhcp
    put(buffer, 262, ip_addr)
    put(buffer, 2310, sub_net)
    put(buffer, 4358, gate_way)
    return bytes(put(buffer, 5382, dns_addr))


def status_bytes(status: HvStatus) -> bytes:
    return status.value.to_bytes(4, "little")


def changed_ranges(before: bytes, after: bytes) -> set[int]:
    return {index for index, (old, new) in enumerate(zip(before, after, strict=True)) if old != new}


# --- registration and version ---------------------------------------------------------


def test_registration_is_register1_in_a_zeroed_message() -> None:
    assert codec.registration() == b"\x64" + bytes(SIZE - 1)


def test_decode_version_reads_the_register_body() -> None:
    answer = put(message(100), 4, b"3.1")
    assert codec.decode_version(bytes(answer)) == KernelVersion("3.1")


def test_decode_version_takes_a_full_field_without_nul() -> None:
    answer = put(message(100), 4, b"9" * 512)
    assert codec.decode_version(bytes(answer)) == KernelVersion("9" * 512)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (bytes(put(message(100), 4, b"3.1")[:-1]), "7431 bytes, not 7432"),
        (bytes(put(message(100), 4, b"3.1")) + b"\0", "7433 bytes, not 7432"),
        (b"", "0 bytes"),
        (bytes(put(message(4), 4, b"3.1")), "operation 4, not 100"),
        (bytes(put(message(100), 4, b"\xff3.1")), "not UTF-8 at byte 0"),
    ],
)
def test_decode_version_refuses(datagram: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        codec.decode_version(datagram)


# --- decoding each operation ----------------------------------------------------------


def test_decode_get() -> None:
    request = get_request(KvpPool.EXTERNAL, b"Key")
    assert codec.decode_request(request) == KvpGet(KvpPool.EXTERNAL, b"Key")


def test_decode_get_keeps_non_utf8_bytes() -> None:
    request = get_request(KvpPool.AUTO_INTERNAL, b"\xff\xfe\x80")
    assert codec.decode_request(request) == KvpGet(KvpPool.AUTO_INTERNAL, b"\xff\xfe\x80")


def test_decode_get_key_is_cut_at_key_size_and_at_the_first_nul() -> None:
    assert codec.decode_request(get_request(1, b"abcdef", key_size=3)) == KvpGet(
        KvpPool.GUEST, b"abc"
    )
    assert codec.decode_request(get_request(1, b"ab\0cd", key_size=6)) == KvpGet(
        KvpPool.GUEST, b"ab"
    )


def test_decode_get_accepts_a_full_512_byte_key() -> None:
    request = get_request(1, b"k" * 512, key_size=512)
    assert codec.decode_request(request) == KvpGet(KvpPool.GUEST, b"k" * 512)


def test_decode_set() -> None:
    request = set_request(KvpPool.GUEST, b"name", b"value")
    assert codec.decode_request(request) == KvpSet(KvpPool.GUEST, b"name", b"value")


def test_decode_set_with_value_size_zero_is_an_empty_value() -> None:
    # The kernel sends value_size 0 for host value types it does not convert.
    request = set_request(KvpPool.EXTERNAL, b"k", b"ignored", value_size=0)
    assert codec.decode_request(request) == KvpSet(KvpPool.EXTERNAL, b"k", b"")


def test_decode_set_ignores_value_type_and_accepts_a_full_value() -> None:
    request = set_request(1, b"k", b"v" * 2048, value_size=2048, value_type=4)
    assert codec.decode_request(request) == KvpSet(KvpPool.GUEST, b"k", b"v" * 2048)


def test_decode_set_value_is_cut_at_value_size_and_at_the_first_nul() -> None:
    assert codec.decode_request(set_request(1, b"k", b"12345", value_size=2)) == KvpSet(
        KvpPool.GUEST, b"k", b"12"
    )
    assert codec.decode_request(set_request(1, b"k", b"1\x002", value_size=4)) == KvpSet(
        KvpPool.GUEST, b"k", b"1"
    )


def test_decode_delete() -> None:
    request = delete_request(KvpPool.AUTO, b"gone")
    assert codec.decode_request(request) == KvpDelete(KvpPool.AUTO, b"gone")


@pytest.mark.parametrize("index", [0, 9, 2**31, 2**32 - 1])
def test_decode_enumerate_index_is_unsigned(index: int) -> None:
    request = enumerate_request(KvpPool.AUTO_EXTERNAL, index)
    assert codec.decode_request(request) == KvpEnumerate(KvpPool.AUTO_EXTERNAL, index)


def test_decode_get_ip_info() -> None:
    request = get_ip_request(b"00:15:5D:01:02:03", addr_family=3)
    assert codec.decode_request(request) == KvpGetIpInfo("00:15:5D:01:02:03", 3)


def test_decode_ip_ops_do_not_check_the_pool() -> None:
    request = get_ip_request(b"00:15:5D:01:02:03", pool=200)
    assert codec.decode_request(request) == KvpGetIpInfo("00:15:5D:01:02:03", 0)


def test_decode_set_ip_info() -> None:
    request = set_ip_request(
        b"{f5bee8ee-0d6f-4b4f-8f6a-1c4e0b4b8b2a}",
        addr_family=3,
        dhcp=1,
        ip_addr=b"10.0.0.5;fe80::1",
        sub_net=b"255.255.255.0;64",
        gate_way=b"10.0.0.1",
        dns_addr="8.8.8.8;ünïcode".encode(),
    )
    assert codec.decode_request(request) == KvpSetIpInfo(
        adapter_id="{f5bee8ee-0d6f-4b4f-8f6a-1c4e0b4b8b2a}",
        addr_family=3,
        dhcp_enabled=True,
        ip_addr="10.0.0.5;fe80::1",
        sub_net="255.255.255.0;64",
        gate_way="10.0.0.1",
        dns_addr="8.8.8.8;ünïcode",
    )


def test_decode_set_ip_info_keeps_the_dhcp_and_family_bytes() -> None:
    decoded = codec.decode_request(set_ip_request(addr_family=0xFE, dhcp=2))
    assert isinstance(decoded, KvpSetIpInfo)
    assert (decoded.addr_family, decoded.dhcp_enabled) == (0xFE, True)


# --- decode errors and their statuses ---------------------------------------------------

E_FAIL = HvStatus.E_FAIL
WIRE_ERRORS = [
    ("short", enumerate_request(1, 0)[:-1], E_FAIL, "7431 bytes, not 7432"),
    ("long", enumerate_request(1, 0) + b"\0", E_FAIL, "7433 bytes, not 7432"),
    ("empty", b"", E_FAIL, "0 bytes, not 7432"),
    ("op 6", bytes(message(6)), HvStatus.ERROR_NOT_SUPPORTED, "operation 6 is unknown"),
    ("op 100", bytes(message(100)), HvStatus.ERROR_NOT_SUPPORTED, "operation 100"),
    ("op 255", bytes(message(255)), HvStatus.ERROR_NOT_SUPPORTED, "operation 255"),
    ("get pool 5", get_request(5, b"k"), E_FAIL, "pool 5 does not exist"),
    ("set pool 255", set_request(255, b"k", b"v"), E_FAIL, "pool 255"),
    ("delete pool 5", delete_request(5, b"k"), E_FAIL, "pool 5"),
    ("enumerate pool 9", enumerate_request(9, 0), E_FAIL, "pool 9"),
    ("get key_size 0", get_request(1, b"k", key_size=0), E_FAIL, "key_size 0 is outside 1..512"),
    ("get key_size 513", get_request(1, b"k", key_size=513), E_FAIL, "key_size 513"),
    ("set key_size huge", set_request(1, b"k", b"v", key_size=2**32 - 1), E_FAIL, "key_size"),
    ("set value_size 2049", set_request(1, b"k", b"v", value_size=2049), E_FAIL, "0..2048"),
    ("delete key_size 0", delete_request(1, b"k", key_size=0), E_FAIL, "key_size 0"),
    ("delete key_size 600", delete_request(1, b"k", key_size=600), E_FAIL, "key_size 600"),
    ("adapter no NUL", get_ip_request(b"A" * 256), E_FAIL, "adapter_id has no NUL in its 256"),
    (
        "adapter not UTF-8",
        get_ip_request(b"\xc3("),
        HvStatus.INVALIDARG,
        "adapter_id is not UTF-8 at byte 0",
    ),
    ("ip no NUL", set_ip_request(ip_addr=b"1" * 2048), E_FAIL, "ip_addr has no NUL"),
    ("subnet no NUL", set_ip_request(sub_net=b"1" * 2048), E_FAIL, "sub_net has no NUL"),
    ("gateway no NUL", set_ip_request(gate_way=b"1" * 1024), E_FAIL, "gate_way has no NUL"),
    ("dns no NUL", set_ip_request(dns_addr=b"1" * 2048), E_FAIL, "dns_addr has no NUL"),
    ("dns not UTF-8", set_ip_request(dns_addr=b"1.1\xff"), HvStatus.INVALIDARG, "dns_addr"),
    ("gw surrogate", set_ip_request(gate_way=b"\xed\xa0\x80"), HvStatus.INVALIDARG, "gate_way"),
]


@pytest.mark.parametrize(
    ("datagram", "status", "reason"),
    [case[1:] for case in WIRE_ERRORS],
    ids=[case[0] for case in WIRE_ERRORS],
)
def test_decode_request_refuses_with_status(datagram: bytes, status: HvStatus, reason: str) -> None:
    with pytest.raises(WireError, match=reason) as caught:
        codec.decode_request(datagram)
    assert caught.value.status is status
    assert f"(reply {status.name})" in str(caught.value)


# --- encoding replies (golden) ----------------------------------------------------------


def test_status_reply_changes_only_error() -> None:
    request = set_request(1, b"k", b"v")
    reply = codec.encode_reply(request, KvpStatus(HvStatus.S_CONT))
    assert reply == status_bytes(HvStatus.S_CONT) + request[4:]


def test_record_reply_golden() -> None:
    request = bytearray(enumerate_request(KvpPool.GUEST, 3))
    request[20:2580] = b"\xaa" * 2560  # stale bytes must not survive
    request[7000:7004] = b"tail"  # bytes past the record stay as sent
    reply = codec.encode_reply(bytes(request), KvpRecord(b"Name", b"Value"))
    expected = bytearray(request)
    put(expected, 0, status_bytes(HvStatus.S_OK))
    put_u32(expected, 8, 1)  # REG_SZ
    put_u32(expected, 12, 5)
    put_u32(expected, 16, 6)
    put(expected, 20, b"Name".ljust(512, b"\0"))
    put(expected, 532, b"Value".ljust(2048, b"\0"))
    assert reply == bytes(expected)
    assert reply[4:8] == (3).to_bytes(4, "little")  # the index is left as sent


def test_record_reply_accepts_full_fields_and_caps_sizes() -> None:
    reply = codec.encode_reply(enumerate_request(0, 0), KvpRecord(b"k" * 512, b"v" * 2048))
    assert struct.unpack_from("<III", reply, 8) == (1, 512, 2048)
    assert reply[20:532] == b"k" * 512
    assert reply[532:2580] == b"v" * 2048


def test_record_reply_of_empty_strings() -> None:
    reply = codec.encode_reply(enumerate_request(0, 0), KvpRecord(b"", b""))
    assert struct.unpack_from("<III", reply, 8) == (1, 1, 1)
    assert reply[20:2580] == bytes(2560)


def test_get_value_is_placed_at_the_enumerate_offset_532() -> None:
    # drivers/hv/hv_kvp.c reads a GET reply's value from kvp_enum_data (S1).
    request = get_request(KvpPool.EXTERNAL, b"Key")
    stale = bytearray(request)
    stale[532:2580] = b"\xbb" * 2048
    reply = codec.encode_reply(bytes(stale), KvpValue(b"hello"))
    assert reply[:4] == status_bytes(HvStatus.S_OK)
    assert reply[532:2580] == b"hello".ljust(2048, b"\0")
    assert struct.unpack_from("<I", reply, 8) == (1,)  # enum value_type = REG_SZ
    assert struct.unpack_from("<I", reply, 16) == (6,)  # enum value_size
    assert reply[528:532] == bytes(4)  # nothing written at the GET offset
    assert changed_ranges(bytes(stale), reply) <= VALUE_FIELDS


def test_ip_info_reply_golden() -> None:
    request = get_ip_request(b"00:15:5D:01:02:03", addr_family=0)
    info = KvpIpInfo(
        adapter_id="00:15:5D:01:02:03",
        addr_family=3,
        dhcp_enabled=True,
        ip_addr="10.0.0.5;fe80::1",
        sub_net="255.255.255.0;/64",
        gate_way="10.0.0.1;",
        dns_addr="8.8.8.8;",
    )
    reply = codec.encode_reply(request, info)
    expected = bytearray(request)
    put(expected, 0, status_bytes(HvStatus.S_OK))
    put(expected, 4, b"00:15:5D:01:02:03".ljust(256, b"\0"))
    expected[260] = 3
    expected[261] = 1
    put(expected, 262, b"10.0.0.5;fe80::1".ljust(2048, b"\0"))
    put(expected, 2310, b"255.255.255.0;/64".ljust(2048, b"\0"))
    put(expected, 4358, b"10.0.0.1;".ljust(1024, b"\0"))
    put(expected, 5382, b"8.8.8.8;".ljust(2048, b"\0"))
    assert reply == bytes(expected)


def test_ip_info_reply_writes_utf8_bytes_into_the_u16_arrays() -> None:
    info = KvpIpInfo("m", 0, False, "", "", "", "dns.ünï")
    reply = codec.encode_reply(get_ip_request(b"m"), info)
    assert reply[5382 : 5382 + 10] == "dns.ünï".encode() + b"\0"


@pytest.mark.parametrize(
    ("field", "limit"),
    [("adapter_id", 256), ("ip_addr", 2048), ("sub_net", 2048), ("gate_way", 1024)],
)
def test_ip_info_strings_must_fit_with_their_nul(field: str, limit: int) -> None:
    fields = {"adapter_id": "a", "ip_addr": "", "sub_net": "", "gate_way": "", "dns_addr": ""}
    fits = KvpIpInfo(addr_family=0, dhcp_enabled=False, **{**fields, field: "x" * (limit - 1)})
    codec.encode_reply(get_ip_request(b"a"), fits)
    too_long = KvpIpInfo(addr_family=0, dhcp_enabled=False, **{**fields, field: "x" * limit})
    with pytest.raises(ChannelError, match=f"KVP reply {field}"):
        codec.encode_reply(get_ip_request(b"a"), too_long)


@pytest.mark.parametrize(
    "reply",
    [
        KvpRecord(b"k" * 513, b""),
        KvpRecord(b"", b"v" * 2049),
        KvpRecord(b"a\0b", b""),
        KvpValue(b"v" * 2049),
        KvpValue(b"v\0"),
        KvpIpInfo("\ud800", 0, False, "", "", "", ""),
        KvpIpInfo("a\0", 0, False, "", "", "", ""),
        KvpIpInfo("a", 256, False, "", "", "", ""),
        KvpIpInfo("a", -1, False, "", "", "", ""),
    ],
)
def test_replies_that_do_not_fit_raise_channel_error(reply: KvpReply) -> None:
    with pytest.raises(ChannelError, match="KVP reply"):
        codec.encode_reply(enumerate_request(0, 0), reply)


def test_failure_reply_changes_only_error() -> None:
    request = set_request(1, b"k", b"v")
    reply = codec.encode_failure(request, HvStatus.ERROR_NOT_SUPPORTED)
    assert reply == status_bytes(HvStatus.ERROR_NOT_SUPPORTED) + request[4:]


@pytest.mark.parametrize("request_bytes", [b"", b"short", bytes(SIZE + 1)])
def test_failure_reply_to_a_partial_request_is_a_zeroed_message(request_bytes: bytes) -> None:
    reply = codec.encode_failure(request_bytes, HvStatus.E_FAIL)
    assert reply == status_bytes(HvStatus.E_FAIL) + bytes(SIZE - 4)


def test_reply_to_a_partial_request_starts_from_a_zeroed_message() -> None:
    reply = codec.encode_reply(b"short", KvpStatus(HvStatus.S_OK))
    assert reply == bytes(SIZE)


# --- decode -> encode keeps everything but the documented fields --------------------------

ERROR = set(range(4))
RECORD_FIELDS = ERROR | set(range(8, 2580))
VALUE_FIELDS = ERROR | set(range(8, 12)) | set(range(16, 20)) | set(range(532, 2580))
IP_FIELDS = ERROR | set(range(4, 7430))


def noisy(request: bytes, decoded_until: int) -> bytes:
    """``request`` with junk in every byte after ``decoded_until`` (ignored by decode)."""
    tail = bytes((index * 7 + 1) % 256 for index in range(SIZE - decoded_until))
    return request[:decoded_until] + tail


@pytest.mark.parametrize(
    ("request_bytes", "reply", "allowed"),
    [
        (noisy(enumerate_request(1, 4), 8), KvpRecord(b"k", b"v"), RECORD_FIELDS),
        (noisy(enumerate_request(1, 4), 8), KvpStatus(HvStatus.S_CONT), ERROR),
        (noisy(get_request(0, b"key"), 528), KvpValue(b"value"), VALUE_FIELDS),
        (noisy(get_request(0, b"key"), 528), KvpStatus(HvStatus.S_CONT), ERROR),
        (noisy(set_request(0, b"k", b"v"), 2576), KvpStatus(HvStatus.S_OK), ERROR),
        (noisy(delete_request(0, b"k"), 520), KvpStatus(HvStatus.S_OK), ERROR),
        (
            get_ip_request(b"MAC"),
            KvpIpInfo("MAC", 1, False, "192.0.2.1", "255.255.255.0", "", ""),
            IP_FIELDS,
        ),
        (set_ip_request(ip_addr=b"192.0.2.1"), KvpStatus(HvStatus.GUID_NOTFOUND), ERROR),
    ],
)
def test_decode_then_encode_keeps_the_request_outside_documented_fields(
    request_bytes: bytes, reply: KvpReply, allowed: set[int]
) -> None:
    codec.decode_request(request_bytes)
    encoded = codec.encode_reply(request_bytes, reply)
    assert len(encoded) == SIZE
    assert changed_ranges(request_bytes, encoded) <= allowed


def test_host_limits_are_what_kvp_respond_to_host_converts() -> None:
    assert (KVP_HOST_KEY_UNITS, KVP_HOST_VALUE_UNITS) == (254, 1022)
