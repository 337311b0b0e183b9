"""The event loop: one epoll loop over the service channels of a process.

Replaces the poll()/read()/write() loops and reopen_*_fd() of
tools/hv/hv_{kvp,vss}_daemon.c. The loop is the only place with waiting,
signals and reconnects:

- a missing device is waited for (it appears when the host offers the
  service), with capped backoff and one log line, never a spin or an exit;
- any I/O error on a device (EBADF after rescind, EINVAL for a late reply,
  a short read or write, hangup) closes it and reopens and re-registers after
  a backoff; the process never exits on an I/O error;
- a request that does not decode is answered with the codec's failure status
  and one log line; a handler's OperationFailed is answered with its status;
  any other exception is logged with its traceback and answered HV_E_FAIL.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final, Generic, Protocol, TypeVar

from hvguest.abi.constants import HvStatus
from hvguest.errors import ChannelError, OperationFailed, WireError
from hvguest.linux.device import Device, open_device
from hvguest.protocol.channel import Channel, Codec, KernelVersion, Malformed
from hvguest.records import record

Req = TypeVar("Req")
Rep = TypeVar("Rep")

#: Reopen backoff: first delay, growth factor and cap (seconds).
BACKOFF_FIRST: Final = 0.05
BACKOFF_CAP: Final = 2.0


class _Backoff:
    __slots__ = ("delay",)

    def __init__(self) -> None:
        self.delay = 0.0

    def next_delay(self) -> float:
        self.delay = BACKOFF_FIRST if self.delay == 0 else min(self.delay * 2, BACKOFF_CAP)
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0


def _ignore_version(_version: KernelVersion) -> None:
    """Default ``on_version``: nobody listens."""


def _ignore_reset() -> None:
    """Default ``on_reset``: nothing to undo."""


@record
class HandlerFailed:
    """What ``ChannelRunner.handled`` returns when the handler failed: the status to answer."""

    status: HvStatus


class ChannelRunner(Generic[Req, Rep]):
    """One device, its channel and the handler that answers its requests.

    A plain class, not a dataclass: the daemons do not import ``dataclasses``
    (see ``hvguest.records``).
    """

    def __init__(
        self,
        name: str,
        device_path: Path,
        codec: Codec[Req, Rep],
        handle: Callable[[Req], Rep],
        read_size: int,
        *,
        log: logging.Logger,
        on_version: Callable[[KernelVersion], None] = _ignore_version,
        on_reset: Callable[[], None] = _ignore_reset,
        opener: Callable[[Path], Device] = open_device,
    ) -> None:
        self.name = name
        self.device_path = device_path
        self.codec = codec
        self.handle = handle
        self.read_size = read_size
        self.log = log
        self.on_version = on_version
        #: Called after the device is closed, before any reopen (VSS thaws here).
        self.on_reset = on_reset
        self.opener = opener
        self.channel: Channel[Req, Rep] = Channel(codec)
        self.device: Device | None = None
        self.retry_at = 0.0
        self.registered = False
        self._backoff = _Backoff()
        # The errno of the open failure last logged: a device that stays missing
        # or busy (the C daemon holds it) is logged once, not at every retry.
        self._open_failure_logged: int | None = None
        # read_in_place(): the device's copy-free read, looked up once per opened device.
        self._reader_of: Device | None = None
        self._read_in_place: Callable[[int], bytes | memoryview] = _no_device

    # -- connection management ---------------------------------------------------

    def try_open(self, now: float) -> bool:
        """Open and register; on failure schedule the next attempt."""
        try:
            device = self.opener(self.device_path)
        except OSError as error:
            if error.errno != self._open_failure_logged:
                self._open_failure_logged = error.errno
                self._log_open_failure(error)
            self._schedule_retry(now)
            return False
        self._open_failure_logged = None
        self.channel.reset()
        try:
            device.write(self.channel.registration())
        except OSError as error:
            self.log.warning(
                "%s: registration write failed: %s", self.name, describe_os_error(error)
            )
            device.close()
            self._schedule_retry(now)
            return False
        self.device = device
        return True

    def _log_open_failure(self, error: OSError) -> None:
        if isinstance(error, FileNotFoundError):
            self.log.info("%s: waiting for %s to appear", self.name, self.device_path)
        elif error.errno == errno.EBUSY:
            # The kernel lets one process at a time open a util device.
            self.log.warning(
                "%s: %s is busy: another daemon (the C one?) has it open;"
                " retrying until it lets go",
                self.name,
                self.device_path,
            )
        else:
            self.log.warning(
                "%s: cannot open %s: %s; retrying",
                self.name,
                self.device_path,
                describe_os_error(error),
            )

    def close(self, now: float, reason: str | None) -> None:
        """Close the device (the kernel fails any request in flight) and plan a reopen."""
        if self.device is not None:
            if reason:
                self.log.warning("%s: %s; reopening %s", self.name, reason, self.device_path)
            self.device.close()
            self.device = None
        self.registered = False
        self.channel.reset()
        self.on_reset()
        self._schedule_retry(now)

    def _schedule_retry(self, now: float) -> None:
        self.retry_at = now + self._backoff.next_delay()

    # -- one message ---------------------------------------------------------------

    def service_one(self, now: float) -> None:
        """Read one message and answer it; I/O problems close the device."""
        device = self.device
        assert device is not None
        try:
            datagram = device.read(self.read_size)
        except InterruptedError:
            return
        except OSError as error:
            self.close(now, f"read failed: {describe_os_error(error)}")
            return
        self.serve_datagram(datagram, now)

    def read_in_place(self, device: Device, now: float) -> bytes | memoryview | None:
        """For a fast path: the next message, in the device's own buffer where it can.

        ``read_view`` when the device has one (both of hvguest.linux.device
        do; a test double may not): valid until the next call on the device.
        None after EINTR (back to the loop) or a failed read (the device is
        then closed, as ``service_one`` closes it).
        """
        if device is not self._reader_of:
            self._reader_of = device
            self._read_in_place = getattr(device, "read_view", device.read)
        try:
            return self._read_in_place(self.read_size)
        except InterruptedError:
            return None
        except OSError as error:
            self.close(now, f"read failed: {describe_os_error(error)}")
            return None

    def serve_datagram(self, datagram: bytes, now: float) -> None:
        """Answer one message already read (``service_one`` after its read).

        An empty read means the device is gone: it is closed (and reopened later).
        """
        if not datagram:
            self.close(now, "read returned no data")
            return
        try:
            event = self.channel.receive(datagram)
        except WireError as error:
            self.close(now, f"bad registration answer: {error}")
            return
        if isinstance(event, KernelVersion):
            self.registered = True
            self._backoff.reset()
            self.log.info("%s: registered; kernel version %s", self.name, event.text)
            self.on_version(event)
            return
        if isinstance(event, Malformed):
            self.log.warning(
                "%s: malformed message (%d bytes): %s; answering 0x%08X",
                self.name,
                len(datagram),
                event.error,
                event.error.status,
            )
            self._write(self.channel.reply_failure(event.error.status), now)
            return
        self._write(self._answer(event), now)

    def handled(self, request: Req) -> Rep | HandlerFailed:
        """``handle(request)``; a failure is logged and comes back as the status to answer."""
        try:
            return self.handle(request)
        except OperationFailed as failure:
            self.log.warning("%s: %s (answering 0x%08X)", self.name, failure, failure.status)
            return HandlerFailed(failure.status)
        except Exception:
            self.log.exception("%s: unexpected error handling %r", self.name, request)
            return HandlerFailed(HvStatus.E_FAIL)

    def log_unencodable(self, reply: Rep, error: ChannelError) -> None:
        """The codec refused ``reply``: a local bug, answered E_FAIL (the request is still owed)."""
        self.log.error("%s: cannot encode the reply %r: %s", self.name, reply, error)

    def _answer(self, request: Req) -> bytes:
        reply = self.handled(request)
        if isinstance(reply, HandlerFailed):
            return self.channel.reply_failure(reply.status)
        try:
            return self.channel.reply(reply)
        except ChannelError as error:
            self.log_unencodable(reply, error)
            return self.channel.reply_failure(HvStatus.E_FAIL)

    def _write(self, data: bytes | bytearray | memoryview, now: float) -> bool:
        """Write one answer; False if it failed (the device is then closed, to be reopened)."""
        assert self.device is not None
        try:
            written = self.device.write(data)
        except OSError as error:
            self.close(now, f"write failed: {describe_os_error(error)}")
            return False
        if written != len(data):
            self.close(now, f"short write ({written} of {len(data)} bytes)")
            return False
        return True


def _no_device(_size: int) -> bytes:
    raise OSError(errno.EBADF, "no device open")


def describe_os_error(error: OSError) -> str:
    """``EBADF (Bad file descriptor)``: the errno's name and text, for log lines."""
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    return f"{name} ({error.strerror})" if error.strerror else name


