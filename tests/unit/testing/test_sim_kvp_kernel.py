"""KvpKernel (drivers/hv/hv_kvp.c) byte for byte, driven by hand: states and conversions."""

from __future__ import annotations

import errno
import struct

import pytest
from sim_kernel_harness import KernelHarness
from sim_scripted_daemon import build_reply, nul

from hvguest.abi.constants import (
    KVP_OP_REGISTER,
    REG_SZ,
    REG_U32,
    REG_U64,
    AddrFamily,
    HvStatus,
    KvpOp,
)
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.testing import kvp_kernel as kvp
from hvguest.testing.host import (
    HostPacketReply,
    decode_ip_info,
    decode_kvp_reply,
    kvp_delete_message,
    kvp_enumerate_message,
    kvp_get_ip_info_message,
    kvp_get_message,
    kvp_set_ip_info_message,
    kvp_set_message,
)
from hvguest.testing.transport import ICMSGTYPE_NEGOTIATE, UtilState

E_FAIL = HvStatus.E_FAIL


def u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])


def text(data: bytes, offset: int) -> bytes:
    return kvp.c_string(data, offset)


def utf16(data: bytes, offset: int, units: int) -> str:
    return data[offset : offset + 2 * units].decode("utf-16-le")


@pytest.fixture
def harness() -> KernelHarness:
    h = KernelHarness()
    h.register()
    assert h.kernel.state == UtilState.READY
    return h


def forward(h: KernelHarness, message: bytes | bytearray) -> bytes:
    """Send a host message and return what the daemon reads."""
    h.host_send(message)
    assert h.kernel.state == UtilState.USERSPACE_REQ
    return h.read()


def round_trip(h: KernelHarness, message: bytes | bytearray, fields: dict[int, bytes]) -> bytes:
    """Host message -> daemon reply with ``fields`` -> the host's answer payload."""
    request_id = h.host_send(message)
    request = h.read()
    assert h.write(build_reply(request, fields=fields)) == KVP_MSG_SIZE
    answer = h.answer(request_id)
    assert answer is not None
    assert answer.status == HvStatus.S_OK
    return answer.payload


# --- registration -----------------------------------------------------------


def test_registration_answer_is_a_full_message_with_version_3_1() -> None:
    h = KernelHarness()
    answer = h.register()
    assert len(answer) == KVP_MSG_SIZE
    assert answer[0] == 100
    assert answer[kvp.REGISTER_VERSION : kvp.REGISTER_VERSION + 4] == b"3.1\0"
    assert answer.count(0) == KVP_MSG_SIZE - 4  # everything else zero


def test_ready_only_after_the_answer_is_read() -> None:
    h = KernelHarness()
    h.open()
    registration = bytearray(KVP_MSG_SIZE)
    registration[0] = 100
    assert h.write(bytes(registration)) == KVP_MSG_SIZE
    states = [h.kernel.state]
    assert h.write(bytes(registration)) == -errno.EFAULT  # answer still unread
    h.read()
    states.append(h.kernel.state)
    assert states == [UtilState.DEVICE_INIT, UtilState.READY]


def test_registration_with_another_op_is_einval() -> None:
    h = KernelHarness()
    h.open()
    registration = bytearray(KVP_MSG_SIZE)
    registration[0] = 5
    assert h.write(bytes(registration)) == -errno.EINVAL


def test_writes_shorter_than_7432_are_einval_longer_ones_are_accepted() -> None:
    h = KernelHarness()
    h.open()
    short = bytearray(KVP_MSG_SIZE - 1)
    short[0] = 100
    assert h.write(bytes(short)) == -errno.EINVAL
    assert h.write(bytes(short) + bytes(2)) == KVP_MSG_SIZE + 1


def test_a_reply_when_nothing_was_asked_is_spurious(harness: KernelHarness) -> None:
    assert harness.write(bytes(KVP_MSG_SIZE)) == -errno.EINVAL


# --- host packets and the state machine ---------------------------------------


def test_host_packets_wait_until_a_daemon_registers() -> None:
    h = KernelHarness()
    request_id = h.host_send(kvp_enumerate_message(1, 0))
    assert h.transport.queued is None
    h.register()
    assert h.kernel.state == UtilState.USERSPACE_REQ
    assert h.read()[0] == KvpOp.ENUMERATE
    assert h.answer(request_id) is None


def test_the_reply_timeout_fails_the_host_and_a_late_reply_is_einval(
    harness: KernelHarness,
) -> None:
    request_id = harness.host_send(kvp_enumerate_message(1, 0))
    assert harness.timers.delays == [30.0]
    request = harness.read()
    assert harness.timers.fire() == 1
    answer = harness.answer(request_id)
    assert answer is not None
    assert answer.status == E_FAIL
    assert harness.kernel.state == UtilState.READY
    assert harness.write(build_reply(request)) == -errno.EINVAL


def test_a_stale_reply_answers_the_next_request_s2(harness: KernelHarness) -> None:
    first = harness.host_send(kvp_enumerate_message(1, 0))
    stale = harness.read()
    harness.timers.fire()
    second = harness.host_send(kvp_get_message(1, "other"))
    assert harness.kernel.state == UtilState.USERSPACE_REQ
    fields = {kvp.ENUM_KEY: nul("old-key"), kvp.ENUM_VALUE: nul("old-value")}
    assert harness.write(build_reply(stale, fields=fields)) == KVP_MSG_SIZE
    answer = harness.answer(second)
    assert answer is not None
    assert answer.status == HvStatus.S_OK
    # The GET is answered with the ENUMERATE's value: no transaction ids.
    assert decode_kvp_reply(answer).value == "old-value"
    assert harness.answer(first) is not None


def test_a_second_request_while_the_first_is_unread_fails_at_once(harness: KernelHarness) -> None:
    harness.host_send(kvp_enumerate_message(1, 0))
    harness.timers.fire()  # the daemon never read it; the slot stays full
    second = harness.host_send(kvp_enumerate_message(1, 1))
    answer = harness.answer(second)
    assert answer is not None
    assert answer.status == E_FAIL
    assert harness.kernel.state == UtilState.READY


def test_close_with_a_pending_request_fails_the_host(harness: KernelHarness) -> None:
    request_id = harness.host_send(kvp_enumerate_message(1, 0))
    harness.close()
    answer = harness.answer(request_id)
    assert answer is not None
    assert answer.status == E_FAIL
    assert harness.kernel.state == UtilState.DEVICE_INIT
    assert harness.timers.fire() == 0


def test_suspend_forces_ready_without_answering_the_host(harness: KernelHarness) -> None:
    request_id = harness.host_send(kvp_enumerate_message(1, 0))
    request = harness.read()
    harness.kernel.pre_suspend()
    assert harness.kernel.state == UtilState.READY
    assert harness.timers.fire() == 0
    assert harness.answer(request_id) is None
    assert harness.write(build_reply(request)) == -errno.EINVAL


def test_suspend_without_a_daemon_makes_host_requests_fail_at_once() -> None:
    h = KernelHarness()
    h.kernel.pre_suspend()  # READY with nobody listening
    request_id = h.host_send(kvp_enumerate_message(1, 0))
    answer = h.answer(request_id)
    assert answer is not None
    assert answer.status == E_FAIL


def test_negotiation_is_answered_by_the_driver_after_registration() -> None:
    h = KernelHarness()
    payload = bytearray(16)
    struct.pack_into("<HH4xHHHH", payload, 0, 1, 1, 3, 0, 4, 0)
    request_id = h.host_send(payload, ICMSGTYPE_NEGOTIATE)
    assert h.answer(request_id) is None  # S3: waits for the daemon
    h.register()
    answer = h.answer(request_id)
    assert answer is not None
    assert struct.unpack_from("<HH4xHHHH", answer.payload) == (1, 1, 3, 0, 4, 0)
    assert h.kernel.state == UtilState.READY


def test_unknown_and_short_packets_are_dropped_unanswered(harness: KernelHarness) -> None:
    dropped = harness.host_send(bytes(16), icmsgtype=9)
    short = harness.host_send_packet(bytes(20))
    assert harness.answer(dropped) is None
    assert harness.answer(short) is None
    assert harness.kernel.state == UtilState.READY


def test_rescind_makes_the_service_dying(harness: KernelHarness) -> None:
    harness.kernel.deinit()
    assert harness.kernel.state == UtilState.DEVICE_DYING
    harness.host_send(kvp_enumerate_message(1, 0))
    assert harness.transport.queued is None


# --- host -> daemon conversions ---------------------------------------------


