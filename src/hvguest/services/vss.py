"""The VSS freeze/thaw service: which filesystems to freeze, in which order, and undoing it.

Replaces vss_operate() and the request dispatch of main() in
tools/hv/hv_vss_daemon.c. Pure: mounts, FIFREEZE/FITHAW, the journal and the
hooks arrive through the ports in ``hvguest.services.ports``.

The policy (``build_plan``) keeps the reference's rules (only /dev/ sources;
no read-only, vfat or loop-backed mounts; "/" last) and adds: filesystems
that cannot be frozen are skipped with a reason instead of failing the whole
FREEZE with EOPNOTSUPP; each superblock is frozen once (bind mounts, btrfs
subvolumes) through "/" if it is the root filesystem; mounts hidden under a
later mount at the same path are skipped (opening the path reaches the top
one); and the [vss] include/exclude lists narrow it all down.

The service guarantees (``VssService``): a failed FREEZE leaves nothing
frozen; THAW attempts every mount even if one fails; ``release`` undoes a
freeze for the watchdog, a device reset and shutdown; the journal is written
before anything is frozen or quiesced; ``on_frozen(True)`` is called before
the first FIFREEZE and ``on_frozen(False)`` after the last FITHAW, so the
daemon can hold back log output that could block on a frozen disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol, assert_never

from hvguest.abi.constants import VSS_HBU_NO_AUTO_RECOVERY, HvStatus
from hvguest.config import VssConfig
from hvguest.errors import OperationFailed
from hvguest.protocol.vss import (
    VssFreeze,
    VssHotBackup,
    VssOther,
    VssReply,
    VssRequest,
    VssThaw,
)
from hvguest.records import record
from hvguest.services.ports import (
    FreezeOutcome,
    Freezer,
    FrozenJournal,
    FrozenRecord,
    HookRunner,
    Mount,
    MountSource,
)

ROOT: Final = "/"

_PSEUDO: Final = "kernel interface (pseudo filesystem), holds no data to freeze"
_MEMORY: Final = "lives in memory, nothing on disk to freeze"
_NETWORK: Final = "network filesystem: its storage is on a server the guest cannot freeze"
_IMAGE: Final = "read-only image filesystem, cannot change"

#: Filesystem types that cannot be frozen, each with the reason the plan prints.
#: FIFREEZE on them fails with EOPNOTSUPP (or blocks nothing), which made the
#: reference fail the whole FREEZE (docker overlay mounts: open-vm-tools #480).
CANNOT_FREEZE: Final[dict[str, str]] = {
    **dict.fromkeys(
        [
            "proc",
            "sysfs",
            "cgroup",
            "cgroup2",
            "devpts",
            "securityfs",
            "debugfs",
            "tracefs",
            "pstore",
            "bpf",
            "configfs",
            "mqueue",
            "hugetlbfs",
            "autofs",
            "binfmt_misc",
            "efivarfs",
            "fusectl",
            "nsfs",
            "rpc_pipefs",
            "selinuxfs",
            "devtmpfs",
        ],
        _PSEUDO,
    ),
    **dict.fromkeys(("tmpfs", "ramfs"), _MEMORY),
    "overlay": "overlay cannot be frozen (EOPNOTSUPP); its upper filesystem is frozen on its own",
    "zfs": "zfs does not implement FIFREEZE",
    **dict.fromkeys(
        ("nfs", "nfs4", "cifs", "smb3", "9p", "virtiofs", "ceph", "glusterfs"), _NETWORK
    ),
    **dict.fromkeys(("fuse", "fuseblk"), "FUSE filesystems cannot be frozen"),
    **dict.fromkeys(("squashfs", "iso9660", "erofs", "udf", "cramfs"), _IMAGE),
}


def cannot_freeze_reason(fstype: str) -> str | None:
    """Why a filesystem of type ``fstype`` cannot be frozen, or None if it can."""
    if fstype.startswith("fuse."):
        return CANNOT_FREEZE["fuse"]
    return CANNOT_FREEZE.get(fstype)


@record
class FreezePolicy:
    """The [vss] include/exclude lists; empty include lists mean "everything"."""

    include_mounts: frozenset[str] = frozenset()
    exclude_mounts: frozenset[str] = frozenset()
    #: A type listed here is trusted to freeze: the cannot-freeze table and
    #: the /dev/ source rule do not apply to it.
    include_fstypes: frozenset[str] = frozenset()
    exclude_fstypes: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, vss: VssConfig) -> FreezePolicy:
        """The policy the [vss] section describes (mount points normalised)."""
        return cls(
            include_mounts=frozenset(map(normalise_mountpoint, vss.include_mounts)),
            exclude_mounts=frozenset(map(normalise_mountpoint, vss.exclude_mounts)),
            include_fstypes=frozenset(vss.include_fstypes),
            exclude_fstypes=frozenset(vss.exclude_fstypes),
        )


def normalise_mountpoint(path: str) -> str:
    """``path`` without trailing slashes ("/" stays "/"), as mountinfo spells mount points."""
    stripped = path.rstrip("/")
    return stripped or ROOT


@record
class SkippedMount:
    """A mount the plan leaves alone, and why."""

    mount: Mount
    reason: str
    #: Worth a log line on every FREEZE (False for pseudo filesystems and config choices).
    notable: bool = True


@record
class FreezePlan:
    """Mounts to freeze, in order ("/" last), and every other mount with its reason."""

    freeze: tuple[Mount, ...] = ()
    skipped: tuple[SkippedMount, ...] = ()

    @property
    def mountpoints(self) -> tuple[str, ...]:
        """The mount points to freeze, in freeze order."""
        return tuple(mount.mountpoint for mount in self.freeze)


def build_plan(mounts: Sequence[Mount], policy: FreezePolicy) -> FreezePlan:
    """Decide, for every mount in mount order, whether it is frozen (see the module doc)."""
    skipped: list[SkippedMount] = []
    eligible: list[Mount] = []
    last_at_path = {mount.mountpoint: index for index, mount in enumerate(mounts)}
    for index, mount in enumerate(mounts):
        refusal = _refusal(mount, policy)
        if refusal is None and last_at_path[mount.mountpoint] != index:
            refusal = SkippedMount(mount, "hidden under a later mount at the same path")
        if refusal is None:
            eligible.append(mount)
        else:
            skipped.append(refusal)
    chosen: dict[str, Mount] = {}
    for mount in eligible:
        holder = chosen.get(mount.device)
        # One FIFREEZE per superblock, through "/" when the root filesystem is
        # mounted elsewhere too, so that it is still frozen last.
        if holder is None or mount.mountpoint == ROOT:
            chosen[mount.device] = mount
    for mount in eligible:
        holder = chosen[mount.device]
        if holder is not mount:
            reason = f"same filesystem as {holder.mountpoint} (bind mount or subvolume)"
            skipped.append(SkippedMount(mount, reason + ": frozen once, through that mount"))
    # Root last: see vss_operate().
    order = sorted(chosen.values(), key=lambda mount: mount.mountpoint == ROOT)
    return FreezePlan(freeze=tuple(order), skipped=tuple(skipped))


def _refusal(mount: Mount, policy: FreezePolicy) -> SkippedMount | None:
    """Why ``mount`` is not frozen (the first rule that applies), or None."""
    path, fstype = mount.mountpoint, mount.fstype
    if policy.include_mounts and path not in policy.include_mounts:
        return SkippedMount(mount, "not in [vss] include_mounts", notable=False)
    if path in policy.exclude_mounts:
        return SkippedMount(mount, "in [vss] exclude_mounts", notable=False)
    if policy.include_fstypes and fstype not in policy.include_fstypes:
        return SkippedMount(mount, f"type {fstype} not in [vss] include_fstypes", notable=False)
    if fstype in policy.exclude_fstypes:
        return SkippedMount(mount, f"type {fstype} in [vss] exclude_fstypes", notable=False)
    trusted = fstype in policy.include_fstypes
    cannot = None if trusted else cannot_freeze_reason(fstype)
    if cannot is not None:
        return SkippedMount(mount, f"{fstype}: {cannot}", notable=cannot != _PSEUDO)
    if not trusted and not mount.source.startswith("/dev/"):
        return SkippedMount(mount, f"source {mount.source} is not a /dev/ block device")
    if mount.read_only:
        return SkippedMount(mount, "mounted read-only, nothing can change")
    if fstype == "vfat":
        return SkippedMount(mount, "vfat (EFI system partition) is skipped as by hv_vss_daemon")
    if mount.on_loop:
        # Freezing a loop-backed filesystem can deadlock against the filesystem
        # holding its backing file; hv_vss_daemon skips them too.
        return SkippedMount(mount, "on a loop device (the backing file's filesystem is frozen)")
    return None


class VssLog(Protocol):
    """Where the service reports (a ``logging.Logger`` fits)."""

    def debug(self, msg: str, /, *args: object) -> None:
        """Detail."""

    def info(self, msg: str, /, *args: object) -> None:
        """Normal operation."""

    def warning(self, msg: str, /, *args: object) -> None:
        """Something was skipped or undone."""

    def error(self, msg: str, /, *args: object) -> None:
        """A request failed."""


@record
class ThawReport:
    """The outcome of thawing a list of mounts: each mount lands in exactly one tuple."""

    thawed: tuple[str, ...] = ()
    not_frozen: tuple[str, ...] = ()
    #: (mount point, why) for each FITHAW that failed.
    failed: tuple[tuple[str, str], ...] = ()


@record(frozen=False)
class _Session:
    """One FREEZE that has not been undone yet."""

    #: Still frozen by us, in freeze order.
    mountpoints: list[str]
    #: Hooks that were given "freeze" and are owed "thaw", in run order.
    hooks: tuple[str, ...]


def _ignore(_frozen: bool) -> None:
    """Default ``on_frozen``: nobody listens."""


class VssService:
    """Answers FREEZE, THAW and HOT_BACKUP (``handle``) and undoes freezes (``release``)."""

    def __init__(
        self,
        *,
        mounts: MountSource,
        freezer: Freezer,
        journal: FrozenJournal,
        hooks: HookRunner,
        policy: FreezePolicy,
        log: VssLog,
        crash_consistent: bool = False,
        hook_failure_aborts: bool = True,
        on_frozen: Callable[[bool], None] = _ignore,
    ) -> None:
        self._mounts = mounts
        self._freezer = freezer
        self._journal = journal
        self._hooks = hooks
        self._policy = policy
        self._log = log
        self._crash_consistent = crash_consistent
        self._hook_failure_aborts = hook_failure_aborts
        self._on_frozen = on_frozen
        self._session: _Session | None = None
        self._plan = FreezePlan()
        self._plan_for: Sequence[Mount] | None = None
        #: FREEZE sessions started so far; the watchdog re-arms when it changes.
        self.freezes = 0

    @property
    def frozen(self) -> bool:
        """A FREEZE is in effect (filesystems frozen or hooks quiesced) until THAW."""
        return self._session is not None

    @property
    def frozen_mountpoints(self) -> tuple[str, ...]:
        """What this service has frozen right now, in freeze order."""
        return tuple(self._session.mountpoints) if self._session else ()

    def plan(self) -> FreezePlan:
        """What a FREEZE would do now (recomputed only when the mount list changed)."""
        mounts = self._mounts.mounts()
        if mounts is not self._plan_for:
            self._plan = build_plan(mounts, self._policy)
            self._plan_for = mounts
        return self._plan

    def handle(self, request: VssRequest) -> VssReply:
        """One host request (the dispatch in main() of hv_vss_daemon.c)."""
        match request:
            case VssFreeze():
                return VssReply(self.freeze())
            case VssThaw():
                return VssReply(self.thaw())
            case VssHotBackup():
                self._log.info("VSS: op=CHECK HOT BACKUP")
                # The kernel only passes the flag on for a reply whose operation
                # byte is 2 (sharp edge S5); sending it costs nothing.
                return VssReply(HvStatus.S_OK, VSS_HBU_NO_AUTO_RECOVERY)
            case VssOther(operation=operation):
                # The kernel answers these itself; nothing for the guest to do.
                self._log.warning("VSS: op=%d is answered by the kernel; ignoring it", operation)
                return VssReply(HvStatus.S_OK)
            case _:
                assert_never(request)

    # -- FREEZE ---------------------------------------------------------------------

    def freeze(self) -> HvStatus:
        """Run the pre-freeze hooks and freeze the plan; on any failure undo everything."""
        if self._crash_consistent:
            self._log.info("VSS: op=FREEZE: succeeded (crash-consistent mode, nothing frozen)")
            return HvStatus.S_OK
        if self._session is not None and not self.release("a new FREEZE arrived while frozen"):
            return HvStatus.E_FAIL
        plan = self.plan()
        for skip in plan.skipped:
            level = self._log.info if skip.notable else self._log.debug
            level("VSS: not freezing %s: %s", skip.mount.mountpoint, skip.reason)
        hook_set = self._hooks.discover()
        for name, reason in hook_set.refused:
            self._log.warning("VSS: hook %s refused: %s", name, reason)
        self._journal.record(FrozenRecord(plan.mountpoints, hook_set.hooks))
        ran = self._run_freeze_hooks(hook_set.hooks)
        if ran is None:
            self._journal.clear()
            return HvStatus.E_FAIL
        self._on_frozen(True)
        session = _Session(mountpoints=[], hooks=ran)
        self._session = session
        self.freezes += 1
        for mount in plan.freeze:
            try:
                self._freezer.freeze(mount.mountpoint)
            except OperationFailed as failure:
                self._fail_freeze(session, mount.mountpoint, str(failure))
                return HvStatus.E_FAIL
            session.mountpoints.append(mount.mountpoint)
        self._log.info(
            "VSS: op=FREEZE: succeeded (%d filesystem(s): %s)",
            len(plan.freeze),
            ", ".join(plan.mountpoints) or "none",
        )
        return HvStatus.S_OK

    def _run_freeze_hooks(self, hooks: Sequence[str]) -> tuple[str, ...] | None:
        """Hooks given "freeze" (in order); None if one failed and that aborts the FREEZE."""
        ran: list[str] = []
        for hook in hooks:
            ran.append(hook)
            result = self._hooks.run(hook, "freeze")
            if result.ok:
                continue
            self._log.warning("VSS: pre-freeze hook %s failed: %s", hook, result.detail)
            if self._hook_failure_aborts:
                self._log.error("VSS: op=FREEZE: failed: pre-freeze hook %s failed", hook)
                self._run_hooks(reversed(ran), "freeze-fail")
                return None
        return tuple(ran)

    def _fail_freeze(self, session: _Session, mountpoint: str, why: str) -> None:
        """Thaw what this FREEZE froze (reverse order), then report which mount failed."""
        report = self._thaw_mounts(reversed(session.mountpoints))
        undone = len(report.thawed) + len(report.not_frozen)
        self._finish(session, report, phase="freeze-fail")
        self._log.error(
            "VSS: op=FREEZE: failed: FREEZE of %s failed: %s; thawed the %d filesystem(s) "
            "frozen before it",
            mountpoint,
            why,
            undone,
        )

    # -- THAW -----------------------------------------------------------------------

    def thaw(self) -> HvStatus:
        """Thaw every mount (all attempted), then run the thaw hooks in reverse order."""
        if self._crash_consistent:
            self._log.info("VSS: op=THAW: succeeded (crash-consistent mode, nothing to thaw)")
            return HvStatus.S_OK
        session = self._session
        if session is None:
            # No FREEZE of ours is in effect (a restart, or the watchdog came
            # first): thaw what the journal and the plan name, as the
            # reference thaws every mount; FITHAW on a thawed fs is harmless.
            report = self.thaw_everything()
            return self._report_thaw(report)
        report = self._thaw_mounts(reversed(session.mountpoints))
        self._finish(session, report, phase="thaw")
        return self._report_thaw(report)

    def _report_thaw(self, report: ThawReport) -> HvStatus:
        for mountpoint, why in report.failed:
            self._log.error("VSS: THAW of %s failed: %s", mountpoint, why)
        if report.failed:
            self._log.error("VSS: op=THAW: failed")
            return HvStatus.E_FAIL
        self._log.info("VSS: op=THAW: succeeded (%d filesystem(s))", len(report.thawed))
        return HvStatus.S_OK

    def release(self, why: str) -> bool:
        """Undo a FREEZE still in effect (watchdog, device reset, shutdown); True if none is left.

        Thaws what this service froze and runs the thaw hooks; logs ``why``
        once the disks are writable again.
        """
        session = self._session
        if session is None:
            return True
        report = self._thaw_mounts(reversed(session.mountpoints))
        self._finish(session, report, phase="thaw")
        for mountpoint, failure in report.failed:
            self._log.error("VSS: THAW of %s failed: %s", mountpoint, failure)
        self._log.warning(
            "VSS: %s: thawed %d filesystem(s)%s",
            why,
            len(report.thawed) + len(report.not_frozen),
            f", {len(report.failed)} still frozen" if report.failed else "",
        )
        return not report.failed

    def thaw_everything(self) -> ThawReport:
        """Thaw what the journal recorded plus the current plan (`hvguest vss thaw`).

        Runs "thaw" for the hooks the journal recorded, so that a daemon killed
        while frozen does not leave applications quiesced either.
        """
        record = self._journal.recorded() or FrozenRecord()
        targets = list(reversed(record.mountpoints))
        targets += [m for m in reversed(self.plan().mountpoints) if m not in targets]
        report = self._thaw_mounts(targets)
        if not report.failed:
            self._journal.clear()
            self._run_hooks(reversed(record.hooks), "thaw")
        return report

    def recover(self) -> ThawReport | None:
        """At start-up: undo what a killed predecessor recorded, or None if it left nothing.

        hv_vss_daemon thaws before every (re)open; a new process only knows
        what to thaw thanks to the journal.
        """
        if self._journal.recorded() is None:
            return None
        report = self.thaw_everything()
        for mountpoint, why in report.failed:
            self._log.error("VSS: THAW of %s failed: %s", mountpoint, why)
        self._log.warning(
            "VSS: a previous daemon left a freeze behind: thawed %d filesystem(s)",
            len(report.thawed),
        )
        return report

    # -- shared ---------------------------------------------------------------------

    def _thaw_mounts(self, mountpoints: Iterable[str]) -> ThawReport:
        thawed: list[str] = []
        not_frozen: list[str] = []
        failed: list[tuple[str, str]] = []
        for mountpoint in mountpoints:
            try:
                outcome = self._freezer.thaw(mountpoint)
            except OperationFailed as failure:
                failed.append((mountpoint, str(failure)))
                continue
            (thawed if outcome is FreezeOutcome.DONE else not_frozen).append(mountpoint)
        return ThawReport(tuple(thawed), tuple(not_frozen), tuple(failed))

    def _finish(self, session: _Session, report: ThawReport, *, phase: str) -> None:
        """Close ``session`` after a thaw pass, or keep what is still frozen in it."""
        still = {mountpoint for mountpoint, _why in report.failed}
        session.mountpoints = [m for m in session.mountpoints if m in still]
        if session.mountpoints:
            # Hooks wait until the disks are writable; the next release retries.
            return
        self._session = None
        self._journal.clear()
        self._on_frozen(False)
        self._run_hooks(reversed(session.hooks), phase)

    def _run_hooks(self, hooks: Iterable[str], phase: str) -> None:
        for hook in hooks:
            result = self._hooks.run(hook, phase)
            if not result.ok:
                self._log.warning("VSS: %s hook %s failed: %s", phase, hook, result.detail)
