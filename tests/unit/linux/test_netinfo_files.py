"""LinuxNetInfo over a scripted rtnetlink source and file trees under tmp_path."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface, ip_network
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed, WireError
from hvguest.linux.netinfo import LinuxNetInfo, format_mac
from hvguest.linux.netlink import IFF_LOOPBACK, Address, Link, NextHop, Route
from hvguest.services.ports import Nic, NicAddress

ETH0, ETH1, ETH10 = 2, 3, 4


@dataclass
class StaticNetlink:
    """Fixed kernel tables; ``failure`` makes every dump raise it."""

    link_list: list[Link] = field(default_factory=list)
    address_list: list[Address] = field(default_factory=list)
    route_list: list[Route] = field(default_factory=list)
    failure: Exception | None = None

    def links(self) -> list[Link]:
        self._fail()
        return self.link_list

    def addresses(self) -> list[Address]:
        self._fail()
        return self.address_list

    def routes(self, table: int = 254) -> list[Route]:
        self._fail()
        return self.route_list

    def _fail(self) -> None:
        if self.failure is not None:
            raise self.failure


def addr(index: int, text: str, *, valid: int | None = None, scope: int = 0) -> Address:
    interface = ip_interface(text)
    family = socket.AF_INET if interface.version == 4 else socket.AF_INET6
    return Address(family, index, interface.ip, interface.network.prefixlen, 0, scope, valid, valid)


def default_route(
    gateway: str | None,
    oif: int | None,
    *,
    priority: int | None = None,
    route_type: int = 1,
    multipath: tuple[NextHop, ...] = (),
    family: int = socket.AF_INET,
) -> Route:
    destination = ip_network("0.0.0.0/0" if family == socket.AF_INET else "::/0")
    return Route(
        family=family,
        table=254,
        destination=destination,
        route_type=route_type,
        protocol=3,
        scope=0,
        priority=priority,
        oif=oif,
        gateway=None if gateway is None else ip_address(gateway),
        multipath=multipath,
    )


LINKS = [
    Link(ETH10, "eth10", bytes.fromhex("00155d010210"), 0x1, 1),
    Link(1, "lo", bytes(6), IFF_LOOPBACK | 0x1, 772),
    Link(ETH0, "eth0", bytes.fromhex("00155d0102ab"), 0x1, 1),
    Link(ETH1, "eth1", bytes.fromhex("00155d010201"), 0x1, 1),
]
ADDRESSES = [
    addr(1, "127.0.0.1/8", scope=254),
    addr(ETH0, "192.0.2.10/24"),
    addr(ETH0, "198.51.100.5/24", valid=3600),
    addr(ETH0, "2001:db8::10/64"),
    addr(ETH0, "fe80::215:5dff:fe01:2ab/64", scope=253),
    addr(ETH1, "203.0.113.10/25"),
    addr(ETH10, "2001:db8:1::5/64", valid=86400),
]


def make(tmp_path: Path, netlink: StaticNetlink | None = None) -> LinuxNetInfo:
    for root in ("sys", "etc", "run"):
        (tmp_path / root).mkdir(exist_ok=True)
    return LinuxNetInfo(
        sys_root=tmp_path / "sys",
        etc_root=tmp_path / "etc",
        run_root=tmp_path / "run",
        netlink=netlink if netlink is not None else StaticNetlink(LINKS, ADDRESSES),
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def nic_named(info: LinuxNetInfo, name: str) -> Nic:
    return next(nic for nic in info.nics() if nic.name == name)


# -- nics() ------------------------------------------------------------------------------


def test_nics_skip_loopback_and_come_in_index_order(tmp_path: Path) -> None:
    assert [(n.name, n.index) for n in make(tmp_path).nics()] == [
        ("eth0", ETH0),
        ("eth1", ETH1),
        ("eth10", ETH10),
    ]


def test_nic_mac_is_upper_case_and_colon_separated(tmp_path: Path) -> None:
    assert nic_named(make(tmp_path), "eth0").mac == "00:15:5D:01:02:AB"
    assert format_mac(b"") == ""


def test_nic_addresses_keep_kernel_order_prefix_and_lifetime(tmp_path: Path) -> None:
    eth0 = nic_named(make(tmp_path), "eth0")
    assert eth0.addresses == (
        NicAddress(ip_interface("192.0.2.10/24")),
        NicAddress(ip_interface("198.51.100.5/24"), dynamic=True),
        NicAddress(ip_interface("2001:db8::10/64")),
        NicAddress(ip_interface("fe80::215:5dff:fe01:2ab/64")),
    )
    # The reference reports link-local addresses without "%eth0".
    assert str(eth0.addresses[-1].interface.ip) == "fe80::215:5dff:fe01:2ab"


def test_nic_without_addresses_has_none(tmp_path: Path) -> None:
    info = make(tmp_path, StaticNetlink([Link(7, "eth7", bytes(6), 0, 1)], []))
    assert info.nics() == [Nic("eth7", 7, "00:00:00:00:00:00", ())]


@pytest.mark.parametrize(
    "failure",
    [OSError(errno.EPERM, "no"), WireError("garbled")],
    ids=["os-error", "wire-error"],
)
def test_kernel_failures_become_e_fail(tmp_path: Path, failure: Exception) -> None:
    info = make(tmp_path, StaticNetlink(failure=failure))
    with pytest.raises(OperationFailed) as caught:
        info.nics()
    assert caught.value.status == HvStatus.E_FAIL
    with pytest.raises(OperationFailed):
        info.gateways(Nic("eth0", ETH0, ""))


# -- gateways() -------------------------------------------------------------------------------


def gateways_for(tmp_path: Path, routes: list[Route], index: int) -> list[str]:
    info = make(tmp_path, StaticNetlink(LINKS, ADDRESSES, routes))
    return [str(g) for g in info.gateways(Nic("x", index, ""))]


def test_gateways_are_per_nic_not_system_wide(tmp_path: Path) -> None:
    routes = [
        default_route("192.0.2.1", ETH0),
        default_route("203.0.113.1", ETH1),
        default_route("2001:db8:1::1", ETH10, family=socket.AF_INET6),
    ]
    assert gateways_for(tmp_path, routes, ETH0) == ["192.0.2.1"]
    assert gateways_for(tmp_path, routes, ETH1) == ["203.0.113.1"]
    assert gateways_for(tmp_path, routes, ETH10) == ["2001:db8:1::1"]


def test_ipv4_gateways_come_before_ipv6_and_lower_metric_first(tmp_path: Path) -> None:
    routes = [
        default_route("fe80::1", ETH0, family=socket.AF_INET6, priority=1024),
        default_route("192.0.2.254", ETH0, priority=600),
        default_route("192.0.2.1", ETH0, priority=100),
        default_route("192.0.2.1", ETH0, priority=700),  # same gateway twice: reported once
    ]
    assert gateways_for(tmp_path, routes, ETH0) == ["192.0.2.1", "192.0.2.254", "fe80::1"]


def test_multipath_default_route_counts_for_each_of_its_nics(tmp_path: Path) -> None:
    hops = (
        NextHop(ETH1, IPv4Address("203.0.113.1")),
        NextHop(ETH10, IPv4Address("203.0.113.129")),
    )
    routes = [default_route(None, None, multipath=hops)]
    assert gateways_for(tmp_path, routes, ETH1) == ["203.0.113.1"]
    assert gateways_for(tmp_path, routes, ETH10) == ["203.0.113.129"]
    assert gateways_for(tmp_path, routes, ETH0) == []


def test_non_default_unreachable_and_gatewayless_routes_are_not_gateways(tmp_path: Path) -> None:
    subnet = Route(
        socket.AF_INET,
        254,
        ip_network("10.0.0.0/8"),
        1,
        3,
        0,
        None,
        ETH0,
        IPv4Address("192.0.2.9"),
    )
    routes = [
        subnet,
        default_route("192.0.2.7", ETH0, route_type=7),  # RTN_UNREACHABLE
        default_route(None, ETH0),  # "default dev eth0"
    ]
    assert gateways_for(tmp_path, routes, ETH0) == []


def test_ipv4_route_through_ipv6_next_hop_is_listed_with_ipv6(tmp_path: Path) -> None:
    routes = [default_route("fe80::9", ETH0), default_route("192.0.2.1", ETH0, priority=900)]
    assert gateways_for(tmp_path, routes, ETH0) == ["192.0.2.1", "fe80::9"]


# -- dns_servers() ----------------------------------------------------------------------------


def test_resolved_per_link_servers_win(tmp_path: Path) -> None:
    info = make(tmp_path)
    write(tmp_path / "etc/resolv.conf", "nameserver 10.0.0.1\n")
    write(
        tmp_path / f"run/systemd/resolve/netif/{ETH0}",
        "# This is private data. Do not parse.\nLLMNR=yes\n"
        "DNS=192.0.2.53 1.1.1.1:853#one.one.one.one [2001:db8::53]:53 fe80::53%2 bogus\n",
    )
    eth0 = nic_named(info, "eth0")
    assert info.dns_servers(eth0) == ["192.0.2.53", "1.1.1.1", "2001:db8::53", "fe80::53"]
    assert info.dns_servers(nic_named(info, "eth1")) == ["10.0.0.1"]


def test_resolved_link_file_without_servers_falls_back_to_resolv_conf(tmp_path: Path) -> None:
    info = make(tmp_path)
    write(tmp_path / f"run/systemd/resolve/netif/{ETH0}", "LLMNR=yes\nDNS=\n")
    write(tmp_path / "etc/resolv.conf", "# comment\nsearch example.com\nnameserver 10.0.0.1\n")
    assert info.dns_servers(nic_named(info, "eth0")) == ["10.0.0.1"]


def test_resolv_conf_nameservers_in_order_with_zone_dropped(tmp_path: Path) -> None:
    info = make(tmp_path)
    write(
        tmp_path / "etc/resolv.conf",
        "nameserver 10.0.0.1\n nameserver   2001:db8::1  # v6\n"
        "nameserver fe80::1%eth0\nnameserver not-an-ip\n#nameserver 9.9.9.9\noptions edns0\n",
    )
    assert info.dns_servers(nic_named(info, "eth0")) == ["10.0.0.1", "2001:db8::1", "fe80::1"]


def test_resolved_stub_is_replaced_by_the_upstream_list(tmp_path: Path) -> None:
    info = make(tmp_path)
    write(tmp_path / "etc/resolv.conf", "nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    write(tmp_path / "run/systemd/resolve/resolv.conf", "nameserver 192.0.2.53\n")
    assert info.dns_servers(nic_named(info, "eth1")) == ["192.0.2.53"]


def test_stub_without_upstream_file_is_reported_as_is(tmp_path: Path) -> None:
    info = make(tmp_path)
    write(tmp_path / "etc/resolv.conf", "nameserver 127.0.0.53\n")
    assert info.dns_servers(nic_named(info, "eth1")) == ["127.0.0.53"]


def test_resolv_conf_path_is_injectable_and_missing_means_none(tmp_path: Path) -> None:
    custom = tmp_path / "elsewhere.conf"
    info = LinuxNetInfo(
        etc_root=tmp_path / "etc",
        run_root=tmp_path / "run",
        resolv_conf=custom,
        netlink=StaticNetlink(LINKS, ADDRESSES),
    )
    eth1 = nic_named(info, "eth1")
    assert info.dns_servers(eth1) == []
    write(custom, "nameserver 192.0.2.99\n")
    assert info.dns_servers(eth1) == ["192.0.2.99"]


# -- dhcp_enabled() ---------------------------------------------------------------------------


def test_ipv4_address_with_lease_lifetime_means_dhcp(tmp_path: Path) -> None:
    assert make(tmp_path).dhcp_enabled(nic_named(make(tmp_path), "eth0"))


def test_finite_ipv6_lifetime_alone_is_not_dhcp(tmp_path: Path) -> None:
    info = make(tmp_path)
    assert not info.dhcp_enabled(nic_named(info, "eth10"))


def test_networkd_lease_file_means_dhcp(tmp_path: Path) -> None:
    info = make(tmp_path)
    write(tmp_path / f"run/systemd/netif/leases/{ETH1}", "ADDRESS=203.0.113.10\n")
    assert info.dhcp_enabled(nic_named(info, "eth1"))
    assert not info.dhcp_enabled(nic_named(info, "eth10"))


def test_ifupdown_stanza_matches_the_exact_name(tmp_path: Path) -> None:
    info = make(tmp_path)
    write(tmp_path / "etc/network/interfaces", "auto eth10\n  iface eth10 inet dhcp # lease\n")
    assert info.dhcp_enabled(nic_named(info, "eth10"))
    assert not info.dhcp_enabled(nic_named(info, "eth1"))


def test_ifupdown_reads_interfaces_d_files_with_valid_names_only(tmp_path: Path) -> None:
    info = make(tmp_path)
    write(tmp_path / "etc/network/interfaces", "source /etc/network/interfaces.d/*\n")
    write(tmp_path / "etc/network/interfaces.d/eth1.bak", "iface eth1 inet dhcp\n")
    assert not info.dhcp_enabled(nic_named(info, "eth1"))
    write(tmp_path / "etc/network/interfaces.d/eth1-cfg", "iface eth1 inet dhcp\n")
    assert info.dhcp_enabled(nic_named(info, "eth1"))


def test_ifupdown_static_and_inet6_dhcp_are_not_dhcp(tmp_path: Path) -> None:
    info = make(tmp_path)
    write(tmp_path / "etc/network/interfaces", "iface eth1 inet static\niface eth1 inet6 dhcp\n")
    assert not info.dhcp_enabled(nic_named(info, "eth1"))


@pytest.mark.parametrize(
    ("directory", "line", "expected"),
    [
        ("sysconfig/network-scripts", 'BOOTPROTO="dhcp"', True),
        ("sysconfig/network-scripts", "BOOTPROTO=none", False),
        ("sysconfig/network", "BOOTPROTO='dhcp4'", True),
        ("sysconfig/network", "BOOTPROTO='static'", False),
    ],
)
def test_ifcfg_bootproto(tmp_path: Path, directory: str, line: str, expected: bool) -> None:
    info = make(tmp_path)
    write(tmp_path / "etc" / directory / "ifcfg-eth1", f"DEVICE=eth1\n{line}\n")
    assert info.dhcp_enabled(nic_named(info, "eth1")) is expected
    assert not info.dhcp_enabled(nic_named(info, "eth10"))


def test_nothing_known_means_no_dhcp(tmp_path: Path) -> None:
    info = make(tmp_path)
    assert not info.dhcp_enabled(nic_named(info, "eth1"))


# -- nic_for_device_id() ------------------------------------------------------------------------

GUID = "9f8e7d6c-5b4a-4321-8fed-cba987654321"


def with_device_ids(tmp_path: Path) -> LinuxNetInfo:
    info = make(tmp_path)
    write(tmp_path / "sys/class/net/eth1/device/device_id", "{" + GUID + "}\n")
    write(
        tmp_path / "sys/class/net/eth10/device/device_id",
        "{00000000-0000-0000-0000-0000000000aa}\n",
    )
    (tmp_path / "sys/class/net/lo").mkdir(parents=True)  # no device directory
    return info


@pytest.mark.parametrize("query", ["{" + GUID + "}", GUID.upper(), " {" + GUID.upper() + "} "])
def test_device_id_matches_ignoring_case_and_braces(tmp_path: Path, query: str) -> None:
    nic = with_device_ids(tmp_path).nic_for_device_id(query)
    assert nic is not None
    assert nic.name == "eth1"


@pytest.mark.parametrize("query", ["", "{}", "9f8e7d6c-5b4a-4321-8fed", "00000000"])
def test_device_id_without_exact_match_is_none(tmp_path: Path, query: str) -> None:
    assert with_device_ids(tmp_path).nic_for_device_id(query) is None


def test_device_id_of_interface_unknown_to_netlink_is_none(tmp_path: Path) -> None:
    info = with_device_ids(tmp_path)
    write(
        tmp_path / "sys/class/net/ghost0/device/device_id", "{12345678-0000-0000-0000-000000000000}"
    )
    assert info.nic_for_device_id("12345678-0000-0000-0000-000000000000") is None


def test_missing_sysfs_means_no_device_ids(tmp_path: Path) -> None:
    info = LinuxNetInfo(sys_root=tmp_path / "nothing", netlink=StaticNetlink(LINKS, ADDRESSES))
    assert info.nic_for_device_id(GUID) is None


# -- match_mac() -------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["00:15:5D:01:02:01", "00-15-5d-01-02-01", "00155D010201"])
def test_match_mac_normalises_case_and_separators(tmp_path: Path, query: str) -> None:
    assert [n.name for n in make(tmp_path).match_mac(query)] == ["eth1"]


@pytest.mark.parametrize("query", ["", "  ", "00:15:5D:01:02", "00:15:5D:01:02:0", "eth1"])
def test_match_mac_is_exact(tmp_path: Path, query: str) -> None:
    assert make(tmp_path).match_mac(query) == []


def test_match_mac_returns_every_nic_sharing_the_mac(tmp_path: Path) -> None:
    links = [*LINKS, Link(9, "enP1s1", bytes.fromhex("00155d010201"), 0x1, 1)]
    info = make(tmp_path, StaticNetlink(links, ADDRESSES))
    assert [n.name for n in info.match_mac("00:15:5d:01:02:01")] == ["eth1", "enP1s1"]


def test_gateway_addresses_are_typed(tmp_path: Path) -> None:
    info = make(tmp_path, StaticNetlink(LINKS, ADDRESSES, [default_route("2001:db8::1", ETH0)]))
    assert info.gateways(Nic("eth0", ETH0, "")) == [IPv6Address("2001:db8::1")]
