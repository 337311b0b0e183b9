"""Read links, addresses and main-table routes from the kernel over rtnetlink.

Replaces getifaddrs() and the ``ip route show``/awk pipelines that
tools/hv/hv_kvp_daemon.c runs through popen() (kvp_get_ip_info(),
kvp_get_gateway()). Stdlib only: ``socket.AF_NETLINK`` plus ``struct``; the
layouts are quoted from include/uapi/linux/{netlink,rtnetlink,if_link,if_addr}.h
next to the code that reads them.

Two halves:
- pure parsers (``split_messages``, ``parse_attributes``, ``parse_link``,
  ``parse_address``, ``parse_route``) that turn kernel bytes into frozen
  records (``hvguest.records``) and raise ``WireError`` for bytes that do not decode;
- ``RouteNetlink``, which sends the dump requests and collects the answers,
  handling NLMSG_ERROR, NLMSG_DONE, multipart answers spread over several
  reads, EINTR and interrupted dumps (NLM_F_DUMP_INTR: the dump is retried).

Socket policy: one short-lived socket per query (``snapshot()`` shares one
socket between its three dumps). Queries come once per host request, seconds
apart, so the few microseconds of socket() + bind() are nothing, and a fresh
socket cannot carry stale answers, a pending error or a dump left half read
by an earlier failure. No dump socket is held between requests; the one
long-lived socket is ``ChangeMonitor``'s, which only listens for the kernel's
link and address notifications so that a NIC list can be kept until they say
it changed.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Final, Protocol, TypeVar

from hvguest.errors import WireError
from hvguest.records import record

IpAddress = IPv4Address | IPv6Address
IpNetwork = IPv4Network | IPv6Network

# --- include/uapi/linux/netlink.h ---------------------------------------------

#: struct nlmsghdr { __u32 nlmsg_len; __u16 nlmsg_type; __u16 nlmsg_flags;
#:                   __u32 nlmsg_seq; __u32 nlmsg_pid; };  (host byte order)
NLMSGHDR: Final = struct.Struct("=IHHII")
#: struct nlattr / struct rtattr { __u16 nla_len; __u16 nla_type; };
NLATTR: Final = struct.Struct("=HH")
#: NLMSG_ALIGNTO / RTA_ALIGNTO.
NETLINK_ALIGN: Final = 4
#: The attribute type without NLA_F_NESTED / NLA_F_NET_BYTEORDER.
NLA_TYPE_MASK: Final = 0x3FFF

NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_OVERRUN: Final = 4

NLM_F_REQUEST: Final = 0x01
NLM_F_MULTI: Final = 0x02
NLM_F_DUMP_INTR: Final = 0x10
NLM_F_DUMP: Final = 0x300  #: NLM_F_ROOT | NLM_F_MATCH

#: struct nlmsgerr starts with the negative errno (0 = acknowledgement).
NLMSGERR_ERROR: Final = struct.Struct("=i")

# --- include/uapi/linux/rtnetlink.h --------------------------------------------

RTM_NEWLINK: Final = 16
RTM_GETLINK: Final = 18
RTM_NEWADDR: Final = 20
RTM_GETADDR: Final = 22
RTM_NEWROUTE: Final = 24
RTM_GETROUTE: Final = 26

#: struct ifinfomsg { unsigned char ifi_family; unsigned char __ifi_pad;
#:   unsigned short ifi_type; int ifi_index; unsigned ifi_flags; unsigned ifi_change; };
IFINFOMSG: Final = struct.Struct("=BxHiII")
#: struct ifaddrmsg { __u8 ifa_family; __u8 ifa_prefixlen; __u8 ifa_flags;
#:   __u8 ifa_scope; __u32 ifa_index; };
IFADDRMSG: Final = struct.Struct("=BBBBI")
#: struct rtmsg { unsigned char rtm_family, rtm_dst_len, rtm_src_len, rtm_tos,
#:   rtm_table, rtm_protocol, rtm_scope, rtm_type; unsigned rtm_flags; };
RTMSG: Final = struct.Struct("=BBBBBBBBI")
#: struct rtnexthop { unsigned short rtnh_len; unsigned char rtnh_flags;
#:   unsigned char rtnh_hops; int rtnh_ifindex; };  followed by its attributes.
RTNEXTHOP: Final = struct.Struct("=HBBi")
#: struct rtvia { __kernel_sa_family_t rtvia_family; __u8 rtvia_addr[]; };
RTVIA_FAMILY: Final = struct.Struct("=H")
#: struct ifa_cacheinfo { __u32 ifa_prefered; __u32 ifa_valid; __u32 cstamp; __u32 tstamp; };
IFA_CACHEINFO_STRUCT: Final = struct.Struct("=IIII")
U32: Final = struct.Struct("=I")

IFLA_ADDRESS: Final = 1
IFLA_IFNAME: Final = 3
IFLA_EXT_MASK: Final = 29
#: RTEXT_FILTER_SKIP_STATS: leave the counters out, halving each link message.
RTEXT_FILTER_SKIP_STATS: Final = 1 << 3

IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
IFA_CACHEINFO: Final = 6
IFA_FLAGS: Final = 8
#: INFINITY_LIFE_TIME (include/net/addrconf.h): the address never expires.
INFINITY_LIFE_TIME: Final = 0xFFFFFFFF

RTA_DST: Final = 1
RTA_OIF: Final = 4
RTA_GATEWAY: Final = 5
RTA_PRIORITY: Final = 6
RTA_MULTIPATH: Final = 9
RTA_TABLE: Final = 15
RTA_VIA: Final = 18

RT_TABLE_MAIN: Final = 254
RTN_UNICAST: Final = 1

#: include/uapi/linux/if.h net_device_flags.
IFF_UP: Final = 0x1
IFF_LOOPBACK: Final = 0x8

_ADDRESS_SIZE: Final[dict[int, int]] = {socket.AF_INET: 4, socket.AF_INET6: 16}

_T = TypeVar("_T")


# --- what the parsers return ------------------------------------------------------


@record
class NetlinkMessage:
    """One netlink message: the nlmsghdr fields and the bytes after the header."""

    msg_type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


@record
class Link:
    """One RTM_NEWLINK: a network interface."""

    index: int
    name: str
    #: IFLA_ADDRESS as sent (6 bytes for Ethernet); empty when the link has none.
    hardware_address: bytes
    #: ifi_flags (IFF_UP, IFF_LOOPBACK, ...).
    flags: int
    #: ifi_type (ARPHRD_*).
    link_type: int

    @property
    def loopback(self) -> bool:
        """The kernel marks the loopback device with IFF_LOOPBACK."""
        return bool(self.flags & IFF_LOOPBACK)

    @property
    def up(self) -> bool:
        """Administratively up (IFF_UP)."""
        return bool(self.flags & IFF_UP)


@record
class Address:
    """One RTM_NEWADDR: an address with its prefix length on interface ``index``."""

    family: int
    index: int
    address: IpAddress
    prefixlen: int
    #: IFA_FLAGS when present, else ifa_flags (IFA_F_PERMANENT, IFA_F_TENTATIVE, ...).
    flags: int
    #: ifa_scope (RT_SCOPE_UNIVERSE 0, RT_SCOPE_LINK 253, RT_SCOPE_HOST 254).
    scope: int
    #: Seconds left, or None for "forever" (INFINITY_LIFE_TIME or no IFA_CACHEINFO).
    valid_lifetime: int | None
    preferred_lifetime: int | None


@record
class NextHop:
    """Where a route sends packets: an interface and maybe a gateway."""

    #: RTA_OIF or rtnh_ifindex; None when the route names no interface.
    oif: int | None
    gateway: IpAddress | None
    #: rtnh_flags (RTNH_F_DEAD, RTNH_F_LINKDOWN, ...); 0 for single-path routes.
    flags: int = 0


@record
class Route:
    """One RTM_NEWROUTE (IPv4 or IPv6)."""

    family: int
    table: int
    destination: IpNetwork
    #: rtm_type (RTN_UNICAST, RTN_BLACKHOLE, ...).
    route_type: int
    protocol: int
    scope: int
    #: RTA_PRIORITY (the metric); None when absent.
    priority: int | None
    #: RTA_OIF and RTA_GATEWAY/RTA_VIA of a single-path route.
    oif: int | None
    gateway: IpAddress | None
    #: RTA_MULTIPATH entries; empty for a single-path route.
    multipath: tuple[NextHop, ...] = ()

    @property
    def is_default(self) -> bool:
        """A default route: destination prefix length 0 (0.0.0.0/0 or ::/0)."""
        return self.destination.prefixlen == 0

    @property
    def next_hops(self) -> tuple[NextHop, ...]:
        """Every path of the route, single-path routes included."""
        if self.multipath:
            return self.multipath
        return (NextHop(self.oif, self.gateway),)


@record
class Snapshot:
    """Links, addresses and main-table routes read over one socket."""

    links: tuple[Link, ...]
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]


# --- pure parsers ----------------------------------------------------------------


def align(length: int) -> int:
    """NLMSG_ALIGN / RTA_ALIGN: round up to 4 bytes."""
    return (length + NETLINK_ALIGN - 1) & ~(NETLINK_ALIGN - 1)


def split_messages(data: bytes) -> list[NetlinkMessage]:
    """Split one datagram from the kernel into its netlink messages."""
    messages = []
    offset = 0
    while len(data) - offset >= NLMSGHDR.size:
        length, msg_type, flags, seq, pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise WireError(
                f"netlink message at offset {offset} claims {length} bytes, "
                f"{len(data) - offset} left"
            )
        payload = data[offset + NLMSGHDR.size : offset + length]
        messages.append(NetlinkMessage(msg_type, flags, seq, pid, payload))
        offset += align(length)
    if offset < len(data):
        raise WireError(f"{len(data) - offset} stray bytes after the last netlink message")
    return messages


def parse_attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Attributes (struct rtattr + value) from ``offset`` on; a repeated type keeps the last."""
    attributes: dict[int, bytes] = {}
    while len(data) - offset >= NLATTR.size:
        length, attr_type = NLATTR.unpack_from(data, offset)
        if length < NLATTR.size or offset + length > len(data):
            raise WireError(
                f"netlink attribute at offset {offset} claims {length} bytes, "
                f"{len(data) - offset} left"
            )
        attributes[attr_type & NLA_TYPE_MASK] = data[offset + NLATTR.size : offset + length]
        offset += align(length)
    # Fewer than 4 bytes left can only be alignment padding.
    return attributes


