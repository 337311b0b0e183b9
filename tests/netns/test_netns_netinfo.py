"""LinuxNetInfo and RouteNetlink inside a namespace built with pyroute2.

The probe runs in a child process that entered the namespace; its answers
are compared with what the lab configured and with pyroute2's own view.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from .lab import BULK_ADDRESSES, BULK_ROUTES, NetnsLab

pytestmark = pytest.mark.root

PROBE = Path(__file__).with_name("netinfo_probe.py")
GUID = "4d2b6f1e-8a3c-4f5d-9e7a-0b1c2d3e4f50"
MAC_QUERIES = ["00-15-5d-01-02-01", "00:15:5D:01:02:10", "00:15:5D:01:02", "00155d010203"]
DEVICE_ID_QUERIES = [GUID.upper(), "{" + GUID + "}", "{00000000-0000-0000-0000-000000000000}"]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def probe(netns_lab: NetnsLab, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Everything the probe reports, read once per module."""
    root = tmp_path_factory.mktemp("roots")
    index = netns_lab.index
    write(root / "etc/resolv.conf", "nameserver 127.0.0.53\n")
    write(root / "run/systemd/resolve/resolv.conf", "nameserver 198.51.100.53\n")
    write(root / f"run/systemd/resolve/netif/{index['eth0']}", "DNS=192.0.2.53 2001:db8::53\n")
    write(root / "etc/network/interfaces", "iface eth10 inet dhcp\niface eth1 inet static\n")
    # sysfs is mounted for the machine's namespace, so the device ids live in a fake tree.
    write(root / "sys/class/net/eth1/device/device_id", "{" + GUID + "}\n")
    write(root / "sys/class/net/eth10/device/device_id", "{" + GUID[:-2] + "ff}\n")
    return netns_lab.run(
        PROBE,
        {
            "sys_root": str(root / "sys"),
            "etc_root": str(root / "etc"),
            "run_root": str(root / "run"),
            "macs": MAC_QUERIES,
            "device_ids": DEVICE_ID_QUERIES,
        },
    )


@pytest.fixture(scope="module")
def oracle(netns_lab: NetnsLab) -> dict[str, Any]:
    """pyroute2's view of the same namespace."""
    from pyroute2 import IPRoute

    with IPRoute(netns=netns_lab.name) as ipr:
        return {
            "links": list(ipr.get_links()),
            "addresses": list(ipr.get_addr()),
            "routes": list(ipr.get_routes(family=socket.AF_UNSPEC, table=254)),
        }


def nic(probe: Any, name: str) -> Any:
    return next(n for n in probe["nics"] if n["name"] == name)


def test_only_the_namespace_links_are_seen(probe: Any, netns_lab: NetnsLab) -> None:
    assert [n["name"] for n in probe["nics"]] == sorted(
        netns_lab.index, key=netns_lab.index.__getitem__
    )
    assert [n["index"] for n in probe["nics"]] == sorted(netns_lab.index.values())


def test_macs_are_upper_case_and_exact(probe: Any) -> None:
    assert nic(probe, "eth0")["mac"] == "00:15:5D:01:02:03"
    assert nic(probe, "eth10")["mac"] == "00:15:5D:01:02:10"


def test_addresses_with_prefix_lifetime_and_link_local(probe: Any) -> None:
    addresses = nic(probe, "eth0")["addresses"]
    assert addresses[:3] == [
        ["192.0.2.10/24", False],
        ["198.51.100.5/24", True],
        ["2001:db8::10/64", False],
    ]
    # The kernel-made link-local address, derived from the MAC (EUI-64), no "%eth0".
    assert addresses[3:] == [["fe80::215:5dff:fe01:203/64", False]]
    assert [a for a, _ in nic(probe, "eth10")["addresses"]] == [
        "203.0.113.130/25",
        "fe80::215:5dff:fe01:210/64",
    ]


def test_gateways_are_per_nic_and_ipv4_first(probe: Any) -> None:
    assert probe["gateways"] == {
        "eth0": ["192.0.2.1", "2001:db8::1"],
        "peer0": [],
        "eth1": ["203.0.113.1", "fe80::1"],
        "eth10": ["203.0.113.129", "fe80::2"],
    }


def test_dhcp_from_lease_lifetime_and_ifupdown(probe: Any) -> None:
    assert probe["dhcp"] == {"eth0": True, "peer0": False, "eth1": False, "eth10": True}


def test_dns_per_link_then_resolved_upstream(probe: Any) -> None:
    assert probe["dns"]["eth0"] == ["192.0.2.53", "2001:db8::53"]
    assert probe["dns"]["eth1"] == ["198.51.100.53"]


def test_match_mac_never_matches_by_prefix(probe: Any) -> None:
    assert probe["match_mac"] == {
        "00-15-5d-01-02-01": ["eth1"],
        "00:15:5D:01:02:10": ["eth10"],
        "00:15:5D:01:02": [],
        "00155d010203": ["eth0"],
    }


def test_device_id_lookup(probe: Any) -> None:
    assert probe["device_ids"] == {
        DEVICE_ID_QUERIES[0]: "eth1",
        DEVICE_ID_QUERIES[1]: "eth1",
        DEVICE_ID_QUERIES[2]: None,
    }


def test_links_agree_with_pyroute2(probe: Any, oracle: dict[str, Any]) -> None:
    theirs = sorted([m["index"], m.get("ifname"), m.get("address")] for m in oracle["links"])
    assert sorted(probe["links"]) == theirs


def test_addresses_agree_with_pyroute2(probe: Any, oracle: dict[str, Any]) -> None:
    def lifetime(m: Any) -> int | None:
        valid = m.get("cacheinfo")["ifa_valid"]
        return None if valid == 0xFFFFFFFF else valid

    theirs = sorted(
        [m["index"], m.get("local") or m.get("address"), m["prefixlen"], m["scope"]]
        for m in oracle["addresses"]
    )
    ours = sorted([i, a, p, s] for i, a, p, _valid, s in probe["addresses"])
    assert ours == theirs
    # Lifetimes count down, so compare which ones are finite, not their values.
    finite_theirs = sorted(m.get("local") for m in oracle["addresses"] if lifetime(m) is not None)
    finite_ours = sorted(a for _i, a, _p, valid, _s in probe["addresses"] if valid is not None)
    assert finite_ours == finite_theirs == ["198.51.100.5"]


def test_main_table_routes_agree_with_pyroute2(probe: Any, oracle: dict[str, Any]) -> None:
    def hops(m: Any) -> list[list[object]]:
        if m.get("multipath"):
            return sorted(
                [hop["oif"], dict(hop["attrs"]).get("RTA_GATEWAY", "None")]
                for hop in m.get("multipath")
            )
        return [[m.get("oif") or 0, str(m.get("gateway"))]]

    def destination(m: Any) -> str:
        default = "0.0.0.0" if m["family"] == socket.AF_INET else "::"
        return f"{m.get('dst') or default}/{m['dst_len']}"

    theirs = sorted(
        [m["family"], destination(m), m.get("priority"), hops(m)] for m in oracle["routes"]
    )
    assert sorted(probe["routes"]) == theirs


def test_big_dumps_span_several_datagrams(probe: Any) -> None:
    peer0 = nic(probe, "peer0")
    assert len(peer0["addresses"]) == BULK_ADDRESSES + 1  # + its link-local address
    assert len(probe["routes"]) > BULK_ROUTES
    links, addresses, routes = probe["datagrams"]
    assert links >= 1
    assert addresses > 1
    assert routes > 1
    assert probe["snapshot_agrees"]
