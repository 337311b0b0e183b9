"""The OS capabilities the services need, as small typing.Protocol ports.

Each port has a real adapter in ``hvguest.linux`` (``Linux<Port>``) and an
in-memory fake in ``hvguest.testing.fakes`` (``Fake<Port>``). Services only
ever see these types, so they run unchanged against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Protocol

from hvguest.abi.constants import KvpPool

IpInterface = IPv4Interface | IPv6Interface
IpAddress = IPv4Address | IPv6Address


class PoolStore(Protocol):
    """The five KVP pool files (replaces kvp_file_info[] in hv_kvp_daemon.c).

    Keys and values are raw bytes without the NUL padding. Every call sees
    the writes other processes finished before it (the files are shared).
    Failures raise ``OperationFailed``.
    """

    def get(self, pool: KvpPool, key: bytes) -> bytes | None:
        """The value of ``key`` (last record wins), or None."""
        ...

    def set(self, pool: KvpPool, key: bytes, value: bytes) -> None:
        """Add or replace ``key``; durable when it returns."""
        ...

    def delete(self, pool: KvpPool, key: bytes) -> bool:
        """Remove every record of ``key``; False if there was none."""
        ...

    def record_at(self, pool: KvpPool, index: int) -> tuple[bytes, bytes] | None:
        """The ``index``-th live record (one per key, file order), or None past the end."""
        ...


@dataclass(frozen=True, slots=True)
class NicAddress:
    """One address of a NIC with its prefix; ``dynamic`` if it has a finite lifetime."""

    interface: IpInterface
    dynamic: bool = False


@dataclass(frozen=True, slots=True)
class Nic:
    """A network interface as the KVP service reports it."""

    name: str
    index: int
    #: Upper-case, colon-separated, as hv_kvp_daemon compares it ("00:15:5D:01:02:03").
    mac: str
    addresses: tuple[NicAddress, ...] = ()


class NetInfo(Protocol):
    """Read-only view of the guest's network (replaces the ip/awk/script popen calls)."""

    def nics(self) -> Sequence[Nic]:
        """Non-loopback interfaces with their addresses, in interface-index order."""
        ...

    def gateways(self, nic: Nic) -> Sequence[IpAddress]:
        """Default-route gateways through ``nic`` (IPv4 first, then IPv6)."""
        ...

    def dns_servers(self, nic: Nic) -> Sequence[str]:
        """Name servers that apply to ``nic``."""
        ...

    def dhcp_enabled(self, nic: Nic) -> bool:
        """Whether ``nic``'s IPv4 configuration comes from DHCP."""
        ...

    def nic_for_device_id(self, device_id: str) -> Nic | None:
        """The NIC whose VMBus device_id ("{guid}") matches, case-insensitively."""
        ...


@dataclass(frozen=True, slots=True)
class OsFacts:
    """Operating-system facts for the AUTO pool (see kvp_get_os_info())."""

    os_name: str
    os_major: str
    os_minor: str
    kernel_release: str
    machine: str


class OsInfo(Protocol):
    """Host name and OS facts; cheap to call on every request."""

    def fqdn(self) -> str:
        """The fully qualified host name, resolved off the request path."""
        ...

    def facts(self) -> OsFacts:
        """Current OS facts (re-read when their sources change)."""
        ...


@dataclass(frozen=True, slots=True)
class IpSettings:
    """Validated SET_IP_INFO request for one interface (see services.ipconfig)."""

    interface: str
    mac: str
    dhcp: bool
    addresses: tuple[IpInterface, ...]
    gateways: tuple[IpAddress, ...]
    dns: tuple[IpAddress, ...]


class IpConfigurator(Protocol):
    """Applies static IP settings injected by the host (SET_IP_INFO).

    Raises ``OperationFailed`` with the HV status for the host.
    """

    def apply(self, settings: IpSettings) -> None:
        """Make ``settings`` the interface's configuration."""
        ...
