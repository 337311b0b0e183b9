"""render_ifcfg / render_nmconnection: the reference's file texts, per family done right."""

from __future__ import annotations

from ipaddress import IPv4Interface, ip_address

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.services.ipconfig import (
    ifcfg_filename,
    nmconnection_filename,
    parse_ip_settings,
    render_ifcfg,
    render_nmconnection,
)
from hvguest.services.ports import IpSettings

MAC = "00:15:5D:01:02:03"


def parse(
    ip_addr: str = "", sub_net: str = "", gate_way: str = "", dns_addr: str = "", *, dhcp: bool
) -> IpSettings:
    return parse_ip_settings(
        "eth0",
        MAC,
        dhcp_enabled=dhcp,
        ip_addr=ip_addr,
        sub_net=sub_net,
        gate_way=gate_way,
        dns_addr=dns_addr,
    )


def harness_example() -> IpSettings:
    """protocol.md §3.7's harness request."""
    return parse(
        "10.0.0.5;10.0.0.6;fe80::1;2001:db8::5",
        "255.255.255.0;255.255.0.0;64;48",
        "10.0.0.1;10.0.0.254;2001:db8::1;fe80::2",
        "8.8.8.8;2001:4860:4860::8888;1.1.1.1",
        dhcp=False,
    )


def test_harness_example_ifcfg() -> None:
    assert render_ifcfg(harness_example()) == (
        "HWADDR=00:15:5D:01:02:03\n"
        "DEVICE=eth0\n"
        "BOOTPROTO=none\n"
        "IPADDR0=10.0.0.5\n"
        "IPADDR1=10.0.0.6\n"
        "IPV6ADDR=fe80:0000:0000:0000:0000:0000:0000:0001\n"
        "IPV6ADDR_1=2001:0db8:0000:0000:0000:0000:0000:0005\n"
        "NETMASK0=255.255.255.0\n"
        "NETMASK1=255.255.0.0\n"
        "IPV6NETMASK=64\n"
        "IPV6NETMASK_1=48\n"
        "GATEWAY=10.0.0.1\n"
        "GATEWAY1=10.0.0.254\n"
        "IPV6_DEFAULTGW=2001:0db8:0000:0000:0000:0000:0000:0001\n"
        "IPV6_DEFAULTGW_1=fe80:0000:0000:0000:0000:0000:0000:0002\n"
        "DNS1=8.8.8.8\n"
        "DNS2=2001:4860:4860:0000:0000:0000:0000:8888\n"
        "DNS3=1.1.1.1\n"
    )


def test_harness_example_nmconnection() -> None:
    assert render_nmconnection(harness_example()) == (
        "\n"
        "[connection]\n"
        "interface-name=eth0\n"
        "\n"
        "[ethernet]\n"
        "mac-address=00:15:5D:01:02:03\n"
        "\n"
        "[ipv4]\n"
        "address1=10.0.0.5/24\n"
        "address2=10.0.0.6/16\n"
        "method=manual\n"
        "gateway=10.0.0.1,10.0.0.254\n"
        "dns=8.8.8.8,1.1.1.1\n"
        "\n"
        "[ipv6]\n"
        "address1=fe80::1/64\n"
        "address2=2001:db8::5/48\n"
        "method=manual\n"
        "gateway=2001:db8::1,fe80::2\n"
        "dns=2001:4860:4860::8888\n"
    )


def test_ipv4_only() -> None:
    settings = parse("192.0.2.10", "/24", "192.0.2.1", "192.0.2.53", dhcp=False)
    assert render_ifcfg(settings) == (
        "HWADDR=00:15:5D:01:02:03\nDEVICE=eth0\nBOOTPROTO=none\n"
        "IPADDR0=192.0.2.10\nNETMASK0=255.255.255.0\nGATEWAY=192.0.2.1\nDNS1=192.0.2.53\n"
    )
    nm = render_nmconnection(settings)
    assert nm.endswith(
        "[ipv4]\naddress1=192.0.2.10/24\nmethod=manual\ngateway=192.0.2.1\ndns=192.0.2.53\n"
        "\n[ipv6]\nmethod=auto\n"
    )


def test_ipv6_only_with_dhcp_for_ipv4() -> None:
    # dhcp_enabled is IPv4's flag: a host injecting only IPv6 may still set it.
    settings = parse("2001:db8::10;2001:db8:1::10", "64;/56", "2001:db8::1", "", dhcp=True)
    assert render_ifcfg(settings) == (
        "HWADDR=00:15:5D:01:02:03\nDEVICE=eth0\nBOOTPROTO=dhcp\n"
        "IPV6ADDR=2001:0db8:0000:0000:0000:0000:0000:0010\n"
        "IPV6ADDR_1=2001:0db8:0001:0000:0000:0000:0000:0010\n"
        "IPV6NETMASK=64\nIPV6NETMASK_1=56\n"
        "IPV6_DEFAULTGW=2001:0db8:0000:0000:0000:0000:0000:0001\n"
    )
    assert render_nmconnection(settings).endswith(
        "[ipv4]\nmethod=auto\n"
        "\n[ipv6]\naddress1=2001:db8::10/64\naddress2=2001:db8:1::10/56\nmethod=manual\n"
        "gateway=2001:db8::1\n"
    )


