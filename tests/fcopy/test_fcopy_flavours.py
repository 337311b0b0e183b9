"""`hvguest fcopy` picks its flavour: the UIO device when there is no char device.

The same FcopyService behind the UIO transport (FCOPY-UIO's loop and
simulator): a non-ASCII name arrives intact, which the reference UIO daemon
garbles (S18), and a device offered after start-up is waited for.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hvguest.abi.constants import HvStatus
from hvguest.testing.daemon_process import STEP_TIMEOUT
from hvguest.testing.uio_sim import UioSimulator

from .helpers import entries, poll_until

NAME = "Grüße 報告 📄.txt"


@contextmanager
def auto_daemon(tmp_path: Path, sim: UioSimulator) -> Iterator[subprocess.Popen[bytes]]:
    config = tmp_path / "hvguest.toml"
    config.write_text(
        f'[paths]\nsys = "{sim.sys_root}"\ndev = "{sim.dev_root}"\nrun = "{tmp_path / "run"}"\n'
        f'state = "{tmp_path / "state"}"\n'
        f'[fcopy]\ndevice = "{tmp_path / "no-char-device"}"\nfsync = false\n',
        encoding="utf-8",
    )
    with (tmp_path / "daemon.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hvguest", "fcopy", "-n", "--config", str(config)],
            stderr=log,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STEP_TIMEOUT)


def copy_through_uio(sim: UioSimulator, dest: Path) -> None:
    assert sim.host.negotiate().status == HvStatus.S_OK
    data = b"uio " * 5000
    assert sim.host.fcopy_start(str(dest), NAME, file_size=len(data)) == HvStatus.S_OK
    for offset in range(0, len(data), 6144):
        assert sim.host.fcopy_write(offset, data[offset : offset + 6144]) == HvStatus.S_OK
    assert sim.host.fcopy_complete() == HvStatus.S_OK
    assert entries(dest) == [NAME]
    assert (dest / NAME).read_bytes() == data


def test_auto_serves_the_uio_device_when_no_char_device_exists(tmp_path: Path, dest: Path) -> None:
    with UioSimulator(tmp_path / "uio") as sim, auto_daemon(tmp_path, sim) as process:
        sim.wait_open(STEP_TIMEOUT)
        copy_through_uio(sim, dest)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STEP_TIMEOUT) == 0
    log = (tmp_path / "daemon.log").read_text(encoding="utf-8")
    assert "FCOPY flavour: uio" in log
    assert f"copied {dest}/{NAME}" in log


def test_auto_waits_for_a_device_offered_later(tmp_path: Path, dest: Path) -> None:
    log_path = tmp_path / "daemon.log"
    with UioSimulator(tmp_path / "uio", offered=False) as sim, auto_daemon(tmp_path, sim):
        poll_until(lambda: "waiting for" in log_path.read_text(), STEP_TIMEOUT, "waiting")
        sim.offer()
        sim.wait_open(STEP_TIMEOUT)
        copy_through_uio(sim, dest)


def test_sigterm_while_waiting_for_a_device_exits_0(tmp_path: Path) -> None:
    log_path = tmp_path / "daemon.log"
    with (
        UioSimulator(tmp_path / "uio", offered=False) as sim,
        auto_daemon(tmp_path, sim) as process,
    ):
        poll_until(lambda: "waiting for" in log_path.read_text(), STEP_TIMEOUT, "waiting")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STEP_TIMEOUT) == 0
    assert "before any device appeared" in log_path.read_text()
