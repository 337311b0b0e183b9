"""VssService over fakes: freeze order, rollback, thaw, hooks, journal, release."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from hvguest.abi.constants import VSS_HBU_NO_AUTO_RECOVERY, HvStatus
from hvguest.protocol.vss import VssFreeze, VssHotBackup, VssOther, VssReply, VssThaw
from hvguest.services.ports import FreezeOutcome, FrozenRecord, Mount
from hvguest.services.vss import FreezePolicy, VssService
from hvguest.testing.fakes.vss import (
    FakeFreezer,
    FakeHookRunner,
    FakeJournal,
    FakeMountSource,
    RecordingLog,
)

ROOT = Mount("/", "/dev/sda2", "ext4", "8:2")
A = Mount("/a", "/dev/sdb1", "ext4", "8:17")
B = Mount("/b", "/dev/sdc1", "xfs", "8:33")
TMP = Mount("/tmp", "tmpfs", "tmpfs", "0:40")


@dataclass
class Rig:
    mounts: FakeMountSource = field(default_factory=lambda: FakeMountSource([ROOT, A, TMP, B]))
    freezer: FakeFreezer = field(default_factory=FakeFreezer)
    journal: FakeJournal = field(default_factory=FakeJournal)
    hooks: FakeHookRunner = field(default_factory=FakeHookRunner)
    log: RecordingLog = field(default_factory=RecordingLog)
    frozen_events: list[bool] = field(default_factory=list)

    def service(self, **options: bool) -> VssService:
        return VssService(
            mounts=self.mounts,
            freezer=self.freezer,
            journal=self.journal,
            hooks=self.hooks,
            policy=FreezePolicy(),
            log=self.log,
            on_frozen=self.frozen_events.append,
            **options,
        )


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_freeze_freezes_the_plan_with_root_last(rig: Rig) -> None:
    service = rig.service()
    assert service.handle(VssFreeze()) == VssReply(HvStatus.S_OK)
    assert rig.freezer.calls == [("freeze", "/a"), ("freeze", "/b"), ("freeze", "/")]
    assert service.frozen
    assert service.frozen_mountpoints == ("/a", "/b", "/")
    assert rig.frozen_events == [True]


def test_thaw_thaws_in_reverse_order_and_clears_everything(rig: Rig) -> None:
    service = rig.service()
    service.handle(VssFreeze())
    rig.freezer.calls.clear()
    assert service.handle(VssThaw()) == VssReply(HvStatus.S_OK)
    assert rig.freezer.calls == [("thaw", "/"), ("thaw", "/b"), ("thaw", "/a")]
    assert not service.frozen
    assert rig.freezer.frozen == set()
    assert rig.journal.current is None
    assert rig.frozen_events == [True, False]


def test_journal_is_written_before_the_first_freeze(rig: Rig) -> None:
    rig.hooks.hooks = ["10-db"]
    service = rig.service()
    service.handle(VssFreeze())
    assert rig.journal.history == [FrozenRecord(("/a", "/b", "/"), ("10-db",))]
    assert rig.journal.current is not None


def test_freeze_failure_thaws_already_frozen_mounts(rig: Rig) -> None:
    rig.freezer.fail_freeze["/b"] = "EOPNOTSUPP (Operation not supported)"
    service = rig.service()
    assert service.handle(VssFreeze()) == VssReply(HvStatus.E_FAIL)
    assert rig.freezer.calls == [("freeze", "/a"), ("freeze", "/b"), ("thaw", "/a")]
    assert rig.freezer.frozen == set()
    assert not service.frozen
    assert rig.journal.current is None
    errors = rig.log.messages("error")
    assert any("FREEZE of /b failed: EOPNOTSUPP" in line for line in errors)
    assert rig.frozen_events == [True, False]


def test_already_frozen_counts_as_success(rig: Rig) -> None:
    rig.freezer.frozen.add("/a")
    assert rig.service().handle(VssFreeze()) == VssReply(HvStatus.S_OK)


def test_thaw_attempts_every_mount_and_keeps_failures_frozen(rig: Rig) -> None:
    service = rig.service()
    service.handle(VssFreeze())
    rig.freezer.fail_thaw["/b"] = "EIO"
    assert service.handle(VssThaw()) == VssReply(HvStatus.E_FAIL)
    assert [call for call in rig.freezer.calls if call[0] == "thaw"] == [
        ("thaw", "/"),
        ("thaw", "/b"),
        ("thaw", "/a"),
    ]
    assert service.frozen_mountpoints == ("/b",)
    assert rig.frozen_events == [True]
    del rig.freezer.fail_thaw["/b"]
    assert service.release("retry")
    assert not service.frozen
    assert rig.frozen_events == [True, False]


def test_thaw_without_freeze_thaws_journal_and_plan_harmlessly(rig: Rig) -> None:
    rig.journal.current = FrozenRecord(("/old",), ())
    rig.mounts.entries.append(Mount("/old", "/dev/sdd1", "ext4", "8:49"))
    rig.freezer.frozen.add("/old")
    assert rig.service().handle(VssThaw()) == VssReply(HvStatus.S_OK)
    assert rig.freezer.calls[0] == ("thaw", "/old")
    assert {call[1] for call in rig.freezer.calls} == {"/old", "/", "/a", "/b"}
    assert rig.freezer.frozen == set()
    assert rig.journal.current is None


def test_crash_consistent_mode_freezes_nothing(rig: Rig) -> None:
    rig.hooks.hooks = ["10-db"]
    service = rig.service(crash_consistent=True)
    assert service.handle(VssFreeze()) == VssReply(HvStatus.S_OK)
    assert service.handle(VssThaw()) == VssReply(HvStatus.S_OK)
    assert rig.freezer.calls == []
    assert rig.hooks.runs == []
    assert rig.journal.history == []


def test_hot_backup_answers_success_with_no_auto_recovery(rig: Rig) -> None:
    assert rig.service().handle(VssHotBackup()) == VssReply(HvStatus.S_OK, VSS_HBU_NO_AUTO_RECOVERY)
    assert rig.freezer.calls == []


def test_other_operations_are_answered_without_touching_anything(rig: Rig) -> None:
    assert rig.service().handle(VssOther(3)) == VssReply(HvStatus.S_OK)
    assert rig.freezer.calls == []


def test_hooks_run_freeze_in_order_and_thaw_in_reverse(rig: Rig) -> None:
    rig.hooks.hooks = ["20-app", "10-db"]
    service = rig.service()
    service.handle(VssFreeze())
    service.handle(VssThaw())
    # Thaw hooks wait for the THAW's reply (the kernel gives it only 30 s).
    assert rig.hooks.runs == [("10-db", "freeze"), ("20-app", "freeze")]
    assert service.hooks_pending
    service.run_deferred_hooks()
    assert rig.hooks.runs == [
        ("10-db", "freeze"),
        ("20-app", "freeze"),
        ("20-app", "thaw"),
        ("10-db", "thaw"),
    ]


def test_failing_pre_freeze_hook_aborts_and_gets_freeze_fail(rig: Rig) -> None:
    rig.hooks.hooks = ["10-db", "20-app", "30-late"]
    rig.hooks.failing[("20-app", "freeze")] = "exit status 3"
    service = rig.service()
    assert service.handle(VssFreeze()) == VssReply(HvStatus.E_FAIL)
    assert rig.freezer.calls == []
    assert rig.hooks.runs == [
        ("10-db", "freeze"),
        ("20-app", "freeze"),
        ("20-app", "freeze-fail"),
        ("10-db", "freeze-fail"),
    ]
    assert not service.frozen
    assert rig.journal.current is None
    assert any("20-app" in line for line in rig.log.messages("error"))


def test_failing_hook_does_not_abort_when_configured(rig: Rig) -> None:
    rig.hooks.hooks = ["10-db"]
    rig.hooks.failing[("10-db", "freeze")] = "exit status 1"
    service = rig.service(hook_failure_aborts=False)
    assert service.handle(VssFreeze()) == VssReply(HvStatus.S_OK)
    assert service.frozen


def test_freeze_failure_runs_freeze_fail_hooks_after_thawing(rig: Rig) -> None:
    rig.hooks.hooks = ["10-db"]
    rig.freezer.fail_freeze["/"] = "EIO"
    rig.service().handle(VssFreeze())
    assert rig.hooks.runs == [("10-db", "freeze"), ("10-db", "freeze-fail")]
    assert rig.freezer.frozen == set()


def test_refused_hooks_are_logged_once_each(rig: Rig) -> None:
    rig.hooks.refused = [("evil", "group- or world-writable")]
    rig.service().handle(VssFreeze())
    assert [m for m in rig.log.messages("warning") if "evil" in m] == [
        "VSS: hook evil refused: group- or world-writable"
    ]


def test_release_thaws_and_says_why(rig: Rig) -> None:
    rig.hooks.hooks = ["10-db"]
    service = rig.service()
    service.handle(VssFreeze())
    assert service.release("no THAW within 5 s")
    assert rig.freezer.frozen == set()
    assert rig.hooks.runs[-1] == ("10-db", "thaw")
    assert any("no THAW within 5 s" in line for line in rig.log.messages("warning"))
    assert service.release("nothing to do")


def test_second_freeze_while_frozen_starts_over(rig: Rig) -> None:
    service = rig.service()
    service.handle(VssFreeze())
    assert service.handle(VssFreeze()) == VssReply(HvStatus.S_OK)
    assert service.frozen_mountpoints == ("/a", "/b", "/")
    assert rig.frozen_events == [True, False, True]


def test_thaw_everything_reports_and_runs_recorded_hooks(rig: Rig) -> None:
    rig.journal.current = FrozenRecord(("/a",), ("10-db",))
    rig.freezer.frozen.add("/a")
    report = rig.service().thaw_everything()
    assert report.thawed == ("/a",)
    assert set(report.not_frozen) == {"/", "/b"}
    assert rig.hooks.runs == [("10-db", "thaw")]
    assert rig.journal.current is None


def test_a_recorded_mount_that_is_gone_is_not_thawed_through_its_directory(rig: Rig) -> None:
    # FITHAW on /gone, a bare directory of /, would thaw the root filesystem.
    rig.journal.current = FrozenRecord(("/gone", "/a"), ("10-db",))
    rig.freezer.frozen.add("/a")
    report = rig.service().recover()
    assert report is not None
    assert report.gone == ("/gone",)
    assert report.thawed == ("/a",)
    assert report.failed == ()
    assert ("thaw", "/gone") not in rig.freezer.calls
    assert rig.hooks.runs == [("10-db", "thaw")]
    assert "VSS: /gone was recorded as frozen but is no longer mounted" in rig.log.messages(
        "warning"
    )
    assert rig.journal.current is None  # nothing left that a later thaw could do


def test_recover_thaws_what_a_killed_daemon_recorded(rig: Rig) -> None:
    rig.journal.current = FrozenRecord(("/a",), ("10-db",))
    rig.freezer.frozen.add("/a")
    report = rig.service().recover()
    assert report is not None
    assert report.thawed == ("/a",)
    assert rig.hooks.runs == [("10-db", "thaw")]
    assert any("previous daemon" in line for line in rig.log.messages("warning"))


def test_recover_does_nothing_without_a_record(rig: Rig) -> None:
    assert rig.service().recover() is None
    assert rig.freezer.calls == []


def test_thaw_after_the_freeze_was_undone_early_reports_failure(rig: Rig) -> None:
    # The watchdog (or a reset) thawed before the host's THAW: the snapshot
    # may have been taken unfrozen, so the THAW must not claim success.
    service = rig.service()
    assert service.handle(VssFreeze()) == VssReply(HvStatus.S_OK)
    assert service.release("no THAW within 5 s")
    assert service.handle(VssThaw()) == VssReply(HvStatus.E_FAIL)
    assert any("already undone" in text for text in rig.log.messages("error"))
    # Only that one THAW: the next round is judged on its own.
    assert service.handle(VssThaw()) == VssReply(HvStatus.S_OK)
    assert service.handle(VssFreeze()) == VssReply(HvStatus.S_OK)
    assert service.handle(VssThaw()) == VssReply(HvStatus.S_OK)


class FreezerThatBreaksAfterFreezing(FakeFreezer):
    """FIFREEZE takes effect, then something unexpected escapes (not OperationFailed)."""

    def freeze(self, mountpoint: str) -> FreezeOutcome:
        outcome = super().freeze(mountpoint)
        if mountpoint == "/b":
            raise RuntimeError("unexpected")
        return outcome


def test_an_unexpected_error_after_a_freeze_still_leaves_it_to_thaw(rig: Rig) -> None:
    rig.freezer = FreezerThatBreaksAfterFreezing()
    service = rig.service()
    with pytest.raises(RuntimeError):
        service.handle(VssFreeze())
    # The channel answers HV_E_FAIL; the watchdog's release must thaw /b too.
    assert service.release("no THAW within 5 s")
    assert rig.freezer.frozen == set()


def test_thaw_after_a_partial_early_release_reports_failure(rig: Rig) -> None:
    service = rig.service()
    service.handle(VssFreeze())
    rig.freezer.fail_thaw["/b"] = "EIO"
    assert not service.release("no THAW within 5 s")  # /a and / thawed, /b still frozen
    del rig.freezer.fail_thaw["/b"]
    assert service.handle(VssThaw()) == VssReply(HvStatus.E_FAIL)
    assert rig.freezer.frozen == set()
    assert not service.frozen


def test_a_new_freeze_runs_thaw_hooks_still_owed_first(rig: Rig) -> None:
    rig.hooks.hooks = ["10-db"]
    service = rig.service()
    service.handle(VssFreeze())
    service.handle(VssThaw())
    service.handle(VssFreeze())
    assert rig.hooks.runs == [("10-db", "freeze"), ("10-db", "thaw"), ("10-db", "freeze")]
