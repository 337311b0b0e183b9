"""LinuxNetInfo on the test process's own namespace, read-only, against pyroute2."""

from __future__ import annotations

import socket
from typing import Any

from hvguest.linux.netinfo import LinuxNetInfo


def test_nics_agree_with_pyroute2() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = {m["index"]: m for m in ipr.get_links()}
        addresses: dict[int, set[str]] = {}
        for m in ipr.get_addr():
            if m["family"] in (socket.AF_INET, socket.AF_INET6):
                text = f"{m.get('local') or m.get('address')}/{m['prefixlen']}"
                addresses.setdefault(m["index"], set()).add(text)

    def loopback(m: Any) -> bool:
        return bool(m["flags"] & 0x8)

    nics = LinuxNetInfo().nics()
    assert [n.index for n in nics] == sorted(i for i, m in links.items() if not loopback(m))
    for nic in nics:
        assert nic.name == links[nic.index].get("ifname")
        assert nic.mac == (links[nic.index].get("address") or "").upper()
        assert {str(a.interface) for a in nic.addresses} == addresses.get(nic.index, set())
