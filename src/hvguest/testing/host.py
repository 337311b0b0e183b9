"""A fake Hyper-V host and the VMBus channel it talks through.

Counterpart of the Windows side of the KVP integration service (there is no C
source for it: formats follow what drivers/hv/hv_kvp.c expects). The host
speaks UTF-16LE like Windows, frames each request as a util packet (pipe
header + icmsg_hdr + service message), and keeps at most one request
outstanding per helper call. :class:`VmbusChannel` is the ring between host
and guest: the kernel service pulls packets from it (under the simulator
lock) and answers through it; a blocked helper wakes up with the answer.

Strings go in and come out as Python ``str``. To send what Windows would
never send (lone or reversed surrogates, unterminated keys) pass a ``str``
with surrogates (encoded with ``surrogatepass``) or ``bytes`` taken as raw
UTF-16LE units, and override ``key_size``/``value_size``.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from hvguest.abi.constants import (
    HV_KVP_EXCHANGE_MAX_KEY_SIZE,
    HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    MAX_ADAPTER_ID_SIZE,
    MAX_GATEWAY_SIZE,
    MAX_IP_ADDR_SIZE,
    REG_SZ,
    REG_U32,
    REG_U64,
    AddrFamily,
    HvStatus,
    KvpOp,
    KvpPool,
)
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.errors import HvError
from hvguest.testing import kvp_kernel as kvp
from hvguest.testing.transport import (
    ICMSG_HDR,
    ICMSG_STATUS_OFFSET,
    ICMSGHDRFLAG_REQUEST,
    ICMSGHDRFLAG_TRANSACTION,
    ICMSGTYPE_KVPEXCHANGE,
    ICMSGTYPE_NEGOTIATE,
    KVP_RECV_BUFFER_SIZE,
    Version,
)

#: vmbuspipe_hdr (flags, msgsize) + icmsg_hdr (icverframe, icmsgtype, icvermsg,
#: icmsgsize, status, ictransaction_id, icflags, reserved[2]).
_PACKET_HEADER: Final = struct.Struct("<II HH H HH H I BB 2x")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_U16: Final = struct.Struct("<H")

#: Framework version the host announces in its packets (UTIL_FW_VERSION 3.0).
HOST_FRAMEWORK_VERSION: Final = (3, 0)
#: KVP message version the host announces (WIN8: 4.0).
HOST_KVP_VERSION: Final = (4, 0)


class HostError(HvError):
    """The fake host did not get an answer."""


class HostTimeoutError(HostError, TimeoutError):
    """No answer within the helper's timeout (the simulated kernel never replied)."""


class HostAbortedError(HostError):
    """The channel closed under the request (hibernation, rescind, shutdown)."""


@dataclass(frozen=True, slots=True)
class HostPacketReply:
    """A raw answer: icmsg_hdr.status and the service message (the request, edited in place)."""

    status: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class HostKvpReply:
    """The answer to a GET/SET/DELETE/ENUMERATE, decoded as the host reads it.

    ``key``/``value`` are the UTF-16 fields up to their first NUL unit; on a
    non-zero ``status`` the kernel changed nothing, so they echo the request.
    """

    status: int
    operation: int
    pool: int
    key: str
    value: str
    key_size: int
    value_size: int
    value_type: int
    index: int = 0
    payload: bytes = field(default=b"", repr=False)

    @property
    def ok(self) -> bool:
        """status == HV_S_OK."""
        return self.status == HvStatus.S_OK


@dataclass(frozen=True, slots=True)
class HostIpInfo:
    """The answer to GET_IP_INFO / SET_IP_INFO (hv_kvp_ip_msg fields, decoded)."""

    status: int
    adapter_id: str
    addr_family: int
    dhcp_enabled: int
    ip_addr: str
    sub_net: str
    gate_way: str
    dns_addr: str
    payload: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class HostNegotiation:
    """The answer to an IC NEGOTIATE: counts are 1/1 on success, 0/0 on failure."""

    status: int
    framework_count: int
    service_count: int
    framework: Version
    service: Version


