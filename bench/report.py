"""The benchmark report: Markdown tables of medians, ratios and the targets met or missed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bench.kvp import FILE_FLOOR, OPERATIONS, RSS_POOL_SIZE, Plan, Results, Sample, median
from bench.procfs import clock_tick_seconds

HVGUEST: Final = "hvguest"
REFERENCE: Final = "reference"
#: Harness CPU this busy means the harness, not the daemon, set the rate.
HARNESS_BOUND: Final = 0.85
#: Peak RSS limit at 1,000 records (16 MiB) and exec -> registered limit.
RSS_LIMIT_KIB: Final = 16 * 1024
START_LIMIT_MS: Final = 150.0
#: CPU times below this many clock ticks are too coarse to report per operation.
MIN_CPU_TICKS: Final = 3


@dataclass(frozen=True)
class RateTarget:
    """hvguest must reach ``min_ratio`` times the reference's rate for ``operation`` at ``size``."""

    operation: str
    size: int
    min_ratio: float


RATE_TARGETS: Final = (
    RateTarget("GET", 10, 1.0),
    RateTarget("GET", 10000, 10.0),
    RateTarget("ENUMERATE", 10, 1.0),
    RateTarget("ENUMERATE", 10000, 10.0),
    RateTarget("SET", 10, 1.5),
    RateTarget("SET", 10000, 50.0),
)


def _rate(samples: Sequence[Sample]) -> float:
    return median([sample.rate for sample in samples])


def _cpu(samples: Sequence[Sample]) -> float:
    """Median daemon CPU µs/op; NaN (shown "-") when too few clock ticks were counted."""
    if median([sample.cpu_seconds for sample in samples]) < MIN_CPU_TICKS * clock_tick_seconds():
        return float("nan")
    return median([sample.cpu_us_per_op for sample in samples])


def _number(value: float, digits: int = 0) -> str:
    if math.isnan(value):  # not measured
        return "-"
    return f"{value:,.{digits}f}"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


