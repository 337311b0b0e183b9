"""What every simulated util driver shares: the char-device transport and the VMBus side.

Mirrors drivers/hv/hv_utils_transport.c (:class:`UtilsTransport`), the service
states of drivers/hv/hyperv_vmbus.h (:class:`UtilState`), the IC framing of
include/linux/hyperv.h and vmbus_prep_negotiate_resp() of
drivers/hv/channel_mgmt.c. A kernel service (KVP now; VSS and FCOPY later) is
a :class:`KernelService` plugged into one transport, reading host packets from
a :class:`GuestChannel` and arming :class:`Timers`. Nothing here touches a
socket or a clock: the simulator feeds it and runs it under one lock, which
plays the role of the kernel's locks, so every rule below is deterministic.

Transport rules reproduced (protocol.md section 2.2): one opener at a time
(EBUSY), EBADF once destroyed; a one-deep outgoing queue (a second send while
the first message is unread is -EFAULT, sending with no opener -EINVAL); a
read frees the slot and then runs the on-read callback given with that
message; a write goes to the service's handler and fails with its negative
errno; release discards the queued message and calls the service's reset.
The legacy netlink mode is not modelled: nothing in the simulator speaks
netlink, so a transport never leaves INIT that way.
"""

from __future__ import annotations

import errno
import struct
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import Final, Protocol

# --- IC framing (include/linux/hyperv.h) ------------------------------------

#: sizeof(struct vmbuspipe_hdr) + sizeof(struct icmsg_hdr): where the service message starts.
ICMSG_HDR: Final = 28
#: Offsets of icmsg_hdr fields within a util packet (the icmsg_hdr starts at 8).
ICMSG_SIZE_OFFSET: Final = 8 + 10
ICMSG_TYPE_OFFSET: Final = 8 + 4
ICMSG_STATUS_OFFSET: Final = 8 + 12
ICMSG_TRANSACTION_OFFSET: Final = 8 + 16
ICMSG_FLAGS_OFFSET: Final = 8 + 17
#: ICMSGTYPE_NEGOTIATE / ICMSGTYPE_KVPEXCHANGE / ICMSGTYPE_VSS / ICMSGTYPE_FCOPY.
ICMSGTYPE_NEGOTIATE: Final = 0
ICMSGTYPE_KVPEXCHANGE: Final = 2
ICMSGTYPE_VSS: Final = 5
ICMSGTYPE_FCOPY: Final = 7
#: ICMSGHDRFLAG_TRANSACTION / _REQUEST / _RESPONSE.
ICMSGHDRFLAG_TRANSACTION: Final = 1
ICMSGHDRFLAG_REQUEST: Final = 2
ICMSGHDRFLAG_RESPONSE: Final = 4
#: IC_VERSION_NEGOTIATION_MAX_VER_COUNT.
IC_VERSION_NEGOTIATION_MAX_VER_COUNT: Final = 100
#: HV_HYP_PAGE_SIZE * 4: the KVP driver's receive buffer (drivers/hv/hv_util.c).
KVP_RECV_BUFFER_SIZE: Final = 4 * 4096

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_VERSION: Final = struct.Struct("<HH")


class UtilState(IntEnum):
    """enum hvutil_device_state (drivers/hv/hyperv_vmbus.h)."""

    DEVICE_INIT = 0  #: HVUTIL_DEVICE_INIT: no daemon registered
    READY = 1  #: HVUTIL_READY: daemon registered, idle
    HOSTMSG_RECEIVED = 2  #: HVUTIL_HOSTMSG_RECEIVED: host packet taken, not yet sent on
    USERSPACE_REQ = 3  #: HVUTIL_USERSPACE_REQ: request queued for the daemon
    USERSPACE_RECV = 4  #: HVUTIL_USERSPACE_RECV: daemon reply received
    DEVICE_DYING = 5  #: HVUTIL_DEVICE_DYING: torn down


class TransportMode(IntEnum):
    """enum hvutil_transport_mode (drivers/hv/hv_utils_transport.h)."""

    INIT = 0  #: HVUTIL_TRANSPORT_INIT: nobody has the device open
    NETLINK = 1  #: HVUTIL_TRANSPORT_NETLINK: not modelled
    CHARDEV = 2  #: HVUTIL_TRANSPORT_CHARDEV: a daemon has it open
    DESTROY = 3  #: HVUTIL_TRANSPORT_DESTROY: rescinded, waiting for the close


# --- ports a kernel service is driven through -------------------------------


class DaemonEndpoint(Protocol):
    """The open file on the daemon's side: where queued messages and hangups go."""

    def deliver(self, message: bytes | bytearray) -> None:
        """Make ``message`` readable by the daemon (POLLIN)."""

    def hang_up(self) -> None:
        """Signal POLLERR|POLLHUP: the device is being destroyed."""