def _fixed(struct_: struct.Struct, data: bytes, what: str) -> tuple[int, ...]:
    if len(data) < struct_.size:
        raise WireError(f"{what}: {len(data)} bytes, need {struct_.size}")
    values: tuple[int, ...] = struct_.unpack_from(data)
    return values


def _ip(family: int, raw: bytes, what: str) -> IpAddress:
    if family == socket.AF_INET and len(raw) == 4:
        return IPv4Address(raw)
    if family == socket.AF_INET6 and len(raw) == 16:
        return IPv6Address(raw)
    raise WireError(f"{what}: {len(raw)} address bytes for family {family}")


def _u32(raw: bytes, what: str) -> int:
    return _fixed(U32, raw, what)[0]


def _optional_u32(attributes: dict[int, bytes], attr_type: int, what: str) -> int | None:
    raw = attributes.get(attr_type)
    return None if raw is None else _u32(raw, what)


def _lifetime(seconds: int) -> int | None:
    return None if seconds == INFINITY_LIFE_TIME else seconds


def parse_link(payload: bytes) -> Link:
    """An RTM_NEWLINK payload: struct ifinfomsg, then IFLA_* attributes."""
    _family, link_type, index, flags, _change = _fixed(IFINFOMSG, payload, "ifinfomsg")
    attributes = parse_attributes(payload, IFINFOMSG.size)
    raw_name = attributes.get(IFLA_IFNAME)
    if raw_name is None:
        raise WireError(f"link {index} has no IFLA_IFNAME")
    # Decode like os.listdir() does, so names match /sys/class/net entries.
    name = os.fsdecode(raw_name.split(b"\0", 1)[0])
    return Link(index, name, attributes.get(IFLA_ADDRESS, b""), flags, link_type)


