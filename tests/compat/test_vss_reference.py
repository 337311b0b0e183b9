"""VSS side by side: the same host sessions against hv_vss_daemon and hvguest, on real filesystems.

Each session runs first against the reference C daemon (Debian's
hyperv-daemons, through the LD_PRELOAD shim) and then against
``python -m hvguest vss -n``, both on the same two zram ext4 filesystems this
test creates, both confined by the shim (filtered mount table, FIFREEZE only
on those two mounts, never on "/"). What is compared is what the host sees
(status and flags of every answer) and the real frozen state of each
filesystem after every step. A difference fails the test unless it is listed
in ``KNOWN_DIFFERENCES`` and, with its reason, in docs/compat.md ("VSS").

The lifecycle tests pin where the reference falls short (S20: SIGTERM or
kill -9 while frozen) next to what hvguest does instead (V1, V2), and check
that both skip loop-device and read-only mounts and survive hibernation.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus, VssOp
from hvguest.testing.refshim import build_shim, stop_daemon
from hvguest.testing.refshim.vss import (
    REFERENCE_VSS_DAEMON,
    ReferenceVssFiles,
    launch_hvguest_vss,
    launch_reference_vss,
    redirection_proven,
    reference_vss_environment,
    shim_log_lines,
)
from hvguest.testing.simulator import Simulator
from hvguest.testing.vss_host import vss_request
from hvguest.testing.zram import (
    FIFREEZE,
    ScratchFs,
    loop_filesystem,
    scratch_filesystems,
    thaw_quietly,
    zram_supported,
)

pytestmark = [pytest.mark.root, pytest.mark.gcc]

#: Seconds any one step (registration, a host request, a child) may take.
STEP = 15.0
#: How long a write must stay blocked to count as "blocked by the freeze".
BLOCKED_FOR = 1.0
OK = HvStatus.S_OK

Launcher = Callable[..., tuple[subprocess.Popen[bytes], ReferenceVssFiles]]
LAUNCHERS: dict[str, Launcher] = {
    "reference": launch_reference_vss,
    "hvguest": launch_hvguest_vss,
}

#: (session, step index) -> why hvguest deliberately answers differently (see docs/compat.md).
KNOWN_DIFFERENCES: dict[tuple[str, int], str] = {}


@dataclass(frozen=True)
class Observation:
    """What one host request looked like from outside: the answer and the filesystems."""

    op: str
    status: int
    flags: int
    frozen: tuple[bool, ...]


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the shim")
    if not REFERENCE_VSS_DAEMON.exists():
        pytest.skip(f"{REFERENCE_VSS_DAEMON} absent: .ci/run installs hyperv-daemons")
    return build_shim(tmp_path_factory.mktemp("shim"))


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[list[ScratchFs]]:
    if not zram_supported():
        pytest.skip("needs root, zram and mkfs.ext4")
    with scratch_filesystems(2, tmp_path / "mnt") as filesystems:
        yield filesystems


def is_frozen(mountpoint: Path) -> bool:
    """FIFREEZE answers EBUSY when frozen; otherwise it froze our own fs, so thaw it again."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    except OSError as error:
        if error.errno == errno.EBUSY:
            return True
        raise
    finally:
        os.close(fd)
    thaw_quietly(mountpoint)
    return False


@dataclass
class Daemon:
    """A registered daemon under test: its simulator, process and shim files."""

    sim: Simulator
    process: subprocess.Popen[bytes]
    files: ReferenceVssFiles
    work: Path


@contextmanager
def daemon_running(
    implementation: str, shim: Path, work: Path, mountpoints: list[Path]
) -> Iterator[Daemon]:
    """One daemon on a fresh simulator; proven confined before the first FREEZE."""
    with (
        Simulator(work / "dev", services=("vss",), reply_timeout=STEP) as sim,
        (work / "daemon.log").open("wb") as log,
    ):
        process, files = LAUNCHERS[implementation](
            shim, sim.device_path("vss"), mountpoints, work / "work", stderr=log
        )
        try:
            sim.wait_registered(STEP, "vss")
            # A THAW with nothing frozen is harmless; the reference reads its
            # (fake) mount table for it, which proves the redirection.
            assert vss_request(sim.host, VssOp.THAW, timeout=STEP).status == OK
            if implementation == "reference":
                assert redirection_proven(files), shim_log_lines(files)
            yield Daemon(sim, process, files, work / "work")
            refused = [line for line in shim_log_lines(files) if line.startswith("refuse")]
            assert refused == [], f"{implementation} tried to touch other filesystems"
        finally:
            stop_daemon(process)
            for path in mountpoints:
                thaw_quietly(path)


