"""The KVP kernel driver, simulated: drivers/hv/hv_kvp.c between host and daemon.

Theory of operation (protocol.md sections 2.3-2.5). One transaction at a time,
tracked by :class:`~hvguest.testing.transport.UtilState`:

* DEVICE_INIT: no daemon. Host packets are not even read from the channel
  (they wait, negotiation included: sharp edge S3). The first daemon write of
  at least 7432 bytes is the registration: op 100 (or legacy 4) is answered
  with a full hv_kvp_msg carrying op and version "3.1"; other ops -> EINVAL;
  a second registration while the answer is unread -> EFAULT. The service
  becomes READY only when the daemon *reads* the answer (on-read callback),
  and then picks up any waiting host packet.
* READY: the next host packet is read. NEGOTIATE is answered at once;
  KVPEXCHANGE becomes HOSTMSG_RECEIVED, arms the reply timeout (counted from
  receipt) and is converted (UTF-16LE -> UTF-8, table of section 2.5) and
  queued for the daemon: USERSPACE_REQ. If queuing fails the host gets
  HV_E_FAIL at once and the state is READY again (without a re-poll).
* USERSPACE_REQ: any daemon write of >= 7432 bytes is *the* reply - there is
  no transaction id, so a stale reply pairs with the current request (S2).
  It is converted back (section 2.5, S1: GET's value read at offset 532) and
  the host is answered; the state returns to READY and the channel is polled.
  A write while READY/HOSTMSG_RECEIVED is spurious (EINVAL); one while
  USERSPACE_RECV is accepted and dropped.
* Timeout: host HV_E_FAIL, READY, re-poll; the daemon's late reply then gets
  EINVAL. Close of the device: a pending transaction is failed (HV_E_FAIL),
  state DEVICE_INIT. Hibernation forces READY and cancels the timeout; rescind
  makes the service DEVICE_DYING.

The host and daemon messages are handled as bytes with ``struct`` at offsets
taken from the ctypes mirror in :mod:`hvguest.abi.structs` (one source of
truth, and several times faster than ctypes objects per message). The
receive buffer is one persistent bytearray, like the driver's static
``recv_buffer``, so bytes the host did not send keep their old contents.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Callable
from typing import Any, Final

from hvguest.abi.constants import (
    HV_UTIL_TIMEOUT,
    KVP_KERNEL_VERSION,
    KVP_OP_REGISTER,
    KVP_OP_REGISTER1,
    MAX_ADAPTER_ID_SIZE,
    MAX_GATEWAY_SIZE,
    MAX_IP_ADDR_SIZE,
    REG_SZ,
    REG_U32,
    REG_U64,
    HvStatus,
    KvpOp,
)
from hvguest.abi.structs import KVP_MSG_SIZE, hv_kvp_ip_msg, hv_kvp_msg
from hvguest.testing.nls import InvalidUtf8Error, utf8s_to_utf16s, utf16s_to_utf8s
from hvguest.testing.transport import (
    ICMSG_HDR,
    ICMSG_TYPE_OFFSET,
    ICMSGTYPE_KVPEXCHANGE,
    ICMSGTYPE_NEGOTIATE,
    KVP_RECV_BUFFER_SIZE,
    GuestChannel,
    Timers,
    UtilState,
    UtilsTransport,
    UtilTransaction,
    mark_response,
    prep_negotiate_resp,
)


def _offset(root: type[ctypes.Structure], path: str) -> int:
    """offsetof(root, path) for a dotted path through the ctypes mirror."""
    offset = 0
    cls: Any = root
    for name in path.split("."):
        types = {field[0]: field[1] for field in cls._fields_}
        offset += getattr(cls, name).offset
        cls = types[name]
    return offset


# Offsets in struct hv_kvp_msg (both directions use it for GET/SET/DELETE/ENUMERATE).
#: The error int overlaying operation/pool/pad in daemon -> kernel messages.
ERROR: Final = _offset(hv_kvp_msg, "_head.error")
OPERATION: Final = _offset(hv_kvp_msg, "_head.kvp_hdr.operation")
POOL: Final = _offset(hv_kvp_msg, "_head.kvp_hdr.pool")
REGISTER_VERSION: Final = _offset(hv_kvp_msg, "body.kvp_register.version")
GET_VALUE_TYPE: Final = _offset(hv_kvp_msg, "body.kvp_get.data.value_type")
GET_KEY_SIZE: Final = _offset(hv_kvp_msg, "body.kvp_get.data.key_size")
GET_VALUE_SIZE: Final = _offset(hv_kvp_msg, "body.kvp_get.data.value_size")
GET_KEY: Final = _offset(hv_kvp_msg, "body.kvp_get.data.key")
GET_VALUE: Final = _offset(hv_kvp_msg, "body.kvp_get.data._value")
# kvp_set.data has the same layout as kvp_get.data.
SET_VALUE_TYPE: Final = _offset(hv_kvp_msg, "body.kvp_set.data.value_type")
SET_KEY_SIZE: Final = _offset(hv_kvp_msg, "body.kvp_set.data.key_size")
SET_VALUE_SIZE: Final = _offset(hv_kvp_msg, "body.kvp_set.data.value_size")
SET_KEY: Final = _offset(hv_kvp_msg, "body.kvp_set.data.key")
SET_VALUE: Final = _offset(hv_kvp_msg, "body.kvp_set.data._value")
DELETE_KEY_SIZE: Final = _offset(hv_kvp_msg, "body.kvp_delete.key_size")
DELETE_KEY: Final = _offset(hv_kvp_msg, "body.kvp_delete.key")
ENUM_INDEX: Final = _offset(hv_kvp_msg, "body.kvp_enum_data.index")
ENUM_VALUE_TYPE: Final = _offset(hv_kvp_msg, "body.kvp_enum_data.data.value_type")
ENUM_KEY_SIZE: Final = _offset(hv_kvp_msg, "body.kvp_enum_data.data.key_size")
ENUM_VALUE_SIZE: Final = _offset(hv_kvp_msg, "body.kvp_enum_data.data.value_size")
ENUM_KEY: Final = _offset(hv_kvp_msg, "body.kvp_enum_data.data.key")
ENUM_VALUE: Final = _offset(hv_kvp_msg, "body.kvp_enum_data.data._value")
# The daemon-side IP layout: hv_kvp_msg.body.kvp_ip_val.
IP_ADAPTER_ID: Final = _offset(hv_kvp_msg, "body.kvp_ip_val.adapter_id")
IP_ADDR_FAMILY: Final = _offset(hv_kvp_msg, "body.kvp_ip_val.addr_family")
IP_DHCP_ENABLED: Final = _offset(hv_kvp_msg, "body.kvp_ip_val.dhcp_enabled")
IP_ADDR: Final = _offset(hv_kvp_msg, "body.kvp_ip_val.ip_addr")
IP_SUB_NET: Final = _offset(hv_kvp_msg, "body.kvp_ip_val.sub_net")
IP_GATE_WAY: Final = _offset(hv_kvp_msg, "body.kvp_ip_val.gate_way")
IP_DNS_ADDR: Final = _offset(hv_kvp_msg, "body.kvp_ip_val.dns_addr")
# The host-side IP layout: struct hv_kvp_ip_msg, two bytes earlier.
HOST_IP_ADAPTER_ID: Final = _offset(hv_kvp_ip_msg, "kvp_ip_val.adapter_id")
HOST_IP_ADDR_FAMILY: Final = _offset(hv_kvp_ip_msg, "kvp_ip_val.addr_family")
HOST_IP_DHCP_ENABLED: Final = _offset(hv_kvp_ip_msg, "kvp_ip_val.dhcp_enabled")
HOST_IP_ADDR: Final = _offset(hv_kvp_ip_msg, "kvp_ip_val.ip_addr")
HOST_IP_SUB_NET: Final = _offset(hv_kvp_ip_msg, "kvp_ip_val.sub_net")
HOST_IP_GATE_WAY: Final = _offset(hv_kvp_ip_msg, "kvp_ip_val.gate_way")
HOST_IP_DNS_ADDR: Final = _offset(hv_kvp_ip_msg, "kvp_ip_val.dns_addr")

#: Conversion limits of kvp_respond_to_host(): key 512/2 - 2 and value 2048/2 - 2 units.
ENUM_KEY_UNITS: Final = 254
ENUM_VALUE_UNITS: Final = 1022
#: Conversion limits of kvp_send_key(): the field minus the terminator, in bytes.
KEY_BYTES: Final = 511
VALUE_BYTES: Final = 2047

#: The KVP framework/service versions the driver accepts, in its preference order.
KVP_FRAMEWORK_VERSIONS: Final = ((3, 0), (1, 0))
KVP_SERVICE_VERSIONS: Final = ((4, 0), (3, 0), (1, 0))

_U32: Final = struct.Struct("<I")
_I32: Final = struct.Struct("<i")
_U64: Final = struct.Struct("<Q")

#: Host field -> daemon field conversions of process_ib_ipinfo() for SET_IP_INFO,
#: as (host offset, daemon offset, units in / bytes out).
_IB_SET_FIELDS: Final = (
    (HOST_IP_ADDR, IP_ADDR, MAX_IP_ADDR_SIZE),
    (HOST_IP_SUB_NET, IP_SUB_NET, MAX_IP_ADDR_SIZE),
    (HOST_IP_GATE_WAY, IP_GATE_WAY, MAX_GATEWAY_SIZE),
    (HOST_IP_DNS_ADDR, IP_DNS_ADDR, MAX_IP_ADDR_SIZE),
)
#: Daemon field -> host field conversions of process_ob_ipinfo(), in its order,
#: as (daemon offset, host offset, units out).
_OB_FIELDS: Final = (
    (IP_ADDR, HOST_IP_ADDR, MAX_IP_ADDR_SIZE),
    (IP_SUB_NET, HOST_IP_SUB_NET, MAX_IP_ADDR_SIZE),
    (IP_GATE_WAY, HOST_IP_GATE_WAY, MAX_GATEWAY_SIZE),
    (IP_DNS_ADDR, HOST_IP_DNS_ADDR, MAX_IP_ADDR_SIZE),
    (IP_ADAPTER_ID, HOST_IP_ADAPTER_ID, MAX_ADAPTER_ID_SIZE),
)


def _as_c_int(value: int) -> int:
    """A u32 passed where C takes an int (sizes become negative above 2**31)."""
    return value - (1 << 32) if value & 0x80000000 else value


def c_string(data: bytes, offset: int) -> bytes:
    """strlen()-bounded bytes at ``offset``; unterminated strings run on to the buffer's end."""
    end = data.find(b"\0", offset)
    return data[offset:] if end < 0 else data[offset:end]


