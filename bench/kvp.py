"""The KVP measurements: workloads of prebuilt host messages, timed windows, the run plan.

A window sends one workload's messages round-robin to the simulated KVP
channel until it has run for ``window`` seconds or ``max_ops`` operations,
and reads the daemon's CPU time from /proc before and after. The whole util
packets (pipe header, icmsg header, message) are built once up front and
posted straight to the channel, so the harness does no per-operation encoding
or decoding (measured: 10-15% more round trips than ``FakeHost.transact``).

Daemons take turns: for every pool size and repetition each daemon is
started on a freshly prefilled pool, measured, and stopped, the order
alternating between repetitions so that drift does not favour one of them.
"""

from __future__ import annotations

import os
import shutil
import statistics
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.daemons import DaemonSpec, Started, start, stop
from bench.pools import prefill_pool, record_key, record_value
from bench.procfs import cpu_seconds, peak_rss_kib
from hvguest.abi.constants import REG_SZ, HvStatus, KvpOp, KvpPool
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.testing import kvp_kernel as kvp
from hvguest.testing.host import VmbusChannel, build_packet
from hvguest.testing.simulator import Simulator
from hvguest.testing.transport import ICMSG_HDR, ICMSG_STATUS_OFFSET, ICMSGTYPE_KVPEXCHANGE

_U32: Final = struct.Struct("<I")
#: Distinct keys/indexes a workload cycles through, spread over the pool.
SPREAD: Final = 16
#: The AUTO pool sweep: indexes 0..9 answer, 10 ends the enumeration.
SWEEP_INDEXES: Final = 11
#: Seconds the host waits for one answer (the simulated kernel's own timeout is 30 s).
HOST_TIMEOUT: Final = 60.0
#: Pool size at which peak RSS is reported.
RSS_POOL_SIZE: Final = 1000

OPERATIONS: Final = ("SET", "GET", "ENUMERATE")
#: Label suffix of bench.floor's samples with --write-file (its SETs reach the pool file).
FILE_FLOOR: Final = "+file"


@dataclass(frozen=True)
class Workload:
    """Util packets to send round-robin, each with the status a correct daemon answers."""

    name: str
    packets: tuple[tuple[bytes, int], ...]
    #: Windows end only after a whole number of these operations (a sweep is 11).
    batch: int = 1