def parse_address(payload: bytes) -> Address | None:
    """An RTM_NEWADDR payload; None for families other than IPv4 and IPv6."""
    family, prefixlen, flags8, scope, index = _fixed(IFADDRMSG, payload, "ifaddrmsg")
    if family not in _ADDRESS_SIZE:
        return None
    attributes = parse_attributes(payload, IFADDRMSG.size)
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    # point-to-point links and equals IFA_LOCAL elsewhere (if_addr.h comment).
    raw = attributes.get(IFA_LOCAL, attributes.get(IFA_ADDRESS))
    if raw is None:
        raise WireError(f"address on link {index} has neither IFA_LOCAL nor IFA_ADDRESS")
    flags = _u32(attributes[IFA_FLAGS], "IFA_FLAGS") if IFA_FLAGS in attributes else flags8
    valid: int | None = None
    preferred: int | None = None
    if IFA_CACHEINFO in attributes:
        preferred_raw, valid_raw, _created, _updated = _fixed(
            IFA_CACHEINFO_STRUCT, attributes[IFA_CACHEINFO], "IFA_CACHEINFO"
        )
        valid, preferred = _lifetime(valid_raw), _lifetime(preferred_raw)
    return Address(
        family=family,
        index=index,
        address=_ip(family, raw, "IFA_LOCAL/IFA_ADDRESS"),
        prefixlen=prefixlen,
        flags=flags,
        scope=scope,
        valid_lifetime=valid,
        preferred_lifetime=preferred,
    )


