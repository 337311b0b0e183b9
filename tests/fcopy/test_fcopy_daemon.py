"""The FCOPY daemon end to end: host -> simulated hv_fcopy.c -> `hvguest fcopy` -> files."""

from __future__ import annotations

import os
import shutil
import signal
import stat
from pathlib import Path

import pytest

from hvguest.abi.constants import DATA_FRAGMENT, HvStatus
from hvguest.protocol.fcopy_messages import CREATE_PATH, OVER_WRITE
from hvguest.testing.daemon_process import STEP_TIMEOUT, RunningDaemon, fcopy_daemon
from hvguest.testing.fcopy_host import (
    copy_bytes,
    fcopy_cancel,
    fcopy_complete,
    fcopy_raw,
    fcopy_start,
    fcopy_write,
    header_message,
    write_message,
)

from .helpers import entries, leftovers, poll_until

PAYLOAD = bytes(range(256)) * 100 + b"tail"  # 25604 bytes: 4 full fragments and a short one


def wait_for_registrations(daemon: RunningDaemon, count: int) -> None:
    """Until the daemon has registered ``count`` times (it logs each one)."""
    poll_until(
        lambda: (
            daemon.log().count("registered; kernel version") >= count
            and daemon.sim.is_registered("fcopy")
        ),
        STEP_TIMEOUT,
        f"registration number {count}",
    )


@pytest.mark.parametrize(
    "name",
    [
        "Grüße – 報告 📄.txt",  # noqa: RUF001 - a non-ASCII dash is the point
        "café-naïve.bin",
        "日本語のファイル名",
        "emoji-😀-𝄞.dat",
        "plain.txt",
    ],
)
def test_unicode_names_arrive_byte_exact(daemon: RunningDaemon, dest: Path, name: str) -> None:
    assert copy_bytes(daemon.sim.host, PAYLOAD, str(dest), name) == HvStatus.S_OK
    assert entries(dest) == [name]
    assert (dest / name).read_bytes() == PAYLOAD
    assert stat.S_IMODE((dest / name).stat().st_mode) == 0o644


def test_finished_copy_is_logged_once_with_size_and_speed(
    daemon: RunningDaemon, dest: Path
) -> None:
    copy_bytes(daemon.sim.host, PAYLOAD, str(dest), "logged.bin")
    daemon.stop()
    lines = [line for line in daemon.log().splitlines() if "copied" in line]
    assert len(lines) == 1
    assert f"{dest}/logged.bin: {len(PAYLOAD)} bytes in" in lines[0]
    assert "MB/s" in lines[0]


def test_existing_file_without_overwrite_is_kept(daemon: RunningDaemon, dest: Path) -> None:
    (dest / "f").write_bytes(b"old")
    status = copy_bytes(daemon.sim.host, PAYLOAD, str(dest), "f")
    assert status == HvStatus.ERROR_ALREADY_EXISTS
    assert (dest / "f").read_bytes() == b"old"
    assert entries(dest) == ["f"]


def test_overwrite_replaces_only_when_complete(daemon: RunningDaemon, dest: Path) -> None:
    host = daemon.sim.host
    (dest / "f").write_bytes(b"old")
    assert fcopy_start(host, str(dest), "f", flags=OVER_WRITE, file_size=4) == 0
    assert fcopy_write(host, 0, b"new!") == 0
    assert (dest / "f").read_bytes() == b"old"
    assert fcopy_complete(host) == 0
    assert (dest / "f").read_bytes() == b"new!"
    assert entries(dest) == ["f"]


def test_missing_directory_without_create_path_fails(daemon: RunningDaemon, dest: Path) -> None:
    status = copy_bytes(daemon.sim.host, PAYLOAD, str(dest / "a" / "b"), "f")
    assert status == HvStatus.E_FAIL
    assert entries(dest) == []


def test_create_path_creates_every_directory_including_the_last(
    daemon: RunningDaemon, dest: Path
) -> None:
    # hv_fcopy_daemon.c creates "b" only if the path ends with "/" (S15).
    target_dir = dest / "a" / "b"
    status = copy_bytes(daemon.sim.host, PAYLOAD, str(target_dir), "f", flags=CREATE_PATH)
    assert status == HvStatus.S_OK
    assert (target_dir / "f").read_bytes() == PAYLOAD
    assert stat.S_IMODE(target_dir.stat().st_mode) == 0o755


