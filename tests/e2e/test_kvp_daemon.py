"""The real daemon process against the simulated kernel and host."""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from hvguest.abi.constants import REG_U32, REG_U64, HvStatus, KvpPool
from hvguest.services.kvp import AUTO_POOL_KEYS
from hvguest.testing.daemon_process import RunningDaemon
from hvguest.testing.simulator import Simulator

STEP_TIMEOUT = 10.0
StartKvpDaemon = Callable[..., AbstractContextManager[RunningDaemon]]

RECORD = 2560


def test_full_host_session(start_kvp_daemon: StartKvpDaemon) -> None:
    with start_kvp_daemon() as daemon:
        host = daemon.sim.host
        auto = host.kvp_enumerate_all(KvpPool.AUTO)
        assert [reply.key for reply in auto] == list(AUTO_POOL_KEYS)
        assert {r.key: r.value for r in auto}["IntegrationServicesVersion"] == "3.1"

        assert host.kvp_set(KvpPool.EXTERNAL, "Grüße", "wert ✓").status == HvStatus.S_OK
        assert host.kvp_set(KvpPool.EXTERNAL, "count", 7, REG_U32).status == HvStatus.S_OK
        assert host.kvp_set(KvpPool.EXTERNAL, "big", 2**40, REG_U64).status == HvStatus.S_OK
        listing = [(r.key, r.value) for r in host.kvp_enumerate_all(KvpPool.EXTERNAL)]
        assert listing == [("Grüße", "wert ✓"), ("count", "7"), ("big", str(2**40))]

        get = host.kvp_get(KvpPool.EXTERNAL, "Grüße")
        assert (get.status, get.value) == (HvStatus.S_OK, "wert ✓")
        assert host.kvp_get(KvpPool.EXTERNAL, "absent").status == HvStatus.S_CONT

        assert host.kvp_delete(KvpPool.EXTERNAL, "count").status == HvStatus.S_OK
        assert host.kvp_delete(KvpPool.EXTERNAL, "count").status == HvStatus.S_CONT
        pool0 = (daemon.state_dir / ".kvp_pool_0").read_bytes()
        assert len(pool0) == 2 * RECORD
        assert pool0[:RECORD] == "Grüße".encode().ljust(512, b"\0") + "wert ✓".encode().ljust(
            2048, b"\0"
        )
        assert daemon.stop() == 0
        sent = "".join(daemon.notifications())
        assert "READY=1" in sent
        assert "STOPPING=1" in sent


def test_a_guest_writer_is_seen_by_the_next_host_request(start_kvp_daemon: StartKvpDaemon) -> None:
    with start_kvp_daemon() as daemon:
        host = daemon.sim.host
        assert host.kvp_enumerate_all(KvpPool.GUEST) == []
        command = [sys.executable, "-m", "hvguest", "pool", "set", "--pool", "1"]
        command += ["--state-dir", str(daemon.state_dir), "from-guest", "hello"]
        subprocess.run(command, check=True, timeout=STEP_TIMEOUT, capture_output=True)
        listing = [(r.key, r.value) for r in host.kvp_enumerate_all(KvpPool.GUEST)]
        assert listing == [("from-guest", "hello")]


def test_malformed_requests_get_a_status_and_the_daemon_keeps_serving(
    start_kvp_daemon: StartKvpDaemon,
) -> None:
    with start_kvp_daemon() as daemon:
        host = daemon.sim.host
        # A pool the header does not define (reference bug S7: out-of-bounds table index).
        assert host.kvp_get(9, "k").status == HvStatus.E_FAIL
        assert host.kvp_enumerate(7, 0).status == HvStatus.E_FAIL
        # An operation the header does not define: the kernel forwards it verbatim.
        unknown = bytearray(7432)
        unknown[0], unknown[1] = 9, KvpPool.GUEST
        assert host.kvp_transact(unknown).status == HvStatus.ERROR_NOT_SUPPORTED
        # An index that is negative as a C int (reference bug S8).
        assert host.kvp_enumerate(KvpPool.GUEST, 2**31 + 5).status == HvStatus.S_CONT
        assert host.kvp_set(KvpPool.GUEST, "still", "serving").status == HvStatus.S_OK
        assert daemon.process.poll() is None
        assert "pool" in daemon.log()


