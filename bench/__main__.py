"""``python -m bench``: run the KVP, VSS and FCOPY benchmarks and print one Markdown report.

``--services`` picks which (default all three); VSS needs root and zram (it
freezes only zram filesystems it creates), FCOPY copies into a private tmpfs.

The harness and the simulator run pinned to CPU 0, each daemon pinned to
CPU 1 (``--layout shared``: to CPU 0 as well); pools and sockets live on
tmpfs (/dev/shm, or a tmpfs mounted under a temporary directory when run as
root). Nothing outside the scratch directory
is written, except the optional ``--output`` file and ``--disk`` scratch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import hvguest
from bench.daemons import (
    DaemonSpec,
    echo_daemon,
    floor_daemon,
    hvguest_daemon,
    reference_daemon,
)
from bench.kvp import FILE_FLOOR, FULL, QUICK, Runner
from bench.procfs import (
    LAYOUTS,
    can_pin,
    clock_tick_seconds,
    pin_harness,
    pinning_text,
    use_layout,
)
from bench.report import Report
from hvguest.testing.refshim import REFERENCE_KVP_DAEMON, build_shim
from hvguest.testing.simulator import Simulator

_SHM = Path("/dev/shm")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few ops: a smoke run")
    parser.add_argument(
        "--vs-reference",
        action="store_true",
        help="also run the C hv_kvp_daemon (under the LD_PRELOAD shim) and compare",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=REFERENCE_KVP_DAEMON,
        help=f"the reference daemon (default {REFERENCE_KVP_DAEMON})",
    )
    parser.add_argument(
        "--disk", type=Path, help="also measure hvguest SET with fsync in a scratch dir here"
    )
    parser.add_argument("--repetitions", type=int, help="override windows per cell")
    parser.add_argument("--window", type=float, help="override seconds per window")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="split",
        help="split: daemon on CPU 1, harness on CPU 0 (default); shared: all on CPU 0",
    )
    parser.add_argument(
        "--services",
        default="kvp,vss,fcopy",
        help="comma-separated services to measure (default: kvp,vss,fcopy)",
    )
    return parser.parse_args(argv)


def _is_tmpfs(directory: Path) -> bool:
    with Path("/proc/mounts").open(encoding="utf-8") as mounts:
        return any(
            fields[1] == str(directory) and fields[2] == "tmpfs"
            for fields in (line.split() for line in mounts)
        )


@contextlib.contextmanager
def _scratch_root() -> Iterator[tuple[Path, str]]:
    """A private scratch directory on tmpfs if at all possible, and what it is."""
    if _is_tmpfs(_SHM) and os.access(_SHM, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="hvbench-", dir=_SHM))
        try:
            yield root, f"tmpfs ({root})"
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    root = Path(tempfile.mkdtemp(prefix="hvbench-"))
    try:
        if os.geteuid() != 0:
            yield root, f"NOT tmpfs ({root}; /dev/shm unusable and not root)"
            return
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0700", "hvbench", str(root)], check=True
        )
        try:
            yield root, f"tmpfs mounted at {root}"
        finally:
            subprocess.run(["umount", str(root)], check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _package_version(name: str) -> str:
    if shutil.which("dpkg-query") is None:
        return "unknown"
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "not installed"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; 0 on completion whatever the numbers are."""
    args = _parse_args(argv)
    services = {name.strip() for name in args.services.split(",") if name.strip()}
    unknown = services - {"kvp", "vss", "fcopy"}
    if unknown:
        print(f"unknown service(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    use_layout(args.layout)
    sections: list[str] = []
    # Each service's run pins this process to the harness CPU; the next one
    # starts from the original affinity so that it can pin its daemon too.
    affinity = os.sched_getaffinity(0)
    if "kvp" in services:
        code = _run_kvp(args)
        if isinstance(code, int):
            return code
        sections.append(code)
    os.sched_setaffinity(0, affinity)
    if "vss" in services:
        from bench import vss

        sections.append(vss.run(args.quick, args.vs_reference))
    os.sched_setaffinity(0, affinity)
    if "fcopy" in services:
        from bench import fcopy

        sections.append(fcopy.run(args.quick, args.vs_reference))
    text = "\n".join(sections)
    sys.stdout.write(text)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    return 0


def _run_kvp(args: argparse.Namespace) -> str | int:
    """The KVP report, or an exit code when it cannot run."""
    plan = QUICK if args.quick else FULL
    if args.repetitions is not None:
        plan = dataclasses.replace(plan, repetitions=args.repetitions)
    if args.window is not None:
        plan = dataclasses.replace(plan, window=args.window)
    if args.vs_reference and not args.reference.exists():
        print(
            f"{args.reference} not found (Debian: apt-get install hyperv-daemons)", file=sys.stderr
        )
        return 2
    pinned = can_pin()
    if pinned:
        pin_harness()  # before the simulator starts its threads, so they inherit it
    with _scratch_root() as (root, storage):
        daemons: list[DaemonSpec] = [hvguest_daemon(root / "hvguest.toml", root / "pycache")]
        if args.vs_reference:
            daemons.append(reference_daemon(build_shim(root / "shim")))
        environment = {
            "mode": "quick" if args.quick else "full",
            "machine": f"{platform.node()}, {os.cpu_count()} CPUs, {_cpu_model()}",
            "kernel": platform.release(),
            "python": platform.python_version(),
            "hvguest": hvguest.__version__ if hasattr(hvguest, "__version__") else "unknown",
            "reference": (
                f"{args.reference} (hyperv-daemons {_package_version('hyperv-daemons')})"
                if args.vs_reference
                else "not run (use --vs-reference)"
            ),
            "pinning": pinning_text(pinned),
            "state directory": storage,
            "hvguest bytecode": "cached in the scratch directory (warm after the first start)",
            "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "CPU time resolution": f"{clock_tick_seconds() * 1e3:g} ms",
        }
        with Simulator(root / "dev") as sim:
            runner = Runner(sim, root, plan)
            runner.measure_ceiling(echo_daemon())
            runner.measure_pools(daemons)
            runner.measure_floor(floor_daemon())
            runner.measure_floor(floor_daemon(write_file=True), ["SET"], label=FILE_FLOOR)
            runner.measure_start(daemons)
            if args.disk is not None:
                disk_root = Path(tempfile.mkdtemp(prefix="hvbench-disk-", dir=args.disk))
                try:
                    runner.measure_disk(daemons[0], disk_root)
                finally:
                    shutil.rmtree(disk_root, ignore_errors=True)
                environment["--disk"] = f"{args.disk} ({_filesystem(args.disk)})"
        return Report(runner.results, plan, environment, vs_reference=args.vs_reference).render()


def _filesystem(directory: Path) -> str:
    """The filesystem type holding ``directory`` (longest matching mount point)."""
    best, kind = "", "unknown"
    resolved = str(directory.resolve())
    with Path("/proc/mounts").open(encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1]
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fields[2]
    return kind


if __name__ == "__main__":
    sys.exit(main())