def test_dhcp_without_addresses() -> None:
    settings = parse(dhcp=True)
    assert render_ifcfg(settings) == "HWADDR=00:15:5D:01:02:03\nDEVICE=eth0\nBOOTPROTO=dhcp\n"
    assert render_nmconnection(settings) == (
        "\n[connection]\ninterface-name=eth0\n\n[ethernet]\nmac-address=00:15:5D:01:02:03\n"
        "\n[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n"
    )


def test_static_without_addresses_disables_ipv4_like_the_reference() -> None:
    assert "[ipv4]\nmethod=disabled\n" in render_nmconnection(parse(dhcp=False))


def test_mixed_families_interleaved_keep_their_own_counters() -> None:
    settings = parse(
        "2001:db8::5;10.0.0.5;2001:db8::6;10.0.0.6",
        "ffff:ffff:ffff:ffff::;24;/64;255.255.255.128",
        "fd00::1;10.0.0.1",
        "fd00::53;10.0.0.53",
        dhcp=False,
    )
    assert render_ifcfg(settings).splitlines()[3:] == [
        "IPV6ADDR=2001:0db8:0000:0000:0000:0000:0000:0005",
        "IPADDR0=10.0.0.5",
        "IPV6ADDR_1=2001:0db8:0000:0000:0000:0000:0000:0006",
        "IPADDR1=10.0.0.6",
        "IPV6NETMASK=64",
        "NETMASK0=255.255.255.0",
        "IPV6NETMASK_1=64",
        "NETMASK1=255.255.255.128",
        "IPV6_DEFAULTGW=fd00:0000:0000:0000:0000:0000:0000:0001",
        "GATEWAY=10.0.0.1",
        "DNS1=fd00:0000:0000:0000:0000:0000:0000:0053",
        "DNS2=10.0.0.53",
    ]
    nm = render_nmconnection(settings)
    ipv4, ipv6 = nm.split("\n[ipv4]\n")[1].split("\n[ipv6]\n")
    assert ipv4 == (
        "address1=10.0.0.5/24\naddress2=10.0.0.6/25\nmethod=manual\n"
        "gateway=10.0.0.1\ndns=10.0.0.53\n"
    )
    assert ipv6 == (
        "address1=2001:db8::5/64\naddress2=2001:db8::6/64\nmethod=manual\n"
        "gateway=fd00::1\ndns=fd00::53\n"
    )


def test_ipv4_prefix_length_becomes_a_netmask_not_ipv6netmask() -> None:
    # S12: the C code writes "24" for an IPv4 address as IPV6NETMASK=24.
    text = render_ifcfg(parse("10.1.2.3;10.1.2.4", "24;/20", dhcp=False))
    assert "NETMASK0=255.255.255.0\nNETMASK1=255.255.240.0\n" in text
    assert "IPV6NETMASK" not in text


def test_third_gateway_of_a_family_counts_on() -> None:
    text = render_ifcfg(parse(gate_way="10.0.0.1;10.0.0.2;10.0.0.3;fd00::1;fd00::2", dhcp=True))
    assert [line.split("=")[0] for line in text.splitlines()[3:]] == [
        "GATEWAY",
        "GATEWAY1",
        "GATEWAY2",
        "IPV6_DEFAULTGW",
        "IPV6_DEFAULTGW_1",
    ]


def test_ipv4_mapped_ipv6_is_expanded_like_expand_ipv6() -> None:
    text = render_ifcfg(parse(dns_addr="::ffff:192.0.2.1", dhcp=True))
    assert text.endswith("DNS1=0000:0000:0000:0000:0000:ffff:c000:0201\n")


def test_upper_case_ipv6_is_written_lower_case() -> None:
    settings = parse("2001:DB8::A", "64", dhcp=False)
    assert "IPV6ADDR=2001:0db8:0000:0000:0000:0000:0000:000a\n" in render_ifcfg(settings)
    assert "address1=2001:db8::a/64\n" in render_nmconnection(settings)


@pytest.mark.parametrize(("interface", "mac"), [("eth0\nDEVICE=evil", MAC), ("eth0", "00:15\n")])
def test_renderers_refuse_settings_that_would_inject_lines(interface: str, mac: str) -> None:
    settings = IpSettings(interface, mac, False, (IPv4Interface("10.0.0.5/24"),), (), ())
    for render in (render_ifcfg, render_nmconnection):
        with pytest.raises(OperationFailed) as caught:
            render(settings)
        assert caught.value.status is HvStatus.E_FAIL


def test_file_names_match_the_reference() -> None:
    assert ifcfg_filename("eth1") == "ifcfg-eth1"
    assert nmconnection_filename("eth1") == "eth1.nmconnection"


def test_gateway_and_dns_keep_host_order_within_a_family() -> None:
    settings = parse(gate_way="10.0.0.9;10.0.0.1", dns_addr="9.9.9.9;1.1.1.1", dhcp=True)
    assert settings.gateways == (ip_address("10.0.0.9"), ip_address("10.0.0.1"))
    assert "gateway=10.0.0.9,10.0.0.1\ndns=9.9.9.9,1.1.1.1\n" in render_nmconnection(settings)
