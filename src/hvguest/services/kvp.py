"""What each KVP request means: pool operations, the AUTO pool, IP get/set.

Replaces kvp_*() dispatch in main() of tools/hv/hv_kvp_daemon.c. Pure logic
over the ports in ``services.ports``; failures raise ``OperationFailed``
(the daemon logs the message and answers its status), and the expected
"no such key / past the end" answers are plain ``HvStatus.S_CONT`` replies.

Deliberate differences from the reference, each with its reason, are listed
in docs/compat.md; the ones decided here:
- host GET returns the stored value (the reference always answers empty: S1);
- the AUTO pool's address lists leave out container/bridge NICs and stop at
  a whole address before the 1022 characters the kernel forwards;
- GET_IP_INFO matches the adapter by exact MAC and reports per-NIC gateways;
- stored bytes that are not UTF-8 reach the host with U+FFFD instead of
  failing the whole ENUMERATE (the kernel aborts on invalid UTF-8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from ipaddress import IPv4Interface
from typing import Final, assert_never

from hvguest.abi.constants import AddrFamily, HvStatus, KvpPool
from hvguest.errors import OperationFailed
from hvguest.protocol.kvp import (
    KVP_HOST_VALUE_UNITS,
    KvpDelete,
    KvpEnumerate,
    KvpGet,
    KvpGetIpInfo,
    KvpIpInfo,
    KvpRecord,
    KvpReply,
    KvpRequest,
    KvpSet,
    KvpSetIpInfo,
    KvpStatus,
    KvpValue,
)
from hvguest.services.ports import IpConfigurator, NetInfo, Nic, OsInfo, PoolStore

#: The AUTO pool's keys by host index (the table in include/uapi/linux/hyperv.h).
AUTO_POOL_KEYS: Final = (
    "FullyQualifiedDomainName",
    "IntegrationServicesVersion",
    "NetworkAddressIPv4",
    "NetworkAddressIPv6",
    "OSBuildNumber",
    "OSName",
    "OSMajorVersion",
    "OSMinorVersion",
    "OSVersion",
    "ProcessorArchitecture",
)

#: What the AUTO pool reports before the kernel has answered registration.
UNKNOWN_VERSION: Final = "Unknown version"

#: Host-side field sizes of hv_kvp_ipaddr_value in UTF-16 units. The kernel
#: writes no terminator, so a string must stay one unit shorter (S6).
_IP_ADDR_LIMIT: Final = 1024 - 1
_GATEWAY_LIMIT: Final = 512 - 1

Warn = Callable[[str], None]


def _ignore(_message: str) -> None:
    return None


class KvpService:
    """Answers decoded KVP requests; one instance per daemon."""

    def __init__(
        self,
        pools: PoolStore,
        net: NetInfo,
        os_info: OsInfo,
        ip_configurator: IpConfigurator | None,
        *,
        exclude_nics: Sequence[str] = (),
        warn: Warn = _ignore,
    ) -> None:
        self._pools = pools
        self._net = net
        self._os = os_info
        self._ip_configurator = ip_configurator
        self._exclude_nics = tuple(exclude_nics)
        self._warn = warn
        #: IntegrationServicesVersion: set from the kernel's registration answer.
        self.kernel_version = UNKNOWN_VERSION
        #: The NICs the AUTO address lists were last built from, and the lists by IP version.
        self._address_memo: tuple[Sequence[Nic], dict[int, str]] | None = None

    def handle(self, request: KvpRequest) -> KvpReply:
        """The reply for ``request``; raises OperationFailed for failures."""
        match request:
            case KvpGet(pool=pool, key=key):
                value = self._pools.get(pool, key)
                if value is None:
                    return KvpStatus(HvStatus.S_CONT)
                return KvpValue(self._host_text(value, pool, key))
            case KvpSet(pool=pool, key=key, value=value):
                self._pools.set(pool, key, value)
                return KvpStatus(HvStatus.S_OK)
            case KvpDelete(pool=pool, key=key):
                found = self._pools.delete(pool, key)
                return KvpStatus(HvStatus.S_OK if found else HvStatus.S_CONT)
            case KvpEnumerate(pool=KvpPool.AUTO, index=index):
                return self._auto_record(index)
            case KvpEnumerate(pool=pool, index=index):
                record = self._pools.record_at(pool, index)
                if record is None:
                    return KvpStatus(HvStatus.S_CONT)
                key, value = record
                return KvpRecord(self._host_text(key, pool, key), self._host_text(value, pool, key))
            case KvpGetIpInfo():
                return self._ip_info(request)
            case KvpSetIpInfo():
                self._set_ip_info(request)
                return KvpStatus(HvStatus.S_OK)
            case _:
                assert_never(request)

    # -- AUTO pool ------------------------------------------------------------

    def auto_pool(self) -> list[tuple[str, str]]:
        """Every AUTO pool entry, in host index order (for tools and the demo)."""
        return [(key, self._auto_value(index)) for index, key in enumerate(AUTO_POOL_KEYS)]

    def _auto_record(self, index: int) -> KvpReply:
        if index >= len(AUTO_POOL_KEYS):
            return KvpStatus(HvStatus.S_CONT)
        return KvpRecord(AUTO_POOL_KEYS[index].encode(), self._auto_value(index).encode())

    def _auto_value(self, index: int) -> str:
        if index == 0:
            return self._os.fqdn()
        if index == 1:
            return self.kernel_version
        if index in (2, 3):
            return self._address_list(4 if index == 2 else 6)
        facts = self._os.facts()
        values = (
            facts.kernel_release,
            facts.os_name,
            facts.os_major,
            facts.os_minor,
            # "win7 hosts expect x.y.z": the release up to the first '-'.
            facts.kernel_release.split("-", 1)[0],
            facts.machine,
        )
        return values[index - 4]

    def _address_list(self, version: int) -> str:
        nics = self._net.nics()
        memo = self._address_memo
        # A host sweep asks for both lists every few seconds, and the NICs
        # rarely change: reuse the lists while the adapter hands back the very
        # same (frozen) Nic objects, as LinuxNetInfo does until the kernel
        # reports a change. The memo holds them, so an identity match cannot
        # be a recycled object.
        if (
            memo is None
            or len(memo[0]) != len(nics)
            or any(kept is not nic for kept, nic in zip(memo[0], nics, strict=True))
        ):
            reported = [nic for nic in nics if not self._excluded(nic.name)]
            memo = (
                tuple(nics),
                {4: self._join_addresses(reported, 4), 6: self._join_addresses(reported, 6)},
            )
            self._address_memo = memo
        return memo[1][version]

    @staticmethod
    def _join_addresses(nics: Sequence[Nic], version: int) -> str:
        addresses = [
            str(address.interface.ip)
            for nic in nics
            for address in nic.addresses
            if address.interface.version == version
        ]
        return _join_within(addresses, ";", KVP_HOST_VALUE_UNITS)

    def _excluded(self, name: str) -> bool:
        return any(fnmatchcase(name, pattern) for pattern in self._exclude_nics)

    # -- GET_IP_INFO / SET_IP_INFO -----------------------------------------------

    def _ip_info(self, request: KvpGetIpInfo) -> KvpReply:
        matches = self._net.match_mac(request.adapter_id)
        if not matches:
            raise OperationFailed(
                HvStatus.E_FAIL, f"GET_IP_INFO: no interface has MAC {request.adapter_id!r}"
            )
        # A VF can share the synthetic NIC's MAC without carrying addresses:
        # report the first match that has any (kvp_get_ip_info()).
        chosen = next((nic for nic in matches if nic.addresses), matches[0])
        return self._describe(chosen, request.adapter_id)

    def _describe(self, nic: Nic, adapter_id: str) -> KvpIpInfo:
        addresses: list[str] = []
        subnets: list[str] = []
        family = int(AddrFamily.NONE)
        used = 0
        for address in nic.addresses:
            interface = address.interface
            text = str(interface.ip)
            subnet = (
                str(interface.netmask)
                if isinstance(interface, IPv4Interface)
                else f"/{interface.network.prefixlen}"
            )
            separator = 1 if addresses else 0
            if used + separator + max(len(text), len(subnet)) > _IP_ADDR_LIMIT:
                self._warn(f"GET_IP_INFO {nic.name}: address list truncated at {len(addresses)}")
                break
            used += separator + max(len(text), len(subnet))
            addresses.append(text)
            subnets.append(subnet)
            family |= AddrFamily.IPV4 if interface.version == 4 else AddrFamily.IPV6

        gateways = _terminated_within([str(g) for g in self._net.gateways(nic)], _GATEWAY_LIMIT)
        dns = _terminated_within(list(self._net.dns_servers(nic)), _IP_ADDR_LIMIT)
        return KvpIpInfo(
            adapter_id=adapter_id,
            addr_family=family,
            dhcp_enabled=self._net.dhcp_enabled(nic),
            ip_addr=";".join(addresses),
            sub_net=";".join(subnets),
            gate_way=gateways,
            dns_addr=dns,
        )

    def _set_ip_info(self, request: KvpSetIpInfo) -> None:
        if self._ip_configurator is None:
            raise OperationFailed(
                HvStatus.E_FAIL, "SET_IP_INFO refused: ip_injection is off in the configuration"
            )
        nic = self._net.nic_for_device_id(request.adapter_id)
        if nic is None:
            raise OperationFailed(
                HvStatus.GUID_NOTFOUND,
                f"SET_IP_INFO: no interface has VMBus device id {request.adapter_id!r}",
            )
        # Imported here: SET_IP_INFO is rare, and the parser would otherwise stay
        # in the daemon's memory for its whole life.
        from hvguest.services.ipconfig import parse_ip_settings  # noqa: PLC0415

        settings = parse_ip_settings(
            nic.name,
            nic.mac,
            dhcp_enabled=request.dhcp_enabled,
            ip_addr=request.ip_addr,
            sub_net=request.sub_net,
            gate_way=request.gate_way,
            dns_addr=request.dns_addr,
        )
        self._ip_configurator.apply(settings)

    # -- text towards the host ---------------------------------------------------

    def _host_text(self, raw: bytes, pool: KvpPool, key: bytes) -> bytes:
        """``raw`` as the kernel can convert it: valid UTF-8 (it aborts otherwise)."""
        if raw.isascii():
            return raw  # the usual case, checked without decoding
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            self._warn(
                f"pool {int(pool)} key {key!r}: stored bytes are not UTF-8;"
                " sending them with U+FFFD replacements"
            )
            return raw.decode("utf-8", errors="replace").encode("utf-8")
        return raw


def _join_within(items: Sequence[str], separator: str, limit: int) -> str:
    """Join whole items while the result stays within ``limit`` characters."""
    joined = ""
    for item in items:
        candidate = f"{joined}{separator}{item}" if joined else item
        if len(candidate) > limit:
            break
        joined = candidate
    return joined


def _terminated_within(items: Sequence[str], limit: int) -> str:
    """Each item followed by ';' (the reference's gateway/DNS format), within ``limit``."""
    result = ""
    for item in items:
        if len(result) + len(item) + 1 > limit:
            break
        result += f"{item};"
    return result
