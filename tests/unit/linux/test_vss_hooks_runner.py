"""linux.hooks: which hook files are trusted, and how one run ends (exit, output, timeout)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from hvguest.linux.hooks import LinuxHookRunner

ME = os.getuid()


def hook(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def hooks_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hooks"
    directory.mkdir()
    directory.chmod(0o755)
    return directory


def test_missing_directory_means_no_hooks(tmp_path: Path) -> None:
    found = LinuxHookRunner(tmp_path / "absent", 1.0, trusted_uid=ME).discover()
    assert found.hooks == ()
    assert found.refused == ()


def test_discovery_sorts_and_refuses_unsafe_files(tmp_path: Path) -> None:
    directory = hooks_dir(tmp_path)
    hook(directory, "20-b", "exit 0\n")
    hook(directory, "10-a", "exit 0\n")
    hook(directory, "30-group-writable", "exit 0\n", mode=0o775)
    hook(directory, "40-plain", "exit 0\n", mode=0o644)
    hook(directory, "50-old~", "exit 0\n")
    hook(directory, ".hidden", "exit 0\n")
    (directory / "60-link").symlink_to(directory / "10-a")
    (directory / "70-dir").mkdir()
    found = LinuxHookRunner(directory, 1.0, trusted_uid=ME).discover()
    assert found.hooks == ("10-a", "20-b")
    assert dict(found.refused) == {
        "30-group-writable": "group- or world-writable (mode 0775)",
        "40-plain": "not executable",
        "60-link": "not a regular file (symlinks are not followed)",
        "70-dir": "not a regular file (symlinks are not followed)",
    }


def test_hooks_owned_by_someone_else_are_refused(tmp_path: Path) -> None:
    directory = hooks_dir(tmp_path)
    hook(directory, "10-a", "exit 0\n")
    found = LinuxHookRunner(directory, 1.0, trusted_uid=ME + 1).discover()
    assert found.hooks == ()
    assert found.refused == ((str(directory), f"hook directory owned by uid {ME}, not {ME + 1}"),)


def test_a_writable_directory_refuses_everything(tmp_path: Path) -> None:
    directory = hooks_dir(tmp_path)
    hook(directory, "10-a", "exit 0\n")
    directory.chmod(0o777)
    found = LinuxHookRunner(directory, 1.0, trusted_uid=ME).discover()
    assert found.hooks == ()
    assert "world-writable" in found.refused[0][1]


def test_run_passes_the_phase_and_reports_exit_status_with_output(tmp_path: Path) -> None:
    directory = hooks_dir(tmp_path)
    out = tmp_path / "out"
    hook(directory, "ok", f'echo "$1" > {out}\n')
    hook(directory, "bad", 'echo "it broke: $1"; exit 4\n')
    runner = LinuxHookRunner(directory, 5.0, trusted_uid=ME)
    assert runner.run("ok", "freeze").ok
    assert out.read_text() == "freeze\n"
    failed = runner.run("bad", "thaw")
    assert not failed.ok
    assert failed.detail == "exit status 4: it broke: thaw"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    directory = hooks_dir(tmp_path)
    pid_file = tmp_path / "child.pid"
    hook(directory, "stuck", f"sleep 300 & echo $! > {pid_file}; wait\n")
    result = LinuxHookRunner(directory, 0.5, trusted_uid=ME).run("stuck", "freeze")
    assert not result.ok
    assert result.detail == "timed out after 0.5 s; killed"
    child = Path(f"/proc/{pid_file.read_text().strip()}")
    deadline = time.monotonic() + 10
    while child.exists() and (child / "stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the hook's child survived"
        time.sleep(0.02)


def test_a_hook_that_vanished_is_reported(tmp_path: Path) -> None:
    result = LinuxHookRunner(hooks_dir(tmp_path), 1.0, trusted_uid=ME).run("gone", "thaw")
    assert not result.ok
    assert result.detail.startswith("cannot start")


def test_a_hook_that_leaves_a_background_program_running_succeeds(tmp_path: Path) -> None:
    # A thaw hook resuming a service in the background: the hook itself
    # exits 0 at once; the program it started keeps its stdout open. That is
    # success, and the program must not be killed as part of a "timeout".
    directory = hooks_dir(tmp_path)
    pid_file = tmp_path / "child.pid"
    hook(directory, "resume", f"sleep 300 & echo $! > {pid_file}; echo resumed\n")
    try:
        result = LinuxHookRunner(directory, 2.0, trusted_uid=ME).run("resume", "thaw")
        assert result.ok, result.detail
        child = Path(f"/proc/{pid_file.read_text().strip()}")
        assert (child / "stat").read_text().split()[2] != "Z"
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def test_a_failing_hook_reports_the_tail_of_long_output(tmp_path: Path) -> None:
    directory = hooks_dir(tmp_path)
    hook(
        directory, "noisy", "i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done; exit 3\n"
    )
    result = LinuxHookRunner(directory, 5.0, trusted_uid=ME).run("noisy", "freeze")
    assert not result.ok
    assert result.detail.startswith("exit status 3: ")
    assert result.detail.endswith("line 499")
