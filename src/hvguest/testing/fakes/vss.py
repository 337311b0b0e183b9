"""In-memory fakes of the VSS ports: mounts, FIFREEZE/FITHAW, the journal, hooks.

``FakeFreezer`` keeps the kernel's rules (freezing a frozen superblock is
EBUSY, thawing a thawed one EINVAL, both reported as ``FreezeOutcome.ALREADY``)
and records every call in ``calls`` so tests can check order. Failures are
injected per mount point. ``FakeHookRunner`` plays hook scripts by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.services.ports import FreezeOutcome, FrozenRecord, HookResult, HookSet, Mount


@dataclass
class FakeMountSource:
    """``MountSource`` over a list the test edits."""

    entries: list[Mount] = field(default_factory=list)

    def mounts(self) -> Sequence[Mount]:
        return list(self.entries)


@dataclass
class FakeFreezer:
    """``Freezer`` over a set of frozen mount points."""

    frozen: set[str] = field(default_factory=set)
    #: ("freeze" | "thaw", mount point) in call order.
    calls: list[tuple[str, str]] = field(default_factory=list)
    #: Mount point -> error text: FIFREEZE there fails (EOPNOTSUPP, say).
    fail_freeze: dict[str, str] = field(default_factory=dict)
    #: Mount point -> error text: FITHAW there fails.
    fail_thaw: dict[str, str] = field(default_factory=dict)

    def freeze(self, mountpoint: str) -> FreezeOutcome:
        self.calls.append(("freeze", mountpoint))
        if mountpoint in self.fail_freeze:
            raise OperationFailed(HvStatus.E_FAIL, self.fail_freeze[mountpoint])
        if mountpoint in self.frozen:
            return FreezeOutcome.ALREADY
        self.frozen.add(mountpoint)
        return FreezeOutcome.DONE

    def thaw(self, mountpoint: str) -> FreezeOutcome:
        self.calls.append(("thaw", mountpoint))
        if mountpoint in self.fail_thaw:
            raise OperationFailed(HvStatus.E_FAIL, self.fail_thaw[mountpoint])
        if mountpoint not in self.frozen:
            return FreezeOutcome.ALREADY
        self.frozen.discard(mountpoint)
        return FreezeOutcome.DONE


@dataclass
class FakeJournal:
    """``FrozenJournal`` in memory; ``history`` keeps every record written."""

    current: FrozenRecord | None = None
    history: list[FrozenRecord] = field(default_factory=list)

    def record(self, record: FrozenRecord) -> None:
        self.current = record
        self.history.append(record)

    def recorded(self) -> FrozenRecord | None:
        return self.current

    def clear(self) -> None:
        self.current = None


@dataclass
class FakeHookRunner:
    """``HookRunner`` whose hooks are names; ``failing`` maps (hook, phase) to a detail."""

    hooks: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    failing: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (hook, phase) in run order.
    runs: list[tuple[str, str]] = field(default_factory=list)

    def discover(self) -> HookSet:
        return HookSet(tuple(sorted(self.hooks)), tuple(self.refused))

    def run(self, hook: str, phase: str) -> HookResult:
        self.runs.append((hook, phase))
        detail = self.failing.get((hook, phase))
        return HookResult(hook, detail is None, detail or "")


@dataclass
class RecordingLog:
    """``VssLog`` that keeps (level, message) pairs, formatted."""

    records: list[tuple[str, str]] = field(default_factory=list)

    def _add(self, level: str, msg: str, args: tuple[object, ...]) -> None:
        self.records.append((level, msg % args if args else msg))

    def debug(self, msg: str, /, *args: object) -> None:
        self._add("debug", msg, args)

    def info(self, msg: str, /, *args: object) -> None:
        self._add("info", msg, args)

    def warning(self, msg: str, /, *args: object) -> None:
        self._add("warning", msg, args)

    def error(self, msg: str, /, *args: object) -> None:
        self._add("error", msg, args)

    def messages(self, level: str | None = None) -> list[str]:
        return [text for lvl, text in self.records if level is None or lvl == level]
