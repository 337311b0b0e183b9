"""The policy against real mounts: loop devices skipped, bind mounts frozen once, plan output."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.testing.vss_host import vss_freeze, vss_thaw
from hvguest.testing.zram import loop_filesystem, scratch_filesystems

from .rig import WAIT, VssRig, hvguest, is_frozen, require_zram, toml_list

pytestmark = pytest.mark.root

StartVss = Callable[..., contextlib.AbstractContextManager[VssRig]]


def test_loop_device_filesystem_is_skipped(tmp_path: Path, start_vss: StartVss) -> None:
    require_zram()
    with (
        scratch_filesystems(1, tmp_path / "mnt") as (zram,),
        loop_filesystem(tmp_path / "loop") as loop,
    ):
        mounts = [zram.mountpoint, loop.mountpoint]
        with start_vss(mounts, expect=[zram.mountpoint]) as rig:
            skipped = {item["mountpoint"]: item["reason"] for item in rig.plan()["skipped"]}
            assert "loop device" in skipped[str(loop.mountpoint)]
            assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
            assert is_frozen(zram.mountpoint)
            assert not is_frozen(loop.mountpoint)
            assert vss_thaw(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
            assert not is_frozen(zram.mountpoint)


def test_bind_mount_is_frozen_once(tmp_path: Path, start_vss: StartVss) -> None:
    require_zram()
    with scratch_filesystems(1, tmp_path / "mnt") as (zram,):
        bind = tmp_path / "bind"
        bind.mkdir()
        subprocess.run(["mount", "--bind", str(zram.mountpoint), str(bind)], check=True)
        try:
            with start_vss([zram.mountpoint, bind], expect=[zram.mountpoint]) as rig:
                skipped = {i["mountpoint"]: i["reason"] for i in rig.plan()["skipped"]}
                assert skipped[str(bind)].startswith(f"same filesystem as {zram.mountpoint}")
                assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
                assert is_frozen(bind)
                assert vss_thaw(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
                assert not is_frozen(bind)
                rig.daemon.stop()
            assert "succeeded (1 filesystem(s)" in rig.daemon.log()
        finally:
            subprocess.run(["umount", str(bind)], check=False)


def test_plan_text_and_json(tmp_path: Path) -> None:
    require_zram()
    with scratch_filesystems(2, tmp_path / "mnt") as filesystems:
        first, second = (fs.mountpoint for fs in filesystems)
        config = tmp_path / "plan.toml"
        config.write_text(
            f"[vss]\ninclude_mounts = {toml_list([first, second, '/proc'])}\n"
            f'hooks_dir = "{tmp_path / "hooks"}"\n'
        )
        text = hvguest(config, "vss", "plan")
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0] == "Would freeze, in this order:"
        assert lines[1].split()[:2] == ["1.", str(first)]
        assert lines[2].split()[:2] == ["2.", str(second)]
        assert lines[1].endswith(f"ext4 on {filesystems[0].device}")
        assert "Not frozen:" in lines
        assert any(line.split()[0] == "/" and "include_mounts" in line for line in lines[4:])
        assert any(line.split()[0] == "/proc" and "pseudo filesystem" in line for line in lines)
        assert lines[-1] == f"Hooks in {tmp_path / 'hooks'}: none"
        document = json.loads(hvguest(config, "vss", "plan", "--json").stdout)
        assert [item["mountpoint"] for item in document["freeze"]] == [str(first), str(second)]
        assert document["freeze"][0]["order"] == 1
        assert document["freeze"][0]["fstype"] == "ext4"
        assert document["crash_consistent"] is False
        reasons = {item["mountpoint"]: item["reason"] for item in document["skipped"]}
        assert reasons["/"] == "not in [vss] include_mounts"


def test_demo_freezes_exactly_the_given_filesystems(tmp_path: Path) -> None:
    from hvguest.daemon.demo_vss import demo_vss

    require_zram()
    with scratch_filesystems(2, tmp_path / "mnt") as filesystems:
        lines: list[str] = []
        mounts = [fs.mountpoint for fs in filesystems]
        assert demo_vss(lambda _actor, text: lines.append(text), tmp_path / "demo", mounts)
        assert f"plan: freeze {mounts[0]}, {mounts[1]}" in lines
        assert f"all of {mounts[0]}, {mounts[1]} frozen" in lines
        assert "everything thawed" in lines
        assert not any(is_frozen(mount) for mount in mounts)


def test_the_demo_command_freezes_a_vss_fs_for_real(tmp_path: Path) -> None:
    """`hvguest demo --vss-fs MOUNT` (the README's real-freeze variant) end to end."""
    require_zram()
    with scratch_filesystems(1, tmp_path / "mnt") as filesystems:
        mount = filesystems[0].mountpoint
        result = subprocess.run(
            [sys.executable, "-m", "hvguest", "demo", "--vss-fs", str(mount)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"plan: freeze {mount}" in result.stdout
        assert f"all of {mount} frozen" in result.stdout
        assert "everything thawed" in result.stdout
        assert not is_frozen(mount)


def test_a_mount_covered_by_a_mount_over_its_parent_is_not_planned(tmp_path: Path) -> None:
    # Opening the covered mount point reaches the covering filesystem, so
    # "freezing" it would freeze the wrong one (or fail): it is skipped.
    require_zram()
    config = tmp_path / "hvguest.toml"
    with scratch_filesystems(1, tmp_path / "mnt") as (zram,):
        config.write_text(
            f'[paths]\nrun = "{tmp_path / "run"}"\n'
            f'[vss]\nhooks_dir = "{tmp_path / "hooks"}"\n'
            f"include_mounts = {toml_list([zram.mountpoint])}\n"
        )
        cover = zram.mountpoint.parent
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "cover", str(cover)], check=True)
        try:
            result = hvguest(config, "vss", "plan", "--json")
        finally:
            subprocess.run(["umount", str(cover)], check=True)
        assert result.returncode == 0, result.stderr
        plan = json.loads(result.stdout)
        assert plan["freeze"] == []
        skipped = {item["mountpoint"]: item["reason"] for item in plan["skipped"]}
        assert "hidden under another mount" in skipped[str(zram.mountpoint)]
