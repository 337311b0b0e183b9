"""The VSS daemon process against the simulator without freezing anything (no root needed)."""

from __future__ import annotations

from pathlib import Path

from hvguest.abi.constants import HvStatus
from hvguest.testing.daemon_process import vss_daemon
from hvguest.testing.vss_host import vss_freeze, vss_hot_backup, vss_thaw

from .rig import WAIT, wait_for

#: A mount point that exists nowhere: the plan is empty, so nothing can be frozen.
NOWHERE = 'include_mounts = ["/nonexistent/hvguest-test"]\n'


def test_crash_consistent_mode_answers_success(tmp_path: Path) -> None:
    with vss_daemon(tmp_path, config=NOWHERE + "crash_consistent = true\n") as daemon:
        host = daemon.sim.host
        assert vss_freeze(host, timeout=WAIT).status == HvStatus.S_OK
        assert vss_thaw(host, timeout=WAIT).status == HvStatus.S_OK
        assert daemon.stop() == 0
        notes = daemon.notifications()
    assert notes[0].startswith("READY=1\nSTATUS=registered with the kernel (crash-consistent")
    assert notes[-1] == "STOPPING=1"
    log = daemon.log()
    assert "op=FREEZE: succeeded (crash-consistent mode, nothing frozen)" in log
    assert "op=THAW: succeeded (crash-consistent mode" in log


def test_hot_backup_is_answered_success(tmp_path: Path) -> None:
    with vss_daemon(tmp_path, config=NOWHERE) as daemon:
        reply = vss_hot_backup(daemon.sim.host, timeout=WAIT)
        assert reply.status == HvStatus.S_OK
        daemon.stop()
    assert "VSS: op=CHECK HOT BACKUP" in daemon.log()


def test_log_lines_are_held_from_freeze_until_thaw(tmp_path: Path) -> None:
    with vss_daemon(tmp_path, config=NOWHERE) as daemon:
        host = daemon.sim.host
        assert vss_freeze(host, timeout=WAIT).status == HvStatus.S_OK
        assert "op=FREEZE" not in daemon.log()
        assert vss_thaw(host, timeout=WAIT).status == HvStatus.S_OK
        wait_for(lambda: "op=THAW" in daemon.log(), "the held lines")
        daemon.stop()
    log = daemon.log()
    assert log.index("op=FREEZE: succeeded (0 filesystem(s): none)") < log.index("op=THAW")


def test_reset_while_frozen_releases_the_log_and_reregisters(tmp_path: Path) -> None:
    with vss_daemon(tmp_path, config=NOWHERE) as daemon:
        sim = daemon.sim
        assert vss_freeze(sim.host, timeout=WAIT).status == HvStatus.S_OK
        sim.destroy("vss")
        wait_for(lambda: "device closed while frozen" in daemon.log(), "the reset thaw")
        sim.wait_registered(timeout=WAIT, name="vss")
        # The reset already thawed: this THAW cannot vouch for the snapshot.
        assert vss_thaw(sim.host, timeout=WAIT).status == HvStatus.E_FAIL
        daemon.stop()