def test_the_daemon_reopens_after_a_write_error(start_kvp_daemon: StartKvpDaemon) -> None:
    with start_kvp_daemon() as daemon:
        host = daemon.sim.host
        daemon.sim.inject_write_error("kvp", errno.EINVAL)
        failed = host.kvp_set(KvpPool.GUEST, "lost", "reply")
        assert failed.status == HvStatus.E_FAIL
        daemon.sim.wait_registered(timeout=STEP_TIMEOUT)
        assert host.kvp_set(KvpPool.GUEST, "after", "reopen").status == HvStatus.S_OK
        assert daemon.process.poll() is None
        assert "reopening" in daemon.log()


def test_the_daemon_survives_a_rescind_and_reoffer(start_kvp_daemon: StartKvpDaemon) -> None:
    with start_kvp_daemon() as daemon:
        daemon.sim.destroy("kvp")
        daemon.sim.wait_registered(timeout=STEP_TIMEOUT)
        assert daemon.sim.host.kvp_set(KvpPool.GUEST, "k", "v").status == HvStatus.S_OK
        assert daemon.process.poll() is None


def start_kvp_process(config: Path, device: Path, state_dir: Path) -> subprocess.Popen[bytes]:
    """`python -m hvguest kvp -n` on ``device``, its stderr kept for the test to read."""
    config.write_text(
        f'[kvp]\ndevice = "{device}"\nstate_dir = "{state_dir}"\nip_injection = false\n',
        encoding="utf-8",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "hvguest", "kvp", "-n", "--config", str(config)],
        stderr=subprocess.PIPE,
    )


def test_the_daemon_waits_for_the_device_to_appear(tmp_path: Path) -> None:
    devices = tmp_path / "dev"
    waiting = start_kvp_process(tmp_path / "late.toml", devices / "hv_kvp", tmp_path / "state")
    try:
        time.sleep(0.5)
        assert waiting.poll() is None, "the daemon must wait, not exit"
        with Simulator(devices) as sim:
            sim.wait_registered(timeout=STEP_TIMEOUT)
            assert sim.host.kvp_set(KvpPool.GUEST, "late", "device").status == HvStatus.S_OK
    finally:
        waiting.terminate()
        _out, err = waiting.communicate(timeout=STEP_TIMEOUT)
    assert waiting.returncode == 0
    assert err.count(b"waiting for") == 1


def test_a_second_daemon_waits_for_the_busy_device_and_says_so_once(
    start_kvp_daemon: StartKvpDaemon, tmp_path: Path
) -> None:
    # As when hvguest is installed beside the distribution's hv_kvp_daemon: the
    # kernel lets one process open the device, and retries must not flood the log.
    with start_kvp_daemon() as first:
        device = first.sim.kvp_device_path
        second = start_kvp_process(tmp_path / "second.toml", device, tmp_path / "state-2")
        try:
            # Backoff 0.05 s doubling to 2 s: about seven attempts in four seconds.
            time.sleep(4)
            assert second.poll() is None, "the second daemon must wait, not exit"
            assert first.stop() == 0
            first.sim.wait_registered(timeout=STEP_TIMEOUT)
            assert first.sim.host.kvp_set(KvpPool.GUEST, "k", "second").status == HvStatus.S_OK
            assert (tmp_path / "state-2" / ".kvp_pool_1").exists()
        finally:
            second.terminate()
            _out, err = second.communicate(timeout=STEP_TIMEOUT)
    assert second.returncode == 0
    assert err.count(b"is busy: another daemon") == 1, err.decode(errors="replace")


def test_hv_kvp_daemon_flags_match_the_reference() -> None:
    script = [
        sys.executable,
        "-c",
        "from hvguest.daemon.cli import kvp_daemon_main as m; raise SystemExit(m())",
    ]
    helped = subprocess.run(
        [*script, "-h"], capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False
    )
    assert helped.returncode == 0
    assert "--no-daemon" in helped.stderr
    bad = subprocess.run(
        [*script, "-x"], capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False
    )
    assert bad.returncode == 1
