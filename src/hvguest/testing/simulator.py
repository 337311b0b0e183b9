"""The kernel/host simulator: util devices as Unix sockets, a fake host behind them.

Plays the part of drivers/hv/hv_util.c (which binds each util service to its
VMBus channel and char device) so that daemons run without Hyper-V and
without root. Each device ``<dir>/hv_<name>`` is a SOCK_SEQPACKET socket
speaking :mod:`hvguest.testing.wire`; behind it sit a
:class:`~hvguest.testing.transport.UtilsTransport`, the kernel service (KVP:
:class:`~hvguest.testing.kvp_kernel.KvpKernel`) and a
:class:`~hvguest.testing.host.VmbusChannel` to :attr:`Simulator.host`.

Threads: one serve thread owns the selector (device sockets, timers); host
helpers run in the caller's thread. Both take one lock around all kernel
state, which stands in for the kernel's own locking, so the state machines
stay deterministic. A round trip costs two thread switches (caller -> daemon
process -> serve thread -> caller), no per-message ctypes objects, and no
wake-up of the serve thread for the reply timer (it never sleeps longer than
the reply timeout, so a freshly armed timer is never earlier than its wake-up).

Run it in its own process with ``python -m hvguest.testing.simulator --dir D``:
it prints ``kvp <socket path>``, ``control <socket path>`` and ``ready``, then
serves until SIGTERM/SIGINT. The control socket takes one JSON object per line
(``{"op": "kvp_get", "args": {"pool": 1, "key": "k"}}``) and answers one per
line (``{"ok": true, "result": ...}``); :class:`ControlClient` speaks it. Ops:
the ``kvp_*`` host helpers, ``destroy``, ``suspend``, ``inject_write_error``,
``wait_registered``, ``state`` and ``wait_state`` (keyword arguments as in Python).
``--services kvp,vss`` offers more devices (each announced as ``<name> <path>``);
VSS adds the ops ``vss_freeze``, ``vss_thaw``, ``vss_hot_backup`` and
``vss_request`` (whose VSS operation travels as ``operation``), and
``--vss-freeze-timeout`` shortens the driver's 900 s FREEZE timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import itertools
import json
import math
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Final, Protocol

from hvguest.abi.constants import HV_UTIL_TIMEOUT, VSS_FREEZE_TIMEOUT
from hvguest.errors import HvError
from hvguest.testing import fcopy_host, vss_host
from hvguest.testing.fcopy_kernel import FcopyKernel
from hvguest.testing.host import FakeHost, HostError, VmbusChannel
from hvguest.testing.kvp_kernel import KvpKernel
from hvguest.testing.transport import (
    GuestChannel,
    Timer,
    Timers,
    TransportMode,
    UtilState,
    UtilsTransport,
)
from hvguest.testing.vss_kernel import VssKernel
from hvguest.testing.wire import (
    MAX_DATAGRAM,
    TAG_CONSUMED,
    TAG_HANGUP,
    TAG_MESSAGE,
    TAG_WRITE,
    encode_open,
    encode_result,
)

_WRITE: Final = TAG_WRITE[0]
_CONSUMED: Final = TAG_CONSUMED[0]
#: How long a control call from another thread waits for the serve thread.
_COMMAND_TIMEOUT: Final = 30.0
#: Cancelled timers are purged from the heap once there are this many.
_PURGE_THRESHOLD: Final = 4096


class SimulatedService(Protocol):
    """What the simulator needs of a kernel util service (KVP now; VSS, FCOPY later)."""

    @property
    def state(self) -> UtilState:
        """The service's hvutil_device_state."""

    def on_msg(self, data: bytes) -> int:
        """A daemon write: 0 or -errno."""

    def on_reset(self) -> None:
        """The daemon closed the device."""

    def on_channel_callback(self) -> None:
        """The host raised the channel interrupt."""

    def pre_suspend(self) -> None:
        """Hibernation is starting."""

    def pre_resume(self) -> None:
        """Hibernation is over."""

    def deinit(self) -> None:
        """The device is being rescinded."""


class ServiceFactory(Protocol):
    """How a kernel service is built: every simulated util driver's constructor."""

    def __call__(
        self,
        transport: UtilsTransport,
        channel: GuestChannel,
        timers: Timers,
        *,
        reply_timeout: float,
        on_state: Callable[[UtilState], None] | None,
    ) -> SimulatedService: ...


#: Kernel services by device name (VSS's FREEZE timeout is set in Simulator._offer).
SERVICES: Final[dict[str, ServiceFactory]] = {
    "kvp": KvpKernel,
    "vss": VssKernel,
    "fcopy": FcopyKernel,
}