@contextmanager
def running(
    implementation: str, shim: Path, work: Path, filesystems: list[ScratchFs]
) -> Iterator[Simulator]:
    """:func:`daemon_running` on ``filesystems``, when only the host side matters."""
    mountpoints = [fs.mountpoint for fs in filesystems]
    with daemon_running(implementation, shim, work, mountpoints) as daemon:
        yield daemon.sim


def run_session(
    implementation: str,
    shim: Path,
    work: Path,
    filesystems: list[ScratchFs],
    ops: list[VssOp],
) -> list[Observation]:
    observations = []
    with running(implementation, shim, work, filesystems) as sim:
        for op in ops:
            reply = vss_request(sim.host, op, timeout=STEP)
            frozen = tuple(is_frozen(fs.mountpoint) for fs in filesystems)
            observations.append(Observation(op.name, reply.status, reply.flags, frozen))
    return observations


def compare(session: str, observed: dict[str, list[Observation]]) -> None:
    reference, ours = observed["reference"], observed["hvguest"]
    assert len(reference) == len(ours)
    unexplained = [
        (index, theirs, mine)
        for index, (theirs, mine) in enumerate(zip(reference, ours, strict=True))
        if theirs != mine and (session, index) not in KNOWN_DIFFERENCES
    ]
    assert unexplained == [], f"{session}: differences not in docs/compat.md: {unexplained}"


BOTH_FROZEN = (True, True)
NONE_FROZEN = (False, False)

#: Each session's ops and what the reference (as documented in protocol.md section 4) does.
SESSIONS: dict[str, tuple[list[VssOp], list[tuple[int, tuple[bool, ...]]]]] = {
    "freeze_thaw": (
        [VssOp.FREEZE, VssOp.THAW],
        [(OK, BOTH_FROZEN), (OK, NONE_FROZEN)],
    ),
    "hot_backup": ([VssOp.HOT_BACKUP], [(OK, NONE_FROZEN)]),
    "thaw_without_freeze": ([VssOp.THAW], [(OK, NONE_FROZEN)]),
    # FIFREEZE's EBUSY on an already frozen fs counts as success; one THAW undoes it.
    "freeze_twice": (
        [VssOp.FREEZE, VssOp.FREEZE, VssOp.THAW],
        [(OK, BOTH_FROZEN), (OK, BOTH_FROZEN), (OK, NONE_FROZEN)],
    ),
}


@pytest.mark.parametrize("session", sorted(SESSIONS))
def test_session_matches_the_reference(
    session: str, shim: Path, tmp_path: Path, scratch: list[ScratchFs]
) -> None:
    ops, expected = SESSIONS[session]
    observed = {name: run_session(name, shim, tmp_path / name, scratch, ops) for name in LAUNCHERS}
    reference = [(o.status, o.frozen) for o in observed["reference"]]
    assert reference == expected, "the reference no longer behaves as protocol.md says"
    # S5: the daemon never sets the no-auto-recovery flag (a success cannot).
    assert all(o.flags == 0 for o in observed["reference"])
    compare(session, observed)


@pytest.mark.parametrize("implementation", sorted(LAUNCHERS))
def test_a_write_blocks_while_frozen_and_completes_after_thaw(
    implementation: str, shim: Path, tmp_path: Path, scratch: list[ScratchFs]
) -> None:
    target = scratch[0].mountpoint / "written-while-frozen"
    with running(implementation, shim, tmp_path, scratch) as sim:
        assert vss_request(sim.host, VssOp.FREEZE, timeout=STEP).status == OK
        writer = subprocess.Popen(["sh", "-c", f"echo data > '{target}'"])
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                writer.wait(BLOCKED_FOR)
            assert vss_request(sim.host, VssOp.THAW, timeout=STEP).status == OK
            assert writer.wait(STEP) == 0
        finally:
            if writer.poll() is None:
                thaw_quietly(scratch[0].mountpoint)
                writer.wait(STEP)
    assert target.read_text() == "data\n"


