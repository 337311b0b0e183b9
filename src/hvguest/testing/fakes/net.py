"""In-memory ``NetInfo`` and ``OsInfo`` for service tests.

Fakes of hvguest.linux.netinfo.LinuxNetInfo and hvguest.linux.osinfo.LinuxOsInfo
(which replace the ip/awk pipelines and kvp_get_os_info() of
tools/hv/hv_kvp_daemon.c). Every attribute is public and may be changed
between calls; every call is appended to ``calls``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hvguest.services.ports import IpAddress, Nic, OsFacts, mac_key


class FakeNetInfo:
    """A network described by data; the per-NIC maps are keyed by NIC name.

    ``device_ids`` maps a NIC name to its VMBus device id ("{guid}" or bare);
    the lookup, like the real one, ignores case and braces.
    """

    def __init__(
        self,
        nics: Sequence[Nic] = (),
        *,
        gateways: Mapping[str, Sequence[IpAddress]] | None = None,
        dns: Mapping[str, Sequence[str]] | None = None,
        dhcp: Mapping[str, bool] | None = None,
        device_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.nic_list: list[Nic] = list(nics)
        self.gateway_map: dict[str, Sequence[IpAddress]] = dict(gateways or {})
        self.dns_map: dict[str, Sequence[str]] = dict(dns or {})
        self.dhcp_map: dict[str, bool] = dict(dhcp or {})
        self.device_ids: dict[str, str] = dict(device_ids or {})
        #: (method name, argument) per call; the argument is "" for nics().
        self.calls: list[tuple[str, str]] = []

    def nics(self) -> list[Nic]:
        """The configured NICs, by index."""
        self.calls.append(("nics", ""))
        return sorted(self.nic_list, key=lambda nic: nic.index)

    def gateways(self, nic: Nic) -> list[IpAddress]:
        """``gateway_map[nic.name]``, IPv4 first (as the real adapter orders them)."""
        self.calls.append(("gateways", nic.name))
        return sorted(self.gateway_map.get(nic.name, ()), key=lambda gateway: gateway.version)

    def dns_servers(self, nic: Nic) -> list[str]:
        """``dns_map[nic.name]``."""
        self.calls.append(("dns_servers", nic.name))
        return list(self.dns_map.get(nic.name, ()))

    def dhcp_enabled(self, nic: Nic) -> bool:
        """``dhcp_map[nic.name]``, False when absent."""
        self.calls.append(("dhcp_enabled", nic.name))
        return self.dhcp_map.get(nic.name, False)

    def nic_for_device_id(self, device_id: str) -> Nic | None:
        """The NIC whose entry in ``device_ids`` matches, case and braces ignored."""
        self.calls.append(("nic_for_device_id", device_id))
        wanted = _normalise_guid(device_id)
        if not wanted:
            return None
        for nic in self.nics():
            if _normalise_guid(self.device_ids.get(nic.name, "")) == wanted:
                return nic
        return None

    def match_mac(self, adapter_id: str) -> list[Nic]:
        """NICs whose MAC equals ``adapter_id``, ignoring case and ':'/'-'."""
        self.calls.append(("match_mac", adapter_id))
        wanted = mac_key(adapter_id)
        if not wanted:
            return []
        return [nic for nic in self.nics() if mac_key(nic.mac) == wanted]


def _normalise_guid(text: str) -> str:
    return text.strip().strip("{}").strip().lower()


def default_os_facts() -> OsFacts:
    """The facts of the harness machine in protocol.md §3.5."""
    return OsFacts(
        os_name="Debian GNU/Linux",
        os_major="12",
        os_minor="",
        kernel_release="6.18.44-fc-v669",
        machine="x86_64",
    )


@dataclass
class FakeOsInfo:
    """Fixed host name and OS facts; assign new values to simulate changes."""

    fqdn_value: str = "vm"
    os_facts: OsFacts = field(default_factory=default_os_facts)
    #: Method names, one per call.
    calls: list[str] = field(default_factory=list)
    closed: bool = False

    def fqdn(self) -> str:
        """``fqdn_value``."""
        self.calls.append("fqdn")
        return self.fqdn_value

    def facts(self) -> OsFacts:
        """``os_facts``."""
        self.calls.append("facts")
        return self.os_facts

    def close(self) -> None:
        """Mirror ``LinuxOsInfo.close()``."""
        self.calls.append("close")
        self.closed = True
