"""Hook scripts around a real freeze: order, refusal, timeout kills the whole group."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.linux.freeze import LinuxFreezer
from hvguest.linux.hooks import LinuxHookRunner
from hvguest.testing.vss_host import vss_freeze, vss_thaw
from hvguest.testing.zram import scratch_filesystems, thaw_quietly

from .rig import WAIT, VssRig, is_frozen, process_state, require_zram, wait_for

pytestmark = pytest.mark.root

StartVss = Callable[..., contextlib.AbstractContextManager[VssRig]]


def write_hook(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def make_hooks_dir(tmp_path: Path) -> Path:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    hooks.chmod(0o755)
    return hooks


def test_hooks_run_in_order_and_unsafe_ones_are_refused(
    tmp_path: Path, start_vss: StartVss
) -> None:
    require_zram()
    hooks = make_hooks_dir(tmp_path)
    journal = tmp_path / "hooks.log"
    record = f'echo "$(basename "$0") $1" >> {journal}\n'
    write_hook(hooks, "10-db", record)
    write_hook(hooks, "20-app", record)
    write_hook(hooks, "15-open", record, mode=0o757)
    write_hook(hooks, "README", "not a hook\n", mode=0o644)
    with scratch_filesystems(1, tmp_path / "mnt") as (zram,):
        config = f'hooks_dir = "{hooks}"\n'
        with start_vss([zram.mountpoint], config=config) as rig:
            assert rig.plan()["hooks"] == ["10-db", "20-app"]
            assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
            assert journal.read_text().split("\n")[:2] == ["10-db freeze", "20-app freeze"]
            assert is_frozen(zram.mountpoint)
            assert vss_thaw(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
            rig.daemon.stop()
    assert journal.read_text().splitlines() == [
        "10-db freeze",
        "20-app freeze",
        "20-app thaw",
        "10-db thaw",
    ]
    log = rig.daemon.log()
    assert "hook 15-open refused: group- or world-writable (mode 0757)" in log
    assert "hook README refused: not executable" in log


def test_hook_timeout_kills_its_group_and_aborts_the_freeze(
    tmp_path: Path, start_vss: StartVss
) -> None:
    require_zram()
    hooks = make_hooks_dir(tmp_path)
    journal = tmp_path / "hooks.log"
    pid_file = tmp_path / "grandchild.pid"
    write_hook(
        hooks,
        "10-stuck",
        f'echo "10-stuck $1" >> {journal}\n'
        f'if [ "$1" = freeze ]; then sleep 300 & echo $! > {pid_file}; wait; fi\n',
    )
    with scratch_filesystems(1, tmp_path / "mnt") as (zram,):
        config = f'hooks_dir = "{hooks}"\nhook_timeout = 1\n'
        with start_vss([zram.mountpoint], config=config) as rig:
            assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.E_FAIL
            assert not is_frozen(zram.mountpoint)
            rig.daemon.stop()
    grandchild = int(pid_file.read_text())
    wait_for(lambda: not Path(f"/proc/{grandchild}").exists(), "the hook's child to be killed")
    assert journal.read_text().splitlines() == ["10-stuck freeze", "10-stuck freeze-fail"]
    assert "pre-freeze hook 10-stuck failed: timed out after 1 s; killed" in rig.daemon.log()


def test_failing_hook_does_not_abort_when_configured(tmp_path: Path, start_vss: StartVss) -> None:
    require_zram()
    hooks = make_hooks_dir(tmp_path)
    write_hook(hooks, "10-fails", 'echo "cannot reach db" >&2; exit 3\n')
    with scratch_filesystems(1, tmp_path / "mnt") as (zram,):
        config = f'hooks_dir = "{hooks}"\nhook_failure_aborts = false\n'
        with start_vss([zram.mountpoint], config=config) as rig:
            assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
            assert is_frozen(zram.mountpoint)
            assert vss_thaw(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
            rig.daemon.stop()
    assert "pre-freeze hook 10-fails failed: exit status 3: cannot reach db" in rig.daemon.log()


def test_a_slow_thaw_hook_does_not_hold_back_the_thaw_reply(
    tmp_path: Path, start_vss: StartVss
) -> None:
    # The kernel fails a THAW whose reply takes longer than its timeout (30 s,
    # 5 s in this simulator): thaw hooks run after the reply, not before it.
    require_zram()
    hooks = make_hooks_dir(tmp_path)
    journal = tmp_path / "hooks.log"
    go = tmp_path / "go"
    write_hook(
        hooks,
        "10-slow",
        f'if [ "$1" = thaw ]; then i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do '
        f"sleep 0.05; i=$((i+1)); done; fi\n"
        f'echo "10-slow $1" >> {journal}\n',
    )
    with scratch_filesystems(1, tmp_path / "mnt") as (zram,):
        config = f'hooks_dir = "{hooks}"\nhook_timeout = 60\n'
        with start_vss([zram.mountpoint], config=config) as rig:
            try:
                assert vss_freeze(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
                assert vss_thaw(rig.daemon.sim.host, timeout=WAIT).status == HvStatus.S_OK
                assert not is_frozen(zram.mountpoint)
            finally:
                go.touch()
            wait_for(lambda: "10-slow thaw" in journal.read_text(), "the thaw hook")
            rig.daemon.stop()
    assert journal.read_text().splitlines() == ["10-slow freeze", "10-slow thaw"]


def test_a_hook_that_sigkill_cannot_end_is_left_behind_not_waited_for(tmp_path: Path) -> None:
    # A write to a frozen filesystem sleeps uninterruptibly: SIGKILL stays
    # pending until the thaw. The runner must come back to serve the host.
    require_zram()
    hooks = make_hooks_dir(tmp_path)
    pid_file = tmp_path / "hook.pid"
    with scratch_filesystems(1, tmp_path / "mnt") as (scratch,):
        target = scratch.mountpoint / "file"
        write_hook(hooks, "10-writes", f"echo $$ > {pid_file}\necho data > {target}\n")
        runner = LinuxHookRunner(hooks, 0.5, trusted_uid=0, kill_grace=0.5)
        try:
            LinuxFreezer().freeze(str(scratch.mountpoint))  # our own scratch fs, thawed below
            result = runner.run("10-writes", "freeze")
            pid = int(pid_file.read_text())
            assert process_state(pid) == "D"  # still blocked in the kernel, SIGKILL pending
        finally:
            thaw_quietly(scratch.mountpoint)
        assert not result.ok
        assert result.detail == (
            f"timed out after 0.5 s; killed, but still there 0.5 s later"
            f" (pid {pid}, stuck in the kernel?): left behind"
        )
        # Thawed, the pending SIGKILL ends it before its write.
        wait_for(lambda: process_state(pid) == "Z", "the left-behind hook to die")
        assert not target.exists() or target.read_bytes() == b""
        assert runner.run("10-writes", "thaw").ok  # and the next hook runs as usual
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the zombie to be reaped")