def test_cancel_leaves_nothing(daemon: RunningDaemon, dest: Path) -> None:
    host = daemon.sim.host
    assert fcopy_start(host, str(dest), "f", file_size=len(PAYLOAD)) == 0
    assert fcopy_write(host, 0, PAYLOAD[:DATA_FRAGMENT]) == 0
    assert len(leftovers(dest)) == 1
    assert fcopy_cancel(host) == 0
    assert entries(dest) == []


def test_a_new_start_abandons_the_open_copy(daemon: RunningDaemon, dest: Path) -> None:
    host = daemon.sim.host
    assert fcopy_start(host, str(dest), "first", file_size=len(PAYLOAD)) == 0
    assert fcopy_write(host, 0, PAYLOAD[:100]) == 0
    assert copy_bytes(host, b"second", str(dest), "second") == 0
    assert entries(dest) == ["second"]


def test_short_copy_is_refused_at_complete_and_nothing_kept(
    daemon: RunningDaemon, dest: Path
) -> None:
    host = daemon.sim.host
    assert fcopy_start(host, str(dest), "f", file_size=10) == 0
    assert fcopy_write(host, 0, b"12345") == 0
    assert fcopy_complete(host) == HvStatus.E_FAIL
    assert entries(dest) == []


def test_write_past_the_announced_size_fails(daemon: RunningDaemon, dest: Path) -> None:
    host = daemon.sim.host
    assert fcopy_start(host, str(dest), "f", file_size=3) == 0
    assert fcopy_write(host, 0, b"1234") == HvStatus.E_FAIL
    assert entries(dest) == []


def test_device_rescind_abandons_the_copy_and_the_daemon_comes_back(
    daemon: RunningDaemon, dest: Path
) -> None:
    host = daemon.sim.host
    assert fcopy_start(host, str(dest), "f", file_size=len(PAYLOAD)) == 0
    assert fcopy_write(host, 0, PAYLOAD[:100]) == 0
    daemon.sim.destroy("fcopy")
    daemon.sim.wait_until(lambda: not leftovers(dest), STEP_TIMEOUT, "temp file removed")
    wait_for_registrations(daemon, 2)
    assert entries(dest) == []
    assert copy_bytes(daemon.sim.host, PAYLOAD, str(dest), "after") == 0
    assert entries(dest) == ["after"]


def test_hibernation_fake_cancel_abandons_the_copy(daemon: RunningDaemon, dest: Path) -> None:
    host = daemon.sim.host
    assert fcopy_start(host, str(dest), "f", file_size=len(PAYLOAD)) == 0
    assert fcopy_write(host, 0, PAYLOAD[:100]) == 0
    daemon.sim.suspend("fcopy")
    daemon.sim.wait_until(lambda: not leftovers(dest), STEP_TIMEOUT, "temp file removed")
    # The answer to the fake CANCEL fails with EINVAL: the daemon reopens the device.
    wait_for_registrations(daemon, 2)
    assert copy_bytes(daemon.sim.host, PAYLOAD, str(dest), "after") == 0
    assert entries(dest) == ["after"]


@pytest.mark.parametrize("reboot", [False, True], ids=["restart", "reboot-empties-run"])
def test_kill_9_mid_copy_then_restart_removes_the_leftover(
    tmp_path: Path, dest: Path, reboot: bool
) -> None:
    with fcopy_daemon(tmp_path) as first:
        host = first.sim.host
        assert fcopy_start(host, str(dest), "big.iso", file_size=len(PAYLOAD)) == 0
        assert fcopy_write(host, 0, PAYLOAD[:DATA_FRAGMENT]) == 0
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=STEP_TIMEOUT)
        assert len(leftovers(dest)) == 1
        if reboot:  # /run is a tmpfs: after a power cut it starts empty; [paths] state does not
            shutil.rmtree(tmp_path / "run", ignore_errors=True)
        with fcopy_daemon(tmp_path, sim=first.sim) as second:
            assert entries(dest) == []
            assert copy_bytes(second.sim.host, PAYLOAD, str(dest), "big.iso") == 0
            second.stop()
        assert "left by an interrupted copy" in second.log()
    assert entries(dest) == ["big.iso"]


def test_sigterm_mid_copy_removes_the_partial_file(daemon: RunningDaemon, dest: Path) -> None:
    host = daemon.sim.host
    assert fcopy_start(host, str(dest), "f", file_size=len(PAYLOAD)) == 0
    assert fcopy_write(host, 0, PAYLOAD[:100]) == 0
    assert daemon.stop() == 0
    assert entries(dest) == []