@dataclass(frozen=True)
class Sample:
    """One timed window."""

    ops: int
    seconds: float
    cpu_seconds: float
    failures: int
    #: CPU time of this process (harness + simulator threads) over the window.
    harness_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Round trips per second."""
        return self.ops / self.seconds

    @property
    def cpu_us_per_op(self) -> float:
        """Daemon CPU time per operation, in microseconds."""
        return self.cpu_seconds * 1e6 / self.ops

    @property
    def harness_busy(self) -> float:
        """Fraction of the window the harness CPU was busy (near 1: harness-bound)."""
        return self.harness_cpu_seconds / self.seconds

    @property
    def harness_us_per_op(self) -> float:
        """Harness + simulator CPU time per operation, in microseconds."""
        return self.harness_cpu_seconds * 1e6 / self.ops


def _packets(messages: Sequence[tuple[bytearray, int]]) -> tuple[tuple[bytes, int], ...]:
    """Host messages framed once as KVPEXCHANGE util packets."""
    return tuple(
        (build_packet(ICMSGTYPE_KVPEXCHANGE, message), expected) for message, expected in messages
    )


def _message(operation: KvpOp, pool: int) -> bytearray:
    payload = bytearray(KVP_MSG_SIZE)
    payload[kvp.OPERATION] = operation
    payload[kvp.POOL] = pool
    return payload


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le")


def _put_text(payload: bytearray, offset: int, size_offset: int, text: str) -> None:
    units = _utf16(text)
    payload[offset : offset + len(units)] = units
    _U32.pack_into(payload, size_offset, len(units) + 2)  # the host counts the NUL


def spread(count: int, points: int = SPREAD) -> list[int]:
    """Up to ``points`` record indexes spread evenly over a pool of ``count``."""
    points = min(points, count)
    return [i * count // points for i in range(points)]


def set_workload(count: int) -> Workload:
    """SET that updates existing keys (same-length values, alternating content)."""
    messages: list[tuple[bytearray, int]] = []
    for generation in (1, 2):
        for index in spread(count):
            payload = _message(KvpOp.SET, KvpPool.GUEST)
            _put_text(payload, kvp.SET_KEY, kvp.SET_KEY_SIZE, record_key(index))
            _U32.pack_into(payload, kvp.SET_VALUE_TYPE, REG_SZ)
            _put_text(payload, kvp.SET_VALUE, kvp.SET_VALUE_SIZE, record_value(index, generation))
            messages.append((payload, int(HvStatus.S_OK)))
    return Workload("SET", _packets(messages))


def get_workload(count: int) -> Workload:
    """GET of existing keys."""
    messages: list[tuple[bytearray, int]] = []
    for index in spread(count):
        payload = _message(KvpOp.GET, KvpPool.GUEST)
        _put_text(payload, kvp.GET_KEY, kvp.GET_KEY_SIZE, record_key(index))
        messages.append((payload, int(HvStatus.S_OK)))
    return Workload("GET", _packets(messages))


def enumerate_workload(count: int) -> Workload:
    """ENUMERATE of existing indexes of the guest pool."""
    messages: list[tuple[bytearray, int]] = []
    for index in spread(count):
        payload = _message(KvpOp.ENUMERATE, KvpPool.GUEST)
        _U32.pack_into(payload, kvp.ENUM_INDEX, index)
        messages.append((payload, int(HvStatus.S_OK)))
    return Workload("ENUMERATE", _packets(messages))


def sweep_workload() -> Workload:
    """What the host does every few seconds: ENUMERATE pool 2 from index 0 to the end."""
    messages: list[tuple[bytearray, int]] = []
    for index in range(SWEEP_INDEXES):
        payload = _message(KvpOp.ENUMERATE, KvpPool.AUTO)
        _U32.pack_into(payload, kvp.ENUM_INDEX, index)
        expected = HvStatus.S_OK if index < SWEEP_INDEXES - 1 else HvStatus.S_CONT
        messages.append((payload, int(expected)))
    return Workload("sweep", _packets(messages), batch=SWEEP_INDEXES)


def workload(operation: str, count: int) -> Workload:
    """The workload for ``operation`` (one of :data:`OPERATIONS`) on a pool of ``count``."""
    builders = {"SET": set_workload, "GET": get_workload, "ENUMERATE": enumerate_workload}
    return builders[operation](count)


Transact = Callable[[bytes], int]


def packet_transact(sim: Simulator) -> Transact:
    """Post a prebuilt util packet on the KVP channel and return the answer's status.

    The channel is the simulator's own VmbusChannel (not a public attribute:
    the fake host's helpers all encode per call); if it is not where this
    expects it, fall back to ``FakeHost.transact``, which frames each time.
    """
    channel = getattr(sim.host, "_channels", {}).get("kvp")
    if isinstance(channel, VmbusChannel):
        post = channel.transact

        def fast(packet: bytes) -> int:
            status: int = _U32.unpack_from(post(packet, HOST_TIMEOUT), ICMSG_STATUS_OFFSET)[0]
            return status

        return fast
    host = sim.host

    def framed(packet: bytes) -> int:
        message = packet[ICMSG_HDR:]
        return host.transact("kvp", ICMSGTYPE_KVPEXCHANGE, message, HOST_TIMEOUT).status

    return framed


def run_window(sim: Simulator, pid: int, load: Workload, window: float, max_ops: int) -> Sample:
    """Send ``load`` until ``window`` seconds or ``max_ops`` operations have passed."""
    transact = packet_transact(sim)
    packets = load.packets
    size = len(packets)
    failures = ops = 0
    cpu_before = cpu_seconds(pid)
    harness_before = cpu_seconds(os.getpid())
    begin = time.perf_counter()
    elapsed = 0.0
    while True:
        packet, expected = packets[ops % size]
        failures += transact(packet) != expected
        ops += 1
        if ops % load.batch == 0:
            elapsed = time.perf_counter() - begin
            if elapsed >= window or ops >= max_ops:
                break
    cpu_after = cpu_seconds(pid)
    harness = cpu_seconds(os.getpid()) - harness_before
    return Sample(ops, elapsed, cpu_after - cpu_before, failures, harness)


@dataclass(frozen=True)
class Plan:
    """What to measure and for how long."""

    sizes: tuple[int, ...]
    repetitions: int
    window: float
    max_ops: int
    warmup_ops: int
    start_runs: int


QUICK: Final = Plan((10, 1000, 10000), 1, 0.2, 400, 4, 2)
FULL: Final = Plan((10, 1000, 10000), 3, 1.0, 200_000, 32, 5)


@dataclass
class Results:
    """Every sample, keyed by daemon (and operation/pool size where it applies)."""

    ops: dict[tuple[str, str, int], list[Sample]] = field(default_factory=lambda: defaultdict(list))
    sweep: dict[str, list[Sample]] = field(default_factory=lambda: defaultdict(list))
    rss_kib: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    start_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ceiling: dict[str, Sample] = field(default_factory=dict)
    #: bench.floor's samples per operation, at the smallest pool size ("SET+file": its
    #: SETs also wrote the pool file).
    floor: dict[str, list[Sample]] = field(default_factory=lambda: defaultdict(list))
    disk: dict[int, list[Sample]] = field(default_factory=lambda: defaultdict(list))


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values."""
    return statistics.median(values) if values else float("nan")


