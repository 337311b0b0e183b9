"""The VSS kernel driver, simulated: drivers/hv/hv_snapshot.c between host and daemon.

Theory of operation (protocol.md sections 2.3, 2.4 and 2.6). One transaction
at a time, tracked by :class:`~hvguest.testing.transport.UtilState`:

* Registration: every daemon write must be exactly 12 bytes (else EINVAL).
  A write whose operation byte is 128 or 129 is a registration, allowed while
  the state is at most READY (EINVAL in a transaction). 129 (REGISTER1) is
  answered with a bare 4-byte u32 129 and the service becomes READY only when
  the daemon *reads* it; a second one while the answer is unread -> EFAULT.
  128 (legacy REGISTER) is accepted but answered with nothing, so the state
  never reaches READY and every host request fails (sharp edge S4).
* The channel is read whenever the state is at most READY, daemon or not.
  NEGOTIATE (framework 3.0, VSS 5.0) is answered at once; packets shorter
  than 28 bytes, or VSS packets shorter than 28 + 12, and other message types
  are dropped without an answer.
* GET_DM_INFO (dm_info.flags = 0), CREATE, DELETE, BU_COMPLETE, AUTO_RECOVER
  and unknown operations are answered by the kernel with status 0.
* FREEZE, THAW, HOT_BACKUP: without a registered daemon (state < READY) the
  host gets HV_E_FAIL at once. Otherwise a zeroed 12-byte message carrying only
  the operation byte is queued (USERSPACE_REQ) and the reply timeout armed
  *at the send*: :attr:`VssKernel.freeze_timeout` (900 s) for FREEZE,
  :attr:`VssKernel.reply_timeout` (30 s) for the others. A failed queue
  (slot full) answers HV_E_FAIL at once and returns to READY without a re-poll.
* In USERSPACE_REQ any non-registration 12-byte write is *the* reply (no
  transaction id: sharp edge S2); the host status is the reply's ``error``
  int. If the reply's first byte (the low byte of ``error``) is 2, the *host*
  message's vss_cf.flags becomes VSS_HBU_NO_AUTO_RECOVERY, so a successful
  reply (error 0) can never set it (S5). Any other write -> EINVAL.
* Timeout: host HV_E_FAIL, READY, re-poll; the daemon's late reply then gets
  EINVAL (which makes the reference daemon reopen and thaw). Close: a waiting
  transaction is failed (HV_E_FAIL), state DEVICE_INIT.
* Hibernation (pre_suspend): cancel the timeout, queue a fake THAW for the
  daemon (send errors ignored) and force READY, so the daemon's reply to it
  gets EINVAL. Rescind: DEVICE_DYING.

Approximation: the driver's receive buffer is 8192 bytes; a longer packet
makes vmbus_recvpacket() fail and the real ring stays blocked behind it. Here
such a packet is dropped without an answer (the host times out either way).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import Final

from hvguest.abi.constants import (
    HV_UTIL_TIMEOUT,
    VSS_FREEZE_TIMEOUT,
    VSS_HBU_NO_AUTO_RECOVERY,
    VSS_OP_REGISTER,
    VSS_OP_REGISTER1,
    HvStatus,
    VssOp,
)
from hvguest.abi.structs import VSS_MSG_SIZE, hv_vss_msg
from hvguest.testing.transport import (
    ICMSG_HDR,
    ICMSG_TYPE_OFFSET,
    ICMSGTYPE_NEGOTIATE,
    ICMSGTYPE_VSS,
    KVP_RECV_BUFFER_SIZE,
    GuestChannel,
    Timers,
    UtilState,
    UtilsTransport,
    UtilTransaction,
    mark_response,
    prep_negotiate_resp,
)

#: VSS_MAX_PKT_SIZE (HV_HYP_PAGE_SIZE * 2): the driver's receive buffer.
VSS_RECV_BUFFER_SIZE: Final = 2 * 4096
#: Offset of vss_cf.flags / dm_info.flags in struct hv_vss_msg.
FLAGS: Final = hv_vss_msg._body.offset
#: The VSS framework/service versions the driver accepts (UTIL_FW_VERSION, VSS 5.0).
VSS_FRAMEWORK_VERSIONS: Final = ((3, 0),)
VSS_SERVICE_VERSIONS: Final = ((5, 0),)
#: Operations the kernel forwards to the daemon; everything else it answers itself.
DAEMON_OPS: Final = frozenset({VssOp.FREEZE, VssOp.THAW, VssOp.HOT_BACKUP})

_U32: Final = struct.Struct("<I")
_I32: Final = struct.Struct("<i")


class VssKernel(UtilTransaction):
    """drivers/hv/hv_snapshot.c: the vss_transaction state machine."""

    def __init__(
        self,
        transport: UtilsTransport,
        channel: GuestChannel,
        timers: Timers,
        *,
        reply_timeout: float = HV_UTIL_TIMEOUT,
        freeze_timeout: float = VSS_FREEZE_TIMEOUT,
        on_state: Callable[[UtilState], None] | None = None,
    ) -> None:
        #: Seconds the daemon has to answer FREEZE (VSS_FREEZE_TIMEOUT).
        self.freeze_timeout = freeze_timeout
        #: dm_reg_value: the registration op the daemon used (0 before any).
        self.daemon_version = 0
        # Bigger than VSS_MAX_PKT_SIZE so that an oversized packet can be seen
        # (and dropped) instead of growing the buffer. reply_timeout covers
        # THAW and HOT_BACKUP (HV_UTIL_TIMEOUT).
        super().__init__(
            transport,
            channel,
            timers,
            reply_timeout=reply_timeout,
            recv_buffer_size=max(KVP_RECV_BUFFER_SIZE, VSS_RECV_BUFFER_SIZE),
            on_state=on_state,
        )

    @property
    def host_operation(self) -> int:
        """The operation byte of the host message being handled (vss_transaction.msg)."""
        return self._recv_buffer[ICMSG_HDR]

    # --- transport callbacks (vss_on_msg, vss_on_reset) ---------------------

    def on_msg(self, data: bytes) -> int:
        """vss_on_msg(): a daemon write."""
        if len(data) != VSS_MSG_SIZE:
            return -errno.EINVAL
        operation = data[0]
        if operation in (VSS_OP_REGISTER, VSS_OP_REGISTER1):
            if self._state > UtilState.READY:
                return -errno.EINVAL  # "unexpected registration request"
            return self._handle_handshake(operation)
        if self._state != UtilState.USERSPACE_REQ:
            return -errno.EINVAL  # spurious: no transaction is waiting for the daemon
        self.state = UtilState.USERSPACE_RECV
        if operation == VssOp.HOT_BACKUP:
            # The byte is the low byte of `error` in a reply: sharp edge S5.
            _U32.pack_into(self._recv_buffer, ICMSG_HDR + FLAGS, VSS_HBU_NO_AUTO_RECOVERY)
        if self._cancel_timeout():
            (error,) = _I32.unpack_from(data, 0)
            self._respond_to_host(error)
            self._poll_channel()
        return 0

    def on_reset(self) -> None:
        """vss_on_reset(): the daemon closed the device."""
        if self._cancel_timeout():
            self._respond_to_host(HvStatus.E_FAIL)
        self.state = UtilState.DEVICE_INIT

    def _handle_handshake(self, operation: int) -> int:
        """vss_handle_handshake(): 128 gets no answer, 129 gets a bare u32 129."""
        answer = _U32.pack(VSS_OP_REGISTER1)
        if operation == VSS_OP_REGISTER1 and self._transport.send(answer, self._register_done) != 0:
            return -errno.EFAULT
        self.daemon_version = operation
        return 0

    def _register_done(self) -> None:
        """vss_register_done(): the daemon read the answer, so it is registered."""
        self._poll_channel()

    # --- the VMBus side -----------------------------------------------------

    def on_channel_callback(self) -> None:
        """hv_vss_onchannelcallback(): handle host packets while not in a transaction."""
        while self._state <= UtilState.READY:
            received = self._channel.recv_packet(self._recv_buffer)
            if received is None:
                return
            length, request_id = received
            if length > VSS_RECV_BUFFER_SIZE or length < ICMSG_HDR:
                continue  # "could not read" / "packet length too small": no answer
            buf = self._recv_buffer
            (msgtype,) = struct.unpack_from("<H", buf, ICMSG_TYPE_OFFSET)
            if msgtype == ICMSGTYPE_NEGOTIATE:
                prep_negotiate_resp(buf, length, VSS_FRAMEWORK_VERSIONS, VSS_SERVICE_VERSIONS)
                mark_response(buf)
                self._channel.send_packet(bytes(buf[:length]), request_id)
                continue
            if msgtype != ICMSGTYPE_VSS or length < ICMSG_HDR + VSS_MSG_SIZE:
                continue  # "invalid msg type" / "packet length too small": no answer
            self._recv_len = length
            self._recv_request_id = request_id
            if not self._handle_request():
                return  # the daemon has it now

    def _handle_request(self) -> bool:
        """vss_handle_request(): True if answered here (so the next packet may be read)."""
        operation = self.host_operation
        if operation in DAEMON_OPS:
            if self._state < UtilState.READY:
                self._respond_to_host(HvStatus.E_FAIL)  # "userspace is not registered yet"
                return True
            self.state = UtilState.HOSTMSG_RECEIVED
            self._send_op(operation)
            return False
        if operation == VssOp.GET_DM_INFO:
            _U32.pack_into(self._recv_buffer, ICMSG_HDR + FLAGS, 0)
        self._respond_to_host(0)
        return True

    def _send_op(self, operation: int) -> None:
        """vss_send_op(): queue the bare operation for the daemon, timeout armed first."""
        message = bytearray(VSS_MSG_SIZE)
        message[0] = operation
        self.state = UtilState.USERSPACE_REQ
        delay = self.freeze_timeout if operation == VssOp.FREEZE else self.reply_timeout
        self._timeout = self._timers.arm(delay, self._on_timeout)
        if self._transport.send(message) != 0 and self._cancel_timeout():
            self._respond_to_host(HvStatus.E_FAIL)
            self.state = UtilState.READY  # and no re-poll, as in the driver

    def _poll_channel(self) -> None:
        """hv_poll_channel(vss_poll_wrapper): transaction over, READY, look again."""
        self.state = UtilState.READY
        self.on_channel_callback()

    def _on_timeout(self) -> None:
        """vss_timeout_func(): the daemon did not answer in time."""
        self._timeout = None
        self._respond_to_host(HvStatus.E_FAIL)
        self._poll_channel()

    def _respond_to_host(self, error: int) -> None:
        """vss_respond_to_host(): answer the current host packet in place."""
        mark_response(self._recv_buffer, error & 0xFFFFFFFF)
        self._channel.send_packet(bytes(self._recv_buffer[: self._recv_len]), self._recv_request_id)

    # --- lifecycle ----------------------------------------------------------

    def pre_suspend(self) -> None:
        """hv_vss_pre_suspend(): fake a THAW for the daemon, force READY.

        The host is not answered (closing the channel, which the simulator
        does next, tells it). A daemon reply to the fake THAW or to a request
        it still holds gets EINVAL, and the reference daemon reopens.
        """
        self._cancel_timeout()
        thaw = bytearray(VSS_MSG_SIZE)
        thaw[0] = VssOp.THAW
        self._transport.send(thaw)  # "we don't care about the return value"
        self.state = UtilState.READY
