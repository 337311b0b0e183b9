"""KvpKernel wired to in-memory stand-ins: every step explicit, no threads, no clock."""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from hvguest.abi.constants import KVP_OP_REGISTER1
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.testing.host import HostPacketReply, build_packet
from hvguest.testing.kvp_kernel import KvpKernel
from hvguest.testing.transport import (
    ICMSG_HDR,
    ICMSG_STATUS_OFFSET,
    ICMSGTYPE_KVPEXCHANGE,
    UtilsTransport,
)


class ListChannel:
    """GuestChannel over a list: packets in, answers recorded by request id."""

    def __init__(self) -> None:
        self.ring: deque[tuple[bytes, int]] = deque()
        self.answers: dict[int, bytes] = {}

    def recv_packet(self, buffer: bytearray) -> tuple[int, int] | None:
        if not self.ring:
            return None
        packet, request_id = self.ring.popleft()
        buffer[: len(packet)] = packet
        return len(packet), request_id

    def send_packet(self, data: bytes, request_id: int) -> None:
        self.answers[request_id] = data


class ManualTimer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.pending = True

    def cancel(self) -> bool:
        was_pending, self.pending = self.pending, False
        return was_pending


class ManualTimers:
    """Timers that fire only when the test says so."""

    def __init__(self) -> None:
        self.armed: list[ManualTimer] = []
        self.delays: list[float] = []

    def arm(self, delay: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(callback)
        self.armed.append(timer)
        self.delays.append(delay)
        return timer

    def fire(self) -> int:
        """Run every pending timer; how many ran."""
        due = [timer for timer in self.armed if timer.pending]
        for timer in due:
            timer.pending = False
            timer.callback()
        return len(due)


class Endpoint:
    def __init__(self) -> None:
        self.delivered: list[bytes] = []
        self.hangups = 0

    def deliver(self, message: bytes | bytearray) -> None:
        self.delivered.append(bytes(message))

    def hang_up(self) -> None:
        self.hangups += 1


class DriverHarness:
    """One util driver with a hand-driven daemon side and host side.

    The daemon side opens, writes and reads the transport directly; the host
    side posts packets on a ListChannel and reads the answers by request id.
    Subclasses add the driver's registration and reply framing.
    """

    def __init__(self, name: str, icmsgtype: int, make_kernel: Callable[..., Any]) -> None:
        self.transport = UtilsTransport(name)
        self.channel = ListChannel()
        self.timers = ManualTimers()
        self.kernel = make_kernel(self.transport, self.channel, self.timers)
        self.endpoint = Endpoint()
        self.icmsgtype = icmsgtype
        self._next_request = 0

    # daemon side
    def open(self) -> int:
        self.endpoint = Endpoint()
        return self.transport.open(self.endpoint)

    def write(self, data: bytes) -> int:
        return self.transport.write(data)

    def read(self) -> bytes:
        """The daemon reads the queued message (the on-read callback runs)."""
        message = self.transport.queued
        assert message is not None, "nothing queued for the daemon"
        self.transport.read_done()
        return message

    def close(self) -> None:
        self.transport.release()

    # host side
    def host_send(self, payload: bytes | bytearray, icmsgtype: int | None = None) -> int:
        """Post a packet (the driver's own message type by default); its request id."""
        kind = self.icmsgtype if icmsgtype is None else icmsgtype
        return self.host_send_packet(build_packet(kind, payload))

    def host_send_packet(self, packet: bytes) -> int:
        """Post a raw packet and raise the interrupt; its request id."""
        self._next_request += 1
        self.channel.ring.append((packet, self._next_request))
        self.kernel.on_channel_callback()
        return self._next_request

    def answer(self, request_id: int) -> HostPacketReply | None:
        packet = self.channel.answers.get(request_id)
        if packet is None:
            return None
        (status,) = struct.unpack_from("<I", packet, ICMSG_STATUS_OFFSET)
        return HostPacketReply(status=status, payload=packet[ICMSG_HDR:])


class KernelHarness(DriverHarness):
    """One KVP driver with a hand-driven daemon side and host side."""

    kernel: KvpKernel

    def __init__(self) -> None:
        super().__init__(
            "kvp",
            ICMSGTYPE_KVPEXCHANGE,
            lambda transport, channel, timers: KvpKernel(
                transport, channel, timers, reply_timeout=30.0
            ),
        )

    def register(self, operation: int = KVP_OP_REGISTER1) -> bytes:
        assert self.open() == 0
        registration = bytearray(KVP_MSG_SIZE)
        registration[0] = operation
        assert self.write(bytes(registration)) == KVP_MSG_SIZE
        return self.read()
