"""The rtnetlink parsers on captured kernel bytes and on hand-built messages."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvguest.errors import WireError
from hvguest.linux.netlink import (
    IFF_LOOPBACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    RTM_GETADDR,
    Address,
    Link,
    NextHop,
    Route,
    parse_address,
    parse_attributes,
    parse_link,
    parse_route,
    split_messages,
)
from hvguest.linux.netlink import (
    dump_request as build_dump_request,
)

# Captured on the harness machine (kernel 6.18): RTM_NEWLINK payload of eth0
# (MAC 02:fc:00:00:00:01, UP, statistics skipped with RTEXT_FILTER_SKIP_STATS).
CAPTURED_LINK_ETH0 = bytes.fromhex(
    "0000010004000000431001000000000009000300657468300000000008000d00e80300000500100006000000"
    "050011000000000005004300000000000800040078050000080032004400000008003300ffff000008001b00"
    "0000000008001e000000000008003d000000000008001f000100000008002800ffff00000800290000000100"
    "08003a000000010008003f0000000100080040000000010008003b000000010008003c00ffff000008004200"
    "0000000008002000010000000500210001000000080023000200000008002f00010000000800300001000000"
    "060044000c000000060045000000000005002700000000000a00010002fc0000000100000a000200ffffffff"
    "ffff0000cc001700eb05000000000000a90300000000000098d7580300000000d98001000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000064000700eb050000a9030000"
    "98d75803d9800100000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0c002b0005000200000000000a00360002fc0000000100000f000600706669666f5f666173740000c0011a00"
    "8c00020088000100000000000000000000000000010000000100000001000000010000000000000001000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000010270000e8030000000000000000000000000000"
    "000000000100000030010a00080001000000008014000500ffff000015000000d46c0000e8030000f4000200"
    "00000000400000007805000000000000010000000100000001000000ffffffffa00f0000e803000000000000"
    "803a0900805101000300000058020000100000000000000001000000010000000100000060ea000000000000"
    "000000000000000000000000000000000000000001000000000000000000000010270000e803000001000000"
    "0000000000000000010000000000000000000000010000000000000000000000000000000000000080ee3600"
    "00000000000000000100000000000000000000000000000000000000000000000004000000000000ffff0000"
    "ffffffff01000000000000000000000000000000140007000000000000000000000000000000000005000800"
    "0000000024000e0000000000000000000000000000000000000000000000000000000000000000000c003800"
    "76697274696f32000b00390076697274696f000004003e8004004180"
)
# RTM_NEWADDR payloads: 192.0.2.2/24 and fe80::fc:ff:fe00:1/64 on ifindex 4, permanent.
CAPTURED_ADDR_V4 = bytes.fromhex(
    "021880000400000008000100c000020208000200c000020208000400c00002ff090003006574683000000000"
    "080008008000000014000600ffffffffffffffff1500000015000000"
)
CAPTURED_ADDR_V6 = bytes.fromhex(
    "0a4080fd0400000014000100fe8000000000000000fc00fffe00000114000600ffffffffffffffff15000000"
    "15000000080008008000000005000b0003000000"
)
# RTM_NEWROUTE payloads: "default via 192.0.2.1 dev eth0" and
# "default via fd00::1 dev eth0 metric 1024".
CAPTURED_ROUTE_V4 = bytes.fromhex(
    "02000000fe0300010000000008000f00fe00000008000500c00002010800040004000000"
)
CAPTURED_ROUTE_V6 = bytes.fromhex(
    "0a000000fe0300010000000008000f00fe000000080006000004000014000500fd0000000000000000000000"
    "00000001080004000400000024000c0000000000000000000000000000000000000000000000000000000000"
    "000000000500140000000000"
)


# -- hand-built messages (struct layouts written out here, independently of the module) --


def rta(attr_type: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, attr_type) + value + bytes(-length % 4)


def nlmsg(msg_type: int, payload: bytes, *, flags: int = 2, seq: int = 1) -> bytes:
    length = 16 + len(payload)
    return struct.pack("=IHHII", length, msg_type, flags, seq, 99) + payload + bytes(-length % 4)


def ifaddrmsg(family: int, prefixlen: int, index: int, *attrs: bytes, flags: int = 0) -> bytes:
    return struct.pack("=BBBBI", family, prefixlen, flags, 0, index) + b"".join(attrs)


def rtmsg(family: int, dst_len: int, *attrs: bytes, table: int = 254, rtype: int = 1) -> bytes:
    return struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table, 3, 0, rtype, 0) + b"".join(attrs)


def rtnexthop(ifindex: int, *attrs: bytes, flags: int = 0) -> bytes:
    body = b"".join(attrs)
    return struct.pack("=HBBi", 8 + len(body), flags, 0, ifindex) + body


def cacheinfo(preferred: int, valid: int) -> bytes:
    return struct.pack("=IIII", preferred, valid, 10, 20)


# -- captured bytes ---------------------------------------------------------------------


def test_captured_link_decodes_name_mac_and_flags() -> None:
    link = parse_link(CAPTURED_LINK_ETH0)
    assert (link.index, link.name) == (4, "eth0")
    assert link.hardware_address == bytes.fromhex("02fc00000001")
    assert link.link_type == 1  # ARPHRD_ETHER
    assert link.up
    assert not link.loopback


def test_captured_ipv4_address_is_permanent_with_prefix() -> None:
    address = parse_address(CAPTURED_ADDR_V4)
    assert address is not None
    assert (address.family, address.index) == (socket.AF_INET, 4)
    assert (address.address, address.prefixlen) == (IPv4Address("192.0.2.2"), 24)
    assert address.valid_lifetime is None
    assert address.preferred_lifetime is None
    assert address.flags == 0x80  # IFA_F_PERMANENT
    assert address.scope == 0


def test_captured_ipv6_link_local_address_has_link_scope() -> None:
    address = parse_address(CAPTURED_ADDR_V6)
    assert address is not None
    assert address.address == IPv6Address("fe80::fc:ff:fe00:1")
    assert (address.prefixlen, address.scope) == (64, 253)


def test_captured_default_routes_name_gateway_and_interface() -> None:
    v4 = parse_route(CAPTURED_ROUTE_V4)
    v6 = parse_route(CAPTURED_ROUTE_V6)
    assert v4 is not None
    assert v6 is not None
    assert (v4.destination, v4.gateway, v4.oif, v4.table) == (
        IPv4Network("0.0.0.0/0"),
        IPv4Address("192.0.2.1"),
        4,
        254,
    )
    assert v4.priority is None
    assert v4.is_default
    assert (v6.destination, v6.gateway, v6.oif, v6.priority) == (
        IPv6Network("::/0"),
        IPv6Address("fd00::1"),
        4,
        1024,
    )


def test_captured_bytes_agree_with_pyroute2_decoder() -> None:
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg as pr_ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg as pr_ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg as pr_rtmsg

    def decode(cls: Any, payload: bytes) -> Any:
        message = cls(nlmsg(20, payload))
        message.decode()
        return message

    link = decode(pr_ifinfmsg, CAPTURED_LINK_ETH0)
    ours = parse_link(CAPTURED_LINK_ETH0)
    assert link.get("ifname") == ours.name
    assert link.get("address") == ours.hardware_address.hex(":")
    for payload in (CAPTURED_ADDR_V4, CAPTURED_ADDR_V6):
        theirs = decode(pr_ifaddrmsg, payload)
        mine = parse_address(payload)
        assert mine is not None
        assert theirs.get("address") == str(mine.address)
        assert theirs["prefixlen"] == mine.prefixlen
    for payload in (CAPTURED_ROUTE_V4, CAPTURED_ROUTE_V6):
        theirs = decode(pr_rtmsg, payload)
        route = parse_route(payload)
        assert route is not None
        assert theirs.get("gateway") == str(route.gateway)
        assert theirs.get("oif") == route.oif


# -- framing -------------------------------------------------------------------------------


def test_split_messages_walks_padded_messages() -> None:
    data = nlmsg(16, b"abcde", seq=7) + nlmsg(3, struct.pack("=i", 0), seq=7, flags=2)
    first, second = split_messages(data)
    assert (first.msg_type, first.seq, first.pid, first.payload) == (16, 7, 99, b"abcde")
    assert (second.msg_type, second.flags) == (3, 2)


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("=IHHII", 15, 16, 0, 0, 0),  # shorter than its own header
        struct.pack("=IHHII", 40, 16, 0, 0, 0) + bytes(8),  # claims more than present
        nlmsg(16, b"abcd") + b"\x01\x02",  # stray tail
    ],
    ids=["short-length", "overlong", "stray-bytes"],
)
def test_split_messages_rejects_broken_framing(data: bytes) -> None:
    with pytest.raises(WireError):
        split_messages(data)


def test_attributes_are_aligned_masked_and_last_one_wins() -> None:
    nested = 0x8000 | 3
    data = rta(1, b"x") + rta(nested, b"name") + rta(1, b"yz") + b"\0\0"
    assert parse_attributes(data) == {1: b"yz", 3: b"name"}


def test_attribute_longer_than_the_message_is_rejected() -> None:
    with pytest.raises(WireError):
        parse_attributes(struct.pack("=HH", 12, 1) + b"ab")


def test_dump_request_carries_dump_flags_and_sequence() -> None:
    request = build_dump_request(RTM_GETADDR, 42, b"\x0a" + bytes(7))
    assert struct.unpack_from("=IHHII", request) == (
        24,
        RTM_GETADDR,
        NLM_F_REQUEST | NLM_F_DUMP,
        42,
        0,
    )


# -- links ------------------------------------------------------------------------------


def ifinfomsg(index: int, flags: int, *attrs: bytes) -> bytes:
    return struct.pack("=BxHiII", 0, 772, index, flags, 0) + b"".join(attrs)


def test_loopback_link_is_flagged_and_name_stops_at_nul() -> None:
    link = parse_link(ifinfomsg(1, IFF_LOOPBACK | 1, rta(3, b"lo\0junk"), rta(1, bytes(6))))
    assert link.name == "lo"
    assert link.loopback


def test_link_without_address_has_empty_hardware_address() -> None:
    assert parse_link(ifinfomsg(7, 0, rta(3, b"wg0\0"))).hardware_address == b""


def test_link_without_name_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        parse_link(ifinfomsg(7, 0, rta(1, bytes(6))))


def test_truncated_ifinfomsg_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        parse_link(b"\0" * 10)


# -- addresses --------------------------------------------------------------------------


def test_point_to_point_address_reports_the_local_end() -> None:
    payload = ifaddrmsg(
        socket.AF_INET,
        32,
        5,
        rta(1, IPv4Address("10.0.0.2").packed),  # IFA_ADDRESS: the peer
        rta(2, IPv4Address("10.0.0.1").packed),  # IFA_LOCAL: ours
    )
    address = parse_address(payload)
    assert address is not None
    assert address.address == IPv4Address("10.0.0.1")


def test_finite_lifetimes_and_extended_flags() -> None:
    payload = ifaddrmsg(
        socket.AF_INET6,
        64,
        3,
        rta(1, IPv6Address("2001:db8::5").packed),
        rta(6, cacheinfo(preferred=1800, valid=3600)),
        rta(8, struct.pack("=I", 0x800)),  # IFA_F_STABLE_PRIVACY only fits in IFA_FLAGS
        flags=0x40,
    )
    address = parse_address(payload)
    assert address is not None
    assert (address.valid_lifetime, address.preferred_lifetime) == (3600, 1800)
    assert address.flags == 0x800


def test_address_without_cacheinfo_lives_forever() -> None:
    address = parse_address(ifaddrmsg(socket.AF_INET, 8, 2, rta(2, bytes([10, 1, 2, 3]))))
    assert address is not None
    assert address.valid_lifetime is None


def test_address_of_another_family_is_skipped() -> None:
    assert parse_address(ifaddrmsg(socket.AF_PACKET, 0, 2, rta(1, b"x"))) is None


@pytest.mark.parametrize(
    "payload",
    [
        ifaddrmsg(socket.AF_INET, 24, 2),  # no address at all
        ifaddrmsg(socket.AF_INET, 24, 2, rta(2, bytes(16))),  # IPv6-sized IPv4 address
        ifaddrmsg(socket.AF_INET, 24, 2, rta(2, bytes(4)), rta(6, bytes(8))),  # short cacheinfo
        b"\x02\x18",  # truncated header
    ],
    ids=["no-address", "wrong-size", "short-cacheinfo", "truncated"],
)
def test_broken_addresses_are_wire_errors(payload: bytes) -> None:
    with pytest.raises(WireError):
        parse_address(payload)


# -- routes -------------------------------------------------------------------------------


def test_route_table_attribute_overrides_the_8_bit_field() -> None:
    route = parse_route(rtmsg(socket.AF_INET, 0, rta(15, struct.pack("=I", 1000)), table=252))
    assert route is not None
    assert route.table == 1000


def test_network_route_without_gateway() -> None:
    route = parse_route(
        rtmsg(
            socket.AF_INET,
            24,
            rta(1, IPv4Address("192.0.2.0").packed),
            rta(4, struct.pack("=I", 4)),
        )
    )
    assert route is not None
    assert route.destination == IPv4Network("192.0.2.0/24")
    assert not route.is_default
    assert route.next_hops == (NextHop(4, None),)


def test_ipv6_multipath_default_route_lists_every_next_hop() -> None:
    hops = rtnexthop(3, rta(5, IPv6Address("fe80::1").packed)) + rtnexthop(
        5, rta(5, IPv6Address("fe80::2").packed), flags=16
    )
    route = parse_route(rtmsg(socket.AF_INET6, 0, rta(6, struct.pack("=I", 300)), rta(9, hops)))
    assert route is not None
    assert route.is_default
    assert (route.oif, route.gateway, route.priority) == (None, None, 300)
    assert route.next_hops == (
        NextHop(3, IPv6Address("fe80::1")),
        NextHop(5, IPv6Address("fe80::2"), flags=16),
    )


def test_ipv4_route_via_ipv6_next_hop_uses_rta_via() -> None:
    via = struct.pack("=H", socket.AF_INET6) + IPv6Address("fe80::9").packed
    route = parse_route(rtmsg(socket.AF_INET, 0, rta(18, via), rta(4, struct.pack("=I", 2))))
    assert route is not None
    assert route.gateway == IPv6Address("fe80::9")


def test_route_of_another_family_is_skipped() -> None:
    assert parse_route(rtmsg(28, 0)) is None  # AF_MPLS


@pytest.mark.parametrize(
    "payload",
    [
        rtmsg(socket.AF_INET, 33),  # prefix longer than the address
        rtmsg(socket.AF_INET, 0, rta(5, bytes(16))),  # IPv6-sized IPv4 gateway
        rtmsg(socket.AF_INET, 0, rta(9, struct.pack("=HBBi", 40, 0, 0, 2))),  # overlong hop
        rtmsg(socket.AF_INET, 0, rta(4, b"\1")),  # short RTA_OIF
        b"\x02\x00\x00",  # truncated header
    ],
    ids=["prefix", "gateway-size", "nexthop-length", "short-oif", "truncated"],
)
def test_broken_routes_are_wire_errors(payload: bytes) -> None:
    with pytest.raises(WireError):
        parse_route(payload)


# -- the parser invariant: any bytes decode or raise WireError, nothing else ------------------

DECODED_TYPES = (list, dict, Link, Address, Route, type(None))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    for parse in (split_messages, parse_attributes, parse_link, parse_address, parse_route):
        try:
            result = parse(data)
        except WireError:
            continue
        assert isinstance(result, DECODED_TYPES)


@given(st.binary(max_size=120), st.sampled_from([socket.AF_INET, socket.AF_INET6]))
def test_arbitrary_attributes_after_valid_headers_decode_or_raise_wire_error(
    tail: bytes, family: int
) -> None:
    for parse, header in (
        (parse_address, ifaddrmsg(family, 24, 2)),
        (parse_route, rtmsg(family, 0)),
        (parse_link, ifinfomsg(2, 0)),
    ):
        try:
            result = parse(header + tail)
        except WireError:
            continue
        assert isinstance(result, DECODED_TYPES)