@pytest.mark.parametrize("implementation", sorted(LAUNCHERS))
def test_kernel_answered_ops_never_reach_either_daemon(
    implementation: str, shim: Path, tmp_path: Path, scratch: list[ScratchFs]
) -> None:
    with running(implementation, shim, tmp_path, scratch) as sim:
        answers = [
            vss_request(sim.host, op, flags=9, timeout=STEP)
            for op in (VssOp.CREATE, VssOp.GET_DM_INFO, VssOp.BU_COMPLETE)
        ]
    assert [(a.status, a.flags) for a in answers] == [(OK, 9), (OK, 0), (OK, 9)]


# --- lifecycle and policy: where the reference is known to fall short ---------------------


def start_write(mountpoint: Path) -> subprocess.Popen[bytes]:
    """A child that writes a file: it blocks while ``mountpoint`` is frozen."""
    return subprocess.Popen(["sh", "-c", f"echo data > '{mountpoint}/probe'"])


def thawed_eventually(mountpoint: Path) -> bool:
    """A write completes within STEP (without touching the freeze state ourselves)."""
    writer = start_write(mountpoint)
    try:
        return writer.wait(STEP) == 0
    except subprocess.TimeoutExpired:
        thaw_quietly(mountpoint)
        writer.wait(STEP)
        return False


def frozen_now(filesystems: list[ScratchFs]) -> tuple[bool, ...]:
    return tuple(is_frozen(fs.mountpoint) for fs in filesystems)


def stop_while_frozen(
    implementation: str,
    shim: Path,
    work: Path,
    filesystems: list[ScratchFs],
    stop: Callable[[Daemon], None],
) -> tuple[bool, ...]:
    """FREEZE, then ``stop`` the daemon; which filesystems are still frozen after it exited."""
    mountpoints = [fs.mountpoint for fs in filesystems]
    with daemon_running(implementation, shim, work, mountpoints) as daemon:
        assert vss_request(daemon.sim.host, VssOp.FREEZE, timeout=STEP).status == OK
        stop(daemon)
        daemon.process.wait(STEP)
        return frozen_now(filesystems)


def sigterm(daemon: Daemon) -> None:
    daemon.process.terminate()


def sigkill(daemon: Daemon) -> None:
    daemon.process.kill()


def test_sigterm_while_frozen(shim: Path, tmp_path: Path, scratch: list[ScratchFs]) -> None:
    left_frozen = {
        name: stop_while_frozen(name, shim, tmp_path / name, scratch, sigterm) for name in LAUNCHERS
    }
    # S20: the reference has no signal handling; SIGTERM leaves everything frozen.
    assert left_frozen["reference"] == BOTH_FROZEN
    # V1 (docs/compat.md): hvguest thaws on the way out.
    assert left_frozen["hvguest"] == NONE_FROZEN


def test_sigkill_while_frozen_and_hvguest_vss_thaw(
    shim: Path, tmp_path: Path, scratch: list[ScratchFs]
) -> None:
    assert stop_while_frozen("reference", shim, tmp_path / "ref", scratch, sigkill) == BOTH_FROZEN
    for fs in scratch:
        thaw_quietly(fs.mountpoint)

    def kill_then_thaw(daemon: Daemon) -> None:
        daemon.process.kill()
        daemon.process.wait(STEP)
        # What a unit's ExecStopPost= runs; under the same shim guard.
        env = reference_vss_environment(shim, daemon.sim.device_path("vss"), daemon.files)
        env["HVGUEST_CONFIG"] = str(daemon.work / "hvguest.toml")
        result = subprocess.run(
            [sys.executable, "-m", "hvguest", "vss", "thaw"],
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP,
            check=False,
        )
        assert result.returncode == 0, result.stderr

    assert stop_while_frozen("hvguest", shim, tmp_path / "ours", scratch, kill_then_thaw) == (
        NONE_FROZEN
    )


