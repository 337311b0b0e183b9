"""RouteNetlink against the running kernel, with pyroute2 as the independent oracle.

Read-only dumps of the test process's own namespace: nothing is changed, and
no root is needed (the netns tests cover configured namespaces).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from hvguest.linux.netlink import RouteNetlink, open_route_socket


@pytest.fixture
def ipr() -> Any:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        yield ipr


def test_links_match_pyroute2(ipr: Any) -> None:
    theirs = {(m["index"], m.get("ifname"), m.get("address")) for m in ipr.get_links()}
    ours = {(lk.index, lk.name, lk.hardware_address.hex(":")) for lk in RouteNetlink().links()}
    assert ours == theirs


def test_addresses_match_pyroute2(ipr: Any) -> None:
    theirs = {
        (m["index"], m.get("local") or m.get("address"), m["prefixlen"])
        for m in ipr.get_addr()
        if m["family"] in (socket.AF_INET, socket.AF_INET6)
    }
    ours = {(a.index, str(a.address), a.prefixlen) for a in RouteNetlink().addresses()}
    assert ours == theirs


def test_main_table_routes_match_pyroute2(ipr: Any) -> None:
    theirs = {
        (m["family"], m.get("dst"), m["dst_len"], m.get("gateway"), m.get("oif"))
        for m in ipr.get_routes(family=socket.AF_UNSPEC, table=254)
        if m["family"] in (socket.AF_INET, socket.AF_INET6)
    }
    ours = {
        (
            r.family,
            None if r.destination.prefixlen == 0 else str(r.destination.network_address),
            r.destination.prefixlen,
            None if r.gateway is None else str(r.gateway),
            r.oif,
        )
        for r in RouteNetlink().routes()
    }
    assert ours == theirs


def test_loopback_is_always_there_and_flagged() -> None:
    loopbacks = [lk for lk in RouteNetlink().links() if lk.loopback]
    assert [lk.name for lk in loopbacks] == ["lo"]


def test_route_socket_is_close_on_exec() -> None:
    sock = open_route_socket()
    try:
        assert not sock.get_inheritable()
        assert sock.family == socket.AF_NETLINK
    finally:
        sock.close()