def test_get_carries_the_key_only(harness: KernelHarness) -> None:
    message = forward(harness, kvp_get_message(3, "Grüße"))
    assert (message[0], message[1]) == (KvpOp.GET, 3)
    assert text(message, kvp.GET_KEY) == "Grüße".encode()
    assert u32(message, kvp.GET_KEY_SIZE) == len("Grüße".encode()) + 1
    assert u32(message, kvp.GET_VALUE_SIZE) == 0
    assert u32(message, kvp.GET_VALUE_TYPE) == 0


def test_set_string_value_and_sizes_without_value_type(harness: KernelHarness) -> None:
    message = forward(harness, kvp_set_message(1, "k", "wert ✓"))
    assert text(message, kvp.SET_VALUE) == "wert ✓".encode()
    assert u32(message, kvp.SET_VALUE_SIZE) == len("wert ✓".encode()) + 1
    assert u32(message, kvp.SET_KEY_SIZE) == 2
    assert u32(message, kvp.SET_VALUE_TYPE) == 0  # not forwarded


@pytest.mark.parametrize(
    ("value", "value_type", "expected"),
    [(7, REG_U32, b"7"), (2**32 - 1, REG_U32, b"4294967295"), (2**40, REG_U64, b"1099511627776")],
)
def test_set_scalars_become_decimal_text(
    harness: KernelHarness, value: int, value_type: int, expected: bytes
) -> None:
    message = forward(harness, kvp_set_message(1, "n", value, value_type))
    assert text(message, kvp.SET_VALUE) == expected
    assert u32(message, kvp.SET_VALUE_SIZE) == len(expected) + 1


def test_set_of_another_value_type_forwards_an_empty_value(harness: KernelHarness) -> None:
    message = forward(harness, kvp_set_message(1, "bin", "data", value_type=3))
    assert u32(message, kvp.SET_VALUE_SIZE) == 0
    assert text(message, kvp.SET_VALUE) == b""
    assert text(message, kvp.SET_KEY) == b"bin"


def test_set_keys_drop_unpaired_surrogates_and_keep_pairs(harness: KernelHarness) -> None:
    message = forward(harness, kvp_set_message(1, "a\ud800b\udc00c\U0001f600", "v"))
    assert text(message, kvp.SET_KEY) == "abc\U0001f600".encode()


def test_keys_are_cut_to_511_bytes_of_whole_characters(harness: KernelHarness) -> None:
    message = forward(harness, kvp_set_message(1, "€" * 200, "v"))
    assert text(message, kvp.SET_KEY) == ("€" * 170).encode()
    assert u32(message, kvp.SET_KEY_SIZE) == 511


def test_values_are_cut_to_2047_bytes(harness: KernelHarness) -> None:
    message = forward(harness, kvp_set_message(1, "k", "é" * 1024))  # 2048 bytes of UTF-8
    assert text(message, kvp.SET_VALUE) == ("é" * 1023).encode()
    assert u32(message, kvp.SET_VALUE_SIZE) == 2047


def test_an_unterminated_host_key_runs_on_into_the_value(harness: KernelHarness) -> None:
    # The host's byte count is used as a unit count, so an unterminated key
    # field (256 units, no NUL) is followed into the value field.
    message = kvp_set_message(1, "k" * 256, "VALUE", key_size=1024)
    forwarded = forward(harness, message)
    assert text(forwarded, kvp.SET_KEY) == b"k" * 256 + b"VALUE"


def test_a_host_size_of_2_to_the_31_or_more_converts_nothing(harness: KernelHarness) -> None:
    message = forward(harness, kvp_set_message(1, "key", "v", key_size=0x80000000))
    assert text(message, kvp.SET_KEY) == b""
    assert u32(message, kvp.SET_KEY_SIZE) == 1


def test_delete_and_enumerate_and_pool_verbatim(harness: KernelHarness) -> None:
    message = forward(harness, kvp_delete_message(9, "gone"))
    assert (message[1], text(message, kvp.DELETE_KEY)) == (9, b"gone")
    assert u32(message, kvp.DELETE_KEY_SIZE) == 5
    harness.write(build_reply(message))
    message = forward(harness, kvp_enumerate_message(2, 77))
    assert u32(message, kvp.ENUM_INDEX) == 77


def test_get_ip_info_forwards_adapter_and_family(harness: KernelHarness) -> None:
    message = forward(harness, kvp_get_ip_info_message("00:15:5D:00:00:01", AddrFamily.IPV6))
    assert text(message, kvp.IP_ADAPTER_ID) == b"00:15:5D:00:00:01"
    assert message[kvp.IP_ADDR_FAMILY] == AddrFamily.IPV6