class Ticker(Protocol):
    """Timed work the loop runs between messages (the VSS auto-thaw watchdog)."""

    def deadline(self) -> float | None:
        """When ``tick`` is next due (the loop's clock), or None for never."""
        ...

    def tick(self, now: float) -> None:
        """The deadline passed."""
        ...


class PollWatcher(Protocol):
    """A descriptor polled beside the devices (the KVP pool store's inotify queue).

    The loop tells it, after every poll and before serving any device that
    poll woke, whether the descriptor was readable; and again once those
    devices are served. So a request can trust "nothing was queued at the
    poll" instead of asking the descriptor itself (a syscall per request).
    """

    def fileno(self) -> int:
        """The descriptor to poll."""
        ...

    def after_poll(self, readable: bool) -> None:
        """The poll returned; the devices it woke are served next."""
        ...

    def after_serving(self) -> None:
        """The devices that poll woke are served."""
        ...


class EventLoop:
    """Runs channel runners until SIGTERM/SIGINT (or ``stop()``)."""

    def __init__(
        self,
        runners: Sequence[ChannelRunner[Any, Any]],
        *,
        on_ready: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        tickers: Sequence[Ticker] = (),
        watchers: Sequence[PollWatcher] = (),
    ) -> None:
        self._runners = list(runners)
        self._tickers = list(tickers)
        self._watchers = [(watcher.fileno(), watcher) for watcher in watchers]
        self._on_ready = on_ready
        self._clock = clock
        # epoll itself rather than selectors: one poll() per request, no key objects.
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._wake_fd = self._wake_read.fileno()
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        for fd, _watcher in self._watchers:
            self._epoll.register(fd, select.EPOLLIN)
        self._stopping = False
        self._ready_sent = False
        self._watched: dict[int, tuple[Device, int]] = {}
        #: Registered descriptor -> the runner whose device it is.
        self._runner_by_fd: dict[int, ChannelRunner[Any, Any]] = {}
        self.stop_signal: int | None = None

    def stop(self) -> None:
        """Ask the loop to finish (thread- and signal-safe)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the loop cleanly; the wakeup fd ends select() at once."""
        signal.set_wakeup_fd(self._wake_write.fileno(), warn_on_full_buffer=False)

        def _handler(signum: int, _frame: FrameType | None) -> None:
            self.stop_signal = signum
            self._stopping = True

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)

    def run(self) -> None:
        """Serve until stopped; closes every device on the way out."""
        try:
            while not self._stopping:
                self._run_once()
        finally:
            for runner in self._runners:
                if runner.device is not None:
                    self._unwatch(runner)
                    runner.device.close()
                    runner.device = None
                    runner.on_reset()
            self._epoll.close()
            self._wake_read.close()
            self._wake_write.close()

    def _run_once(self) -> None:
        # Per request: one clock read, one poll(); the rest only when it can matter.
        now = self._clock()
        all_open = True
        for runner in self._runners:
            if runner.device is None:
                all_open = False
                if now >= runner.retry_at and runner.try_open(now):
                    self._watch(runner)
        for runner in self._runners:
            while runner.device is not None and runner.device.pending() and not self._stopping:
                self._service(runner)
        timeout = -1.0
        if self._tickers or not all_open:
            wait = self._timeout(self._clock())
            if wait is not None:
                timeout = wait
        events = self._epoll.poll(timeout)
        watchers = self._watchers
        for watched_fd, watcher in watchers:
            watcher.after_poll(any(fd == watched_fd for fd, _mask in events))
        for fd, _events in events:
            if fd == self._wake_fd:
                self._drain_wakeups()
                continue
            ready = self._runner_by_fd.get(fd)
            if ready is not None and ready.device is not None and not self._stopping:
                self._service(ready)
        for _fd, watcher in watchers:
            watcher.after_serving()
        if self._tickers:
            self._run_tickers(self._clock())

    def _run_tickers(self, now: float) -> None:
        for ticker in self._tickers:
            due = ticker.deadline()
            if due is not None and now >= due:
                ticker.tick(now)

    def _service(self, runner: ChannelRunner[Any, Any]) -> None:
        was_registered = runner.registered
        runner.service_one(self._clock())
        if runner.device is None:  # service_one closes, never reopens
            self._sync_watch(runner)
        if runner.registered and not was_registered and not self._ready_sent:
            self._ready_sent = True
            self._on_ready()

    def _timeout(self, now: float) -> float | None:
        waits = [max(0.0, r.retry_at - now) for r in self._runners if r.device is None]
        for ticker in self._tickers:
            due = ticker.deadline()
            if due is not None:
                waits.append(max(0.0, due - now))
        return min(waits) if waits else None

    def _watch(self, runner: ChannelRunner[Any, Any]) -> None:
        assert runner.device is not None
        fd = runner.device.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._runner_by_fd[fd] = runner
        self._watched[id(runner)] = (runner.device, fd)

    def _sync_watch(self, runner: ChannelRunner[Any, Any]) -> None:
        """Forget a device the runner closed (by its remembered fd number)."""
        watched = self._watched.get(id(runner))
        if watched is not None and watched[0] is not runner.device:
            self._forget(watched[1])
            del self._watched[id(runner)]

    def _unwatch(self, runner: ChannelRunner[Any, Any]) -> None:
        watched = self._watched.pop(id(runner), None)
        if watched is not None:
            self._forget(watched[1])

    def _forget(self, fd: int) -> None:
        """Stop polling ``fd``; the device may already be closed (epoll dropped it then)."""
        self._runner_by_fd.pop(fd, None)
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_read.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