def test_policy_refuses_kernel_interfaces(daemon: RunningDaemon, tmp_path: Path) -> None:
    for directory in ("/proc/sys/kernel", "/sys/kernel", "/dev/shm"):
        status = copy_bytes(daemon.sim.host, b"x", directory, "hvguest-test-never-written")
        assert status == HvStatus.E_FAIL
    assert not Path("/dev/shm/hvguest-test-never-written").exists()
    daemon.stop()
    assert "denied directory /proc" in daemon.log()


def test_policy_from_the_configuration(tmp_path: Path, dest: Path) -> None:
    (dest / "in").mkdir()
    (dest / "in" / "secret").mkdir()
    (tmp_path / "elsewhere").mkdir()
    config = f'allowed_dirs = ["{dest / "in"}"]\ndenied_dirs = ["{dest / "in" / "secret"}"]\n'
    with fcopy_daemon(tmp_path, config=config) as running:
        host = running.sim.host
        assert copy_bytes(host, b"ok", str(dest / "in"), "f") == 0
        assert copy_bytes(host, b"no", str(dest / "in" / "secret"), "f") == HvStatus.E_FAIL
        assert copy_bytes(host, b"no", str(tmp_path / "elsewhere"), "f") == HvStatus.E_FAIL
        assert copy_bytes(host, b"no", str(dest / "inbox"), "f", flags=CREATE_PATH) != 0
    assert entries(dest / "in" / "secret") == []
    assert entries(tmp_path / "elsewhere") == []
    assert not (dest / "inbox").exists()


def test_configured_file_mode(tmp_path: Path, dest: Path) -> None:
    with fcopy_daemon(tmp_path, config='file_mode = "0600"\n') as running:
        assert copy_bytes(running.sim.host, b"x", str(dest), "f") == 0
    assert stat.S_IMODE((dest / "f").stat().st_mode) == 0o600


def test_symlinked_directory_in_the_path_is_refused(daemon: RunningDaemon, dest: Path) -> None:
    (dest / "real").mkdir()
    (dest / "link").symlink_to(dest / "real")
    status = copy_bytes(daemon.sim.host, b"x", str(dest / "link"), "f")
    assert status == HvStatus.E_FAIL
    status = copy_bytes(daemon.sim.host, b"x", str(dest / "link" / "sub"), "f", flags=CREATE_PATH)
    assert status == HvStatus.E_FAIL
    assert entries(dest / "real") == []


def test_symlink_at_the_target_name_is_never_written_through(
    daemon: RunningDaemon, dest: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (dest / "f").symlink_to(victim)
    host = daemon.sim.host
    assert copy_bytes(host, b"evil", str(dest), "f") == HvStatus.ERROR_ALREADY_EXISTS
    assert copy_bytes(host, b"evil", str(dest), "f", flags=OVER_WRITE) == HvStatus.E_FAIL
    assert victim.read_bytes() == b"precious"
    assert (dest / "f").is_symlink()
    assert leftovers(dest) == []


def test_malformed_messages_get_a_status_and_the_daemon_keeps_serving(
    daemon: RunningDaemon, dest: Path
) -> None:
    host = daemon.sim.host
    malformed = [
        header_message(4),  # unknown operation
        header_message(0xFFFFFFFF),
        write_message(0, b"", size=DATA_FRAGMENT + 1),  # size past the fragment
        write_message(0, b"orphan"),  # WRITE without START
        header_message(2),  # COMPLETE without START
    ]
    for payload in malformed:
        assert fcopy_raw(host, payload) == HvStatus.E_FAIL
    # A START whose name the kernel converted to nothing.
    assert fcopy_start(host, str(dest), "", file_size=1) == HvStatus.E_FAIL
    assert fcopy_start(host, "relative/dir", "f", file_size=1) == HvStatus.E_FAIL
    assert fcopy_start(host, f"{dest}/../dest", "f", file_size=1) == HvStatus.E_FAIL
    assert fcopy_start(host, str(dest), "a/b", file_size=1) == HvStatus.E_FAIL
    assert daemon.process.poll() is None
    assert copy_bytes(host, PAYLOAD, str(dest), "still-serving") == 0
    assert entries(dest) == ["still-serving"]


def test_systemd_hears_ready_and_stopping(daemon: RunningDaemon) -> None:
    poll_until(lambda: any("READY=1" in m for m in daemon.notifications()), 10, "READY=1")
    assert daemon.stop() == 0
    assert any("STOPPING=1" in message for message in daemon.notifications())