class _Request:
    """One outstanding host request, waiting for its answer."""

    __slots__ = ("aborted", "done", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: bytes | None = None
        self.aborted = False


class VmbusChannel:
    """The host -> guest ring of one util device, and the answers coming back.

    All methods run under the simulator lock given at construction; the
    kernel side (:meth:`recv_packet`, :meth:`send_packet`) is the
    :class:`~hvguest.testing.transport.GuestChannel` port.
    """

    def __init__(self, name: str, lock: threading.RLock) -> None:
        self.name = name
        self.is_open = True
        #: The guest's channel callback, run when a packet arrives (the interrupt).
        self.interrupt: Callable[[], None] | None = None
        self._lock = lock
        self._ring: deque[tuple[bytes, int]] = deque()
        self._waiting: dict[int, _Request] = {}
        self._next_request_id = 0
        #: Answer callbacks of packets posted without a waiting thread (:meth:`post`).
        self._on_answer: dict[int, Callable[[bytes | None], None]] = {}

    @property
    def pending_packets(self) -> int:
        """Packets the guest has not read yet."""
        return len(self._ring)

    def recv_packet(self, buffer: bytearray) -> tuple[int, int] | None:
        """Guest side: copy the next packet into ``buffer``."""
        if not self._ring:
            return None
        packet, request_id = self._ring.popleft()
        buffer[: len(packet)] = packet
        return len(packet), request_id

    def send_packet(self, data: bytes, request_id: int) -> None:
        """Guest side: an answer; a request nobody waits for any more is dropped."""
        on_answer = self._on_answer.pop(request_id, None)
        if on_answer is not None:
            on_answer(data)
            return
        request = self._waiting.pop(request_id, None)
        if request is not None:
            request.reply = data
            request.done.set()

    def close(self) -> None:
        """vmbus_close(): unread packets are lost and every waiting request aborts."""
        self.is_open = False
        self._ring.clear()
        posted, self._on_answer = self._on_answer, {}
        for on_answer in posted.values():
            on_answer(None)
        for request in self._waiting.values():
            request.aborted = True
            request.done.set()
        self._waiting.clear()

    def post(self, packet: bytes, on_answer: Callable[[bytes | None], None]) -> None:
        """Host side without a waiting thread: queue ``packet``, raise the interrupt.

        ``on_answer`` runs under the simulator lock, in whichever thread the
        guest answers from, with the answer (None if the channel closes
        first); it may post the next packet. For bulk transfers, where a
        thread switch per packet would cost more than the guest's work.
        """
        with self._lock:
            if not self.is_open:
                raise HostAbortedError(f"the {self.name} channel is closed")
            self._next_request_id += 1
            self._on_answer[self._next_request_id] = on_answer
            self._ring.append((packet, self._next_request_id))
            if self.interrupt is not None:
                self.interrupt()

    def reopen(self) -> None:
        """vmbus_open() after a resume or a re-offer."""
        self.is_open = True

    def transact(self, packet: bytes, timeout: float) -> bytes:
        """Host side: post ``packet``, raise the interrupt, wait for the answer."""
        if len(packet) > KVP_RECV_BUFFER_SIZE:
            raise ValueError(f"a {len(packet)}-byte packet exceeds the guest's receive buffer")
        request = _Request()
        with self._lock:
            if not self.is_open:
                raise HostAbortedError(f"the {self.name} channel is closed")
            self._next_request_id += 1
            request_id = self._next_request_id
            self._ring.append((packet, request_id))
            self._waiting[request_id] = request
            if self.interrupt is not None:
                self.interrupt()
        if not request.done.wait(timeout):
            with self._lock:
                if not request.done.is_set():
                    # The packet may still sit in the ring or with the daemon: a
                    # host cannot take it back, its answer is simply ignored.
                    self._waiting.pop(request_id, None)
                    raise HostTimeoutError(
                        f"no answer from the simulated {self.name} driver within {timeout} s"
                    )
        if request.aborted or request.reply is None:
            raise HostAbortedError(f"the {self.name} channel closed before the answer")
        return request.reply


def utf16_units(text: str | bytes) -> bytes:
    """UTF-16LE as the host sends it; ``bytes`` are taken as raw units."""
    if isinstance(text, bytes):
        return text
    return text.encode("utf-16-le", "surrogatepass")


def decode_utf16_field(data: bytes | memoryview) -> str:
    """A UTF-16LE field up to its first NUL unit (lone surrogates kept as such)."""
    text = bytes(data).decode("utf-16-le", "surrogatepass")
    nul = text.find("\0")
    return text if nul < 0 else text[:nul]


def build_packet(icmsgtype: int, payload: bytes | bytearray, transaction: int = 0) -> bytes:
    """A util packet: pipe header, icmsg_hdr (a request), then ``payload``."""
    header = _PACKET_HEADER.pack(
        0,
        len(payload) + ICMSG_HDR - 8,
        *HOST_FRAMEWORK_VERSION,
        icmsgtype,
        *HOST_KVP_VERSION,
        len(payload),
        0,
        transaction & 0xFF,
        ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST,
    )
    return header + payload


def _put(payload: bytearray, offset: int, data: bytes, capacity: int, what: str) -> None:
    if len(data) > capacity:
        raise ValueError(f"{what} is {len(data)} bytes; the field holds {capacity}")
    payload[offset : offset + len(data)] = data


class FakeHost:
    """The host side of the simulator: blocking helpers returning typed answers."""

    def __init__(self, channels: Mapping[str, VmbusChannel], default_timeout: float) -> None:
        self.default_timeout = default_timeout
        self._channels = channels
        self._transaction = 0

    def channel(self, service: str) -> VmbusChannel:
        """The channel of ``service``, for bulk helpers that :meth:`VmbusChannel.post`."""
        return self._channels[service]

    def transact(
        self,
        service: str,
        icmsgtype: int,
        payload: bytes | bytearray,
        timeout: float | None = None,
    ) -> HostPacketReply:
        """Send one raw service message and return the status and edited message."""
        self._transaction += 1
        packet = build_packet(icmsgtype, payload, self._transaction)
        reply = self._channels[service].transact(
            packet, self.default_timeout if timeout is None else timeout
        )
        (status,) = _U32.unpack_from(reply, ICMSG_STATUS_OFFSET)
        return HostPacketReply(status=status, payload=reply[ICMSG_HDR:])

    # --- KVP --------------------------------------------------------------

    def kvp_negotiate(
        self,
        framework_versions: tuple[Version, ...] = (HOST_FRAMEWORK_VERSION,),
        service_versions: tuple[Version, ...] = (HOST_KVP_VERSION,),
        timeout: float | None = None,
    ) -> HostNegotiation:
        """ICMSGTYPE_NEGOTIATE on the KVP channel (answered by the driver itself)."""
        versions = framework_versions + service_versions
        payload = bytearray(8 + 4 * max(len(versions), 2))
        _U16.pack_into(payload, 0, len(framework_versions))
        _U16.pack_into(payload, 2, len(service_versions))
        for i, (major, minor) in enumerate(versions):
            struct.pack_into("<HH", payload, 8 + 4 * i, major, minor)
        reply = self.transact("kvp", ICMSGTYPE_NEGOTIATE, payload, timeout)
        framework_count, service_count = struct.unpack_from("<HH", reply.payload, 0)
        framework = struct.unpack_from("<HH", reply.payload, 8)
        service = struct.unpack_from("<HH", reply.payload, 12)
        return HostNegotiation(reply.status, framework_count, service_count, framework, service)

    def kvp_transact(
        self, payload: bytes | bytearray, timeout: float | None = None
    ) -> HostPacketReply:
        """A raw KVPEXCHANGE message (any layout, any length)."""
        return self.transact("kvp", ICMSGTYPE_KVPEXCHANGE, payload, timeout)

    def kvp_get(
        self,
        pool: KvpPool | int,
        key: str | bytes,
        *,
        key_size: int | None = None,
        timeout: float | None = None,
    ) -> HostKvpReply:
        """KVP_OP_GET."""
        return self._kvp_reply(kvp_get_message(pool, key, key_size=key_size), timeout)

    def kvp_set(
        self,
        pool: KvpPool | int,
        key: str | bytes,
        value: str | bytes | int,
        value_type: int = REG_SZ,
        *,
        key_size: int | None = None,
        value_size: int | None = None,
        timeout: float | None = None,
    ) -> HostKvpReply:
        """KVP_OP_SET; an ``int`` value is stored as u32 (REG_U32) or else u64."""
        message = kvp_set_message(
            pool, key, value, value_type, key_size=key_size, value_size=value_size
        )
        return self._kvp_reply(message, timeout)

    def kvp_set_u32(
        self, pool: KvpPool | int, key: str | bytes, value: int, *, timeout: float | None = None
    ) -> HostKvpReply:
        """KVP_OP_SET of a REG_U32 value."""
        return self.kvp_set(pool, key, value, REG_U32, timeout=timeout)

    def kvp_set_u64(
        self, pool: KvpPool | int, key: str | bytes, value: int, *, timeout: float | None = None
    ) -> HostKvpReply:
        """KVP_OP_SET of a REG_U64 value."""
        return self.kvp_set(pool, key, value, REG_U64, timeout=timeout)

    def kvp_delete(
        self,
        pool: KvpPool | int,
        key: str | bytes,
        *,
        key_size: int | None = None,
        timeout: float | None = None,
    ) -> HostKvpReply:
        """KVP_OP_DELETE."""
        return self._kvp_reply(kvp_delete_message(pool, key, key_size=key_size), timeout)

    def kvp_enumerate(
        self, pool: KvpPool | int, index: int, *, timeout: float | None = None
    ) -> HostKvpReply:
        """KVP_OP_ENUMERATE of one index."""
        return self._kvp_reply(kvp_enumerate_message(pool, index), timeout)

    def kvp_enumerate_all(
        self, pool: KvpPool | int, *, timeout: float | None = None, limit: int = 100_000
    ) -> list[HostKvpReply]:
        """ENUMERATE from index 0 until the first non-zero status (not included)."""
        replies: list[HostKvpReply] = []
        for index in range(limit):
            reply = self.kvp_enumerate(pool, index, timeout=timeout)
            if not reply.ok:
                break
            replies.append(reply)
        return replies

    def kvp_get_ip_info(
        self,
        mac: str | bytes,
        addr_family: int = AddrFamily.NONE,
        *,
        timeout: float | None = None,
    ) -> HostIpInfo:
        """KVP_OP_GET_IP_INFO for the adapter with this MAC address."""
        return decode_ip_info(self.kvp_transact(kvp_get_ip_info_message(mac, addr_family), timeout))

    def kvp_set_ip_info(
        self,
        adapter_guid: str | bytes,
        *,
        ip_addr: str | bytes = "",
        sub_net: str | bytes = "",
        gate_way: str | bytes = "",
        dns_addr: str | bytes = "",
        dhcp_enabled: bool = False,
        addr_family: int = AddrFamily.IPV4,
        timeout: float | None = None,
    ) -> HostIpInfo:
        """KVP_OP_SET_IP_INFO: configure the adapter with this GUID."""
        message = kvp_set_ip_info_message(
            adapter_guid,
            ip_addr=ip_addr,
            sub_net=sub_net,
            gate_way=gate_way,
            dns_addr=dns_addr,
            dhcp_enabled=dhcp_enabled,
            addr_family=addr_family,
        )
        return decode_ip_info(self.kvp_transact(message, timeout))

    def _kvp_reply(self, payload: bytearray, timeout: float | None) -> HostKvpReply:
        return decode_kvp_reply(self.kvp_transact(payload, timeout))


# --- KVP messages as Windows builds them (pure functions) ----------------------


def kvp_get_message(
    pool: KvpPool | int, key: str | bytes, *, key_size: int | None = None
) -> bytearray:
    """A host KVP_OP_GET message; ``key_size`` defaults to the bytes with the terminator."""
    message = _kvp_payload(KvpOp.GET, pool)
    units = utf16_units(key)
    _put(message, kvp.GET_KEY, units, HV_KVP_EXCHANGE_MAX_KEY_SIZE, "key")
    _U32.pack_into(message, kvp.GET_KEY_SIZE, len(units) + 2 if key_size is None else key_size)
    return message


def kvp_set_message(
    pool: KvpPool | int,
    key: str | bytes,
    value: str | bytes | int,
    value_type: int = REG_SZ,
    *,
    key_size: int | None = None,
    value_size: int | None = None,
) -> bytearray:
    """A host KVP_OP_SET message; an ``int`` value is a u32 for REG_U32, else a u64."""
    message = _kvp_payload(KvpOp.SET, pool)
    units = utf16_units(key)
    _put(message, kvp.SET_KEY, units, HV_KVP_EXCHANGE_MAX_KEY_SIZE, "key")
    _U32.pack_into(message, kvp.SET_KEY_SIZE, len(units) + 2 if key_size is None else key_size)
    _U32.pack_into(message, kvp.SET_VALUE_TYPE, value_type)
    if isinstance(value, int):
        data = (_U32 if value_type == REG_U32 else _U64).pack(value)
        default_size = len(data)
    else:
        data = utf16_units(value)
        default_size = len(data) + 2
    _put(message, kvp.SET_VALUE, data, HV_KVP_EXCHANGE_MAX_VALUE_SIZE, "value")
    _U32.pack_into(message, kvp.SET_VALUE_SIZE, default_size if value_size is None else value_size)
    return message


def kvp_delete_message(
    pool: KvpPool | int, key: str | bytes, *, key_size: int | None = None
) -> bytearray:
    """A host KVP_OP_DELETE message."""
    message = _kvp_payload(KvpOp.DELETE, pool)
    units = utf16_units(key)
    _put(message, kvp.DELETE_KEY, units, HV_KVP_EXCHANGE_MAX_KEY_SIZE, "key")
    _U32.pack_into(message, kvp.DELETE_KEY_SIZE, len(units) + 2 if key_size is None else key_size)
    return message


def kvp_enumerate_message(pool: KvpPool | int, index: int) -> bytearray:
    """A host KVP_OP_ENUMERATE message."""
    message = _kvp_payload(KvpOp.ENUMERATE, pool)
    _U32.pack_into(message, kvp.ENUM_INDEX, index)
    return message


def kvp_get_ip_info_message(mac: str | bytes, addr_family: int = AddrFamily.NONE) -> bytearray:
    """A host KVP_OP_GET_IP_INFO message (hv_kvp_ip_msg layout)."""
    message = _kvp_payload(KvpOp.GET_IP_INFO, 0)
    _put_ip(message, kvp.HOST_IP_ADAPTER_ID, mac, MAX_ADAPTER_ID_SIZE, "adapter_id")
    message[kvp.HOST_IP_ADDR_FAMILY] = addr_family
    return message


def kvp_set_ip_info_message(
    adapter_guid: str | bytes,
    *,
    ip_addr: str | bytes = "",
    sub_net: str | bytes = "",
    gate_way: str | bytes = "",
    dns_addr: str | bytes = "",
    dhcp_enabled: bool = False,
    addr_family: int = AddrFamily.IPV4,
) -> bytearray:
    """A host KVP_OP_SET_IP_INFO message (hv_kvp_ip_msg layout)."""
    message = _kvp_payload(KvpOp.SET_IP_INFO, 0)
    _put_ip(message, kvp.HOST_IP_ADAPTER_ID, adapter_guid, MAX_ADAPTER_ID_SIZE, "adapter_id")
    _put_ip(message, kvp.HOST_IP_ADDR, ip_addr, MAX_IP_ADDR_SIZE, "ip_addr")
    _put_ip(message, kvp.HOST_IP_SUB_NET, sub_net, MAX_IP_ADDR_SIZE, "sub_net")
    _put_ip(message, kvp.HOST_IP_GATE_WAY, gate_way, MAX_GATEWAY_SIZE, "gate_way")
    _put_ip(message, kvp.HOST_IP_DNS_ADDR, dns_addr, MAX_IP_ADDR_SIZE, "dns_addr")
    message[kvp.HOST_IP_DHCP_ENABLED] = int(dhcp_enabled)
    message[kvp.HOST_IP_ADDR_FAMILY] = addr_family
    return message


def _kvp_payload(operation: int, pool: int) -> bytearray:
    """A zeroed host message: Windows clears what it does not set."""
    payload = bytearray(KVP_MSG_SIZE)
    payload[kvp.OPERATION] = operation
    payload[kvp.POOL] = pool
    return payload


def _put_ip(payload: bytearray, offset: int, text: str | bytes, units: int, what: str) -> None:
    _put(payload, offset, utf16_units(text), 2 * units, what)


def decode_kvp_reply(reply: HostPacketReply) -> HostKvpReply:
    """Read a KVP answer the way the host does, by the layout of its operation."""
    data = reply.payload
    operation, pool = data[kvp.OPERATION], data[kvp.POOL]
    key_size = value_size = value_type = index = 0
    value = ""
    if operation == KvpOp.DELETE:
        (key_size,) = _U32.unpack_from(data, kvp.DELETE_KEY_SIZE)
        key = _field(data, kvp.DELETE_KEY, HV_KVP_EXCHANGE_MAX_KEY_SIZE)
    elif operation == KvpOp.ENUMERATE:
        index, value_type, key_size, value_size = struct.unpack_from("<IIII", data, kvp.ENUM_INDEX)
        key = _field(data, kvp.ENUM_KEY, HV_KVP_EXCHANGE_MAX_KEY_SIZE)
        value = _field(data, kvp.ENUM_VALUE, HV_KVP_EXCHANGE_MAX_VALUE_SIZE)
    else:  # GET and SET share hv_kvp_exchg_msg_value at offset 4
        value_type, key_size, value_size = struct.unpack_from("<III", data, kvp.GET_VALUE_TYPE)
        key = _field(data, kvp.GET_KEY, HV_KVP_EXCHANGE_MAX_KEY_SIZE)
        value = _field(data, kvp.GET_VALUE, HV_KVP_EXCHANGE_MAX_VALUE_SIZE)
    return HostKvpReply(
        status=reply.status,
        operation=operation,
        pool=pool,
        key=key,
        value=value,
        key_size=key_size,
        value_size=value_size,
        value_type=value_type,
        index=index,
        payload=data,
    )


def _field(data: bytes, offset: int, size: int) -> str:
    return decode_utf16_field(memoryview(data)[offset : offset + size])


def decode_ip_info(reply: HostPacketReply) -> HostIpInfo:
    """Read a GET_IP_INFO / SET_IP_INFO answer (hv_kvp_ip_msg layout)."""
    data = reply.payload
    return HostIpInfo(
        status=reply.status,
        adapter_id=_field(data, kvp.HOST_IP_ADAPTER_ID, 2 * MAX_ADAPTER_ID_SIZE),
        addr_family=data[kvp.HOST_IP_ADDR_FAMILY],
        dhcp_enabled=data[kvp.HOST_IP_DHCP_ENABLED],
        ip_addr=_field(data, kvp.HOST_IP_ADDR, 2 * MAX_IP_ADDR_SIZE),
        sub_net=_field(data, kvp.HOST_IP_SUB_NET, 2 * MAX_IP_ADDR_SIZE),
        gate_way=_field(data, kvp.HOST_IP_GATE_WAY, 2 * MAX_GATEWAY_SIZE),
        dns_addr=_field(data, kvp.HOST_IP_DNS_ADDR, 2 * MAX_IP_ADDR_SIZE),
        payload=data,
    )
