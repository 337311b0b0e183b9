"""The FCOPY benchmark: host-to-guest copies of 256 MiB in 6 KiB fragments, side by side.

What is measured, per daemon (hvguest's char-device flavour, Debian's
hv_fcopy_daemon 6.1 under the LD_PRELOAD shim, and bench.fcopy_echo, which
answers without writing and so gives the harness's ceiling):

* MB/s of a whole copy (START, 6144-byte WRITEs, COMPLETE) into a target
  directory on tmpfs, so the disk is not what is measured;
* daemon CPU time per fragment (utime + stime from /proc over the copy);
* peak RSS (VmHWM) after a 32 MiB copy and after the 256 MiB one on the same
  process: memory must not grow with the file.

The harness and the simulator run pinned to CPU 0, each daemon pinned to CPU
1 (bench.procfs). The fragments are posted by
:func:`hvguest.testing.fcopy_host.stream_writes`, which keeps one fragment
outstanding like a real host but posts the next from the simulator's thread,
so no harness thread switch is paid per fragment. Daemons take turns, the
order alternating between repetitions. Run alone as
``python -m bench.fcopy [--quick] [--vs-reference]``; :func:`run` returns
the Markdown section.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.daemons import warm_bytecode
from bench.fcopy_echo import build_echo
from bench.procfs import (
    can_pin,
    cpu_seconds,
    peak_rss_kib,
    pin_daemon,
    pin_harness,
    pinning_text,
)
from hvguest.abi.constants import DATA_FRAGMENT, OVER_WRITE, HvStatus
from hvguest.testing import fcopy_host
from hvguest.testing.refshim import build_shim, stop_daemon
from hvguest.testing.refshim.fcopy import REFERENCE_FCOPY_DAEMON, launch_reference_fcopy
from hvguest.testing.simulator import Simulator
from hvguest.testing.transport import TransportMode

MIB: Final = 1024 * 1024
#: The timed copy and the smaller one before it (RSS comparison, warm-up).
FULL_SIZES: Final = (32 * MIB, 256 * MIB)
QUICK_SIZES: Final = (8 * MIB, 32 * MIB)
FULL_REPETITIONS: Final = 3
QUICK_REPETITIONS: Final = 1
#: Issue 4's targets.
TARGET_VS_REFERENCE: Final = 1.0
TARGET_VS_CEILING: Final = 0.85
TARGET_RSS_KIB: Final = 16 * 1024
#: "Constant in file size": peak RSS may grow by at most this much from 32 to 256 MiB.
RSS_GROWTH_KIB: Final = 1024
#: Seconds a daemon may take to register, to answer one fragment, or to stop.
STEP_TIMEOUT: Final = 30.0
#: 64 distinct fragments of file content, repeated.
PATTERN: Final = bytes((i * 7 + i // 251) & 0xFF for i in range(64 * DATA_FRAGMENT))
#: Room for the 256 MiB target, the 32 MiB one and the bytecode cache.
TMPFS_SIZE: Final = "640m"
_REPO_ROOT: Final = Path(__file__).resolve().parents[1]

#: (device socket, work directory, log) -> the started daemon.
Launcher = Callable[[Path, Path, Path], "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class DaemonSpec:
    """A daemon under test; ``writes`` is False for the echo, which keeps no file."""

    name: str
    launch: Launcher
    writes: bool = True


def hvguest_spec() -> DaemonSpec:
    """``python -m hvguest fcopy -n``, char flavour, otherwise default configuration."""
    warm_bytecode()

    def launch(device: Path, work: Path, log: Path) -> subprocess.Popen[bytes]:
        # The temp-file journal ([paths] state) and the sysfs root stay inside ``work``.
        (work / "run").mkdir(exist_ok=True)
        (work / "sys").mkdir(exist_ok=True)
        config = work / "hvguest.toml"
        config.write_text(
            f'[paths]\nrun = "{work / "run"}"\nstate = "{work / "state"}"\nsys = "{work / "sys"}"\n'
            f'[fcopy]\nflavour = "char"\ndevice = "{device}"\n',
            encoding="utf-8",
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "NOTIFY_SOCKET", "PYTHONPYCACHEPREFIX")
        }
        env["HVGUEST_CONFIG"] = str(config)
        with log.open("ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "hvguest", "fcopy", "-n"],
                env=env,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )

    return DaemonSpec("hvguest", launch)


def reference_spec(shim: Path, daemon: Path = REFERENCE_FCOPY_DAEMON) -> DaemonSpec:
    """The C hv_fcopy_daemon under the LD_PRELOAD shim."""

    def launch(device: Path, work: Path, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as log_file:
            return launch_reference_fcopy(
                shim, device, work / "state", daemon=daemon, stdout=log_file, stderr=log_file
            )

    return DaemonSpec("reference", launch)


def _stand_in(name: str, command: list[str], *, writes: bool) -> DaemonSpec:
    """One of the benchmark's own daemons: ``command`` plus the device socket, repo importable."""

    def launch(device: Path, work: Path, log: Path) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
        with log.open("ab") as log_file:
            return subprocess.Popen(
                [*command, str(device)],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )

    return DaemonSpec(name, launch, writes=writes)