def _gateway(family: int, attributes: dict[int, bytes]) -> IpAddress | None:
    if RTA_GATEWAY in attributes:
        return _ip(family, attributes[RTA_GATEWAY], "RTA_GATEWAY")
    if RTA_VIA in attributes:
        # RFC 5549: an IPv4 route through an IPv6 next hop names it in RTA_VIA.
        raw = attributes[RTA_VIA]
        (via_family,) = _fixed(RTVIA_FAMILY, raw, "RTA_VIA")
        return _ip(via_family, raw[RTVIA_FAMILY.size :], "RTA_VIA")
    return None


def _next_hops(family: int, raw: bytes) -> Iterator[NextHop]:
    offset = 0
    while len(raw) - offset >= RTNEXTHOP.size:
        length, flags, _hops, ifindex = RTNEXTHOP.unpack_from(raw, offset)
        if length < RTNEXTHOP.size or offset + length > len(raw):
            raise WireError(f"rtnexthop at offset {offset} claims {length} bytes")
        attributes = parse_attributes(raw[offset : offset + length], RTNEXTHOP.size)
        yield NextHop(ifindex or None, _gateway(family, attributes), flags)
        offset += align(length)


def parse_route(payload: bytes) -> Route | None:
    """An RTM_NEWROUTE payload; None for families other than IPv4 and IPv6."""
    family, dst_len, _src_len, _tos, table8, protocol, scope, route_type, _flags = _fixed(
        RTMSG, payload, "rtmsg"
    )
    size = _ADDRESS_SIZE.get(family)
    if size is None:
        return None
    attributes = parse_attributes(payload, RTMSG.size)
    # rtm_table is 8 bits; tables above 255 are only in RTA_TABLE.
    table = _optional_u32(attributes, RTA_TABLE, "RTA_TABLE")
    destination = _ip(family, attributes.get(RTA_DST, bytes(size)), "RTA_DST")
    if dst_len > size * 8:
        raise WireError(f"route prefix length {dst_len} for family {family}")
    oif = _optional_u32(attributes, RTA_OIF, "RTA_OIF")
    priority = _optional_u32(attributes, RTA_PRIORITY, "RTA_PRIORITY")
    multipath = (
        tuple(_next_hops(family, attributes[RTA_MULTIPATH])) if RTA_MULTIPATH in attributes else ()
    )
    return Route(
        family=family,
        table=table8 if table is None else table,
        destination=ip_network((destination, dst_len), strict=False),
        route_type=route_type,
        protocol=protocol,
        scope=scope,
        priority=priority,
        oif=oif,
        gateway=_gateway(family, attributes),
        multipath=multipath,
    )


def dump_request(msg_type: int, seq: int, body: bytes) -> bytes:
    """An NLM_F_REQUEST | NLM_F_DUMP message of ``msg_type`` carrying ``body``."""
    header = NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


def attribute(attr_type: int, value: bytes) -> bytes:
    """One struct rtattr with its value, padded to 4 bytes."""
    length = NLATTR.size + len(value)
    return NLATTR.pack(length, attr_type) + value + bytes(align(length) - length)


#: RTM_GETLINK body: every family, statistics left out.
LINK_DUMP_BODY: Final = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attribute(
    IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS)
)
#: RTM_GETADDR body: IPv4 and IPv6 (AF_UNSPEC); the parser drops other families.
ADDRESS_DUMP_BODY: Final = IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
#: RTM_GETROUTE body: every family and table; filtered here rather than by the
#: kernel, because kernel-side filtering needs NETLINK_GET_STRICT_CHK (4.20+).
ROUTE_DUMP_BODY: Final = RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)


# --- I/O -------------------------------------------------------------------------


class NetlinkSocket(Protocol):
    """The part of ``socket.socket`` a dump uses; tests substitute scripted sockets."""

    def send(self, data: bytes, flags: int = ..., /) -> int:
        """Send one request datagram."""
        ...

    def recv_into(self, buffer: bytearray, nbytes: int = ..., flags: int = ..., /) -> int:
        """Receive one datagram; with MSG_TRUNC, return its full length."""
        ...

    def close(self) -> None:
        """Release the socket."""
        ...


#: Seconds a dump may wait for the kernel; it answers in microseconds, so this
#: only keeps a request from hanging forever if something is badly wrong.
SOCKET_TIMEOUT: Final = 5.0
#: How often an interrupted dump (NLM_F_DUMP_INTR) is restarted before giving up.
DUMP_ATTEMPTS: Final = 5
#: First receive buffer; dump datagrams are at most 32 KiB (netlink_recvmsg() caps
#: max_recvmsg_len), larger single messages make the buffer grow.
RECEIVE_BUFFER: Final = 32768


def open_route_socket() -> socket.socket:
    """A fresh NETLINK_ROUTE socket with a kernel-assigned port id."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    )
    try:
        sock.bind((0, 0))
        sock.settimeout(SOCKET_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


#: rtnetlink multicast groups (RTMGRP_* of <linux/rtnetlink.h>) whose
#: notifications change what a NIC list shows: links, IPv4 and IPv6 addresses.
RTMGRP_LINK: Final = 0x1
RTMGRP_IPV4_IFADDR: Final = 0x10
RTMGRP_IPV6_IFADDR: Final = 0x100
NIC_CHANGE_GROUPS: Final = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
#: Most notifications one ``ChangeMonitor.changed()`` call reads.
DRAIN_LIMIT: Final = 1024


class ChangeMonitor:
    """Says whether links or addresses changed since it last looked: rtnetlink notifications.

    The kernel queues a notification on this socket before the syscall that
    made the change returns (rtnl_notify()), so "nothing queued" means
    "nothing changed since the last drain". A full queue loses notifications
    and shows as ENOBUFS, which counts as a change. Unprivileged processes may
    join these groups. The one descriptor this daemon keeps between requests.
    """

    def __init__(self, groups: int = NIC_CHANGE_GROUPS) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
            socket.NETLINK_ROUTE,
        )
        try:
            self._sock.bind((0, groups))
        except BaseException:
            self._sock.close()
            raise
        # The notifications are only counted, never parsed: a short buffer will do.
        self._buffer = bytearray(512)

    def changed(self) -> bool:
        """Drain the queued notifications; True if there was any (or some were lost).

        Stops after ``DRAIN_LIMIT`` datagrams, so that a storm of changes cannot
        keep a request waiting; the rest are drained by the next call.
        """
        for drained in range(DRAIN_LIMIT):
            try:
                self._sock.recv_into(self._buffer)
            except BlockingIOError:
                return drained > 0
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
        return True

    def close(self) -> None:
        """Leave the groups."""
        self._sock.close()


class _DumpInterruptedError(Exception):
    """The kernel flagged the dump inconsistent; the caller restarts it."""


class RouteNetlink:
    """Dumps links, addresses and routes; every public call uses its own socket."""

    def __init__(
        self,
        open_socket: Callable[[], NetlinkSocket] = open_route_socket,
        *,
        attempts: int = DUMP_ATTEMPTS,
    ) -> None:
        self._open_socket = open_socket
        self._attempts = attempts
        self._seq = itertools.count(1)

    def links(self) -> list[Link]:
        """Every link (loopback included), in kernel order."""
        return self._with_socket(self._links)

    def addresses(self) -> list[Address]:
        """Every IPv4 and IPv6 address, in kernel order."""
        return self._with_socket(self._addresses)

    def routes(self, table: int = RT_TABLE_MAIN) -> list[Route]:
        """IPv4 and IPv6 routes of ``table`` (the main table by default)."""
        return self._with_socket(lambda sock: self._routes(sock, table))

    def snapshot(self) -> Snapshot:
        """Links, addresses and main-table routes over one socket."""

        def read(sock: NetlinkSocket) -> Snapshot:
            return Snapshot(
                tuple(self._links(sock)),
                tuple(self._addresses(sock)),
                tuple(self._routes(sock, RT_TABLE_MAIN)),
            )

        return self._with_socket(read)

    def _with_socket(self, query: Callable[[NetlinkSocket], _T]) -> _T:
        sock = self._open_socket()
        try:
            return query(sock)
        finally:
            sock.close()

    def _links(self, sock: NetlinkSocket) -> list[Link]:
        return [parse_link(m.payload) for m in self._dump(sock, RTM_GETLINK, LINK_DUMP_BODY)]

    def _addresses(self, sock: NetlinkSocket) -> list[Address]:
        parsed = (
            parse_address(m.payload) for m in self._dump(sock, RTM_GETADDR, ADDRESS_DUMP_BODY)
        )
        return [address for address in parsed if address is not None]

    def _routes(self, sock: NetlinkSocket, table: int) -> list[Route]:
        messages = self._dump(sock, RTM_GETROUTE, ROUTE_DUMP_BODY)
        parsed = (parse_route(m.payload) for m in messages)
        return [route for route in parsed if route is not None and route.table == table]

    def _dump(self, sock: NetlinkSocket, msg_type: int, body: bytes) -> list[NetlinkMessage]:
        """The answer messages of one dump, restarted while the kernel flags it interrupted."""
        for _attempt in range(self._attempts):
            try:
                return _dump_once(sock, msg_type, body, next(self._seq))
            except _DumpInterruptedError:
                continue
        raise OSError(
            errno.EBUSY,
            f"rtnetlink dump {msg_type} was interrupted {self._attempts} times in a row",
        )


def _dump_once(sock: NetlinkSocket, msg_type: int, body: bytes, seq: int) -> list[NetlinkMessage]:
    request = dump_request(msg_type, seq, body)
    sent = sock.send(request)
    if sent != len(request):
        raise OSError(errno.EIO, f"netlink request sent {sent} of {len(request)} bytes")
    answers: list[NetlinkMessage] = []
    interrupted = False
    buffer = bytearray(RECEIVE_BUFFER)
    while True:
        datagram = _receive(sock, buffer)
        if not datagram:
            raise WireError(f"netlink socket returned no data before NLMSG_DONE of dump {msg_type}")
        for message in split_messages(datagram):
            if message.seq != seq:
                continue  # left over from an earlier, abandoned dump on this socket
            # The kernel sets NLM_F_DUMP_INTR on any part, NLMSG_DONE included,
            # when the table changed under the dump (nl_dump_check_consistent()).
            interrupted |= bool(message.flags & NLM_F_DUMP_INTR)
            if message.msg_type == NLMSG_DONE:
                _raise_for_status(message.payload, "NLMSG_DONE", allow_short=True)
                if interrupted:
                    raise _DumpInterruptedError
                return answers
            if message.msg_type == NLMSG_ERROR:
                _raise_for_status(message.payload, "NLMSG_ERROR", allow_short=False)
                continue  # error 0 is an acknowledgement
            if message.msg_type == NLMSG_NOOP:
                continue
            if message.msg_type == NLMSG_OVERRUN:
                raise OSError(errno.ENOBUFS, "netlink reported NLMSG_OVERRUN")
            answers.append(message)


def _raise_for_status(payload: bytes, what: str, *, allow_short: bool) -> None:
    """Raise the OSError a negative errno in NLMSG_ERROR / NLMSG_DONE stands for."""
    if len(payload) < NLMSGERR_ERROR.size:
        if allow_short:
            return  # very old kernels send NLMSG_DONE without the status word
        raise WireError(f"{what} of {len(payload)} bytes")
    (status,) = NLMSGERR_ERROR.unpack_from(payload)
    if status < 0:
        raise OSError(-status, f"rtnetlink {what}: {os.strerror(-status)}")


def _receive(sock: NetlinkSocket, buffer: bytearray) -> bytes:
    """One whole datagram; the buffer grows if the next one is larger."""
    while True:
        try:
            # Peek with MSG_TRUNC: netlink returns the datagram's real length,
            # so a message larger than the buffer is never silently cut.
            length = sock.recv_into(buffer, len(buffer), socket.MSG_PEEK | socket.MSG_TRUNC)
            if length > len(buffer):
                buffer.extend(bytes(length - len(buffer)))
            length = sock.recv_into(buffer, len(buffer), 0)
        except InterruptedError:
            # CPython retries EINTR itself (PEP 475); kept for sockets that do not.
            continue
        return bytes(buffer[:length])
