"""hvguest.daemon.fcopy_uio's wait loop: no packet is stranded by a missed interrupt.

A host only interrupts an unmasked guest, and the kernel masks the RX
interrupt on every interrupt until the daemon's write unmasks it. A packet
the host queues in that masked window raises no interrupt at all, so after
unmasking the daemon must look at the ring again before it sleeps. Here a
scripted channel slips such a packet in exactly at the unmask and never
makes its fd readable: only that second look can answer it.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time

from hvguest.abi.constants import HvStatus
from hvguest.daemon import fcopy_uio
from hvguest.protocol.fcopy_messages import FcopyRequest
from hvguest.protocol.vmbus_ring import RING_HEADER_SIZE, Ring
from hvguest.testing.uio_sim import negotiate_message, util_packet

RING = RING_HEADER_SIZE + 8192


class SlippingChannel:
    """Rings in memory; ``enable_interrupts`` queues a packet without any interrupt."""

    def __init__(self, slipped: list[bytes]) -> None:
        memory = memoryview(bytearray(2 * RING))
        self.tx = Ring(memory[:RING])
        self.rx = Ring(memory[RING:])
        self.host_rx = Ring(memory[RING:])
        self.host_tx = Ring(memory[:RING])
        self._slipped = slipped
        self._interrupts, self._never = socket.socketpair()
        self.enables = 0

    def fileno(self) -> int:
        return self._interrupts.fileno()

    def read_interrupt_count(self) -> int:
        return int(struct.unpack("<i", self._interrupts.recv(4))[0])

    def enable_interrupts(self) -> None:
        self.enables += 1
        self.rx.interrupt_mask = 0
        if self._slipped:
            self.host_rx.write_packet(self._slipped.pop(0), transaction_id=7)

    def close(self) -> None:
        self._interrupts.close()
        self._never.close()


class NoService:
    def handle(self, request: FcopyRequest) -> HvStatus:
        raise AssertionError(f"no FCOPY request expected, got {request!r}")

    def reset(self) -> None:
        pass


def test_packet_queued_while_masked_is_answered_without_an_interrupt() -> None:
    negotiate = util_packet(0, negotiate_message(((3, 0),), ((1, 1),)))
    channel = SlippingChannel([negotiate])
    done = threading.Event()
    stop = fcopy_uio._Stop(done.is_set)
    selector = selectors.DefaultSelector()
    selector.register(stop.wake_read, selectors.EVENT_READ, None)
    thread = threading.Thread(
        target=fcopy_uio._serve_channel,
        args=(channel, NoService(), selector, stop, fcopy_uio._Quiet()),
    )
    thread.start()
    try:
        buffer = bytearray(RING)
        deadline = time.monotonic() + 10
        reply = None
        while reply is None and time.monotonic() < deadline:
            reply = channel.host_tx.read_packet(buffer)
            if reply is None:
                time.sleep(0.01)
        assert reply is not None, "the packet slipped in at the unmask was never answered"
        assert reply.transaction_id == 7
        assert struct.unpack_from("<I", reply.payload, 20) == (0,)  # negotiated
        assert channel.enables >= 2  # answered, then unmasked (and the host signalled) again
    finally:
        done.set()
        thread.join(timeout=10)
        selector.close()
        stop.close()
        channel.close()
    assert not thread.is_alive()
