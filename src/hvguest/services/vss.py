"""The VSS freeze/thaw service: which filesystems to freeze, in which order, and undoing it.

Replaces vss_operate() and the request dispatch of main() in
tools/hv/hv_vss_daemon.c. Pure: mounts, FIFREEZE/FITHAW, the journal and the
hooks arrive through the ports in ``hvguest.services.ports``.

The policy (``build_plan``) keeps the reference's rules (only /dev/ sources;
no read-only, vfat or loop-backed mounts; "/" last) and adds: filesystems
that cannot be frozen are skipped with a reason instead of failing the whole
FREEZE with EOPNOTSUPP; each superblock is frozen once (bind mounts, btrfs
subvolumes) through "/" if it is the root filesystem; mounts hidden under
another mount (at their path or over a parent directory) are skipped, since
opening the path reaches the one on top; and the [vss] include/exclude lists
narrow it all down (excluding a mount point excludes its whole filesystem).

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
    # Excluding a mount point excludes its filesystem: FIFREEZE acts on the
    # superblock, so freezing a bind mount of it would freeze it anyway.
    excluded = {m.device: m.mountpoint for m in mounts if m.mountpoint in policy.exclude_mounts}
    reached = reachable_mount_ids(mounts)
    for index, mount in enumerate(mounts):
        refusal = _refusal(mount, policy)
        if refusal is None and mount.device in excluded:
            reason = (
                f"same filesystem as {excluded[mount.device]}, which is in [vss] exclude_mounts"
            )
            refusal = SkippedMount(mount, reason, notable=False)
        if refusal is None and reached is not None and mount.mount_id not in reached:
            # Opening its mount point would reach (and freeze) the mount on top.
            refusal = SkippedMount(mount, "hidden under another mount at its path or a parent")
        if refusal is None and reached is None and last_at_path[mount.mountpoint] != index:
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


def reachable_mount_ids(mounts: Sequence[Mount]) -> set[int] | None:
    """IDs of the mounts a lookup of their own mount point reaches; None if IDs are unknown.

    mountinfo is not in mount order (on a booted system "/" comes after
    /proc), so "mounted later" cannot tell what covers what; the mount tree
    can: walk each mount point from the root mount, one directory at a time,
    stepping onto the mount attached there (and onto any mount stacked on it).
    """
    ids = {mount.mount_id for mount in mounts}
    roots = [m for m in mounts if m.mountpoint == ROOT and m.parent_id not in ids]
    if 0 in ids or len(roots) != 1:
        return None
    attached = {(mount.parent_id, mount.mountpoint): mount for mount in mounts}

    def on_top(mount: Mount, path: str) -> Mount:
        for _ in mounts:  # bounded: a damaged table must not loop forever
            above = attached.get((mount.mount_id, path))
            if above is None:
                break
            mount = above
        return mount

    reached: set[int] = set()
    for mount in mounts:
        current = on_top(roots[0], ROOT)
        path = ""
        for part in mount.mountpoint.split("/"):
            if not part:
                continue
            path += "/" + part
            child = attached.get((current.mount_id, path))
            if child is not None:
                current = on_top(child, path)
        if current is mount:
            reached.add(mount.mount_id)
    return reached


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
    #: Recorded as frozen, but no longer a mount point: left alone, since a
    #: FITHAW on the bare directory would thaw the filesystem below it.
    gone: tuple[str, ...] = ()


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
        #: Why the last FREEZE was undone before its THAW (watchdog, reset), if it was.
        self._undone_early: str | None = None
        #: Thaw hooks a THAW left to run after its reply (``run_deferred_hooks``).
        self._deferred_hooks: tuple[str, ...] = ()
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
        return self._plan_of(self._mounts.mounts())

    def _plan_of(self, mounts: Sequence[Mount]) -> FreezePlan:
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
        self.run_deferred_hooks()
        if self._session is not None and not self.release("a new FREEZE arrived while frozen"):
            return HvStatus.E_FAIL
        self._undone_early = None
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
            # In the session before the ioctl: if anything unexpected escapes
            # after FIFREEZE took effect, THAW and release still undo it.
            session.mountpoints.append(mount.mountpoint)
            try:
                self._freezer.freeze(mount.mountpoint)
            except OperationFailed as failure:
                session.mountpoints.pop()
                self._fail_freeze(session, mount.mountpoint, str(failure))
                return HvStatus.E_FAIL
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
        """Thaw every mount (all attempted); the thaw hooks wait for ``run_deferred_hooks``.

        HV_E_FAIL also when the watchdog or a reset undid this freeze before it.
        """
        if self._crash_consistent:
            self._log.info("VSS: op=THAW: succeeded (crash-consistent mode, nothing to thaw)")
            return HvStatus.S_OK
        session = self._session
        if session is None:
            # No FREEZE of ours is in effect (a restart, or the watchdog came
            # first): thaw what the journal and the plan name, as the
            # reference thaws every mount; FITHAW on a thawed fs is harmless.
            status = self._report_thaw(self.thaw_everything())
        else:
            report = self._thaw_mounts(reversed(session.mountpoints))
            self._finish(session, report, phase="thaw", defer_hooks=True)
            status = self._report_thaw(report)
        undone, self._undone_early = self._undone_early, None
        if undone is not None:
            # The guest did not stay frozen until this THAW (the watchdog or a
            # reset thawed, maybe only in part), so the host's snapshot may not
            # be consistent; say so, as Windows VSS fails a backup whose
            # writes were held too long.
            self._log.error("VSS: op=THAW: failed: the freeze was already undone (%s)", undone)
            return HvStatus.E_FAIL
        return status

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
        self._undone_early = why
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
        mounts = self._mounts.mounts()
        mounted = {mount.mountpoint for mount in mounts}
        recorded = list(reversed(record.mountpoints))
        targets = [m for m in recorded if m in mounted]
        targets += [m for m in reversed(self._plan_of(mounts).mountpoints) if m not in targets]
        gone = tuple(m for m in recorded if m not in mounted)
        done = self._thaw_mounts(targets)
        report = ThawReport(done.thawed, done.not_frozen, done.failed, gone)
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
        for mountpoint in report.gone:
            self._log.warning("VSS: %s was recorded as frozen but is no longer mounted", mountpoint)
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

    @property
    def hooks_pending(self) -> bool:
        """A THAW was answered and its thaw hooks have not run yet."""
        return bool(self._deferred_hooks)

    def run_deferred_hooks(self) -> None:
        """Run the thaw hooks of the last THAW (the daemon calls it after the reply)."""
        hooks, self._deferred_hooks = self._deferred_hooks, ()
        self._run_hooks(hooks, "thaw")

    def _finish(
        self, session: _Session, report: ThawReport, *, phase: str, defer_hooks: bool = False
    ) -> None:
        """Close ``session`` after a thaw pass, or keep what is still frozen in it.

        ``defer_hooks``: the kernel waits only 30 s for a THAW's reply, and the
        hooks may take longer (each up to hook_timeout): the reply goes first.
        """
        still = {mountpoint for mountpoint, _why in report.failed}
        session.mountpoints = [m for m in session.mountpoints if m in still]
        if session.mountpoints:
            # Hooks wait until the disks are writable; the next release retries.
            return
        self._session = None
        self._journal.clear()
        self._on_frozen(False)
        if defer_hooks:
            self._deferred_hooks = tuple(reversed(session.hooks))
            return
        self._run_hooks(reversed(session.hooks), phase)

    def _run_hooks(self, hooks: Iterable[str], phase: str) -> None:
        for hook in hooks:
            result = self._hooks.run(hook, phase)
            if not result.ok:
                self._log.warning("VSS: %s hook %s failed: %s", phase, hook, result.detail)