def test_set_ip_info_forwards_every_field(harness: KernelHarness) -> None:
    host_message = kvp_set_ip_info_message(
        "{GUID}",
        ip_addr="192.0.2.5",
        sub_net="255.255.255.0",
        gate_way="192.0.2.1",
        dns_addr="192.0.2.53",
        dhcp_enabled=True,
        addr_family=AddrFamily.IPV4,
    )
    message = forward(harness, host_message)
    assert text(message, kvp.IP_ADAPTER_ID) == b"{GUID}"
    assert text(message, kvp.IP_ADDR) == b"192.0.2.5"
    assert text(message, kvp.IP_SUB_NET) == b"255.255.255.0"
    assert text(message, kvp.IP_GATE_WAY) == b"192.0.2.1"
    assert text(message, kvp.IP_DNS_ADDR) == b"192.0.2.53"
    assert (message[kvp.IP_DHCP_ENABLED], message[kvp.IP_ADDR_FAMILY]) == (1, 1)


# --- daemon -> host conversions ---------------------------------------------


def test_enumerate_reply_becomes_utf16_with_counted_sizes(harness: KernelHarness) -> None:
    fields = {kvp.ENUM_KEY: nul("Grüße"), kvp.ENUM_VALUE: nul("wert \U0001f600")}
    payload = round_trip(harness, kvp_enumerate_message(1, 0), fields)
    assert utf16(payload, kvp.ENUM_KEY, 5) == "Grüße"
    assert u32(payload, kvp.ENUM_KEY_SIZE) == 2 * (5 + 1)
    assert utf16(payload, kvp.ENUM_VALUE, 7) == "wert \U0001f600"
    assert u32(payload, kvp.ENUM_VALUE_SIZE) == 2 * (7 + 1)
    assert u32(payload, kvp.ENUM_VALUE_TYPE) == REG_SZ


def test_enumerate_reply_limits_are_254_and_1022_units(harness: KernelHarness) -> None:
    fields = {kvp.ENUM_KEY: nul("k" * 300), kvp.ENUM_VALUE: nul("v" * 1500)}
    payload = round_trip(harness, kvp_enumerate_message(1, 0), fields)
    reply = decode_kvp_reply(HostPacketReply(0, payload))
    assert reply.key == "k" * 254
    assert reply.value == "v" * 1022
    assert (reply.key_size, reply.value_size) == (510, 2046)


def test_get_reply_value_is_read_at_532_not_528_s1(harness: KernelHarness) -> None:
    at_get_offset = round_trip(harness, kvp_get_message(1, "key"), {kvp.GET_VALUE: nul("lost")})
    reply = decode_kvp_reply(HostPacketReply(0, at_get_offset))
    assert (reply.value, reply.value_size, reply.value_type) == ("", 2, REG_SZ)
    at_enum_offset = round_trip(harness, kvp_get_message(1, "key"), {kvp.ENUM_VALUE: nul("found")})
    reply = decode_kvp_reply(HostPacketReply(0, at_enum_offset))
    assert (reply.key, reply.value, reply.value_size) == ("key", "found", 12)


def test_a_failure_status_leaves_the_host_message_untouched(harness: KernelHarness) -> None:
    message = kvp_get_message(1, "absent")
    request_id = harness.host_send(message)
    request = harness.read()
    fields = {kvp.ENUM_VALUE: nul("ignored")}
    harness.write(build_reply(request, status=HvStatus.S_CONT, fields=fields))
    answer = harness.answer(request_id)
    assert answer is not None
    assert answer.status == HvStatus.S_CONT
    assert answer.payload == bytes(message)


def test_set_and_delete_replies_carry_the_status_only(harness: KernelHarness) -> None:
    message = kvp_set_message(1, "k", "v")
    request_id = harness.host_send(message)
    request = harness.read()
    harness.write(build_reply(request, fields={kvp.ENUM_KEY: nul("junk")}))
    answer = harness.answer(request_id)
    assert answer is not None
    assert (answer.status, answer.payload) == (0, bytes(message))


