"""Run inside a test namespace: print what LinuxNetInfo and RouteNetlink see, as JSON.

Usage: python netinfo_probe.py '{"sys_root": ..., "etc_root": ..., "run_root": ...,
"macs": [...], "device_ids": [...]}'
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

from hvguest.linux.netinfo import LinuxNetInfo
from hvguest.linux.netlink import NetlinkSocket, RouteNetlink, open_route_socket


class CountingSocket:
    """A real netlink socket that counts the datagrams it delivers."""

    def __init__(self, counts: list[int]) -> None:
        self._sock = open_route_socket()
        self._counts = counts
        self._counts.append(0)

    def send(self, data: bytes, flags: int = 0, /) -> int:
        return self._sock.send(data, flags)

    def recv_into(self, buffer: bytearray, nbytes: int = 0, flags: int = 0, /) -> int:
        if not flags & socket.MSG_PEEK:
            self._counts[-1] += 1
        return self._sock.recv_into(buffer, nbytes, flags)

    def close(self) -> None:
        self._sock.close()


def main(argument: dict[str, Any]) -> dict[str, Any]:
    datagrams: list[int] = []

    def open_socket() -> NetlinkSocket:
        return CountingSocket(datagrams)

    netlink = RouteNetlink(open_socket)
    info = LinuxNetInfo(
        sys_root=Path(argument["sys_root"]),
        etc_root=Path(argument["etc_root"]),
        run_root=Path(argument["run_root"]),
        netlink=netlink,
    )
    nics = info.nics()
    # One fresh socket per query, so each dump gets its own datagram counter.
    datagrams.clear()
    links, addresses, routes = netlink.links(), netlink.addresses(), netlink.routes()
    snapshot = netlink.snapshot()
    device_ids: dict[str, str | None] = {}
    for query in argument["device_ids"]:
        nic = info.nic_for_device_id(query)
        device_ids[query] = None if nic is None else nic.name
    return {
        "nics": [
            {
                "name": nic.name,
                "index": nic.index,
                "mac": nic.mac,
                "addresses": [[str(a.interface), a.dynamic] for a in nic.addresses],
            }
            for nic in nics
        ],
        "gateways": {nic.name: [str(g) for g in info.gateways(nic)] for nic in nics},
        "dns": {nic.name: info.dns_servers(nic) for nic in nics},
        "dhcp": {nic.name: info.dhcp_enabled(nic) for nic in nics},
        "match_mac": {q: [n.name for n in info.match_mac(q)] for q in argument["macs"]},
        "device_ids": device_ids,
        "datagrams": datagrams[:3],
        "snapshot_agrees": snapshot.links == tuple(links) and snapshot.routes == tuple(routes),
        "links": [[lk.index, lk.name, lk.hardware_address.hex(":")] for lk in links],
        "addresses": [
            [a.index, str(a.address), a.prefixlen, a.valid_lifetime, a.scope] for a in addresses
        ],
        "routes": [
            [
                r.family,
                str(r.destination),
                r.priority,
                sorted([h.oif or 0, str(h.gateway)] for h in r.next_hops),
            ]
            for r in routes
        ],
    }


if __name__ == "__main__":
    json.dump(main(json.loads(sys.argv[1])), sys.stdout)