class Report:
    """Builds the Markdown text from :class:`~bench.kvp.Results`."""

    def __init__(
        self, results: Results, plan: Plan, environment: dict[str, str], *, vs_reference: bool
    ) -> None:
        self.results = results
        self.plan = plan
        self.environment = environment
        self.vs_reference = vs_reference
        self.lines: list[str] = []
        self.verdicts: list[tuple[str, bool | None, str]] = []

    def render(self) -> str:
        """The whole report."""
        self.lines = ["# hvguest KVP benchmark", ""]
        self._environment()
        self._ceiling()
        self._round_trips()
        self._floor()
        self._sweep()
        self._rss()
        self._start()
        self._disk()
        self._summary()
        return "\n".join(self.lines) + "\n"

    def _table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        self.lines.extend("| " + " | ".join(row) + " |" for row in rows)
        self.lines.append("")

    def _environment(self) -> None:
        plan = self.plan
        self.lines.append("## Setup")
        self.lines.append("")
        for key, value in self.environment.items():
            self.lines.append(f"- {key}: {value}")
        self.lines.append(
            f"- per cell: median of {plan.repetitions} window(s) of {plan.window:g} s"
            f" (at most {plan.max_ops:,} ops), each on a fresh daemon and freshly"
            f" prefilled pool 1, after {plan.warmup_ops} warm-up ops; daemons alternate"
        )
        self.lines.append(
            "- CPU µs/op: utime+stime deltas of /proc/<pid>/stat over the window"
            f" (clock-tick resolution), divided by ops; '-' where fewer than {MIN_CPU_TICKS}"
            " ticks were counted (quick mode)"
        )
        self.lines.append("")

    def _ceiling(self) -> None:
        self.lines.append("## Harness cost (Python echo daemon: canned answers, no pool work)")
        self.lines.append("")
        rows = [
            [
                name,
                _number(sample.rate),
                _number(1e6 / sample.rate, 1),
                _number(sample.harness_us_per_op, 1),
                f"{sample.harness_busy:.0%}",
                _number(_cpu([sample]), 1),
            ]
            for name, sample in self.results.ceiling.items()
        ]
        header = ["workload", "round trips/s", "µs per round trip", "harness CPU µs/op"]
        self._table([*header, "harness CPU busy", "echo CPU µs/op"], rows)
        self.lines.append(
            "The harness (fake host + simulated kernel, two Python threads on one CPU) spends"
            " the CPU µs/op above on every round trip, so it cannot exceed about 1e6 / that"
            " many round trips per second whatever the daemon. Rates marked † below had the"
            f" harness CPU ≥ {HARNESS_BOUND:.0%} busy: there the harness, not the daemon,"
            " limited the rate, and the daemon CPU µs/op column is the better comparison."
        )
        self.lines.append("")

    def _mark(self, samples: Sequence[Sample]) -> str:
        busy = median([sample.harness_busy for sample in samples])
        return _number(_rate(samples)) + (" †" if busy >= HARNESS_BOUND else "")

    def _round_trips(self) -> None:
        ops = self.results.ops
        self.lines.append("## Round trips per second and daemon CPU per operation")
        self.lines.append("")
        header = ["op", "records", "hvguest ops/s", "hvguest CPU µs/op"]
        if self.vs_reference:
            header += ["reference ops/s", "reference CPU µs/op", "ratio ops/s", "ratio CPU"]
        header += ["failed replies"]
        rows = []
        for operation in OPERATIONS:
            for size in self.plan.sizes:
                ours = ops.get((HVGUEST, operation, size), [])
                row = [
                    operation,
                    f"{size:,}",
                    self._mark(ours),
                    _number(_cpu(ours), 1),
                ]
                failures = sum(sample.failures for sample in ours)
                if self.vs_reference:
                    theirs = ops.get((REFERENCE, operation, size), [])
                    failures += sum(sample.failures for sample in theirs)
                    row += [
                        self._mark(theirs),
                        _number(_cpu(theirs), 1),
                        _number(_rate(ours) / _rate(theirs), 2) + "x",
                        _number(_cpu(theirs) / _cpu(ours), 2) + "x",
                    ]
                rows.append([*row, str(failures)])
        self._table(header, rows)
        if self.vs_reference:
            self.lines.append(
                "ratio ops/s = hvguest rate / reference rate; ratio CPU = reference CPU µs/op /"
                " hvguest CPU µs/op (both: higher is better for hvguest)."
            )
            self.lines.append("")
        for target in RATE_TARGETS:
            ours = ops.get((HVGUEST, target.operation, target.size), [])
            theirs = ops.get((REFERENCE, target.operation, target.size), [])
            label = f"{target.operation} ≥ {target.min_ratio:g}x C at {target.size:,} records"
            if not (self.vs_reference and ours and theirs):
                self.verdicts.append((label, None, "needs --vs-reference"))
                continue
            ratio = _rate(ours) / _rate(theirs)
            detail = f"{ratio:.2f}x (CPU {_number(_cpu(theirs) / _cpu(ours), 2)}x)"
            self.verdicts.append((label, ratio >= target.min_ratio, detail))

    def _floor(self) -> None:
        floor = self.results.floor
        if not floor:
            return
        size = self.plan.sizes[0]
        self.lines.append(f"## Python floor (bench.floor, {size:,} records)")
        self.lines.append("")
        header = ["op", "floor ops/s", "floor CPU µs/op", "hvguest ops/s"]
        if self.vs_reference:
            header += ["reference ops/s", "floor / reference ops/s"]
        # (operation, its samples, the row's name); the file-writing SET only if measured.
        cells = [(operation, floor.get(operation, []), operation) for operation in OPERATIONS]
        if floor.get("SET" + FILE_FLOOR):
            cells.append(("SET", floor["SET" + FILE_FLOOR], "SET, writing the pool file"))
        rows = []
        for operation, samples, shown in cells:
            ours = self.results.ops.get((HVGUEST, operation, size), [])
            row = [shown, self._mark(samples), _number(_cpu(samples), 1), self._mark(ours)]
            if self.vs_reference:
                theirs = self.results.ops.get((REFERENCE, operation, size), [])
                row += [self._mark(theirs), _number(_rate(samples) / _rate(theirs), 2) + "x"]
            rows.append([*row, str(sum(sample.failures for sample in samples))])
        self._table([*header, "floor failed replies"], rows)
        self.lines.append(
            "bench.floor makes the calls every daemon makes per request on the simulated"
            " device (poll, read + acknowledge, write + wait for its result) and answers from"
            " a dict, with no locks, files or checks: what Python alone costs. hvguest cannot"
            " be expected to beat it; where it does not beat the reference either, no Python"
            " daemon making those calls could. A SET must also reach the pool file: 'SET,"
            " writing the pool file' (--write-file) adds the least of that, one pwrite of the"
            " record under the two exclusive locks pool peers take (flock and fcntl), still"
            " without fsync or a look for other writers' changes."
        )
        self.lines.append("")

    def _sweep(self) -> None:
        self.lines.append("## AUTO pool sweep (ENUMERATE pool 2, index 0..10)")
        self.lines.append("")
        rows = []
        for name, samples in self.results.sweep.items():
            sweeps = median([s.rate / 11 for s in samples])
            cpu = _cpu(samples) * 11
            failures = sum(s.failures for s in samples)
            rows.append([name, _number(sweeps), _number(cpu, 1), str(failures)])
        self._table(["daemon", "sweeps/s", "CPU µs/sweep", "failed replies"], rows)

    def _rss(self) -> None:
        self.lines.append(
            f"## Peak RSS (VmHWM after the run at {RSS_POOL_SIZE:,} records and an AUTO sweep)"
        )
        self.lines.append("")
        rows = [
            [name, _number(median(values) / 1024, 1)]
            for name, values in self.results.rss_kib.items()
        ]
        self._table(["daemon", "MiB"], rows)
        ours = self.results.rss_kib.get(HVGUEST, [])
        if ours:
            peak = median(ours)
            self.verdicts.append(
                (
                    f"peak RSS ≤ 16 MiB at {RSS_POOL_SIZE:,} records",
                    peak <= RSS_LIMIT_KIB,
                    f"{peak / 1024:.1f} MiB",
                )
            )

    def _start(self) -> None:
        self.lines.append("## exec → registered (ms; Popen to the simulator seeing the read)")
        self.lines.append("")
        rows = [
            [name, _number(median(values), 1), _number(min(values), 1), _number(max(values), 1)]
            for name, values in self.results.start_ms.items()
        ]
        self._table(["daemon", "median", "min", "max"], rows)
        ours = self.results.start_ms.get(HVGUEST, [])
        if ours:
            self.verdicts.append(
                (
                    f"exec → registered ≤ {START_LIMIT_MS:g} ms",
                    median(ours) <= START_LIMIT_MS,
                    f"{median(ours):.1f} ms",
                )
            )

    def _disk(self) -> None:
        if not self.results.disk:
            return
        self.lines.append("## hvguest SET with fsync, pools on the --disk directory")
        self.lines.append("")
        rows = [
            [f"{size:,}", _number(_rate(samples)), _number(_cpu(samples), 1)]
            for size, samples in sorted(self.results.disk.items())
        ]
        self._table(["records", "SET ops/s", "CPU µs/op"], rows)

    def _summary(self) -> None:
        self.lines.append("## Targets")
        self.lines.append("")
        rows = [[label, _verdict(met), detail] for label, met, detail in self.verdicts]
        self._table(["target", "result", "measured"], rows)
