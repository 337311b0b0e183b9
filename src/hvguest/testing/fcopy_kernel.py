"""The FCOPY kernel driver, simulated: drivers/hv/hv_fcopy.c (Linux 6.1) between host and daemon.

Theory of operation (protocol.md sections 2.3, 2.4 and 2.7). One transaction
at a time, tracked by :class:`~hvguest.testing.transport.UtilState`:

* Registration: any daemon write while DEVICE_INIT is the handshake. Every
  daemon write must be exactly 4 bytes (else EINVAL). Version 1 is answered
  with a bare 4-byte 1 and the service becomes READY when the daemon *reads*
  it; version 0 (legacy) is accepted but never answered, so the service stays
  DEVICE_INIT for good (sharp edge S4); anything else is EINVAL. A second
  registration while the answer is unread gets EFAULT.
* The channel is read whenever the state is <= READY, so unlike KVP packets
  never wait for a daemon: NEGOTIATE is answered at once (framework 3.0,
  service 1.1) and an FCOPY packet arriving with no daemon is answered
  HV_E_FAIL. Packets shorter than the IC header, FCOPY packets shorter than
  IC header + hv_fcopy_hdr and packets of other types are dropped unanswered.
* READY + FCOPY packet: HOSTMSG_RECEIVED, the 30 s reply timeout is armed
  (counted from receipt), the message is converted and queued for the daemon
  (USERSPACE_REQ): START_FILE_COPY becomes a fresh zeroed 1088-byte
  hv_start_fcopy whose names are UTF-16LE -> UTF-8 written byte-wise into the
  u16 arrays (at most 259 bytes, nls rules); WRITE_TO_FILE is forwarded raw,
  6196 bytes from the FCOPY header whatever the packet length; anything else
  (COMPLETE, CANCEL, unknown) is forwarded raw with the length of the *whole
  packet*, so 28 bytes past its end come from the receive buffer.
* USERSPACE_REQ: the daemon's 4-byte write is the status, given verbatim to
  the host; READY again and the channel is polled. There is no transaction
  id, so after a timeout a late reply pairs with whatever request is current
  (S2); with nothing current (READY) it is EINVAL.
* Timeout: host HV_E_FAIL, READY, re-poll. Close of the device: a pending
  transaction is failed, state DEVICE_INIT. Hibernation queues a fake 36-byte
  CANCEL (send errors ignored) and forces READY, so the daemon's answer to it
  gets EINVAL and the daemon reopens the device.

The receive buffer is one persistent bytearray (hv_util.c allocates four
pages per util device), so bytes past a packet keep their old contents.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import Final

from hvguest.abi.constants import (
    FCOPY_CURRENT_VERSION,
    FCOPY_VERSION_0,
    FCOPY_VERSION_1,
    HV_UTIL_TIMEOUT,
    W_MAX_PATH,
    FcopyOp,
    HvStatus,
)
from hvguest.abi.structs import (
    FCOPY_HDR_SIZE,
    FCOPY_START_SIZE,
    FCOPY_WRITE_SIZE,
    hv_start_fcopy,
)
from hvguest.testing.nls import utf16s_to_utf8s
from hvguest.testing.transport import (
    ICMSG_HDR,
    ICMSG_TYPE_OFFSET,
    ICMSGTYPE_FCOPY,
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

#: Offsets in struct hv_start_fcopy (relative to the FCOPY header).
START_FILE_NAME: Final = hv_start_fcopy.file_name.offset
START_PATH_NAME: Final = hv_start_fcopy.path_name.offset
START_COPY_FLAGS: Final = hv_start_fcopy.copy_flags.offset
START_FILE_SIZE: Final = hv_start_fcopy.file_size.offset
#: utf16s_to_utf8s(..., W_MAX_PATH - 1): room is kept for the terminator.
NAME_BYTES: Final = W_MAX_PATH - 1
#: Every daemon write (registration and status) is a bare int.
DAEMON_WRITE_SIZE: Final = 4
#: hv_util.c gives every util device a four-page receive buffer...
FCOPY_RECV_BUFFER_SIZE: Final = KVP_RECV_BUFFER_SIZE
#: ...but hv_fcopy_onchannelcallback() reads at most two pages of it.
FCOPY_RECV_LIMIT: Final = 2 * 4096
#: The FCOPY framework/service versions the driver accepts (fw_versions, fcopy_versions).
FCOPY_FRAMEWORK_VERSIONS: Final = ((3, 0),)
FCOPY_SERVICE_VERSIONS: Final = ((1, 1),)

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_I32: Final = struct.Struct("<i")


class FcopyKernel(UtilTransaction):
    """drivers/hv/hv_fcopy.c: the fcopy_transaction state machine and its conversions."""

    def __init__(
        self,
        transport: UtilsTransport,
        channel: GuestChannel,
        timers: Timers,
        *,
        reply_timeout: float = HV_UTIL_TIMEOUT,
        on_state: Callable[[UtilState], None] | None = None,
    ) -> None:
        #: dm_reg_value: the version the daemon registered with (None before any).
        self.daemon_version: int | None = None
        super().__init__(
            transport,
            channel,
            timers,
            reply_timeout=reply_timeout,
            recv_buffer_size=FCOPY_RECV_BUFFER_SIZE,
            on_state=on_state,
        )

    # --- transport callbacks (fcopy_on_msg, fcopy_on_reset) -----------------

    def on_msg(self, data: bytes) -> int:
        """fcopy_on_msg(): a daemon write."""
        if len(data) != DAEMON_WRITE_SIZE:
            return -errno.EINVAL
        (value,) = _I32.unpack(data)
        if self._state == UtilState.DEVICE_INIT:
            return self._handle_handshake(value)
        if self._state != UtilState.USERSPACE_REQ:
            return -errno.EINVAL  # nothing asked: spurious (or late after a timeout)
        if self._cancel_timeout():
            self.state = UtilState.USERSPACE_RECV
            self._respond_to_host(value)
            self._poll_channel()
        return 0

    def on_reset(self) -> None:
        """fcopy_on_reset(): the daemon closed the device."""
        self.state = UtilState.DEVICE_INIT
        if self._cancel_timeout():
            self._respond_to_host(HvStatus.E_FAIL)

    def _handle_handshake(self, version: int) -> int:
        """fcopy_handle_handshake()."""
        if version == FCOPY_VERSION_0:
            # The legacy daemon expects no answer, and without a read the
            # service never becomes READY (S4).
            self.daemon_version = version
            return 0
        if version != FCOPY_VERSION_1:
            return -errno.EINVAL
        answer = _U32.pack(FCOPY_CURRENT_VERSION)
        if self._transport.send(answer, self._register_done) != 0:
            return -errno.EFAULT
        self.daemon_version = version
        return 0

    def _register_done(self) -> None:
        """fcopy_register_done(): the daemon read the answer, so it is registered."""
        self._poll_channel()

    # --- the VMBus side -----------------------------------------------------

    def on_channel_callback(self) -> None:
        """hv_fcopy_onchannelcallback(), re-run while packets wait (the batched tasklet loop)."""
        while self._state <= UtilState.READY and self._read_one_packet():
            pass

    def _read_one_packet(self) -> bool:
        """One run of the callback; False when the ring is empty or a transaction started."""
        received = self._channel.recv_packet(self._recv_buffer)
        if received is None:
            return False
        length, request_id = received
        if length > FCOPY_RECV_LIMIT:
            # vmbus_recvpacket() fails with -ENOBUFS ("Could not read into recv
            # buf"). The real packet would stay in the ring and wedge the
            # channel; here it is dropped, unanswered either way.
            return True
        if length < ICMSG_HDR:
            return True  # "Packet length too small": dropped
        buf = self._recv_buffer
        (msgtype,) = _U16.unpack_from(buf, ICMSG_TYPE_OFFSET)
        if msgtype == ICMSGTYPE_NEGOTIATE:
            prep_negotiate_resp(buf, length, FCOPY_FRAMEWORK_VERSIONS, FCOPY_SERVICE_VERSIONS)
            mark_response(buf)
            self._channel.send_packet(bytes(buf[:length]), request_id)
            return True
        if msgtype != ICMSGTYPE_FCOPY or length < ICMSG_HDR + FCOPY_HDR_SIZE:
            return True  # invalid type or no room for hv_fcopy_hdr: dropped
        self._recv_len = length
        self._recv_request_id = request_id
        if self._state < UtilState.READY:
            self._respond_to_host(HvStatus.E_FAIL)  # "userspace is not registered yet"
            return True
        self.state = UtilState.HOSTMSG_RECEIVED
        self._timeout = self._timers.arm(self.reply_timeout, self._on_timeout)
        self._send_data()
        return False

    def _poll_channel(self) -> None:
        """hv_poll_channel(fcopy_poll_wrapper): transaction over, READY, look again."""
        self.state = UtilState.READY
        self.on_channel_callback()

    def _on_timeout(self) -> None:
        """fcopy_timeout_func(): the daemon did not answer in time."""
        self._timeout = None
        self._respond_to_host(HvStatus.E_FAIL)
        self._poll_channel()

    # --- lifecycle ----------------------------------------------------------

    def pre_suspend(self) -> None:
        """hv_fcopy_pre_suspend(): fake a CANCEL for the daemon and force READY.

        The fake goes out whatever the state (EINVAL with no opener, EFAULT
        with a message still unread: both ignored). The host is not answered:
        closing the channel, which the simulator does next, tells it.
        """
        cancel = bytearray(FCOPY_HDR_SIZE)
        _U32.pack_into(cancel, 0, FcopyOp.CANCEL_FCOPY)
        self._cancel_timeout()
        self._transport.send(cancel)
        self.state = UtilState.READY

    # --- host -> daemon (fcopy_send_data) -----------------------------------

    def _send_data(self) -> None:
        """fcopy_send_data(): build the daemon's message and queue it."""
        view = self._recv_view
        (operation,) = _U32.unpack_from(view, ICMSG_HDR)
        message: bytes | bytearray
        if operation == FcopyOp.START_FILE_COPY:
            message = self._start_message(operation)
        elif operation == FcopyOp.WRITE_TO_FILE:
            # The whole hv_do_fcopy, whatever the host actually sent.
            message = bytes(view[ICMSG_HDR : ICMSG_HDR + FCOPY_WRITE_SIZE])
        else:
            # recv_len bytes starting at the FCOPY header: 28 beyond the packet.
            message = bytes(view[ICMSG_HDR : ICMSG_HDR + self._recv_len])
        self.state = UtilState.USERSPACE_REQ
        if self._transport.send(message) != 0 and self._cancel_timeout():
            self._respond_to_host(HvStatus.E_FAIL)
            self.state = UtilState.READY  # and no re-poll, as in the driver

    def _start_message(self, operation: int) -> bytearray:
        """A fresh zeroed hv_start_fcopy with both names converted to UTF-8."""
        host = ICMSG_HDR
        view = self._recv_view
        message = bytearray(FCOPY_START_SIZE)
        _U32.pack_into(message, 0, operation)
        for field in (START_FILE_NAME, START_PATH_NAME):
            text = utf16s_to_utf8s(view[host + field :], W_MAX_PATH, NAME_BYTES)
            message[field : field + len(text)] = text
        end = START_FILE_SIZE + 8
        message[START_COPY_FLAGS:end] = view[host + START_COPY_FLAGS : host + end]
        return message

    # --- daemon -> host (fcopy_respond_to_host) -----------------------------

    def _respond_to_host(self, status: int) -> None:
        """fcopy_respond_to_host(): the status goes into icmsg_hdr, the packet goes back."""
        buf = self._recv_buffer
        mark_response(buf, status)
        self._channel.send_packet(bytes(buf[: self._recv_len]), self._recv_request_id)