def suspend_while_frozen(
    implementation: str, shim: Path, work: Path, filesystems: list[ScratchFs]
) -> tuple[bool, bool, int]:
    """FREEZE, hibernate (fake THAW, reply EINVAL): thawed? re-registered? next FREEZE status."""
    mountpoints = [fs.mountpoint for fs in filesystems]
    with daemon_running(implementation, shim, work, mountpoints) as daemon:
        sim = daemon.sim
        assert vss_request(sim.host, VssOp.FREEZE, timeout=STEP).status == OK
        # The FREEZE was read before it was answered, so the fake THAW can be queued.
        sim.suspend("vss")
        thawed = all(thawed_eventually(path) for path in mountpoints)
        # The daemon's reply to the fake THAW gets EINVAL: it reopens and registers again.
        sim.wait_until(
            lambda: sim.is_registered("vss") and sim.pending_host_packets("vss") == 0,
            STEP,
            "re-registration",
        )
        status = vss_request(sim.host, VssOp.FREEZE, timeout=STEP).status
        vss_request(sim.host, VssOp.THAW, timeout=STEP)
        return thawed, daemon.process.poll() is None, status


def test_hibernation_while_frozen_thaws_through_the_fake_thaw(
    shim: Path, tmp_path: Path, scratch: list[ScratchFs]
) -> None:
    observed = {
        name: suspend_while_frozen(name, shim, tmp_path / name, scratch) for name in LAUNCHERS
    }
    assert observed["reference"] == (True, True, OK)
    assert observed["hvguest"] == observed["reference"]


def test_loop_and_read_only_mounts_are_skipped_by_both(
    shim: Path, tmp_path: Path, scratch: list[ScratchFs]
) -> None:
    writable, read_only = scratch
    subprocess.run(["mount", "-o", "remount,ro", str(read_only.mountpoint)], check=True)
    with loop_filesystem(tmp_path / "loop") as on_loop:
        checked = [writable, read_only, on_loop]
        mountpoints = [fs.mountpoint for fs in checked]
        observed = {}
        for name in LAUNCHERS:
            with daemon_running(name, shim, tmp_path / name, mountpoints) as daemon:
                status = vss_request(daemon.sim.host, VssOp.FREEZE, timeout=STEP).status
                # FIFREEZE "succeeds" on a read-only superblock, so freezing it would show.
                observed[name] = (status, frozen_now([writable, read_only, on_loop]))
                vss_request(daemon.sim.host, VssOp.THAW, timeout=STEP)
        assert observed["reference"] == (OK, (True, False, False))
        assert observed["hvguest"] == observed["reference"]


def failed_reply_while_frozen(
    implementation: str, shim: Path, work: Path, filesystems: list[ScratchFs]
) -> tuple[int, bool, bool]:
    """The FREEZE reply's write fails (as a late reply after the kernel's timeout does).

    The daemon reopens the device; the close fails the host's FREEZE. What
    the host saw, whether everything was thawed, whether the daemon registered again.
    """
    mountpoints = [fs.mountpoint for fs in filesystems]
    with daemon_running(implementation, shim, work, mountpoints) as daemon:
        sim = daemon.sim
        sim.inject_write_error("vss", errno.EINVAL)
        status = vss_request(sim.host, VssOp.FREEZE, timeout=STEP).status
        thawed = all(thawed_eventually(path) for path in mountpoints)
        sim.wait_registered(STEP, "vss")
        return status, thawed, daemon.process.poll() is None


def test_a_failed_reply_while_frozen_thaws_before_reopening(
    shim: Path, tmp_path: Path, scratch: list[ScratchFs]
) -> None:
    observed = {
        name: failed_reply_while_frozen(name, shim, tmp_path / name, scratch) for name in LAUNCHERS
    }
    # protocol.md 4.1: on reopen the reference thaws first; the close fails the host request.
    assert observed["reference"] == (HvStatus.E_FAIL, True, True)
    assert observed["hvguest"] == observed["reference"]
