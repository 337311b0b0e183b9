"""SET_IP_INFO text: validate the host's address lists, render ifcfg and keyfile.

Replaces kvp_set_ip_info(), process_ip_string(), process_ip_string_nm() and
kvp_subnet_to_plen() in tools/hv/hv_kvp_daemon.c, minus their file I/O.

The host sends four ";"-separated lists. ``parse_ip_settings`` checks every
token before anything is written (the C code writes as it parses and leaves
half-written files behind on a bad token, S12) and returns a typed
``IpSettings``. Two renderers turn that into the files the reference hands to
``hv_set_ifconfig``: an ifcfg file and a NetworkManager keyfile.

This is also the seam for native backends: an ``IpConfigurator`` gets the
typed ``IpSettings``, never the host's strings, so a NetworkManager D-Bus,
netplan or systemd-networkd backend is one more adapter in ``hvguest.linux``
that may ignore these renderers entirely.

Deliberate differences from the C code (all in S12):

* Empty tokens are skipped; the C parser stops at the first one and silently
  drops the rest of the list (GET_IP_INFO's own lists end in ";").
* Any invalid token is HV_INVALIDARG, never -1 or -errno.
* Addresses and subnets must come in equal numbers; the C keyfile writer
  pairs them positionally and stops at the shorter list.
* A subnet may be a dotted IPv4 mask, a prefix length ("24" or "/24") or an
  IPv6 mask address; the C code writes an IPv4 prefix length as
  ``IPV6NETMASK`` and reads "/64" as prefix 0.
* The keyfile sections are built per address family, so mixed IPv4/IPv6
  requests come out right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
)
from typing import Final

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.services.ports import IpAddress, IpInterface, IpSettings

#: IFNAMSIZ - 1 (include/uapi/linux/if.h): the longest interface name in bytes.
MAX_INTERFACE_NAME_BYTES: Final = 15

_PREFIX_LENGTH: Final = re.compile(r"/?([0-9]{1,3})", re.ASCII)
_MAC: Final = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*", re.ASCII)


def ifcfg_filename(interface: str) -> str:
    """The ifcfg file's name in the state directory (as hv_kvp_daemon names it)."""
    return f"ifcfg-{interface}"


def nmconnection_filename(interface: str) -> str:
    """The NetworkManager keyfile's name in the state directory."""
    return f"{interface}.nmconnection"


def parse_ip_settings(
    interface: str,
    mac: str,
    *,
    dhcp_enabled: bool,
    ip_addr: str,
    sub_net: str,
    gate_way: str,
    dns_addr: str,
) -> IpSettings:
    """Validate one SET_IP_INFO request; raise before anything is written.

    ``interface`` and ``mac`` come from our own NIC lookup, so a bad one is
    HV_E_FAIL; every fault in the host's lists is HV_INVALIDARG with a message
    naming the token. ``ip_addr[i]`` takes its prefix from ``sub_net[i]``.
    DHCP with no addresses is valid (the host turns static addressing off).
    """
    check_interface_name(interface)
    check_mac(mac)
    address_tokens = split_list(ip_addr)
    subnet_tokens = split_list(sub_net)
    if len(address_tokens) != len(subnet_tokens):
        raise _invalid(
            f"ip_addr has {len(address_tokens)} address(es) but sub_net has"
            f" {len(subnet_tokens)} subnet(s): {ip_addr!r} / {sub_net!r}"
        )
    addresses = tuple(
        _interface_address(address, subnet)
        for address, subnet in zip(address_tokens, subnet_tokens, strict=True)
    )
    return IpSettings(
        interface=interface,
        mac=mac.upper(),
        dhcp=dhcp_enabled,
        addresses=addresses,
        gateways=tuple(_address(token, "gate_way") for token in split_list(gate_way)),
        dns=tuple(_address(token, "dns_addr") for token in split_list(dns_addr)),
    )


