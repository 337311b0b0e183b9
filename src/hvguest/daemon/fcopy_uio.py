"""The FCOPY daemon's UIO flavour (Linux >= 6.10): serve Copy-VMFile over the VMBus ring.

Replaces main() of tools/hv/hv_fcopy_uio_daemon.c. Differences that matter
(protocol.md sections 6.3, 10 S19):

- the device is found and, if needed, bound to uio_hv_generic here (the step
  distributions miss); a device that is not there yet is waited for;
- every packet in the ring is answered per interrupt, not just one; after
  unmasking, the ring is checked again so a packet that arrived while
  interrupts were masked is not stranded;
- a malformed packet is answered HV_E_FAIL and serving goes on;
- any I/O or ring error is logged once, the open copy is abandoned
  (``service.reset()``), and the device is reopened after a backoff: the
  process never exits on an I/O error;
- SIGTERM/SIGINT (or ``loop_stop``) end the loop cleanly, abandoning any copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Final, Protocol

from hvguest.abi.constants import HvStatus
from hvguest.config import Config
from hvguest.errors import HvError, OperationFailed
from hvguest.linux.uio import (
    MODPROBE_ARGV,
    FcopyUioNode,
    UioChannel,
    open_uio,
    prepare_fcopy_uio,
)
from hvguest.protocol.fcopy_messages import FcopyRequest
from hvguest.protocol.fcopy_uio import (
    CopyRequest,
    Negotiation,
    Rejected,
    Unanswerable,
    decode_packet,
    set_reply_status,
)
from hvguest.protocol.vmbus_ring import RingError

log = logging.getLogger("hvguest.fcopy")

#: Reconnect / device-wait backoff: first delay, growth factor 2, cap (seconds).
BACKOFF_FIRST: Final = 0.05
BACKOFF_CAP: Final = 5.0
#: How often ``loop_stop`` is polled while waiting (only when one is given).
STOP_POLL: Final = 0.05


class FcopyHandler(Protocol):
    """What the loop needs of hvguest.services.fcopy.FcopyService."""

    def handle(self, request: FcopyRequest) -> HvStatus:
        """Carry out one request; the status for the host."""
        ...

    def reset(self) -> None:
        """Abandon any open copy (channel lost, shutdown)."""
        ...


class _Stop:
    """Why and how the loop ends: a signal, ``loop_stop()``, or ``request()``."""

    def __init__(self, loop_stop: Callable[[], bool] | None) -> None:
        self._loop_stop = loop_stop
        self.signal: int | None = None
        self._requested = False
        self.wake_read, self._wake_write = socket.socketpair()
        self.wake_read.setblocking(False)
        self._wake_write.setblocking(False)

    def requested(self) -> bool:
        if self._requested:
            return True
        if self._loop_stop is not None and self._loop_stop():
            self._requested = True
        return self._requested

    def poll_interval(self, timeout: float | None) -> float | None:
        """Cap a wait so that ``loop_stop`` is noticed."""
        if self._loop_stop is None:
            return timeout
        return STOP_POLL if timeout is None else min(timeout, STOP_POLL)

    @contextlib.contextmanager
    def signals_handled(self) -> Iterator[None]:
        """SIGTERM/SIGINT request the stop (main thread only, where Python allows handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def _handler(signum: int, _frame: FrameType | None) -> None:
            self.signal = signum
            self._requested = True

        old_wakeup = signal.set_wakeup_fd(self._wake_write.fileno(), warn_on_full_buffer=False)
        old_term = signal.signal(signal.SIGTERM, _handler)
        old_int = signal.signal(signal.SIGINT, _handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
            signal.set_wakeup_fd(old_wakeup)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self.wake_read.recv(512):
                pass

    def close(self) -> None:
        self.wake_read.close()
        self._wake_write.close()


class _Quiet:
    """One log line per distinct problem: a repeat (every backoff round) goes to debug."""

    def __init__(self) -> None:
        self._last: str | None = None

    def warn(self, message: str) -> None:
        log.log(logging.DEBUG if message == self._last else logging.WARNING, "%s", message)
        self._last = message

    def clear(self) -> None:
        self._last = None


def serve_fcopy_uio(
    config: Config,
    service: FcopyHandler,
    loop_stop: Callable[[], bool] | None = None,
    *,
    modprobe: Sequence[str] = MODPROBE_ARGV,
) -> int:
    """Serve the FCOPY UIO device until SIGTERM/SIGINT or ``loop_stop()``; exit code 0.

    Signal handlers are installed only when called from the main thread.
    """
    log.info("FCOPY (UIO) starting; pid is:%d", os.getpid())
    stop = _Stop(loop_stop)
    selector = selectors.DefaultSelector()
    selector.register(stop.wake_read, selectors.EVENT_READ, None)
    quiet = _Quiet()
    opened: list[FcopyUioNode] = []
    delay = 0.0
    try:
        with stop.signals_handled():
            while not stop.requested():
                channel = _connect(config, modprobe, quiet, opened)
                if channel is not None:
                    try:
                        if _serve_channel(channel, service, selector, stop, quiet):
                            delay = 0.0  # it worked for a while: retry fast
                    finally:
                        channel.close()
                        service.reset()
                if stop.requested():
                    break
                delay = BACKOFF_FIRST if delay == 0 else min(delay * 2, BACKOFF_CAP)
                _wait(selector, stop, delay)
    finally:
        service.reset()
        selector.close()
        stop.close()
    log.info("FCOPY (UIO) stopping (signal %s)", stop.signal)
    return 0


def _connect(
    config: Config, modprobe: Sequence[str], quiet: _Quiet, opened: list[FcopyUioNode]
) -> UioChannel | None:
    """Find, bind and open the device; None (after one log line) if that is not possible now.

    ``opened`` remembers the last node opened, so a reopen of the same one logs at debug.
    """
    try:
        node = prepare_fcopy_uio(config.paths.sys, config.paths.dev, modprobe=modprobe)
    except (HvError, OSError) as error:
        quiet.warn(f"FCOPY device not usable: {error}")
        return None
    if node is None:
        quiet.warn(f"waiting for the FCOPY VMBus device under {config.paths.sys}")
        return None
    try:
        channel = open_uio(node)
    except OSError as error:
        quiet.warn(f"cannot open {node.node}: {error}")
        return None
    level = logging.DEBUG if opened and opened[-1] == node else logging.INFO
    log.log(level, "Ring buffer size from %s: %d bytes", node.ring_file, node.ring_size)
    opened[:] = [node]
    return channel


def _wait(selector: selectors.BaseSelector, stop: _Stop, delay: float) -> None:
    """Sleep ``delay`` seconds, or less if a stop is requested."""
    deadline = time.monotonic() + delay
    while not stop.requested():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        for key, _mask in selector.select(stop.poll_interval(remaining)):
            if key.data is None:
                stop.drain()


def _serve_channel(
    channel: UioChannel,
    service: FcopyHandler,
    selector: selectors.BaseSelector,
    stop: _Stop,
    quiet: _Quiet,
) -> int:
    """Answer packets until a stop or an error (logged; the caller reopens); how many."""
    buffer = bytearray(channel.rx.data_size)
    channel.rx.interrupt_mask = 0
    selector.register(channel.fileno(), selectors.EVENT_READ, channel)
    handled = 0
    try:
        while not stop.requested():
            handled += _drain(channel, service, buffer)
            if handled:
                quiet.clear()
            # Unmask and tell the host its answers are there; a packet queued
            # while we were masked raised no interrupt, so look again first.
            channel.enable_interrupts()
            if channel.rx.readable():
                continue
            interrupted = False
            while not interrupted and not stop.requested():
                for key, _mask in selector.select(stop.poll_interval(None)):
                    if key.data is None:
                        stop.drain()
                    else:
                        interrupted = True
            if interrupted:
                channel.read_interrupt_count()
    except (OSError, RingError) as error:
        quiet.warn(f"FCOPY channel error: {error}; reopening")
    finally:
        selector.unregister(channel.fileno())
    return handled


def _drain(channel: UioChannel, service: FcopyHandler, buffer: bytearray) -> int:
    """Answer every complete packet in the RX ring; how many."""
    handled = 0
    while True:
        packet = channel.rx.read_packet(buffer)
        if packet is None:
            return handled
        handled += 1
        reply = _answer(packet.payload, service)
        if reply:
            channel.tx.write_packet(packet.payload, transaction_id=packet.transaction_id)


def _answer(payload: memoryview, service: FcopyHandler) -> bool:
    """Turn ``payload`` into its reply in place; False when it cannot be answered."""
    incoming = decode_packet(payload)
    if isinstance(incoming, Negotiation):
        if incoming.ok:
            assert incoming.service is not None
            log.info("FCopy IC version %d.%d", *incoming.service)
        else:
            log.warning("FCOPY version negotiation failed: no common version")
        return True
    if isinstance(incoming, Rejected):
        log.warning("FCOPY: malformed packet (%d bytes): %s", len(payload), incoming.error)
        return True
    if isinstance(incoming, Unanswerable):
        log.warning("FCOPY: %d-byte packet has no IC header; dropped", incoming.length)
        return False
    set_reply_status(payload, _handle(service, incoming))
    return True


def _handle(service: FcopyHandler, incoming: CopyRequest) -> int:
    try:
        return int(service.handle(incoming.request))
    except OperationFailed as failure:
        log.warning("FCOPY: %s (answering 0x%08X)", failure, failure.status)
        return int(failure.status)
    except Exception:
        log.exception("FCOPY: unexpected error handling %r", incoming.request)
        return int(HvStatus.E_FAIL)
