"""The simulator in its own process, a scripted daemon in another, the host driven over control."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.testing.simulator import ControlClient

STEP = 10.0
SCRIPTED_DAEMON = (
    Path(__file__).resolve().parents[1] / "unit" / "testing" / "sim_scripted_daemon.py"
)


def read_line(process: subprocess.Popen[str]) -> str:
    """One line of the child's stdout; a reader thread keeps a blocked child from hanging us."""
    assert process.stdout is not None
    with ThreadPoolExecutor(max_workers=1) as reader:
        line = reader.submit(process.stdout.readline)
        try:
            return line.result(STEP).strip()
        except TimeoutError:
            process.kill()  # unblocks the reader
            raise


def stop(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=STEP)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STEP)
        raise


@contextmanager
def simulator_process(directory: Path, reply_timeout: float = 5.0) -> Iterator[dict[str, Path]]:
    """``python -m hvguest.testing.simulator``; yields the socket paths it printed."""
    command = [sys.executable, "-m", "hvguest.testing.simulator", "--dir", str(directory)]
    command += ["--reply-timeout", str(reply_timeout)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        paths: dict[str, Path] = {}
        while (line := read_line(process)) != "ready":
            name, path = line.split(" ", 1)
            paths[name] = Path(path)
        paths["_pid"] = Path(str(process.pid))
        yield paths
    finally:
        returncode = stop(process)
    assert returncode == 0
    assert not any(directory.iterdir()), "the simulator left sockets behind"


@contextmanager
def scripted_daemon(device: Path, *, stall: bool = False) -> Iterator[subprocess.Popen[str]]:
    command = [sys.executable, str(SCRIPTED_DAEMON), str(device)] + (["--stall"] if stall else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(process) == "registered"
        yield process
    finally:
        stop(process)


def test_a_daemon_process_serves_the_host_of_a_simulator_process(tmp_path: Path) -> None:
    directory = tmp_path / "dev"
    with (
        simulator_process(directory) as paths,
        ControlClient(paths["control"]) as control,
        scripted_daemon(paths["kvp"]) as daemon,
    ):
        control.call("wait_registered", timeout=STEP)
        assert (
            control.call("kvp_set", pool=KvpPool.GUEST, key="Grüße", value="wert ✓")["status"] == 0
        )
        assert (
            control.call("kvp_set_u64", pool=KvpPool.GUEST, key="big", value=2**40)["status"] == 0
        )
        got = control.call("kvp_get", pool=KvpPool.GUEST, key="Grüße")
        assert (got["status"], got["value"]) == (0, "wert ✓")
        listing = control.call("kvp_enumerate_all", pool=KvpPool.GUEST)
        assert [(r["key"], r["value"]) for r in listing] == [
            ("Grüße", "wert ✓"),
            ("big", str(2**40)),
        ]
        assert control.call("kvp_delete", pool=KvpPool.GUEST, key="big")["status"] == 0
        ip = control.call("kvp_get_ip_info", mac="00:15:5D:00:00:01")
        assert (ip["status"], ip["gate_way"]) == (0, "192.0.2.1")

        control.call("destroy", name="kvp")
        assert (
            daemon.wait(timeout=STEP) == 0
        )  # EBADF ends its loop; its close completes the rescind
        control.call("wait_state", state="DEVICE_INIT", timeout=STEP)
        assert paths["kvp"].exists()  # re-offered


def test_a_daemon_killed_mid_request_fails_the_host_request(tmp_path: Path) -> None:
    with (
        simulator_process(tmp_path / "dev") as paths,
        ControlClient(paths["control"]) as control,
        ControlClient(paths["control"]) as host,
        scripted_daemon(paths["kvp"], stall=True) as daemon,
        ThreadPoolExecutor(max_workers=1) as calls,
    ):
        control.call("wait_registered", timeout=STEP)
        reply = calls.submit(host.call, "kvp_get", pool=KvpPool.GUEST, key="k")
        control.call("wait_state", state="USERSPACE_REQ", timeout=STEP)
        daemon.kill()
        daemon.wait(timeout=STEP)
        assert reply.result(STEP)["status"] == HvStatus.E_FAIL
        control.call("wait_state", state="DEVICE_INIT", timeout=STEP)


def test_the_reply_timeout_is_set_from_the_command_line(tmp_path: Path) -> None:
    with (
        simulator_process(tmp_path / "dev", reply_timeout=0.2) as paths,
        ControlClient(paths["control"]) as control,
        scripted_daemon(paths["kvp"], stall=True),
    ):
        control.call("wait_registered", timeout=STEP)
        reply = control.call("kvp_enumerate", pool=KvpPool.GUEST, index=0, timeout=STEP)
        assert reply["status"] == HvStatus.E_FAIL
        assert control.call("state") == "READY"