class KvpKernel(UtilTransaction):
    """drivers/hv/hv_kvp.c: the kvp_transaction state machine and its conversions."""

    def __init__(
        self,
        transport: UtilsTransport,
        channel: GuestChannel,
        timers: Timers,
        *,
        reply_timeout: float = HV_UTIL_TIMEOUT,
        on_state: Callable[[UtilState], None] | None = None,
    ) -> None:
        #: dm_reg_value: the registration op the daemon used (0 before any).
        self.daemon_version = 0
        super().__init__(
            transport,
            channel,
            timers,
            reply_timeout=reply_timeout,
            recv_buffer_size=KVP_RECV_BUFFER_SIZE,
            on_state=on_state,
        )

    # --- transport callbacks (kvp_on_msg, kvp_on_reset) ---------------------

    def on_msg(self, data: bytes) -> int:
        """kvp_on_msg(): a daemon write."""
        if len(data) < KVP_MSG_SIZE:
            return -errno.EINVAL
        if self._state < UtilState.READY:
            return self._handle_handshake(data)
        if self._state < UtilState.USERSPACE_REQ:
            return -errno.EINVAL  # we sent nothing: the reply is spurious
        self.state = UtilState.USERSPACE_RECV
        error = 0
        if self.daemon_version == KVP_OP_REGISTER:
            # Legacy daemons signal failure with an empty key, whatever the op.
            if data[ENUM_KEY] == 0:
                error = HvStatus.S_CONT
        elif self.daemon_version == KVP_OP_REGISTER1:
            (error,) = _I32.unpack_from(data, ERROR)
        if self._cancel_timeout():
            self._respond_to_host(data, error)
            self._poll_channel()
        return 0

    def on_reset(self) -> None:
        """kvp_on_reset(): the daemon closed the device."""
        if self._cancel_timeout():
            self._respond_to_host(None, HvStatus.E_FAIL)
        self.state = UtilState.DEVICE_INIT

    def _handle_handshake(self, data: bytes) -> int:
        """kvp_handle_handshake() + kvp_register()."""
        operation = data[OPERATION]
        if operation not in (KVP_OP_REGISTER, KVP_OP_REGISTER1):
            return -errno.EINVAL  # "incompatible daemon"
        self.daemon_version = operation
        answer = bytearray(KVP_MSG_SIZE)
        answer[OPERATION] = operation
        version = KVP_KERNEL_VERSION.encode("ascii")
        answer[REGISTER_VERSION : REGISTER_VERSION + len(version)] = version
        return self._transport.send(answer, self._register_done)

    def _register_done(self) -> None:
        """kvp_register_done(): the daemon read the answer, so it is registered."""
        self._poll_channel()

    # --- the VMBus side -----------------------------------------------------

    def on_channel_callback(self) -> None:
        """hv_kvp_onchannelcallback(): look at (at most) one host packet."""
        # Not READY: no daemon yet (the packet waits; the 55 s handshake work
        # only re-runs this check, so it is not modelled) or busy.
        if self._state != UtilState.READY:
            return
        received = self._channel.recv_packet(self._recv_buffer)
        if received is None:
            return
        length, request_id = received
        if length < ICMSG_HDR:
            return  # dropped without an answer
        buf = self._recv_buffer
        (msgtype,) = struct.unpack_from("<H", buf, ICMSG_TYPE_OFFSET)
        if msgtype == ICMSGTYPE_NEGOTIATE:
            prep_negotiate_resp(buf, length, KVP_FRAMEWORK_VERSIONS, KVP_SERVICE_VERSIONS)
            mark_response(buf)
            self._channel.send_packet(bytes(buf[:length]), request_id)
            self._poll_channel()
            return
        if msgtype != ICMSGTYPE_KVPEXCHANGE:
            return  # "unknown message type": dropped without an answer
        self._recv_len = length
        self._recv_request_id = request_id
        self.state = UtilState.HOSTMSG_RECEIVED
        # The timeout counts from receipt; armed before the send, whose
        # failure path cancels it.
        self._timeout = self._timers.arm(self.reply_timeout, self._on_timeout)
        self._send_key()

    def _poll_channel(self) -> None:
        """hv_poll_channel(kvp_poll_wrapper): transaction over, READY, look again."""
        self.state = UtilState.READY
        self.on_channel_callback()

    def _on_timeout(self) -> None:
        """kvp_timeout_func(): the daemon did not answer in time."""
        self._timeout = None
        self._respond_to_host(None, HvStatus.E_FAIL)
        self._poll_channel()

    # --- lifecycle ----------------------------------------------------------

    def pre_suspend(self) -> None:
        """hv_kvp_pre_suspend(): cancel the work and force READY.

        The host is not answered: closing the channel (which the simulator
        does next) tells it. A daemon reply to a request it still holds then
        gets EINVAL, and the daemon reopens the device.
        """
        self._cancel_timeout()
        self.state = UtilState.READY

    # --- host -> daemon (kvp_send_key, process_ib_ipinfo) -------------------

    def _send_key(self) -> None:
        """kvp_send_key(): convert the host packet and queue it for the daemon."""
        if self._state != UtilState.HOSTMSG_RECEIVED:
            return
        host = ICMSG_HDR
        buf = self._recv_buffer
        operation = buf[host + OPERATION]
        message = bytearray(KVP_MSG_SIZE)
        message[OPERATION] = operation
        message[POOL] = buf[host + POOL]  # copied verbatim, not range-checked
        if operation == KvpOp.SET_IP_INFO:
            for host_field, daemon_field, units in _IB_SET_FIELDS:
                self._from_host(message, daemon_field, host + host_field, units, units)
            message[IP_DHCP_ENABLED] = buf[host + HOST_IP_DHCP_ENABLED]
        if operation in (KvpOp.SET_IP_INFO, KvpOp.GET_IP_INFO):
            self._from_host(
                message,
                IP_ADAPTER_ID,
                host + HOST_IP_ADAPTER_ID,
                MAX_ADAPTER_ID_SIZE,
                MAX_ADAPTER_ID_SIZE,
            )
            message[IP_ADDR_FAMILY] = buf[host + HOST_IP_ADDR_FAMILY]
        elif operation == KvpOp.SET:
            self._set_value(message)
            self._key_from_host(message, SET_KEY_SIZE, SET_KEY)
        elif operation == KvpOp.GET:
            # No value and no value_size for GET: half of sharp edge S1.
            self._key_from_host(message, GET_KEY_SIZE, GET_KEY)
        elif operation == KvpOp.DELETE:
            self._key_from_host(message, DELETE_KEY_SIZE, DELETE_KEY)
        elif operation == KvpOp.ENUMERATE:
            message[ENUM_INDEX : ENUM_INDEX + 4] = buf[host + ENUM_INDEX : host + ENUM_INDEX + 4]
        self.state = UtilState.USERSPACE_REQ
        if self._transport.send(message) != 0 and self._cancel_timeout():
            self._respond_to_host(None, HvStatus.E_FAIL)
            self.state = UtilState.READY  # and no re-poll, as in the driver

    def _from_host(
        self, message: bytearray, daemon_offset: int, host_offset: int, units: int, limit: int
    ) -> int:
        """utf16s_to_utf8s() from the receive buffer into the daemon message; bytes written."""
        text = utf16s_to_utf8s(self._recv_view[host_offset:], units, limit)
        message[daemon_offset : daemon_offset + len(text)] = text
        return len(text)

    def _key_from_host(self, message: bytearray, size_offset: int, key_offset: int) -> None:
        """A key; the host's byte count is used as the unit count, as in the driver."""
        host = ICMSG_HDR
        (key_size,) = _U32.unpack_from(self._recv_buffer, host + size_offset)
        written = self._from_host(
            message, key_offset, host + key_offset, _as_c_int(key_size), KEY_BYTES
        )
        _U32.pack_into(message, size_offset, written + 1)

    def _set_value(self, message: bytearray) -> None:
        """The SET value by host value_type; value_type itself is not forwarded."""
        host = ICMSG_HDR
        buf = self._recv_buffer
        (value_type,) = _U32.unpack_from(buf, host + SET_VALUE_TYPE)
        if value_type == REG_SZ:
            (value_size,) = _U32.unpack_from(buf, host + SET_VALUE_SIZE)
            written = self._from_host(
                message, SET_VALUE, host + SET_VALUE, _as_c_int(value_size), VALUE_BYTES
            )
        elif value_type in (REG_U32, REG_U64):
            scalar = _U32 if value_type == REG_U32 else _U64
            (number,) = scalar.unpack_from(buf, host + SET_VALUE)
            text = str(number).encode("ascii")
            message[SET_VALUE : SET_VALUE + len(text)] = text
            written = len(text)
        else:
            return  # any other type: empty value, value_size 0
        _U32.pack_into(message, SET_VALUE_SIZE, written + 1)

    # --- daemon -> host (kvp_respond_to_host, process_ob_ipinfo) ------------

    def _respond_to_host(self, reply: bytes | None, error: int) -> None:
        """kvp_respond_to_host(): answer the current host packet in place."""
        buf = self._recv_buffer
        status = error & 0xFFFFFFFF
        if error == 0 and reply is not None:
            operation = buf[ICMSG_HDR + OPERATION]
            if operation == KvpOp.GET_IP_INFO:
                if not self._ip_info_to_host(reply):
                    status = HvStatus.E_FAIL
            elif operation == KvpOp.GET:
                # Sharp edge S1: the value is read at the ENUMERATE offset 532.
                if self._value_to_host(reply, GET_VALUE_SIZE, GET_VALUE, GET_VALUE_TYPE) < 0:
                    status = HvStatus.E_FAIL
            elif operation not in (KvpOp.SET_IP_INFO, KvpOp.SET, KvpOp.DELETE):
                keylen = self._to_host(
                    c_string(reply, ENUM_KEY), ICMSG_HDR + ENUM_KEY, ENUM_KEY_UNITS
                )
                _U32.pack_into(buf, ICMSG_HDR + ENUM_KEY_SIZE, (2 * (keylen + 1)) & 0xFFFFFFFF)
                valuelen = self._value_to_host(reply, ENUM_VALUE_SIZE, ENUM_VALUE, ENUM_VALUE_TYPE)
                if keylen < 0 or valuelen < 0:
                    status = HvStatus.E_FAIL
        mark_response(buf, status)
        self._channel.send_packet(bytes(buf[: self._recv_len]), self._recv_request_id)

    def _value_to_host(
        self, reply: bytes, size_offset: int, value_offset: int, type_offset: int
    ) -> int:
        """The copy_value tail of kvp_respond_to_host(); units converted or -EINVAL."""
        host = ICMSG_HDR
        valuelen = self._to_host(c_string(reply, ENUM_VALUE), host + value_offset, ENUM_VALUE_UNITS)
        _U32.pack_into(self._recv_buffer, host + size_offset, (2 * (valuelen + 1)) & 0xFFFFFFFF)
        _U32.pack_into(self._recv_buffer, host + type_offset, REG_SZ)  # all values are strings
        return valuelen

    def _to_host(self, text: bytes, host_offset: int, limit: int) -> int:
        """utf8s_to_utf16s() into the receive buffer, no terminator; units or -EINVAL."""
        try:
            units = utf8s_to_utf16s(text, len(text), limit)
        except InvalidUtf8Error as invalid:
            # The kernel writes as it converts, so the partial output stays.
            partial = invalid.partial
            self._recv_buffer[host_offset : host_offset + len(partial)] = partial
            return -errno.EINVAL
        self._recv_buffer[host_offset : host_offset + len(units)] = units
        return len(units) // 2

    def _ip_info_to_host(self, reply: bytes) -> bool:
        """process_ob_ipinfo(): the daemon's UTF-8 strings as UTF-16 in hv_kvp_ip_msg."""
        host = ICMSG_HDR
        for daemon_field, host_field, units in _OB_FIELDS:
            if self._to_host(c_string(reply, daemon_field), host + host_field, units) < 0:
                return False  # fields converted so far stay written
        self._recv_buffer[host + HOST_IP_DHCP_ENABLED] = reply[IP_DHCP_ENABLED]
        self._recv_buffer[host + HOST_IP_ADDR_FAMILY] = reply[IP_ADDR_FAMILY]
        return True