def test_invalid_utf8_in_an_enumerate_reply_fails_with_partial_data(
    harness: KernelHarness,
) -> None:
    request_id = harness.host_send(kvp_enumerate_message(1, 0))
    request = harness.read()
    fields = {kvp.ENUM_KEY: b"ab\xff\0", kvp.ENUM_VALUE: nul("fine")}
    harness.write(build_reply(request, fields=fields))
    answer = harness.answer(request_id)
    assert answer is not None
    assert answer.status == E_FAIL
    assert utf16(answer.payload, kvp.ENUM_KEY, 2) == "ab"  # written before the error
    assert u32(answer.payload, kvp.ENUM_KEY_SIZE) == (2 * (-errno.EINVAL + 1)) & 0xFFFFFFFF
    assert utf16(answer.payload, kvp.ENUM_VALUE, 4) == "fine"


def ip_fields(**values: bytes) -> dict[int, bytes]:
    offsets = {
        "ip_addr": kvp.IP_ADDR,
        "sub_net": kvp.IP_SUB_NET,
        "gate_way": kvp.IP_GATE_WAY,
        "dns_addr": kvp.IP_DNS_ADDR,
        "adapter_id": kvp.IP_ADAPTER_ID,
        "dhcp": kvp.IP_DHCP_ENABLED,
        "family": kvp.IP_ADDR_FAMILY,
    }
    return {offsets[name]: value for name, value in values.items()}


def test_get_ip_info_reply_fills_the_host_ip_layout(harness: KernelHarness) -> None:
    fields = ip_fields(
        ip_addr=b"192.0.2.10;2001:db8::1\0",
        sub_net=b"255.255.255.0;64\0",
        gate_way=b"192.0.2.1\0",
        dns_addr=b"192.0.2.53\0",
        adapter_id=b"00:15:5D:00:00:01\0",
        dhcp=b"\x01",
        family=b"\x03",
    )
    payload = round_trip(harness, kvp_get_ip_info_message("00:15:5D:00:00:01"), fields)
    info = decode_ip_info(HostPacketReply(0, payload))
    assert info.ip_addr == "192.0.2.10;2001:db8::1"
    assert info.sub_net == "255.255.255.0;64"
    assert info.gate_way == "192.0.2.1"
    assert info.dns_addr == "192.0.2.53"
    assert info.adapter_id == "00:15:5D:00:00:01"
    assert (info.dhcp_enabled, info.addr_family) == (1, 3)


def test_get_ip_info_writes_no_terminator_s6(harness: KernelHarness) -> None:
    full = b"1" * 1100 + b"\0"  # longer than the 1024-unit ip_addr field
    payload = round_trip(harness, kvp_get_ip_info_message("mac"), ip_fields(ip_addr=full))
    field = payload[kvp.HOST_IP_ADDR : kvp.HOST_IP_ADDR + 2048]
    assert field == "1".encode("utf-16-le") * 1024  # filled to the end, unterminated


def test_get_ip_info_invalid_utf8_fails_after_writing_earlier_fields(
    harness: KernelHarness,
) -> None:
    request_id = harness.host_send(kvp_get_ip_info_message("mac"))
    request = harness.read()
    fields = ip_fields(
        ip_addr=b"192.0.2.10\0", sub_net=b"255.0.0.0\0", gate_way=b"\xc0\x80\0", dhcp=b"\x01"
    )
    harness.write(build_reply(request, fields=fields))
    answer = harness.answer(request_id)
    assert answer is not None
    assert answer.status == E_FAIL
    info = decode_ip_info(answer)
    assert (info.ip_addr, info.sub_net, info.gate_way) == ("192.0.2.10", "255.0.0.0", "")
    assert info.dhcp_enabled == 0  # copied only when every string converted
    assert info.adapter_id == "mac"  # the request's own field, never rewritten


def test_a_legacy_daemon_signals_failure_with_an_empty_key() -> None:
    h = KernelHarness()
    answer = h.register(KVP_OP_REGISTER)
    assert answer[0] == KVP_OP_REGISTER
    request_id = h.host_send(kvp_set_message(1, "k", "v"))
    request = h.read()
    # error says success, but key[0] == 0 at offset 20 means "no such key".
    h.write(build_reply(request, status=0))
    first = h.answer(request_id)
    assert first is not None
    assert first.status == HvStatus.S_CONT
    request_id = h.host_send(kvp_set_message(1, "k", "v"))
    request = h.read()
    h.write(build_reply(request, status=E_FAIL, fields={kvp.ENUM_KEY: b"x"}))
    second = h.answer(request_id)
    assert second is not None
    assert second.status == HvStatus.S_OK
