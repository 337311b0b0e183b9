"""LinuxNetInfo keeps its NIC list until a change monitor reports a change."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from ipaddress import ip_interface

import pytest

from hvguest.errors import OperationFailed
from hvguest.linux.netinfo import LinuxNetInfo
from hvguest.linux.netlink import Address, Link, Route

ETH0 = 2


def _link(index: int, name: str) -> Link:
    return Link(index, name, bytes.fromhex(f"00155d0102{index:02x}"), 0x1, 1)


def _address(index: int, text: str) -> Address:
    interface = ip_interface(text)
    family = socket.AF_INET if interface.version == 4 else socket.AF_INET6
    prefix = interface.network.prefixlen
    return Address(family, index, interface.ip, prefix, 0, 0, None, None)


@dataclass
class CountingNetlink:
    """Kernel tables the test edits; counts the dumps."""

    link_list: list[Link] = field(default_factory=lambda: [_link(ETH0, "eth0")])
    address_list: list[Address] = field(default_factory=lambda: [_address(ETH0, "192.0.2.1/24")])
    dumps: int = 0
    failure: OSError | None = None

    def links(self) -> list[Link]:
        self.dumps += 1
        if self.failure is not None:
            raise self.failure
        return list(self.link_list)

    def addresses(self) -> list[Address]:
        self.dumps += 1
        return list(self.address_list)

    def routes(self, table: int = 254) -> list[Route]:
        raise AssertionError("nics() never reads routes")


@dataclass
class ScriptedChanges:
    """Reports a change when told to, like a notification socket with something queued."""

    pending: bool = False
    closed: bool = False

    def changed(self) -> bool:
        pending, self.pending = self.pending, False
        return pending

    def close(self) -> None:
        self.closed = True


def _addresses(info: LinuxNetInfo) -> list[str]:
    return [str(a.interface) for nic in info.nics() for a in nic.addresses]


def test_without_a_monitor_every_call_dumps() -> None:
    netlink = CountingNetlink()
    info = LinuxNetInfo(netlink=netlink)
    info.nics()
    info.nics()
    assert netlink.dumps == 4


def test_a_quiet_monitor_serves_the_list_read_first() -> None:
    netlink = CountingNetlink()
    info = LinuxNetInfo(netlink=netlink, changes=ScriptedChanges())
    first = info.nics()
    assert [info.nics() for _ in range(10)] == [first] * 10
    assert netlink.dumps == 2  # one links dump and one addresses dump, once


def test_a_reported_change_is_read_on_the_next_call() -> None:
    netlink = CountingNetlink()
    changes = ScriptedChanges()
    info = LinuxNetInfo(netlink=netlink, changes=changes)
    assert _addresses(info) == ["192.0.2.1/24"]
    netlink.address_list.append(_address(ETH0, "2001:db8::1/64"))
    changes.pending = True
    assert _addresses(info) == ["192.0.2.1/24", "2001:db8::1/64"]
    assert _addresses(info) == ["192.0.2.1/24", "2001:db8::1/64"]
    assert netlink.dumps == 4


def test_callers_cannot_edit_the_kept_list() -> None:
    info = LinuxNetInfo(netlink=CountingNetlink(), changes=ScriptedChanges())
    info.nics().clear()
    assert [nic.name for nic in info.nics()] == ["eth0"]


def test_a_failed_read_is_not_kept() -> None:
    netlink = CountingNetlink(failure=OSError(105, "No buffer space available"))
    info = LinuxNetInfo(netlink=netlink, changes=ScriptedChanges())
    with pytest.raises(OperationFailed, match="reading links and addresses"):
        info.nics()
    netlink.failure = None
    assert [nic.name for nic in info.nics()] == ["eth0"]


def test_match_mac_uses_the_kept_list() -> None:
    netlink = CountingNetlink()
    info = LinuxNetInfo(netlink=netlink, changes=ScriptedChanges())
    info.nics()
    assert [nic.name for nic in info.match_mac("00-15-5d-01-02-02")] == ["eth0"]
    assert netlink.dumps == 2


def test_close_stops_the_monitor_and_drops_the_list() -> None:
    netlink = CountingNetlink()
    changes = ScriptedChanges()
    info = LinuxNetInfo(netlink=netlink, changes=changes)
    info.nics()
    info.close()
    assert changes.closed
    info.nics()
    info.nics()
    assert netlink.dumps == 6  # back to a dump per call
