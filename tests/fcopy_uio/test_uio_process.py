"""The UIO daemon as a real process (`hvguest fcopy -n`, flavour "auto"): SIGTERM ends it
cleanly, SIGKILL loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fcopy_uio.conftest import names
from hvguest.abi.constants import HvStatus
from hvguest.testing.uio_sim import UioSimulator

OK = int(HvStatus.S_OK)
STEP = 10.0


@contextmanager
def daemon_process(sim: UioSimulator, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m hvguest fcopy -n` as a unit runs it; "auto" finds the UIO device."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    config = tmp_path / "hvguest.toml"
    config.write_text(
        f'[fcopy]\ndevice = "{tmp_path / "no-hv_fcopy"}"\nfsync = false\n'
        f'[paths]\nsys = "{sim.sys_root}"\ndev = "{sim.dev_root}"\nrun = "{run}"\n'
        f'state = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    env = dict(os.environ, HVGUEST_CONFIG=str(config))
    env.pop("NOTIFY_SOCKET", None)
    log = (tmp_path / "daemon.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "hvguest", "fcopy", "-n"], env=env, stderr=log
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STEP)
        log.close()


def test_sigterm_mid_copy_exits_0_and_removes_the_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    with UioSimulator(tmp_path / "uio") as sim, daemon_process(sim, tmp_path) as process:
        sim.wait_open(STEP)
        assert sim.host.negotiate().status == OK
        assert sim.host.fcopy_start(str(target), "term.bin", file_size=9000) == OK
        assert sim.host.fcopy_write(0, b"t" * 6144) == OK
        assert names(target) != []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STEP) == 0
        sim.wait_closed(STEP)
    assert names(target) == []
    log = (tmp_path / "daemon.log").read_text(encoding="utf-8")
    assert "FCOPY flavour: uio" in log
    assert "FCopy IC version 1.1" in log
    assert f"stopping (signal {int(signal.SIGTERM)})" in log


def test_sigkill_mid_copy_then_restart_cleans_up_and_serves(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    with UioSimulator(tmp_path / "uio") as sim:
        with daemon_process(sim, tmp_path) as first:
            sim.wait_open(STEP)
            assert sim.host.negotiate().status == OK
            assert sim.host.fcopy_start(str(target), "killed.bin", file_size=9000) == OK
            assert sim.host.fcopy_write(0, b"k" * 6144) == OK
            first.kill()
            first.wait(timeout=STEP)
        sim.wait_closed(STEP)
        assert not (target / "killed.bin").exists()
        with daemon_process(sim, tmp_path):
            sim.wait_until(lambda: sim.opens == 2, STEP, "the new daemon to open uio0")
            # the new daemon removed the killed one's temporary file at start-up
            assert names(target) == []
            assert sim.host.negotiate().status == OK
            data = b"second life"
            assert sim.host.copy_bytes(data, str(target), "killed.bin") == OK
            assert (target / "killed.bin").read_bytes() == data