class Runner:
    """Runs the plan against one simulator, with scratch state under ``root``."""

    def __init__(self, sim: Simulator, root: Path, plan: Plan) -> None:
        self.sim = sim
        self.root = root
        self.plan = plan
        self.results = Results()
        self._runs = 0

    def _fresh_state(self, name: str, records: int, base: Path | None = None) -> Path:
        self._runs += 1
        state_dir = (base or self.root) / f"state-{name}-{self._runs}"
        prefill_pool(state_dir, KvpPool.GUEST, records)
        return state_dir

    def _log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def _start(self, spec: DaemonSpec, state_dir: Path) -> Started:
        started = start(spec, self.sim, state_dir, self._log(spec.name))
        self.sim.host.kvp_negotiate(timeout=HOST_TIMEOUT)
        return started

    def _warm_up(self, pid: int, load: Workload) -> None:
        run_window(self.sim, pid, load, float("inf"), max(self.plan.warmup_ops, load.batch))

    def measure_pools(self, daemons: Sequence[DaemonSpec]) -> None:
        """SET/GET/ENUMERATE at every pool size, the sweep, peak RSS; daemons alternating."""
        plan = self.plan
        for size in plan.sizes:
            loads = [workload(operation, size) for operation in OPERATIONS]
            for repetition in range(plan.repetitions):
                order = daemons if repetition % 2 == 0 else list(reversed(daemons))
                for spec in order:
                    state_dir = self._fresh_state(spec.name, size)
                    started = self._start(spec, state_dir)
                    pid = started.process.pid
                    try:
                        for load in loads:
                            self._warm_up(pid, load)
                            sample = run_window(self.sim, pid, load, plan.window, plan.max_ops)
                            self.results.ops[(spec.name, load.name, size)].append(sample)
                        if size == plan.sizes[0]:
                            sweep = sweep_workload()
                            self._warm_up(pid, sweep)
                            sample = run_window(self.sim, pid, sweep, plan.window, plan.max_ops)
                            self.results.sweep[spec.name].append(sample)
                        if size == RSS_POOL_SIZE:
                            # A host sweeps the AUTO pool every few seconds, so the
                            # peak includes what answering it costs (netlink, resolver).
                            self._warm_up(pid, sweep_workload())
                            self.results.rss_kib[spec.name].append(peak_rss_kib(pid))
                    finally:
                        stop(started, self.sim)
                    shutil.rmtree(state_dir, ignore_errors=True)

    def measure_start(self, daemons: Sequence[DaemonSpec]) -> None:
        """exec -> registered, alternating daemons, on a small prefilled pool."""
        for run in range(self.plan.start_runs):
            order = daemons if run % 2 == 0 else list(reversed(daemons))
            for spec in order:
                state_dir = self._fresh_state(spec.name, self.plan.sizes[0])
                started = start(spec, self.sim, state_dir, self._log(spec.name))
                stop(started, self.sim)
                self.results.start_ms[spec.name].append(started.registered_after * 1e3)
                shutil.rmtree(state_dir, ignore_errors=True)

    def measure_ceiling(self, echo: DaemonSpec) -> None:
        """The harness alone: each workload against the canned-answer daemon."""
        size = self.plan.sizes[0]
        started = self._start(echo, self.root)
        pid = started.process.pid
        try:
            for load in [*(workload(op, size) for op in OPERATIONS), sweep_workload()]:
                self._warm_up(pid, load)
                sample = run_window(self.sim, pid, load, self.plan.window, self.plan.max_ops)
                self.results.ceiling[load.name] = sample
        finally:
            stop(started, self.sim)

    def measure_floor(
        self, floor: DaemonSpec, operations: Sequence[str] = OPERATIONS, *, label: str = ""
    ) -> None:
        """The bare Python loop of bench.floor, at the smallest size, as often as the daemons.

        Samples are kept under the operation's name plus ``label``.
        """
        size = self.plan.sizes[0]
        loads = [workload(operation, size) for operation in operations]
        for _repetition in range(self.plan.repetitions):
            started = self._start(floor, self._fresh_state(floor.name, size))
            pid = started.process.pid
            try:
                for load in loads:
                    self._warm_up(pid, load)
                    sample = run_window(self.sim, pid, load, self.plan.window, self.plan.max_ops)
                    self.results.floor[load.name + label].append(sample)
            finally:
                stop(started, self.sim)

    def measure_disk(self, spec: DaemonSpec, disk: Path) -> None:
        """SET with the daemon's default fsync, its pools in a directory on ``disk``."""
        load_by_size = {size: set_workload(size) for size in self.plan.sizes}
        for size in self.plan.sizes:
            for _ in range(self.plan.repetitions):
                state_dir = self._fresh_state(spec.name, size, base=disk)
                started = self._start(spec, state_dir)
                try:
                    pid = started.process.pid
                    load = load_by_size[size]
                    self._warm_up(pid, load)
                    sample = run_window(self.sim, pid, load, self.plan.window, self.plan.max_ops)
                    self.results.disk[size].append(sample)
                finally:
                    stop(started, self.sim)
                shutil.rmtree(state_dir, ignore_errors=True)