class _Timer:
    """A delayed work item in the simulator's timer heap."""

    __slots__ = ("callback", "deadline", "pending", "queue")

    def __init__(self, queue: _TimerQueue, deadline: float, callback: Callable[[], None]) -> None:
        self.queue = queue
        self.deadline = deadline
        self.callback = callback
        self.pending = True

    def cancel(self) -> bool:
        was_pending, self.pending = self.pending, False
        if was_pending:
            self.queue.cancelled += 1
        return was_pending


class _TimerQueue:
    """Timers (the port) on a heap, run by the serve thread under the lock."""

    def __init__(self, on_armed: Callable[[float], None]) -> None:
        self.cancelled = 0
        self._heap: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()
        self._on_armed = on_armed

    def arm(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _Timer(self, time.monotonic() + delay, callback)
        heapq.heappush(self._heap, (timer.deadline, next(self._order), timer))
        if self.cancelled > _PURGE_THRESHOLD and self.cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2].pending]
            heapq.heapify(self._heap)
            self.cancelled = 0
        self._on_armed(timer.deadline)
        return timer

    def run_due(self, now: float) -> float:
        """Run every timer due by ``now``; the next deadline (inf if none)."""
        heap = self._heap
        while heap and (heap[0][0] <= now or not heap[0][2].pending):
            _, _, timer = heapq.heappop(heap)
            if timer.pending:
                timer.pending = False
                timer.callback()
            else:
                self.cancelled = max(0, self.cancelled - 1)
        return heap[0][0] if heap else math.inf


class _Connection:
    """One open() of a simulated device: the transport's DaemonEndpoint."""

    def __init__(self, sock: socket.socket, transport: UtilsTransport) -> None:
        self.sock = sock
        self.transport = transport

    def deliver(self, message: bytes | bytearray) -> None:
        self.send([TAG_MESSAGE, message])

    def hang_up(self) -> None:
        self.send([TAG_HANGUP])

    def send(self, parts: Sequence[bytes | bytearray]) -> None:
        # A client that went away is noticed by its EOF in the serve thread.
        with contextlib.suppress(OSError):
            self.sock.sendmsg(parts, [], socket.MSG_NOSIGNAL)


@dataclasses.dataclass
class _Device:
    """One offered util device: its socket, transport and kernel service."""

    name: str
    path: Path
    listener: socket.socket
    transport: UtilsTransport
    service: SimulatedService