def echo_spec(binary: Path | None) -> DaemonSpec:
    """bench.fcopy_echo: status 0 for everything, no file written (C if built, else Python)."""
    command = [sys.executable, "-m", "bench.fcopy_echo"] if binary is None else [str(binary)]
    return _stand_in("echo", command, writes=False)


def floor_spec() -> DaemonSpec:
    """bench.fcopy_floor: the same calls as the C daemon per fragment, in bare Python."""
    return _stand_in("python-floor", [sys.executable, "-m", "bench.fcopy_floor"], writes=True)


@dataclass(frozen=True)
class Sample:
    """One daemon process: a small copy, then the timed big one."""

    seconds: float
    size: int
    cpu_seconds: float
    rss_small_kib: int
    rss_big_kib: int
    #: Seconds from starting the process to the simulator seeing its registration.
    registered_after: float = 0.0

    @property
    def mb_per_s(self) -> float:
        """Decimal megabytes per second of the big copy."""
        return self.size / self.seconds / 1e6

    @property
    def cpu_us_per_fragment(self) -> float:
        """Daemon CPU per WRITE_TO_FILE (START and COMPLETE included in the total)."""
        return self.cpu_seconds * 1e6 / -(-self.size // DATA_FRAGMENT)


@dataclass
class Results:
    """Samples per daemon name, in the order they were taken."""

    sizes: tuple[int, int]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    pinned: bool = False
    storage: str = ""
    #: Which build of the echo gave the ceiling.
    echo: str = ""


class CopyFailed(RuntimeError):
    """A copy did not succeed, or did not leave the expected file."""


def copy_once(sim: Simulator, target_dir: Path, name: str, size: int, *, check: bool) -> float:
    """One whole copy; its wall time. With ``check``, the file is verified, then removed."""
    host = sim.host
    begin = time.perf_counter()
    status = fcopy_host.fcopy_start(
        host, str(target_dir), name, flags=OVER_WRITE, file_size=size, timeout=STEP_TIMEOUT
    )
    if status == HvStatus.S_OK:
        status = fcopy_host.stream_writes(host, PATTERN, total=size, timeout=STEP_TIMEOUT)
    if status == HvStatus.S_OK:
        status = fcopy_host.fcopy_complete(host, timeout=STEP_TIMEOUT)
    seconds = time.perf_counter() - begin
    if status != HvStatus.S_OK:
        raise CopyFailed(f"copy of {size} bytes answered {status:#010x}")
    if check:
        target = target_dir / name
        _verify(target, size)
        target.unlink()
    return seconds


def _verify(target: Path, size: int) -> None:
    """Size and a few fragments' contents (the whole file would cost seconds)."""
    if target.stat().st_size != size:
        raise CopyFailed(f"{target} has {target.stat().st_size} bytes, not {size}")
    with target.open("rb") as copied:
        for position in (0, size // 2 // DATA_FRAGMENT * DATA_FRAGMENT, size - DATA_FRAGMENT):
            copied.seek(position)
            start = position % len(PATTERN)
            if copied.read(DATA_FRAGMENT) != PATTERN[start : start + DATA_FRAGMENT]:
                raise CopyFailed(f"{target} differs from what was sent at offset {position}")


@contextlib.contextmanager
def _daemon(spec: DaemonSpec, sim: Simulator, work: Path) -> Iterator[tuple[int, float]]:
    """Start ``spec`` on the FCOPY device, pinned, registered: (pid, exec -> registered s)."""
    log = work / f"{spec.name}.log"
    begin = time.perf_counter()
    process = spec.launch(sim.device_path("fcopy"), work, log)
    try:
        if can_pin():
            pin_daemon(process.pid)
        try:
            sim.wait_registered(STEP_TIMEOUT, "fcopy")
            registered_after = time.perf_counter() - begin
        except TimeoutError:
            raise RuntimeError(
                f"{spec.name} did not register within {STEP_TIMEOUT} s:\n"
                + log.read_text(errors="replace")[-2000:]
            ) from None
        if can_pin():
            pin_daemon(process.pid)  # threads started before the first pinning
        yield process.pid, registered_after
    finally:
        stop_daemon(process, STEP_TIMEOUT)
        deadline = time.monotonic() + STEP_TIMEOUT
        while sim.transport_mode("fcopy") != TransportMode.INIT and time.monotonic() < deadline:
            time.sleep(0.001)


def measure(spec: DaemonSpec, sim: Simulator, work: Path, sizes: tuple[int, int]) -> Sample:
    """A fresh daemon: the small copy (warm-up, RSS), then the timed big copy."""
    target_dir = work / "target"
    target_dir.mkdir(exist_ok=True)
    small, big = sizes
    with _daemon(spec, sim, work) as (pid, registered_after):
        copy_once(sim, target_dir, "small.bin", small, check=spec.writes)
        rss_small = peak_rss_kib(pid)
        cpu_before = cpu_seconds(pid)
        seconds = copy_once(sim, target_dir, "big.bin", big, check=False)
        cpu = cpu_seconds(pid) - cpu_before
        rss_big = peak_rss_kib(pid)
    if spec.writes:
        _verify(target_dir / "big.bin", big)
        (target_dir / "big.bin").unlink()
    return Sample(seconds, big, cpu, rss_small, rss_big, registered_after)


@contextlib.contextmanager
def _scratch() -> Iterator[tuple[Path, str]]:
    """A scratch directory on a tmpfs of its own (as root), and what it is.

    Not /dev/shm: hvguest refuses every target under /dev, as it should.
    """
    root = Path(tempfile.mkdtemp(prefix="hvguest-bench-fcopy-"))
    try:
        if os.geteuid() != 0:
            yield root, f"NOT tmpfs ({root}: mounting one needs root)"
            return
        options = f"mode=0700,size={TMPFS_SIZE}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "hvbench", str(root)], check=True)
        try:
            yield root, "tmpfs mounted for the run"
        finally:
            subprocess.run(["umount", str(root)], check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def collect(quick: bool, vs_reference: bool, reference: Path = REFERENCE_FCOPY_DAEMON) -> Results:
    """Run every daemon ``repetitions`` times, alternating the order."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    repetitions = QUICK_REPETITIONS if quick else FULL_REPETITIONS
    results = Results(sizes, pinned=can_pin())
    if results.pinned:
        pin_harness()
    with _scratch() as (scratch, results.storage):
        echo_binary = build_echo(scratch / "echo")
        echo = echo_spec(echo_binary)
        results.echo = "Python" if echo_binary is None else "C"
        specs = [hvguest_spec()]
        floor = floor_spec()
        if vs_reference:
            specs.append(reference_spec(build_shim(scratch / "shim"), reference))
        with Simulator(scratch / "sim", services=("fcopy",)) as sim:
            for repetition in range(repetitions):
                order = specs if repetition % 2 == 0 else specs[::-1]
                for spec in [*order, floor, echo]:
                    work = scratch / f"{spec.name}-{repetition}"
                    work.mkdir()
                    sample = measure(spec, sim, work, sizes)
                    results.samples.setdefault(spec.name, []).append(sample)
                    shutil.rmtree(work, ignore_errors=True)
    return results


# --- the report ------------------------------------------------------------------


def _median(samples: Sequence[Sample], value: Callable[[Sample], float]) -> float:
    return statistics.median(value(sample) for sample in samples)


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def render(results: Results) -> str:
    """The Markdown section."""
    small, big = (size // MIB for size in results.sizes)
    lines = [
        "## FCOPY",
        "",
        f"A {big} MiB copy in {DATA_FRAGMENT}-byte fragments into tmpfs, preceded on the same "
        f"process by a {small} MiB copy; medians of {len(next(iter(results.samples.values())))} "
        f"run(s) per daemon, daemons alternating; target on {results.storage}; "
        + pinning_text(results.pinned)
        + f". `echo` ({results.echo}) answers without writing: the harness ceiling;"
        " `python-floor` (bench.fcopy_floor) makes the C daemon's calls per fragment"
        " (poll, read, pwrite, write) in bare Python, with no checks: what Python alone costs.",
        "",
        "| daemon | MB/s (median) | MB/s (min-max) | daemon CPU µs/fragment | peak RSS after "
        f"{small} MiB (KiB) | after {big} MiB (KiB) | exec → registered ms (median) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, samples in results.samples.items():
        lines.append(
            f"| {name} | {_median(samples, lambda s: s.mb_per_s):.1f} "
            f"| {min(s.mb_per_s for s in samples):.1f}-{max(s.mb_per_s for s in samples):.1f} "
            f"| {_median(samples, lambda s: s.cpu_us_per_fragment):.1f} "
            f"| {max(s.rss_small_kib for s in samples)} | {max(s.rss_big_kib for s in samples)} "
            f"| {_median(samples, lambda s: s.registered_after) * 1e3:.0f} |"
        )
    lines += ["", "Targets (issue 4):", ""]
    ours = results.samples["hvguest"]
    rate = _median(ours, lambda s: s.mb_per_s)
    ceiling = _median(results.samples["echo"], lambda s: s.mb_per_s)
    if "reference" in results.samples:
        ratio = rate / _median(results.samples["reference"], lambda s: s.mb_per_s)
        met = ratio >= TARGET_VS_REFERENCE
        lines.append(f"- ≥ {TARGET_VS_REFERENCE:.1f}x the C daemon: {ratio:.2f}x — {_verdict(met)}")
        if "python-floor" in results.samples:
            floor_ratio = _median(results.samples["python-floor"], lambda s: s.mb_per_s) / (
                _median(results.samples["reference"], lambda s: s.mb_per_s)
            )
            lines.append(f"  (the Python floor reaches {floor_ratio:.2f}x the C daemon)")
    share = rate / ceiling
    lines.append(
        f"- ≥ {TARGET_VS_CEILING:.0%} of the harness ceiling: {share:.0%} — "
        + _verdict(share >= TARGET_VS_CEILING)
    )
    peak = max(s.rss_big_kib for s in ours)
    lines.append(
        f"- peak RSS ≤ {TARGET_RSS_KIB // 1024} MiB: {peak / 1024:.1f} MiB — "
        + _verdict(peak <= TARGET_RSS_KIB)
    )
    growth = max(s.rss_big_kib - s.rss_small_kib for s in ours)
    lines.append(
        f"- memory constant in file size ({small} → {big} MiB): +{growth} KiB — "
        + _verdict(growth <= RSS_GROWTH_KIB)
    )
    lines.append("")
    return "\n".join(lines)


def run(quick: bool, vs_reference: bool) -> str:
    """Measure and return the Markdown section (the integrator's entry point)."""
    return render(collect(quick, vs_reference))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fcopy", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="8 + 32 MiB copies, one run each")
    parser.add_argument(
        "--vs-reference", action="store_true", help="also run the C hv_fcopy_daemon and compare"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=REFERENCE_FCOPY_DAEMON,
        help=f"the reference daemon (default {REFERENCE_FCOPY_DAEMON})",
    )
    args = parser.parse_args(argv)
    print(render(collect(args.quick, args.vs_reference, args.reference)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
