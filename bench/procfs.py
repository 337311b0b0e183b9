"""Per-process counters from /proc and CPU pinning of the processes being measured."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

#: The CPU the daemon under test runs on, and the one the harness + simulator share.
DAEMON_CPU: Final = 1
HARNESS_CPU: Final = 0
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
#: Fields of /proc/<pid>/stat after "(comm) ": state is index 0, utime 11, stime 12.
_UTIME: Final = 11
_STIME: Final = 12
#: The CPUs this process may use, read before ``pin_harness`` narrows them to
#: one: asked afterwards, ``can_pin`` would say no and every daemon would
#: inherit the harness CPU (it did, until 2026-11-27: see docs/benchmarks.md).
_ALLOWED_AT_START: Final = frozenset(os.sched_getaffinity(0))


def can_pin() -> bool:
    """Both CPUs exist and this process was allowed both when it started."""
    return {HARNESS_CPU, DAEMON_CPU} <= _ALLOWED_AT_START


#: CPU layouts: ``split`` puts the daemon on its own CPU (the default, as a
#: real guest's kernel work and daemon need not share one), ``shared`` puts it
#: on the harness CPU, so every process of the run competes for one CPU.
LAYOUTS: Final = ("split", "shared")
_layout = {"daemon_cpu": DAEMON_CPU}


def use_layout(name: str) -> None:
    """Where ``pin_daemon`` puts daemons from now on (one of ``LAYOUTS``)."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown CPU layout {name!r} (one of {', '.join(LAYOUTS)})")
    _layout["daemon_cpu"] = DAEMON_CPU if name == "split" else HARNESS_CPU


def daemon_cpu() -> int:
    """The CPU daemons are pinned to under the current layout."""
    return _layout["daemon_cpu"]


def pinning_text(pinned: bool) -> str:
    """How the run is pinned, for the reports."""
    if not pinned:
        return "not pinned (fewer than 2 usable CPUs)"
    if daemon_cpu() == HARNESS_CPU:
        return f"harness, simulator and daemon all pinned to CPU {HARNESS_CPU} (layout shared)"
    return f"harness + simulator pinned to CPU {HARNESS_CPU}, daemon to CPU {DAEMON_CPU}"


def pin_harness() -> None:
    """Pin this process (and the threads it starts later) to the harness CPU."""
    os.sched_setaffinity(0, {HARNESS_CPU})


def pin_daemon(pid: int) -> None:
    """Pin every thread of ``pid`` to the daemon CPU (threads started later inherit it)."""
    cpu = daemon_cpu()
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(int(task.name), {cpu})
                # Checked, not assumed: a silently unpinned daemon once skewed every run.
                if os.sched_getaffinity(int(task.name)) != {cpu}:
                    raise RuntimeError(f"thread {task.name} of {pid} is not pinned to CPU {cpu}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads, not its children), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[_UTIME]) + int(fields[_STIME])) / _CLOCK_TICKS


def clock_tick_seconds() -> float:
    """The resolution of :func:`cpu_seconds`."""
    return 1.0 / _CLOCK_TICKS


def peak_rss_kib(pid: int) -> int:
    """VmHWM of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise ValueError(f"no VmHWM in /proc/{pid}/status")
