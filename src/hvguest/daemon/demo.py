"""`hvguest demo`: a host session against the simulator, printed as a transcript.

Needs no root and no Hyper-V: the simulator plays the kernel and the host on a
Unix socket, and the real daemons (`python -m hvguest kvp|vss|fcopy -n`) run
as child processes with their state in a temporary directory. The VSS step
runs crash-consistent (nothing is frozen) unless ``--vss-fs`` names mounts
to freeze for real; the FCOPY step copies a file with a non-ASCII name into
the temporary directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.linux.netinfo import LinuxNetInfo
from hvguest.testing.simulator import Simulator

_STEP_TIMEOUT: Final = 10.0


def _status(code: int) -> str:
    try:
        return HvStatus(code).name
    except ValueError:
        return f"0x{code:08X}"


def _say(actor: str, text: str) -> None:
    print(f"[{actor:6}] {text}", flush=True)


def run_demo(vss_fs: Sequence[Path] = ()) -> int:
    """Play the sessions; returns 0 when every step got the expected answer."""
    with tempfile.TemporaryDirectory(prefix="hvguest-demo-") as scratch:
        root = Path(scratch)
        code = _kvp_demo(root)
        print("\n--- VSS: freeze and thaw for a host backup ---\n")
        vss_ok = _vss_step(root, vss_fs)
        print("\n--- FCOPY: host-to-guest file copy (Copy-VMFile) ---\n")
        fcopy_ok = _fcopy_step(root)
        failed = [
            name
            for name, ok in (("KVP", code == 0), ("VSS", vss_ok), ("FCOPY", fcopy_ok))
            if not ok
        ]
        verdict = "every service answered as expected"
        if failed:
            verdict = "failed: " + ", ".join(failed)
        print(f"\n{verdict}")
        return 0 if not failed else 1


def _vss_step(root: Path, vss_fs: Sequence[Path]) -> bool:
    from hvguest.daemon.demo_vss import demo_vss

    return demo_vss(_say, root, vss_fs)


def _fcopy_step(root: Path) -> bool:
    from hvguest.daemon.demo_fcopy import demo_fcopy

    return demo_fcopy(_say, root)


def _kvp_demo(root: Path) -> int:
    """The KVP session (the daemon's log follows the transcript)."""
    state = root / "state"
    config = root / "hvguest.toml"
    with Simulator(root / "dev") as sim:
        config.write_text(
            "[kvp]\n"
            f'device = "{sim.kvp_device_path}"\n'
            f'state_dir = "{state}"\n'
            "ip_injection = false\n",
            encoding="utf-8",
        )
        env = dict(os.environ, HVGUEST_CONFIG=str(config))
        print("hvguest demo: a Hyper-V host session played against the simulator\n")
        _say("sim", f"simulated /dev/vmbus/hv_kvp at {sim.kvp_device_path}")
        started = time.monotonic()
        daemon_log = root / "daemon.log"
        with daemon_log.open("wb") as log_file:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "hvguest", "kvp", "-n"], env=env, stderr=log_file
            )
        try:
            code = _session(sim, daemon, env, state, started)
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=_STEP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        print("\ndaemon log (stderr):")
        for line in daemon_log.read_text(encoding="utf-8", errors="replace").splitlines():
            print(f"  {line}")
        return code


def _session(
    sim: Simulator,
    daemon: subprocess.Popen[bytes],
    env: dict[str, str],
    state: Path,
    started: float,
) -> int:
    failures = 0
    _say("guest", f"started hv_kvp_daemon (pid {daemon.pid}): python -m hvguest kvp -n")
    sim.wait_registered(timeout=_STEP_TIMEOUT)
    elapsed = (time.monotonic() - started) * 1000
    _say(
        "kernel", f"daemon registered (REGISTER1 answered with version 3.1) after {elapsed:.0f} ms"
    )

    _say("host", "ENUMERATE pool 2 (AUTO): what the guest says about itself")
    for index, reply in enumerate(sim.host.kvp_enumerate_all(KvpPool.AUTO)):
        _say("", f"  {index}: {reply.key} = {reply.value!r}")

    key, value = "HostGreeting", "grüße vom Host ✓"
    reply = sim.host.kvp_set(KvpPool.EXTERNAL, key, value)
    _say("host", f"SET pool 0 {key!r} = {value!r} -> {_status(reply.status)}")
    failures += reply.status != HvStatus.S_OK
    stored = state / ".kvp_pool_0"
    _say("guest", f"{stored.name} is now {stored.stat().st_size} bytes (one 2560-byte record)")

    guest_key, guest_value = "GuestNote", "written by a guest program"
    command = [sys.executable, "-m", "hvguest", "pool", "set", "--pool", "1"]
    command += ["--state-dir", str(state), guest_key, guest_value]
    _say("guest", f"$ hvguest pool set --pool 1 {guest_key} {guest_value!r}")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    failures += result.returncode != 0

    _say("host", "ENUMERATE pool 1 (GUEST): what guest programs published")
    for reply in sim.host.kvp_enumerate_all(KvpPool.GUEST):
        _say("", f"  {reply.key} = {reply.value!r}")

    reply = sim.host.kvp_get(KvpPool.EXTERNAL, key)
    _say("host", f"GET pool 0 {key!r} -> {_status(reply.status)} {reply.value!r}")
    _say("", "  (the C hv_kvp_daemon answers an empty string here: protocol.md S1)")
    failures += reply.value != value

    nics = [nic for nic in LinuxNetInfo().nics() if nic.mac and nic.mac != "00:00:00:00:00:00"]
    if nics:
        # The first NIC that has addresses says the most; else simply the first.
        nic = next((nic for nic in nics if nic.addresses), nics[0])
        info = sim.host.kvp_get_ip_info(nic.mac)
        _say("host", f"GET_IP_INFO {nic.mac} ({nic.name}) -> {_status(info.status)}")
        _say("", f"  ip_addr={info.ip_addr!r} sub_net={info.sub_net!r}")
        _say(
            "", f"  gate_way={info.gate_way!r} dns_addr={info.dns_addr!r} dhcp={info.dhcp_enabled}"
        )
        failures += info.status != HvStatus.S_OK
    else:
        _say("host", "GET_IP_INFO skipped: this machine has no NIC with a MAC address")

    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=_STEP_TIMEOUT)
    _say("guest", f"SIGTERM -> daemon exited with status {code}")
    failures += code != 0
    print(f"\n{'all steps answered as expected' if not failures else f'{failures} step(s) failed'}")
    return 0 if failures == 0 else 1
