"""The namespace lab the netns tests share: its plan, its builder, a child runner.

Every link is created through ``IPRoute(netns=...)`` inside a namespace the
``netns_lab`` fixture (conftest.py) made; nothing here touches the machine's
own namespace.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How many extra addresses and routes make the dumps span several datagrams
#: (the kernel fills at most 32 KiB per read).
BULK_ADDRESSES = 500
BULK_ROUTES = 600
IFA_F_NODAD = 0x02
RTNH_F_ONLINK = 0x04
CHILD_TIMEOUT = 60
LINK_LOCAL_TIMEOUT = 10


@dataclass(frozen=True)
class LinkPlan:
    name: str
    mac: str
    #: (address/prefix, valid lifetime or None for forever)
    addresses: tuple[tuple[str, int | None], ...] = ()


#: veth pairs (eth0, peer0) and (eth1, eth10): eth10 proves nothing matches by prefix.
LINKS = (
    LinkPlan(
        "eth0",
        "00:15:5d:01:02:03",
        (("192.0.2.10/24", None), ("198.51.100.5/24", 3600), ("2001:db8::10/64", None)),
    ),
    LinkPlan("peer0", "00:15:5d:0a:0b:0c"),
    LinkPlan("eth1", "00:15:5d:01:02:01", (("203.0.113.10/25", None), ("2001:db8:1::10/64", None))),
    LinkPlan("eth10", "00:15:5d:01:02:10", (("203.0.113.130/25", None),)),
)


@dataclass
class NetnsLab:
    """A configured namespace: its name and the interface indexes the kernel gave."""

    name: str
    index: dict[str, int] = field(default_factory=dict)

    def run(self, script: Path, argument: Any) -> Any:
        """Run ``script`` with a JSON argument inside the namespace; return its JSON output."""
        from pyroute2 import netns

        def enter() -> None:
            netns.setns(self.name, flags=0)  # flags=0: never create, only enter

        result = subprocess.run(
            [sys.executable, str(script), json.dumps(argument)],
            preexec_fn=enter,  # between fork and exec: the child starts inside the namespace
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _wait_for_link_local(ipr: Any, indexes: set[int]) -> None:
    """Wait until every link has its fe80:: address.

    The kernel adds it when it sees the carrier come up, from a work queue
    (linkwatch), so it may appear a moment after the links are set up.
    """
    deadline = time.monotonic() + LINK_LOCAL_TIMEOUT
    while True:
        ready = {
            m["index"]
            for m in ipr.get_addr(family=socket.AF_INET6)
            if str(m.get("address")).startswith("fe80:")
        }
        if indexes <= ready:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no link-local address on links {sorted(indexes - ready)}")
        time.sleep(0.05)


def build(ipr: Any, lab: NetnsLab) -> None:
    """Create the LINKS, their addresses and the routes inside ``ipr``'s namespace."""
    ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "peer0"})
    ipr.link("add", ifname="eth1", kind="veth", peer={"ifname": "eth10"})
    for plan in LINKS:
        (index,) = ipr.link_lookup(ifname=plan.name)
        lab.index[plan.name] = index
        ipr.link("set", index=index, address=plan.mac, state="up")
        for text, valid in plan.addresses:
            address, prefix = text.split("/")
            extra: dict[str, Any] = {}
            if valid is not None:
                extra = {"valid_lft": valid, "preferred_lft": valid // 2}
            if ":" in address:
                extra["flags"] = IFA_F_NODAD  # usable at once, no DAD wait
            ipr.addr("add", index=index, address=address, prefixlen=int(prefix), **extra)
    _wait_for_link_local(ipr, set(lab.index.values()))
    eth0, eth1, eth10 = lab.index["eth0"], lab.index["eth1"], lab.index["eth10"]
    ipr.route("add", dst="0.0.0.0/0", gateway="192.0.2.1", oif=eth0, priority=100)
    ipr.route(
        "add", dst="::/0", gateway="2001:db8::1", oif=eth0, priority=100, family=socket.AF_INET6
    )
    ipr.route(
        "add",
        dst="0.0.0.0/0",
        priority=200,
        multipath=[
            {"gateway": "203.0.113.1", "oif": eth1},
            {"gateway": "203.0.113.129", "oif": eth10},
        ],
    )
    ipr.route(
        "add",
        dst="::/0",
        priority=300,
        family=socket.AF_INET6,
        multipath=[{"gateway": "fe80::1", "oif": eth1}, {"gateway": "fe80::2", "oif": eth10}],
    )
    # Neither may show up as a gateway: another table, and a non-default route.
    ipr.route(
        "add", dst="0.0.0.0/0", gateway="198.18.0.1", oif=eth10, table=100, flags=RTNH_F_ONLINK
    )
    ipr.route("add", dst="10.9.0.0/16", gateway="203.0.113.129", oif=eth10)
    peer0 = lab.index["peer0"]
    for n in range(1, BULK_ADDRESSES + 1):
        ipr.addr(
            "add", index=peer0, address=f"2001:db8:ffff::{n:x}", prefixlen=128, flags=IFA_F_NODAD
        )
    for n in range(BULK_ROUTES):
        ipr.route("add", dst=f"10.{100 + n // 256}.{n % 256}.0/24", gateway="192.0.2.1", oif=eth0)