class Simulator:
    """Simulated util devices plus the fake host, usable as a context manager."""

    def __init__(
        self,
        directory: Path,
        *,
        reply_timeout: float = HV_UTIL_TIMEOUT,
        host_timeout: float | None = None,
        services: Sequence[str] = ("kvp",),
        vss_freeze_timeout: float = VSS_FREEZE_TIMEOUT,
    ) -> None:
        unknown = set(services) - SERVICES.keys()
        if unknown:
            raise ValueError(f"no simulated kernel service for {sorted(unknown)}")
        self.directory = Path(directory)
        self.reply_timeout = reply_timeout
        #: Seconds the simulated VSS driver waits for a FREEZE reply (others: reply_timeout).
        self.vss_freeze_timeout = vss_freeze_timeout
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._timers = _TimerQueue(self._timer_armed)
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._wake_at = math.inf
        self._commands: deque[tuple[Callable[[], object], Future[object]]] = deque()
        self._channels = {name: VmbusChannel(name, self._lock) for name in services}
        self._devices: dict[str, _Device] = {}
        self._connections: set[_Connection] = set()
        self._buffer = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buffer)
        self._thread: threading.Thread | None = None
        self._closing = False
        self._waiters = 0
        self.host = FakeHost(
            self._channels,
            default_timeout=reply_timeout + 5.0 if host_timeout is None else host_timeout,
        )

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> Simulator:
        """Offer the devices and start serving."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._selector.register(self._wake_reader, selectors.EVENT_READ, self._drain_wakeups)
            with self._lock:
                for name in self._channels:
                    self._offer(name)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._serve, name="hv-simulator", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, close every device and abort any waiting host request."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with self._lock:
                self._closing = True
            self._wake()
            thread.join(timeout=_COMMAND_TIMEOUT)
        with self._lock:
            for connection in list(self._connections):
                self._drop(connection)
            for device in list(self._devices.values()):
                self._remove_device(device)
            for channel in self._channels.values():
                channel.close()
            self._notify()
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- what tests look at and do ------------------------------------------

    def device_path(self, name: str = "kvp") -> Path:
        """The socket path of a device: ``<dir>/hv_<name>``."""
        return self.directory / f"hv_{name}"

    @property
    def kvp_device_path(self) -> Path:
        """``<dir>/hv_kvp``: what the daemon opens instead of /dev/vmbus/hv_kvp."""
        return self.device_path("kvp")

    @property
    def kvp_state(self) -> UtilState:
        """The KVP service's state (DEVICE_DYING while a rescind waits for the close)."""
        return self.state("kvp")

    def state(self, name: str) -> UtilState:
        """A service's state; DEVICE_DYING if it is not offered at all."""
        with self._lock:
            device = self._devices.get(name)
            return UtilState.DEVICE_DYING if device is None else device.service.state

    def transport_mode(self, name: str = "kvp") -> TransportMode:
        """A device's transport mode (DESTROY if it is not offered at all)."""
        with self._lock:
            device = self._devices.get(name)
            return TransportMode.DESTROY if device is None else device.transport.mode

    def is_registered(self, name: str = "kvp") -> bool:
        """A daemon has the device open and its registration answer was read."""
        with self._lock:
            device = self._devices.get(name)
            return (
                device is not None
                and device.transport.mode == TransportMode.CHARDEV
                and UtilState.READY <= device.service.state < UtilState.DEVICE_DYING
            )

    def message_queued(self, name: str = "kvp") -> bool:
        """The device holds a message the daemon has not read (its one-deep queue is full)."""
        with self._lock:
            device = self._devices.get(name)
            return device is not None and device.transport.queued is not None

    def pending_host_packets(self, name: str = "kvp") -> int:
        """Host packets waiting in the channel for the driver to read them."""
        with self._lock:
            return self._channels[name].pending_packets

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str = "") -> None:
        """Block until ``predicate()`` (checked on every state change) holds; TimeoutError."""
        with self._changed:
            self._waiters += 1
            try:
                reached = self._changed.wait_for(predicate, timeout)
            finally:
                self._waiters -= 1
        if not reached:
            raise TimeoutError(f"{what or 'condition'} not reached within {timeout} s")

    def wait_registered(self, timeout: float, name: str = "kvp") -> None:
        """Block until a daemon registered on ``name``; TimeoutError otherwise."""
        self.wait_until(lambda: self.is_registered(name), timeout, f"registration on {name}")

    def inject_write_error(self, name: str, errno_value: int) -> None:
        """The next daemon write on ``name`` fails with ``errno_value``."""
        with self._lock:
            self._devices[name].transport.fail_next_write(errno_value)

    def suspend(self, name: str) -> None:
        """Hibernate and resume ``name``: util_suspend() + util_resume().

        The service's pre-suspend hook runs (KVP: force READY, cancel the
        timeout), the channel closes (the host's outstanding request is lost
        and its helper raises HostAbortedError) and reopens. The device stays open,
        so a request the daemon still holds is answered into EINVAL.
        """
        with self._lock:
            device = self._devices[name]
            channel = self._channels[name]
            device.service.pre_suspend()
            channel.close()
            device.service.pre_resume()
            channel.reopen()
            self._notify()

    def destroy(self, name: str, *, reoffer: bool = True) -> None:
        """Rescind ``name``: the opener gets a hangup, reads/writes fail with EBADF.

        Teardown completes when the opener closes (at once if nobody has it
        open): the socket disappears, the channel closes (the host's waiting
        request is aborted) and, with ``reoffer`` (what Hyper-V does for KVP),
        a fresh device appears at the same path.
        """

        def rescind() -> None:
            device = self._devices[name]
            device.service.deinit()
            device.transport.destroy(lambda: self._teardown(device, reoffer=reoffer))
            self._notify()

        self._call_in_loop(rescind)

    # --- the serve thread ---------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._lock:
                if self._closing:
                    return
                while self._commands:
                    command, future = self._commands.popleft()
                    try:
                        future.set_result(command())
                    except Exception as error:  # handed to the caller's thread
                        future.set_exception(error)
                now = time.monotonic()
                deadline = self._timers.run_due(now)
                # Never sleep past one reply timeout: then a timer armed later
                # (always "now + reply timeout") cannot be earlier than the
                # wake-up, and arming needs no wake-up write.
                self._wake_at = min(deadline, now + self.reply_timeout)
                timeout = max(0.0, self._wake_at - now)
            for key, _ in self._selector.select(timeout):
                key.data()

    def _call_in_loop(self, command: Callable[[], None]) -> None:
        """Run ``command`` in the serve thread (which owns the selector), under the lock."""
        if self._thread is None or threading.current_thread() is self._thread:
            with self._lock:
                command()
            return
        future: Future[object] = Future()
        with self._lock:
            self._commands.append((command, future))
        self._wake()
        future.result(timeout=_COMMAND_TIMEOUT)

    def _timer_armed(self, deadline: float) -> None:
        if deadline < self._wake_at:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_writer.send(b"\0")

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_reader.recv(512):
                pass

    def _offer(self, name: str) -> None:
        """Create the device socket, transport and kernel service (lock held)."""
        path = self.device_path(name)
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        listener.bind(str(path))
        listener.listen(8)
        listener.setblocking(False)
        transport = UtilsTransport(name)
        channel = self._channels[name]
        service = SERVICES[name](
            transport,
            channel,
            self._timers,
            reply_timeout=self.reply_timeout,
            on_state=self._state_changed,
        )
        if isinstance(service, VssKernel):
            service.freeze_timeout = self.vss_freeze_timeout
        device = _Device(name, path, listener, transport, service)
        self._devices[name] = device
        channel.interrupt = service.on_channel_callback
        self._selector.register(listener, selectors.EVENT_READ, lambda: self._accept(device))
        if channel.pending_packets:
            service.on_channel_callback()

    def _state_changed(self, _state: UtilState) -> None:
        self._notify()

    def _notify(self) -> None:
        # Four state changes per round trip: notify only when someone waits.
        if self._waiters:
            self._changed.notify_all()

    def _accept(self, device: _Device) -> None:
        try:
            sock, _ = device.listener.accept()
        except (BlockingIOError, OSError):
            return
        sock.setblocking(True)
        connection = _Connection(sock, device.transport)
        with self._lock:
            result = device.transport.open(connection)
            connection.send([encode_open(result)])
            if result:
                sock.close()
                return
            self._connections.add(connection)
            self._selector.register(
                sock, selectors.EVENT_READ, lambda: self._on_datagram(connection)
            )
            self._notify()

    def _on_datagram(self, connection: _Connection) -> None:
        # Drain what is there: a read's A is often followed by the reply's W.
        while True:
            try:
                size = connection.sock.recv_into(self._buffer, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                size = 0
            with self._lock:
                if size == 0:
                    self._drop(connection)
                    return
                tag = self._buffer[0]
                if tag == _WRITE:
                    result = connection.transport.write(bytes(self._view[1:size]))
                    connection.send([encode_result(result)])
                elif tag == _CONSUMED:
                    connection.transport.read_done()
                    self._notify()

    def _drop(self, connection: _Connection) -> None:
        """close(fd) on the device: unregister the socket and run the release."""
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection.sock)
        connection.sock.close()
        connection.transport.release()

    def _teardown(self, device: _Device, *, reoffer: bool) -> None:
        """The rescind completes: the node goes, the channel closes, maybe a new offer."""
        self._remove_device(device)
        channel = self._channels[device.name]
        channel.close()
        channel.interrupt = None
        if reoffer and not self._closing:
            channel.reopen()
            self._offer(device.name)
        self._notify()

    def _remove_device(self, device: _Device) -> None:
        if self._devices.get(device.name) is device:
            del self._devices[device.name]
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(device.listener)
        device.listener.close()
        device.path.unlink(missing_ok=True)


