"""parse_ip_settings: what SET_IP_INFO accepts, and every way it says HV_INVALIDARG."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface, ip_address

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.services.ipconfig import parse_ip_settings, split_list
from hvguest.services.ports import IpSettings

MAC = "00:15:5D:01:02:03"


def parse(
    ip_addr: str = "",
    sub_net: str = "",
    gate_way: str = "",
    dns_addr: str = "",
    *,
    dhcp: bool = False,
    interface: str = "eth0",
    mac: str = MAC,
) -> IpSettings:
    return parse_ip_settings(
        interface,
        mac,
        dhcp_enabled=dhcp,
        ip_addr=ip_addr,
        sub_net=sub_net,
        gate_way=gate_way,
        dns_addr=dns_addr,
    )


def test_harness_example_pairs_addresses_with_subnets_in_order() -> None:
    settings = parse(
        "10.0.0.5;10.0.0.6;fe80::1;2001:db8::5",
        "255.255.255.0;255.255.0.0;64;48",
        "10.0.0.1;10.0.0.254;2001:db8::1;fe80::2",
        "8.8.8.8;2001:4860:4860::8888;1.1.1.1",
    )
    assert settings == IpSettings(
        interface="eth0",
        mac=MAC,
        dhcp=False,
        addresses=(
            IPv4Interface("10.0.0.5/24"),
            IPv4Interface("10.0.0.6/16"),
            IPv6Interface("fe80::1/64"),
            IPv6Interface("2001:db8::5/48"),
        ),
        gateways=tuple(ip_address(a) for a in ("10.0.0.1", "10.0.0.254", "2001:db8::1", "fe80::2")),
        dns=tuple(ip_address(a) for a in ("8.8.8.8", "2001:4860:4860::8888", "1.1.1.1")),
    )


def test_dhcp_without_addresses_is_valid() -> None:
    settings = parse(dhcp=True)
    assert settings.dhcp
    assert settings.addresses == settings.gateways == settings.dns == ()


def test_mac_is_upper_cased() -> None:
    assert parse(mac="00:15:5d:0a:0b:0c").mac == "00:15:5D:0A:0B:0C"


@pytest.mark.parametrize(
    ("address", "subnet", "expected"),
    [
        ("192.0.2.7", "255.255.255.0", IPv4Interface("192.0.2.7/24")),
        ("192.0.2.7", "24", IPv4Interface("192.0.2.7/24")),
        ("192.0.2.7", "/24", IPv4Interface("192.0.2.7/24")),
        ("192.0.2.7", "255.255.255.255", IPv4Interface("192.0.2.7/32")),
        ("192.0.2.7", "0", IPv4Interface("192.0.2.7/0")),
        ("2001:db8::7", "64", IPv6Interface("2001:db8::7/64")),
        ("2001:db8::7", "/64", IPv6Interface("2001:db8::7/64")),
        ("2001:db8::7", "ffff:ffff:ffff:ffff::", IPv6Interface("2001:db8::7/64")),
        ("2001:db8::7", "128", IPv6Interface("2001:db8::7/128")),
    ],
)
def test_subnet_forms(address: str, subnet: str, expected: IPv4Interface | IPv6Interface) -> None:
    assert parse(address, subnet).addresses == (expected,)


def test_tokens_are_stripped_and_empty_tokens_skipped() -> None:
    # The C parser stops at the first empty token; we skip it and keep going.
    settings = parse(" 10.0.0.5 ;; 10.0.0.6;", "24;;  16 ;", "10.0.0.1;", ";8.8.8.8;;1.1.1.1;")
    assert settings.addresses == (IPv4Interface("10.0.0.5/24"), IPv4Interface("10.0.0.6/16"))
    assert settings.gateways == (ip_address("10.0.0.1"),)
    assert settings.dns == (ip_address("8.8.8.8"), ip_address("1.1.1.1"))


def test_split_list() -> None:
    assert split_list("a; b ;;c;") == ["a", "b", "c"]
    assert split_list("") == []
    assert split_list(" ; ") == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"ip_addr": "10.0.0.300", "sub_net": "24"}, "'10.0.0.300'"),
        ({"ip_addr": "eth0", "sub_net": "24"}, "'eth0'"),
        ({"ip_addr": "010.0.0.5", "sub_net": "24"}, "'010.0.0.5'"),
        ({"ip_addr": "10.0.0.5/24", "sub_net": "24"}, "'10.0.0.5/24'"),
        ({"ip_addr": "fe80::1%eth0", "sub_net": "64"}, "'fe80::1%eth0'"),
        ({"ip_addr": "10.0.0.5;10.0.0.6", "sub_net": "24"}, "2 address(es)"),
        ({"ip_addr": "10.0.0.5", "sub_net": "24;16"}, "2 subnet(s)"),
        ({"ip_addr": "", "sub_net": "24"}, "1 subnet(s)"),
        ({"ip_addr": "10.0.0.5", "sub_net": "255.0.255.0"}, "'255.0.255.0'"),
        ({"ip_addr": "10.0.0.5", "sub_net": "0.0.0.255"}, "'0.0.0.255'"),
        ({"ip_addr": "10.0.0.5", "sub_net": "10.0.0.1"}, "'10.0.0.1'"),
        ({"ip_addr": "10.0.0.5", "sub_net": "33"}, "'33'"),
        ({"ip_addr": "10.0.0.5", "sub_net": "/33"}, "'/33'"),
        ({"ip_addr": "10.0.0.5", "sub_net": "ffff:ffff::"}, "'ffff:ffff::'"),
        ({"ip_addr": "10.0.0.5", "sub_net": "+24"}, "'+24'"),
        ({"ip_addr": "10.0.0.5", "sub_net": "24x"}, "'24x'"),
        ({"ip_addr": "10.0.0.5", "sub_net": "-1"}, "'-1'"),
        ({"ip_addr": "2001:db8::5", "sub_net": "129"}, "'129'"),
        ({"ip_addr": "2001:db8::5", "sub_net": "1000"}, "'1000'"),
        ({"ip_addr": "2001:db8::5", "sub_net": "255.255.255.0"}, "'255.255.255.0'"),
        ({"ip_addr": "2001:db8::5", "sub_net": "ffff::ffff"}, "'ffff::ffff'"),
        ({"gate_way": "10.0.0.1;router"}, "'router'"),
        ({"gate_way": "fe80::1%2"}, "'fe80::1%2'"),
        ({"dns_addr": "8.8.8.8;dns.example"}, "'dns.example'"),
        ({"dns_addr": "1.1.1"}, "'1.1.1'"),
    ],
)
def test_invalid_tokens_are_invalidarg_naming_the_token(fields: dict[str, str], named: str) -> None:
    with pytest.raises(OperationFailed) as caught:
        parse(
            fields.get("ip_addr", ""),
            fields.get("sub_net", ""),
            fields.get("gate_way", ""),
            fields.get("dns_addr", ""),
        )
    assert caught.value.status is HvStatus.INVALIDARG
    assert named in str(caught.value)


@pytest.mark.parametrize(
    "interface", ["", ".", "..", "eth/0", "eth:0", "eth 0", "eth0\n", "\0", "a" * 16, "é" * 8]
)
def test_bad_interface_name_is_e_fail(interface: str) -> None:
    # Our own NIC lookup produced it, so it is not the host's invalid argument.
    with pytest.raises(OperationFailed) as caught:
        parse(dhcp=True, interface=interface)
    assert caught.value.status is HvStatus.E_FAIL


def test_longest_interface_name_is_accepted() -> None:
    assert parse(dhcp=True, interface="e" * 15).interface == "e" * 15


@pytest.mark.parametrize("mac", ["", "00-15-5D-01-02-03", "00:15:5D:01:02:0G", "0:1"])
def test_bad_mac_is_e_fail(mac: str) -> None:
    with pytest.raises(OperationFailed) as caught:
        parse(dhcp=True, mac=mac)
    assert caught.value.status is HvStatus.E_FAIL
