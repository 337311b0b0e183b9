"""The VSS daemon freezing real zram filesystems: writes block, failures roll back."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.testing.vss_host import vss_freeze, vss_hot_backup, vss_thaw
from hvguest.testing.zram import ScratchFs, scratch_filesystems, xfs_supported

from .rig import (
    WAIT,
    VssRig,
    blocked_writer,
    is_frozen,
    process_state,
    recorded,
    require_zram,
    wait_for,
)

pytestmark = pytest.mark.root

StartVss = Callable[..., contextlib.AbstractContextManager[VssRig]]


@pytest.fixture
def two_ext4(tmp_path: Path) -> Iterator[list[ScratchFs]]:
    require_zram()
    with scratch_filesystems(2, tmp_path / "mnt") as filesystems:
        yield filesystems


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_write_blocks_while_frozen_and_completes_after_thaw(
    tmp_path: Path, start_vss: StartVss, fstype: str
) -> None:
    require_zram()
    if fstype == "xfs" and not xfs_supported():
        pytest.skip("mkfs.xfs is not installed")
    with scratch_filesystems(2, tmp_path / "mnt", fstype=fstype) as filesystems:
        mounts = [fs.mountpoint for fs in filesystems]
        with start_vss(mounts) as rig:
            host = rig.daemon.sim.host
            assert vss_freeze(host, timeout=WAIT).status == HvStatus.S_OK
            assert all(is_frozen(mount) for mount in mounts)
            state = recorded(rig)
            assert all(str(mount) in state for mount in mounts)
            target = mounts[0] / "file"
            with blocked_writer(target) as writer:
                wait_for(lambda: process_state(writer.pid) == "D", "the writer to block")
                assert writer.poll() is None
                assert not target.exists() or target.read_bytes() == b""
                assert vss_thaw(host, timeout=WAIT).status == HvStatus.S_OK
                assert writer.wait(timeout=WAIT) == 0
            assert target.read_bytes() == b"written"
            assert not any(is_frozen(mount) for mount in mounts)
            assert recorded(rig) == ""
            assert rig.daemon.stop() == 0
        log = rig.daemon.log()
        assert "VSS: op=FREEZE: succeeded (2 filesystem(s)" in log
        assert "VSS: op=THAW: succeeded" in log


def test_hot_backup_is_answered_without_freezing(
    two_ext4: list[ScratchFs], start_vss: StartVss
) -> None:
    mounts = [fs.mountpoint for fs in two_ext4]
    with start_vss(mounts) as rig:
        assert vss_hot_backup(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
        assert not any(is_frozen(mount) for mount in mounts)


def test_a_mount_that_cannot_freeze_thaws_the_others_and_fails(
    two_ext4: list[ScratchFs], tmp_path: Path, start_vss: StartVss
) -> None:
    tmpfs = tmp_path / "tmpfs"
    tmpfs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(tmpfs)], check=True)
    try:
        mounts = [fs.mountpoint for fs in two_ext4] + [tmpfs]
        # Trusting tmpfs puts it in the plan; FIFREEZE then fails with EOPNOTSUPP.
        with start_vss(mounts, config='include_fstypes = ["ext4", "tmpfs"]\n') as rig:
            reply = vss_freeze(rig.daemon.sim.host, timeout=WAIT)
            assert reply.status == HvStatus.E_FAIL
            assert not any(is_frozen(fs.mountpoint) for fs in two_ext4)
            assert recorded(rig) == ""
            rig.daemon.stop()
        log = rig.daemon.log()
        assert f"FREEZE of {tmpfs} failed: FIFREEZE: EOPNOTSUPP" in log
        assert "thawed the 2 filesystem(s) frozen before it" in log
    finally:
        subprocess.run(["umount", str(tmpfs)], check=False)


def test_watchdog_thaws_when_no_thaw_arrives(
    two_ext4: list[ScratchFs], start_vss: StartVss
) -> None:
    mounts = [fs.mountpoint for fs in two_ext4]
    with start_vss(mounts, config="auto_thaw_after = 0.5\n") as rig:
        assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
        wait_for(lambda: not any(is_frozen(m) for m in mounts), "the watchdog to thaw")
        # A late THAW is answered HV_E_FAIL: the guest did not stay frozen
        # until it, so the host must not count the snapshot as consistent.
        assert vss_thaw(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.E_FAIL
        rig.daemon.stop()
    assert "no THAW within 0.5 s of FREEZE: thawed 2 filesystem(s)" in rig.daemon.log()


def test_device_reset_while_frozen_thaws_and_reregisters(
    two_ext4: list[ScratchFs], start_vss: StartVss
) -> None:
    mounts = [fs.mountpoint for fs in two_ext4]
    with start_vss(mounts) as rig:
        sim = rig.daemon.sim
        assert vss_freeze(sim.host, timeout=WAIT).status == HvStatus.S_OK
        sim.destroy("vss")
        wait_for(lambda: not any(is_frozen(m) for m in mounts), "the reset to thaw")
        sim.wait_registered(timeout=WAIT, name="vss")
        assert vss_freeze(sim.host, timeout=WAIT).status == HvStatus.S_OK
        assert vss_thaw(sim.host, timeout=WAIT).status == HvStatus.S_OK
        rig.daemon.stop()
    assert "device closed while frozen: thawed 2 filesystem(s)" in rig.daemon.log()


def test_sigterm_while_frozen_thaws(two_ext4: list[ScratchFs], start_vss: StartVss) -> None:
    mounts = [fs.mountpoint for fs in two_ext4]
    with start_vss(mounts) as rig:
        assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
        assert rig.daemon.stop() == 0
        assert not any(is_frozen(mount) for mount in mounts)


def test_kill_9_while_frozen_then_hvguest_vss_thaw(
    two_ext4: list[ScratchFs], start_vss: StartVss
) -> None:
    from .rig import hvguest

    mounts = [fs.mountpoint for fs in two_ext4]
    with start_vss(mounts) as rig:
        assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
        rig.daemon.process.kill()
        rig.daemon.process.wait(timeout=WAIT)
        assert all(is_frozen(mount) for mount in mounts)
        result = hvguest(rig.config_path, "vss", "thaw")
        assert result.returncode == 0, result.stderr
        assert sorted(result.stdout.split()) == sorted(
            ["thawed", "thawed", *(str(mount) for mount in mounts)]
        )
        assert not any(is_frozen(mount) for mount in mounts)
        assert recorded(rig) == ""
        again = hvguest(rig.config_path, "vss", "thaw")
        assert again.returncode == 0
        assert again.stdout.startswith("nothing was frozen")


def test_a_restarted_daemon_thaws_what_its_killed_predecessor_froze(
    two_ext4: list[ScratchFs], tmp_path: Path, start_vss: StartVss
) -> None:
    mounts = [fs.mountpoint for fs in two_ext4]
    with start_vss(mounts) as rig:
        assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
        rig.daemon.process.kill()
        rig.daemon.process.wait(timeout=WAIT)
        assert all(is_frozen(mount) for mount in mounts)
        env = dict(os.environ, HVGUEST_CONFIG=str(rig.config_path))
        with (tmp_path / "second.log").open("wb") as log:
            second = subprocess.Popen(
                [sys.executable, "-m", "hvguest", "vss", "-n"], env=env, stderr=log
            )
        try:
            rig.daemon.sim.wait_registered(timeout=WAIT, name="vss")
            assert not any(is_frozen(mount) for mount in mounts)
        finally:
            second.terminate()
            second.wait(timeout=WAIT)
    assert (
        "a previous daemon left a freeze behind: thawed 2" in (tmp_path / "second.log").read_text()
    )


def test_hibernation_fake_thaw_thaws_and_the_daemon_reopens(
    two_ext4: list[ScratchFs], start_vss: StartVss
) -> None:
    mounts = [fs.mountpoint for fs in two_ext4]
    with start_vss(mounts) as rig:
        sim = rig.daemon.sim
        assert vss_freeze(sim.host, timeout=WAIT).status == HvStatus.S_OK
        sim.suspend("vss")
        wait_for(lambda: not any(is_frozen(m) for m in mounts), "the fake THAW to thaw")
        wait_for(lambda: "reopening" in rig.daemon.log(), "the daemon to reopen")
        sim.wait_registered(timeout=WAIT, name="vss")
        assert vss_freeze(sim.host, timeout=WAIT).status == HvStatus.S_OK
        assert vss_thaw(sim.host, timeout=WAIT).status == HvStatus.S_OK


def test_freeze_slower_than_the_kernel_timeout_ends_thawed(
    tmp_path: Path, two_ext4: list[ScratchFs], start_vss: StartVss
) -> None:
    """The kernel fails the host after its FREEZE timeout; the late reply reopens and thaws."""
    hooks = tmp_path / "hooks.d"
    hooks.mkdir(mode=0o755)
    slow = hooks / "10-slow"
    slow.write_text('#!/bin/sh\n[ "$1" = freeze ] && sleep 2\nexit 0\n')
    slow.chmod(0o755)
    mounts = [fs.mountpoint for fs in two_ext4]
    config = f'hooks_dir = "{hooks}"\n'
    with start_vss(mounts, config=config, freeze_timeout=0.5) as rig:
        sim = rig.daemon.sim
        assert vss_freeze(sim.host, timeout=WAIT).status == HvStatus.E_FAIL
        wait_for(lambda: "reopening" in rig.daemon.log(), "the late reply to be refused")
        wait_for(lambda: not any(is_frozen(m) for m in mounts), "the reopen to thaw")
        sim.wait_registered(timeout=WAIT, name="vss")