def split_list(text: str) -> list[str]:
    """The tokens of a host list: split on ";", spaces stripped, empty tokens skipped."""
    return [token.strip() for token in text.split(";") if token.strip()]


def check_interface_name(name: str) -> None:
    """Refuse what the kernel's dev_valid_name() refuses.

    The name becomes part of two file names and of a line in each file, so
    "/", whitespace and newlines must never get through.
    """
    try:
        size = len(name.encode("utf-8", errors="surrogateescape"))
    except UnicodeEncodeError:
        size = 0
    if (
        not 0 < size <= MAX_INTERFACE_NAME_BYTES
        or name in {".", ".."}
        or any(char in "/:\0" or char.isspace() for char in name)
    ):
        raise OperationFailed(HvStatus.E_FAIL, f"{name!r} is not a valid interface name")


def check_mac(mac: str) -> None:
    """Refuse a MAC that is not colon-separated hex pairs (it is written into both files)."""
    if _MAC.fullmatch(mac) is None:
        raise OperationFailed(HvStatus.E_FAIL, f"{mac!r} is not a MAC address")


def render_ifcfg(settings: IpSettings) -> str:
    """The ifcfg text hv_kvp_daemon writes, one ``NAME=value`` line each.

    Line order and counters follow process_ip_string(): the address list, then
    the subnets, gateways and DNS servers. IPv4 counts IPADDR0, NETMASK0 from
    0 and GATEWAY, GATEWAY1 without a suffix on the first; IPv6 counts
    IPV6ADDR, IPV6ADDR_1; DNS1, DNS2 are shared by both families. IPv6
    addresses are written fully expanded; an IPv6 netmask is its prefix length.
    """
    _check_identity(settings)
    lines = [
        f"HWADDR={settings.mac}",
        f"DEVICE={settings.interface}",
        f"BOOTPROTO={'dhcp' if settings.dhcp else 'none'}",
    ]
    lines += _numbered(
        [(a.version, _expanded(a.ip)) for a in settings.addresses],
        "IPADDR",
        "IPV6ADDR",
        first_v4_suffix="0",
    )
    lines += _numbered(
        [(a.version, _ifcfg_netmask(a)) for a in settings.addresses],
        "NETMASK",
        "IPV6NETMASK",
        first_v4_suffix="0",
    )
    lines += _numbered(
        [(g.version, _expanded(g)) for g in settings.gateways],
        "GATEWAY",
        "IPV6_DEFAULTGW",
        first_v4_suffix="",
    )
    lines += [f"DNS{n}={_expanded(server)}" for n, server in enumerate(settings.dns, 1)]
    return "".join(f"{line}\n" for line in lines)


def render_nmconnection(settings: IpSettings) -> str:
    """The NetworkManager keyfile hv_kvp_daemon (7.x) writes next to the ifcfg file.

    Each of ``[ipv4]`` and ``[ipv6]`` holds only its own family: ``addressK``
    lines (K from 1), ``method``, then ``gateway`` and ``dns`` joined with ","
    (what the C code writes; a line is left out when its list is empty).
    IPv4's method is ``auto`` under DHCP, else ``manual`` with addresses, else
    ``disabled``; IPv6's is ``manual`` with addresses, else ``auto``.
    """
    _check_identity(settings)
    lines = [
        "",
        "[connection]",
        f"interface-name={settings.interface}",
        "",
        "[ethernet]",
        f"mac-address={settings.mac}",
    ]
    for version in (4, 6):
        addresses = [a for a in settings.addresses if a.version == version]
        if version == 4:
            method = "auto" if settings.dhcp else "manual" if addresses else "disabled"
        else:
            method = "manual" if addresses else "auto"
        lines += ["", f"[ipv{version}]"]
        lines += [f"address{k}={a.ip}/{a.network.prefixlen}" for k, a in enumerate(addresses, 1)]
        lines.append(f"method={method}")
        for key, values in (("gateway", settings.gateways), ("dns", settings.dns)):
            same_family = [str(value) for value in values if value.version == version]
            if same_family:
                lines.append(f"{key}={','.join(same_family)}")
    return "".join(f"{line}\n" for line in lines)


