"""AutoThawWatchdog: armed by a FREEZE, thaws after the limit, re-arms per FREEZE, retries."""

from __future__ import annotations

from hvguest.daemon.vss import AutoThawWatchdog
from hvguest.protocol.vss import VssFreeze, VssThaw
from hvguest.services.ports import Mount
from hvguest.services.vss import FreezePolicy, VssService
from hvguest.testing.fakes.vss import (
    FakeFreezer,
    FakeHookRunner,
    FakeJournal,
    FakeMountSource,
    RecordingLog,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[VssService, FakeFreezer, AutoThawWatchdog, Clock]:
    freezer = FakeFreezer()
    service = VssService(
        mounts=FakeMountSource([Mount("/a", "/dev/sdb1", "ext4", "8:17")]),
        freezer=freezer,
        journal=FakeJournal(),
        hooks=FakeHookRunner(),
        policy=FreezePolicy(),
        log=RecordingLog(),
    )
    clock = Clock()
    return service, freezer, AutoThawWatchdog(service, 30.0, clock), clock


def test_idle_service_has_no_deadline() -> None:
    _service, _freezer, watchdog, _clock = make()
    assert watchdog.deadline() is None


def test_freeze_arms_and_tick_thaws() -> None:
    service, freezer, watchdog, clock = make()
    service.handle(VssFreeze())
    assert watchdog.deadline() == 130.0
    clock.now = 130.0
    watchdog.tick(130.0)
    assert freezer.frozen == set()
    assert not service.frozen
    assert watchdog.deadline() is None


def test_thaw_disarms() -> None:
    service, _freezer, watchdog, _clock = make()
    service.handle(VssFreeze())
    assert watchdog.deadline() is not None
    service.handle(VssThaw())
    assert watchdog.deadline() is None


def test_a_new_freeze_restarts_the_limit() -> None:
    service, _freezer, watchdog, clock = make()
    service.handle(VssFreeze())
    assert watchdog.deadline() == 130.0
    clock.now = 120.0
    service.handle(VssFreeze())
    assert watchdog.deadline() == 150.0


def test_a_thaw_that_fails_is_retried_soon() -> None:
    service, freezer, watchdog, _clock = make()
    service.handle(VssFreeze())
    watchdog.deadline()
    freezer.fail_thaw["/a"] = "EIO"
    watchdog.tick(130.0)
    assert service.frozen
    assert watchdog.deadline() == 131.0
    del freezer.fail_thaw["/a"]
    watchdog.tick(131.0)
    assert not service.frozen


def test_thaw_hooks_owed_by_a_thaw_are_due_at_once() -> None:
    hooks = FakeHookRunner(hooks=["10-db"])
    service = VssService(
        mounts=FakeMountSource([Mount("/a", "/dev/sdb1", "ext4", "8:17")]),
        freezer=FakeFreezer(),
        journal=FakeJournal(),
        hooks=hooks,
        policy=FreezePolicy(),
        log=RecordingLog(),
    )
    watchdog = AutoThawWatchdog(service, 30.0, Clock())
    service.handle(VssFreeze())
    service.handle(VssThaw())
    due = watchdog.deadline()
    assert due is not None
    assert due <= 100.0
    watchdog.tick(100.0)
    assert hooks.runs == [("10-db", "freeze"), ("10-db", "thaw")]
    assert watchdog.deadline() is None