# --- running in its own process ------------------------------------------------


class ControlError(HvError):
    """A control call failed in the simulator process; ``kind`` names the exception."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


#: Host helpers callable over the control socket (arguments as keywords).
_HOST_OPS: Final = frozenset(
    {
        "kvp_negotiate",
        "kvp_get",
        "kvp_set",
        "kvp_set_u32",
        "kvp_set_u64",
        "kvp_delete",
        "kvp_enumerate",
        "kvp_enumerate_all",
        "kvp_get_ip_info",
        "kvp_set_ip_info",
    }
)


def _vss_request(host: FakeHost, operation: int, **args: Any) -> object:
    # `op` names the control op itself, so the VSS operation travels as `operation`.
    return vss_host.vss_request(host, operation, **args)


#: VSS host helpers (hvguest.testing.vss_host) callable over the control socket.
_VSS_HOST_OPS: Final[dict[str, Callable[..., object]]] = {
    "vss_freeze": vss_host.vss_freeze,
    "vss_thaw": vss_host.vss_thaw,
    "vss_hot_backup": vss_host.vss_hot_backup,
    "vss_request": _vss_request,
}


def _to_json(value: object) -> object:
    """Host answers as JSON: dataclasses become objects, raw payloads are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "payload"
        }
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    return value


def _dispatch(sim: Simulator, op: str, args: dict[str, Any]) -> object:
    if op in _VSS_HOST_OPS:
        return _to_json(_VSS_HOST_OPS[op](sim.host, **args))
    if op in fcopy_host.CONTROL_OPS:  # bytes arguments travel as hex strings
        return fcopy_host.CONTROL_OPS[op](sim.host, **args)
    if op in _HOST_OPS:
        return _to_json(getattr(sim.host, op)(**args))
    if op == "destroy":
        sim.destroy(**args)
        return None
    if op == "suspend":
        sim.suspend(**args)
        return None
    if op == "inject_write_error":
        sim.inject_write_error(**args)
        return None
    if op == "wait_registered":
        sim.wait_registered(**args)
        return None
    if op == "state":
        return sim.state(args.get("name", "kvp")).name
    if op == "wait_state":
        name, wanted = args.get("name", "kvp"), UtilState[args["state"]]
        sim.wait_until(lambda: sim.state(name) == wanted, float(args["timeout"]), wanted.name)
        return None
    raise ValueError(f"unknown control op {op!r}")