# -- parsing helpers ------------------------------------------------------------


def _invalid(message: str) -> OperationFailed:
    return OperationFailed(HvStatus.INVALIDARG, message)


def _address(token: str, list_name: str) -> IpAddress:
    """One address token; scoped IPv6 ("fe80::1%eth0") is refused like inet_pton() does."""
    try:
        address = ip_address(token)
    except ValueError:
        raise _invalid(f"{list_name} token {token!r} is not an IPv4 or IPv6 address") from None
    if isinstance(address, IPv6Address) and address.scope_id is not None:
        raise _invalid(f"{list_name} token {token!r} is not an IPv4 or IPv6 address")
    return address


def _interface_address(address_token: str, subnet_token: str) -> IpInterface:
    address = _address(address_token, "ip_addr")
    prefix = _prefix_length(subnet_token, address)
    if isinstance(address, IPv4Address):
        return IPv4Interface((address, prefix))
    return IPv6Interface((address, prefix))


def _prefix_length(token: str, address: IpAddress) -> int:
    """The prefix a sub_net token gives ``address``: "24", "/64" or a mask in the same family."""
    width = address.max_prefixlen
    number = _PREFIX_LENGTH.fullmatch(token)
    if number is not None:
        prefix = int(number.group(1))
        if prefix > width:
            raise _invalid(
                f"sub_net token {token!r} for {address}: prefix length out of range 0..{width}"
            )
        return prefix
    try:
        mask = ip_address(token)
    except ValueError:
        raise _invalid(
            f"sub_net token {token!r} for {address} is neither a prefix length nor a netmask"
        ) from None
    if mask.version != address.version:
        raise _invalid(f"sub_net token {token!r} is an IPv{mask.version} mask for {address}")
    bits = int(mask)
    ones = bits.bit_count()
    # A netmask is ones then zeros; anything else (a host address, 0.0.0.255)
    # is what kvp_subnet_to_plen() answers with -1.
    if bits != ((1 << ones) - 1) << (width - ones):
        raise _invalid(f"sub_net token {token!r} for {address} is not a contiguous netmask")
    return ones


# -- rendering helpers ----------------------------------------------------------


def _check_identity(settings: IpSettings) -> None:
    # IpSettings may be built without parse_ip_settings(); these two reach
    # file names and file lines, so they are checked again where they are used.
    check_interface_name(settings.interface)
    check_mac(settings.mac)


def _numbered(
    entries: Sequence[tuple[int, str]], v4_name: str, v6_name: str, *, first_v4_suffix: str
) -> list[str]:
    """``NAME<n>=value`` lines with process_ip_string()'s per-family counters.

    IPv4 entries are numbered 0, 1, 2... except that the first one gets
    ``first_v4_suffix`` ("" for GATEWAY, whose first line has no number);
    IPv6 entries are unnumbered first, then _1, _2...
    """
    lines = []
    v4_count = v6_count = 0
    for version, value in entries:
        if version == 4:
            suffix = str(v4_count) if v4_count else first_v4_suffix
            lines.append(f"{v4_name}{suffix}={value}")
            v4_count += 1
        else:
            suffix = f"_{v6_count}" if v6_count else ""
            lines.append(f"{v6_name}{suffix}={value}")
            v6_count += 1
    return lines


def _expanded(address: IpAddress) -> str:
    """IPv4 dotted; IPv6 as eight groups of four hex digits (what expand_ipv6() writes)."""
    return address.exploded


def _ifcfg_netmask(address: IpInterface) -> str:
    """NETMASKn wants a dotted mask; IPV6NETMASK gets the prefix length."""
    if isinstance(address, IPv4Interface):
        return str(address.netmask)
    return str(address.network.prefixlen)
