"""The guest's network as the KVP service reports it: NICs, gateways, DNS, DHCP.

Replaces, in tools/hv/hv_kvp_daemon.c, getifaddrs() in kvp_get_ip_info(),
the ``ip route show`` popen of kvp_get_gateway(), the hv_get_dns_info and
hv_get_dhcp_info helper scripts, and the /sys/class/net scans of
kvp_mac_to_if_name() / kvp_get_if_name(). Addresses and routes come from
rtnetlink (``hvguest.linux.netlink``); the rest from files under injectable
roots (``sys_root``, ``etc_root``, ``run_root``).

Fixed on purpose (protocol.md S11): gateways are the default routes through
the NIC asked about, not every default route of the system, and names and
MACs are compared exactly (the reference's name-prefix match let "eth1" take
the addresses of "eth10").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from ipaddress import IPv4Address, ip_address, ip_interface
from pathlib import Path
from typing import Final, Protocol

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed, WireError
from hvguest.linux.netlink import RTN_UNICAST, Address, Link, Route, RouteNetlink
from hvguest.services.ports import IpAddress, Nic, NicAddress, mac_key

#: Addresses systemd-resolved listens on for local clients; a resolv.conf that
#: names them says nothing about the real servers (resolved.conf(5)).
RESOLVED_STUB_ADDRESSES: Final = frozenset({IPv4Address("127.0.0.53"), IPv4Address("127.0.0.54")})
#: ifupdown only reads interfaces.d files with these names (interfaces(5)); the
#: reference hv_get_dhcp_info script applies the same pattern.
_IFUPDOWN_FILE_NAME: Final = re.compile(r"[A-Za-z0-9_-]+")


class NetlinkSource(Protocol):
    """What LinuxNetInfo reads from rtnetlink (``RouteNetlink`` in production)."""

    def links(self) -> list[Link]:
        """Every link."""
        ...

    def addresses(self) -> list[Address]:
        """Every IPv4/IPv6 address."""
        ...

    def routes(self, table: int = ...) -> list[Route]:
        """Routes of the main table."""
        ...


class NicChanges(Protocol):
    """Whether links or addresses changed (``netlink.ChangeMonitor`` in production)."""

    def changed(self) -> bool:
        """True if anything changed since the last call (or since watching began)."""
        ...

    def close(self) -> None:
        """Stop watching."""
        ...


class LinuxNetInfo:
    """``NetInfo`` over rtnetlink and the distribution's network files.

    Failures to talk to the kernel raise ``OperationFailed(E_FAIL)``; missing
    or unreadable optional files (resolv.conf, lease files, ifcfg) just mean
    "no information", as the reference scripts print nothing then.
    """

    def __init__(
        self,
        *,
        sys_root: Path = Path("/sys"),
        etc_root: Path = Path("/etc"),
        run_root: Path = Path("/run"),
        resolv_conf: Path | None = None,
        netlink: NetlinkSource | None = None,
        changes: NicChanges | None = None,
    ) -> None:
        """``changes``: keep the NIC list until it reports a change (see ``nics``).

        It must watch the network namespace that ``netlink`` reads.
        """
        self._sys_root = sys_root
        self._etc_root = etc_root
        self._run_root = run_root
        self._resolv_conf = resolv_conf if resolv_conf is not None else etc_root / "resolv.conf"
        self._netlink: NetlinkSource = netlink if netlink is not None else RouteNetlink()
        self._changes = changes
        self._nics: list[Nic] | None = None

    def close(self) -> None:
        """Close the change monitor, if any."""
        if self._changes is not None:
            self._changes.close()
            self._changes = None
            self._nics = None

    # -- NetInfo ---------------------------------------------------------------------

    def nics(self) -> list[Nic]:
        """Non-loopback links with their addresses, by interface index.

        Addresses keep the kernel's order (IPv4 first; IPv6 by scope, global
        before link-local), the order getifaddrs() gave the reference.

        With a change monitor the list is read once and kept until the kernel
        reports a link or address change: a host sweep of the AUTO pool asks
        for it twice (IPv4, IPv6) every few seconds, and each read is two dumps.
        """
        with _kernel_failures("reading links and addresses"):
            if self._changes is None:
                return self._read_nics()
            # Drain first, then dump: a change after the drain is queued for the next call.
            if self._changes.changed() or self._nics is None:
                self._nics = None
                self._nics = self._read_nics()
            return list(self._nics)

    def _read_nics(self) -> list[Nic]:
        with _kernel_failures("reading links and addresses"):
            links = self._netlink.links()
            addresses = self._netlink.addresses()
        by_index: dict[int, list[NicAddress]] = {}
        for address in addresses:
            by_index.setdefault(address.index, []).append(
                NicAddress(
                    ip_interface((address.address, address.prefixlen)),
                    dynamic=address.valid_lifetime is not None,
                )
            )
        return [
            Nic(
                link.name,
                link.index,
                format_mac(link.hardware_address),
                tuple(by_index.get(link.index, ())),
            )
            for link in sorted(links, key=lambda link: link.index)
            if not link.loopback
        ]

    def gateways(self, nic: Nic) -> list[IpAddress]:
        """Gateways of the default routes leaving through ``nic``: IPv4 first, then IPv6.

        Multipath default routes count when one of their next hops uses the
        NIC. Within a family, the lower metric (the route the kernel prefers)
        comes first; duplicates are dropped.
        """
        with _kernel_failures("reading routes"):
            routes = self._netlink.routes()
        found: list[tuple[int, int, IpAddress]] = []
        for route in routes:
            if not route.is_default or route.route_type != RTN_UNICAST:
                continue
            for hop in route.next_hops:
                if hop.oif == nic.index and hop.gateway is not None:
                    found.append((hop.gateway.version, route.priority or 0, hop.gateway))
        found.sort(key=lambda entry: entry[:2])
        return list(dict.fromkeys(gateway for _version, _priority, gateway in found))

    def dns_servers(self, nic: Nic) -> list[str]:
        """Name servers for ``nic``.

        systemd-resolved's per-link view (/run/systemd/resolve/netif/<ifindex>,
        filled by networkd or NetworkManager over D-Bus) when it lists any;
        otherwise the ``nameserver`` lines of resolv.conf, or of
        /run/systemd/resolve/resolv.conf when resolv.conf only names the
        resolved stub (127.0.0.53).
        """
        per_link = self._resolved_link_servers(nic.index)
        if per_link:
            return per_link
        servers = _nameservers(_read_text(self._resolv_conf))
        if servers and all(ip_address(server) in RESOLVED_STUB_ADDRESSES for server in servers):
            upstream = _nameservers(
                _read_text(self._run_root / "systemd" / "resolve" / "resolv.conf")
            )
            if upstream:
                return upstream
        return servers

    def dhcp_enabled(self, nic: Nic) -> bool:
        """Whether ``nic``'s IPv4 configuration comes from DHCP; first hit wins.

        1. an IPv4 address with a finite lifetime: NetworkManager,
           systemd-networkd and dhclient give leased addresses the lease time;
        2. a systemd-networkd lease file /run/systemd/netif/leases/<ifindex>;
        3. ifupdown: ``iface <name> inet dhcp`` in /etc/network/interfaces or
           /etc/network/interfaces.d/*;
        4. ifcfg: ``BOOTPROTO=dhcp`` (or dhcp4, ...) in
           /etc/sysconfig/network-scripts/ifcfg-<name> (Red Hat) or
           /etc/sysconfig/network/ifcfg-<name> (SUSE).
        Otherwise False.
        """
        if any(a.dynamic and a.interface.version == 4 for a in nic.addresses):
            return True
        if (self._run_root / "systemd" / "netif" / "leases" / str(nic.index)).is_file():
            return True
        if self._ifupdown_dhcp(nic.name):
            return True
        return self._ifcfg_dhcp(nic.name)

    def nic_for_device_id(self, device_id: str) -> Nic | None:
        """The NIC whose <sys_root>/class/net/<name>/device/device_id is ``device_id``.

        The kernel writes "{lower-case-guid}"; the comparison ignores case and
        braces on both sides.
        """
        wanted = _normalise_guid(device_id)
        if not wanted:
            return None
        names = [name for name, guid in self._device_ids() if guid == wanted]
        if not names:
            return None
        nics = {nic.name: nic for nic in self.nics()}
        return next((nics[name] for name in names if name in nics), None)

    def match_mac(self, adapter_id: str) -> list[Nic]:
        """NICs whose MAC equals ``adapter_id`` by ``mac_key`` (case and separators ignored).

        Exact: never a prefix or name match (S11); several NICs can share a MAC
        (a VF behind the synthetic NIC), so all are returned, by index.
        """
        wanted = mac_key(adapter_id)
        if not wanted:
            return []
        return [nic for nic in self.nics() if mac_key(nic.mac) == wanted]

    # -- file readers ------------------------------------------------------------------

    def _resolved_link_servers(self, index: int) -> list[str]:
        text = _read_text(self._run_root / "systemd" / "resolve" / "netif" / str(index))
        servers: list[str] = []
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "DNS":
                servers.extend(s for s in map(_resolved_server, value.split()) if s)
        return list(dict.fromkeys(servers))

    def _ifupdown_dhcp(self, name: str) -> bool:
        network = self._etc_root / "network"
        files = [network / "interfaces"]
        with suppress(OSError):  # no interfaces.d: only the main file
            files += sorted(
                path
                for path in (network / "interfaces.d").iterdir()
                if _IFUPDOWN_FILE_NAME.fullmatch(path.name)
            )
        wanted = ["iface", name, "inet", "dhcp"]
        return any(
            line.split("#", 1)[0].split() == wanted
            for path in files
            for line in _read_text(path).splitlines()
        )

    def _ifcfg_dhcp(self, name: str) -> bool:
        sysconfig = self._etc_root / "sysconfig"
        for directory in (sysconfig / "network-scripts", sysconfig / "network"):
            for line in _read_text(directory / f"ifcfg-{name}").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "BOOTPROTO":
                    return value.strip().strip("'\"").lower().startswith("dhcp")
        return False

    def _device_ids(self) -> Iterator[tuple[str, str]]:
        try:
            entries = sorted(path for path in (self._sys_root / "class" / "net").iterdir())
        except OSError:
            return
        for entry in entries:
            guid = _normalise_guid(_read_text(entry / "device" / "device_id"))
            if guid:
                yield entry.name, guid


def format_mac(hardware_address: bytes) -> str:
    """Upper-case, colon-separated, as hv_kvp_daemon compares it ("00:15:5D:01:02:03")."""
    return ":".join(f"{byte:02X}" for byte in hardware_address)


def _normalise_guid(text: str) -> str:
    return text.strip().strip("{}").strip().lower()


def _read_text(path: Path) -> str:
    """The file's text, or "" when it is missing or unreadable (no information)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _nameservers(text: str) -> list[str]:
    """``nameserver`` addresses of a resolv.conf, in order, zone suffix dropped."""
    servers: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            server = _parse_ip(fields[1].split("%", 1)[0])
            if server:
                servers.append(server)
    return servers


def _resolved_server(token: str) -> str | None:
    """One DNS= entry of resolved's link file.

    Forms: "addr", "addr:port", "[v6addr]:port", each maybe with "%ifindex"
    and "#server-name" (systemd's in_addr_port_ifindex_name_to_string()).
    """
    token = token.split("#", 1)[0]
    if token.startswith("["):
        token = token[1:].split("]", 1)[0]
    elif token.count(":") == 1:
        token = token.split(":", 1)[0]  # IPv4 with a port
    return _parse_ip(token.split("%", 1)[0])


def _parse_ip(text: str) -> str | None:
    try:
        return str(ip_address(text))
    except ValueError:
        return None


@contextmanager
def _kernel_failures(doing: str) -> Iterator[None]:
    """Turn netlink failures into the E_FAIL the host gets (kvp_get_ip_info() answers so)."""
    try:
        yield
    except (OSError, WireError) as error:
        raise OperationFailed(HvStatus.E_FAIL, f"{doing} over rtnetlink: {error}") from error