class ControlServer:
    """JSON-lines control socket for driving a simulator from another process."""

    def __init__(self, sim: Simulator, path: Path) -> None:
        self.sim = sim
        self.path = Path(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ControlServer:
        self.path.unlink(missing_ok=True)
        self._listener.bind(str(self.path))
        self._listener.listen(8)
        self._thread = threading.Thread(target=self._accept_loop, name="hv-control", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # shutdown() wakes the accept() in the control thread.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=_COMMAND_TIMEOUT)
        self.path.unlink(missing_ok=True)

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve_client, args=(sock,), name="hv-control-client", daemon=True
            ).start()

    def _serve_client(self, sock: socket.socket) -> None:
        with sock, sock.makefile("rwb") as stream:
            for line in stream:
                stream.write(self._answer(line) + b"\n")
                stream.flush()

    def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
            result = _dispatch(self.sim, request["op"], dict(request.get("args", {})))
            reply: dict[str, object] = {"ok": True, "result": result}
        except (HostError, HvError, TimeoutError, ValueError, KeyError, TypeError) as error:
            reply = {"ok": False, "error": type(error).__name__, "message": str(error)}
        return json.dumps(reply).encode()


class ControlClient:
    """The other end of :class:`ControlServer`: ``call("kvp_get", pool=1, key="k")``."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        self._stream = self._sock.makefile("rwb")

    def call(self, op: str, **args: object) -> Any:
        """Run ``op`` in the simulator process; its JSON result, or ControlError."""
        self._stream.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
        self._stream.flush()
        line = self._stream.readline()
        if not line:
            raise ControlError("EOF", "the simulator closed the control connection")
        reply = json.loads(line)
        if not reply["ok"]:
            raise ControlError(reply["error"], reply["message"])
        return reply["result"]

    def close(self) -> None:
        """Close the connection."""
        self._stream.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hvguest.testing.simulator",
        description="Simulate the Hyper-V util devices and host on Unix sockets.",
    )
    parser.add_argument("--dir", type=Path, required=True, help="directory for the sockets")
    parser.add_argument(
        "--reply-timeout",
        type=float,
        default=float(HV_UTIL_TIMEOUT),
        help="seconds the simulated kernel waits for a daemon reply (default 30)",
    )
    parser.add_argument(
        "--services",
        default="kvp",
        help="comma-separated devices to offer (default kvp; e.g. kvp,vss)",
    )
    parser.add_argument(
        "--vss-freeze-timeout",
        type=float,
        default=float(VSS_FREEZE_TIMEOUT),
        help="seconds the simulated VSS driver waits for a FREEZE reply (default 900)",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def _signals_blocked(signals: set[signal.Signals]) -> Iterator[None]:
    """Block ``signals`` so that threads started inside inherit the mask and sigwait() works."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; the socket paths go to stdout first."""
    args = _parse_args(argv)
    stop = {signal.SIGTERM, signal.SIGINT}
    with (
        _signals_blocked(stop),
        Simulator(
            args.dir,
            reply_timeout=args.reply_timeout,
            services=tuple(args.services.split(",")),
            vss_freeze_timeout=args.vss_freeze_timeout,
        ) as sim,
        ControlServer(sim, args.dir / "control") as control,
    ):
        for name in args.services.split(","):
            if name != "kvp":
                sys.stdout.write(f"{name} {sim.device_path(name)}\n")
        sys.stdout.write(f"kvp {sim.kvp_device_path}\ncontrol {control.path}\nready\n")
        sys.stdout.flush()
        signal.sigwait(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