class KernelService(Protocol):
    """The two transport callbacks of a util driver (hvt->on_msg, hvt->on_reset)."""

    def on_msg(self, data: bytes) -> int:
        """Handle a daemon write; 0 or a negative errno (which fails the write)."""

    def on_reset(self) -> None:
        """The daemon closed the device."""


class GuestChannel(Protocol):
    """The guest end of a VMBus channel, as the util drivers use it."""

    def recv_packet(self, buffer: bytearray) -> tuple[int, int] | None:
        """vmbus_recvpacket(): copy the next packet into ``buffer``; (length, request id)."""

    def send_packet(self, data: bytes, request_id: int) -> None:
        """vmbus_sendpacket(): answer the host."""


class Timer(Protocol):
    """An armed delayed work item."""

    def cancel(self) -> bool:
        """cancel_delayed_work_sync(): True if it was still pending (and now never runs)."""


class Timers(Protocol):
    """schedule_delayed_work() with an injectable clock."""

    def arm(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` (under the simulator lock) after ``delay`` seconds."""


# --- what every util driver's transaction keeps -----------------------------


class UtilTransaction:
    """The fields kvp_transaction, vss_transaction and fcopy_transaction share.

    A simulated util driver subclasses this and implements the transport
    callbacks; the state setter reports every change (the simulator wakes
    waiters on it), and the receive buffer plays the driver's recv_buffer.
    """

    def __init__(
        self,
        transport: UtilsTransport,
        channel: GuestChannel,
        timers: Timers,
        *,
        reply_timeout: float,
        recv_buffer_size: int,
        on_state: Callable[[UtilState], None] | None,
    ) -> None:
        #: Seconds the daemon has to answer (HV_UTIL_TIMEOUT unless a test shortens it).
        self.reply_timeout = reply_timeout
        self._transport = transport
        self._channel = channel
        self._timers = timers
        self._on_state = on_state
        self._state = UtilState.DEVICE_INIT
        self._recv_buffer = bytearray(recv_buffer_size)
        self._recv_view = memoryview(self._recv_buffer)
        self._recv_len = 0
        self._recv_request_id = 0
        self._timeout: Timer | None = None
        transport.service = self

    @property
    def state(self) -> UtilState:
        """The transaction's hvutil_device_state."""
        return self._state

    @state.setter
    def state(self, value: UtilState) -> None:
        self._state = value
        if self._on_state is not None:
            self._on_state(value)

    def deinit(self) -> None:
        """hv_{kvp,vss,fcopy}_deinit(): the device is going away (before the transport is)."""
        self.state = UtilState.DEVICE_DYING
        self._cancel_timeout()

    def pre_resume(self) -> None:
        """hv_*_pre_resume(): nothing to restore beyond re-enabling the channel."""

    def _cancel_timeout(self) -> bool:
        """cancel_delayed_work_sync() of the reply timeout: True if it had not run."""
        timeout, self._timeout = self._timeout, None
        return timeout is not None and timeout.cancel()

    def on_msg(self, data: bytes) -> int:
        """The driver's on_msg callback: a daemon write (0 or -errno)."""
        raise NotImplementedError

    def on_reset(self) -> None:
        """The driver's on_reset callback: the daemon closed the device."""
        raise NotImplementedError


# --- the transport ----------------------------------------------------------

OnRead = Callable[[], None]


class UtilsTransport:
    """One char device's transport: struct hvutil_transport and its file operations."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = TransportMode.INIT
        self.service: KernelService | None = None
        self._endpoint: DaemonEndpoint | None = None
        self._outmsg: bytes | bytearray | None = None
        self._on_read: OnRead | None = None
        self._on_destroyed: Callable[[], None] | None = None
        self._write_errors: deque[int] = deque()

    @property
    def queued(self) -> bytes | None:
        """The message waiting for the daemon's read, if any."""
        return None if self._outmsg is None else bytes(self._outmsg)

    def open(self, endpoint: DaemonEndpoint) -> int:
        """hvt_op_open(): 0, EBUSY (already open) or EBADF (destroyed)."""
        if self.mode == TransportMode.DESTROY:
            return errno.EBADF
        if self.mode != TransportMode.INIT:
            return errno.EBUSY
        self.mode = TransportMode.CHARDEV
        self._endpoint = endpoint
        return 0

    def read_done(self) -> None:
        """The tail of hvt_op_read(): the daemon took the queued message."""
        if self.mode != TransportMode.CHARDEV or self._outmsg is None:
            return
        self._outmsg = None
        # Clear before calling: the callback may queue the next message (and
        # in the kernel it only schedules work that does so).
        on_read, self._on_read = self._on_read, None
        if on_read is not None:
            on_read()

    def write(self, data: bytes) -> int:
        """hvt_op_write(): the byte count, or a negative errno."""
        if self._write_errors:
            return -self._write_errors.popleft()
        if self.mode == TransportMode.DESTROY:
            return -errno.EBADF
        assert self.service is not None, "a transport is wired to its service before use"
        result = self.service.on_msg(data)
        return result if result else len(data)

    def release(self) -> None:
        """hvt_op_release(): close(fd) on the device."""
        destroying = self.mode == TransportMode.DESTROY
        if not destroying:
            self.mode = TransportMode.INIT
        self._endpoint = None
        # hvt_reset(): the unread message is dropped so a reconnecting daemon
        # does not see a stale one.
        self._outmsg = None
        self._on_read = None
        if self.service is not None:
            self.service.on_reset()
        if destroying:
            self._finish_destroy()

    def send(self, message: bytes | bytearray, on_read: OnRead | None = None) -> int:
        """hvutil_transport_send(): 0, -EINVAL (nobody listening) or -EFAULT (slot full)."""
        if self.mode != TransportMode.CHARDEV or self._endpoint is None:
            return -errno.EINVAL
        if self._outmsg is not None:
            return -errno.EFAULT  # "previous message wasn't received"
        self._outmsg = message
        self._on_read = on_read
        self._endpoint.deliver(message)
        return 0

    def destroy(self, on_destroyed: Callable[[], None]) -> None:
        """hvutil_transport_destroy(): rescind; ``on_destroyed`` runs once nobody holds it.

        The kernel blocks the rescind until the daemon closes its fd; here the
        completion is a callback so that the simulator keeps serving meanwhile.
        """
        was_open = self.mode == TransportMode.CHARDEV
        self.mode = TransportMode.DESTROY
        if was_open and self._endpoint is not None:
            self._on_destroyed = on_destroyed
            self._endpoint.hang_up()
        else:
            on_destroyed()

    def fail_next_write(self, errno_value: int) -> None:
        """Test hook: the next daemon write fails with ``errno_value``, unseen by the service."""
        self._write_errors.append(errno_value)

    def _finish_destroy(self) -> None:
        done, self._on_destroyed = self._on_destroyed, None
        if done is not None:
            done()


# --- version negotiation (drivers/hv/channel_mgmt.c) ------------------------

Version = tuple[int, int]


def prep_negotiate_resp(
    buffer: bytearray,
    length: int,
    framework_versions: tuple[Version, ...],
    service_versions: tuple[Version, ...],
) -> bool:
    """vmbus_prep_negotiate_resp(): rewrite a NEGOTIATE packet in place as the answer.

    ``buffer`` holds the whole util packet (pipe header first), ``length`` is
    what was received. Returns whether both a framework and a service version
    matched; the answer is written either way, artefacts included.
    """
    negotiate = ICMSG_HDR
    if length < negotiate + 4:
        return False
    _U16.pack_into(buffer, ICMSG_SIZE_OFFSET, 0x10)
    (framework_count,) = _U16.unpack_from(buffer, negotiate)
    (service_count,) = _U16.unpack_from(buffer, negotiate + 2)
    versions = negotiate + 8
    frame_major, frame_minor = framework_count, 0
    msg_major, msg_minor = service_count, 0
    found = False
    if (
        framework_count <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT
        and service_count <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT
        and versions + 4 * (framework_count + service_count) <= length
    ):
        offered = [_VERSION.unpack_from(buffer, versions + 4 * i) for i in range(framework_count)]
        match = _first_match(framework_versions, offered)
        if match is not None:
            frame_major, frame_minor = match
            offered = [
                _VERSION.unpack_from(buffer, versions + 4 * (framework_count + i))
                for i in range(service_count)
            ]
            service = _first_match(service_versions, offered)
            if service is not None:
                msg_major, msg_minor = service
                found = True
    count = 1 if found else 0
    _U16.pack_into(buffer, negotiate, count)
    _U16.pack_into(buffer, negotiate + 2, count)
    _VERSION.pack_into(buffer, versions, frame_major, frame_minor)
    _VERSION.pack_into(buffer, versions + 4, msg_major, msg_minor)
    return found


def _first_match(ours: tuple[Version, ...], offered: list[tuple[int, int]]) -> Version | None:
    """The first of our versions (in our preference order) that the host offers."""
    for version in ours:
        if version in offered:
            return version
    return None


def mark_response(buffer: bytearray, status: int | None = None) -> None:
    """Set icflags = TRANSACTION|RESPONSE (and optionally the status) on a packet answer."""
    if status is not None:
        _U32.pack_into(buffer, ICMSG_STATUS_OFFSET, status & 0xFFFFFFFF)
    buffer[ICMSG_FLAGS_OFFSET] = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE
