"""The reference KVP daemon runs walled in: its own mount and network namespace, its own state.

Proves the two layers under every differential test (hvguest.testing.refshim):
the shim's HVSIM_STATE_DIR redirect puts the pools in the test's directory,
and underneath it a scratch directory bind-mounted over /var/lib/hyperv in a
private mount namespace catches anything that slips past the shim (it must
stay empty). The machine's /var/lib/hyperv, network namespace and mount table
are unchanged afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hvguest.testing.refshim import (
    REAL_STATE_DIR,
    Isolation,
    isolated_command,
    launch_reference_kvp,
    stop_daemon,
)
from hvguest.testing.simulator import Simulator

from .kvp_lab import Lab
from .kvp_sessions import STEP_TIMEOUT

pytestmark = [pytest.mark.root, pytest.mark.gcc, pytest.mark.usefixtures("real_state_untouched")]


def _namespace(pid: int | str, kind: str) -> str:
    return str(Path(f"/proc/{pid}/ns/{kind}").readlink())


def _mount_points(pid: int | str) -> list[str]:
    mountinfo = Path(f"/proc/{pid}/mountinfo").read_text(encoding="utf-8")
    return [line.split()[4] for line in mountinfo.splitlines()]


def test_reference_runs_in_private_namespaces_with_its_own_state(
    kvp_shim: Path, tmp_path: Path
) -> None:
    state_dir, cover = tmp_path / "state", tmp_path / "cover"
    mounts_before = _mount_points("self")
    with Simulator(tmp_path / "dev", reply_timeout=STEP_TIMEOUT) as sim:
        daemon = launch_reference_kvp(
            kvp_shim, sim.kvp_device_path, state_dir, isolation=Isolation(cover)
        )
        try:
            sim.wait_registered(STEP_TIMEOUT)
            assert sim.host.kvp_set(1, "walled", "in", timeout=STEP_TIMEOUT).ok
            # The wrapper exec'd the daemon: same pid, new namespaces.
            assert Path(f"/proc/{daemon.pid}/exe").resolve() == Path("/usr/sbin/hv_kvp_daemon")
            assert _namespace(daemon.pid, "net") != _namespace("self", "net")
            assert _namespace(daemon.pid, "mnt") != _namespace("self", "mnt")
            assert str(REAL_STATE_DIR) in _mount_points(daemon.pid)
            # A new network namespace: nothing but a loopback that is down.
            nics = Path(f"/proc/{daemon.pid}/root/sys/class/net").iterdir()
            assert [nic.name for nic in nics] == ["lo"]
        finally:
            stop_daemon(daemon)
    assert (state_dir / ".kvp_pool_1").read_bytes().startswith(b"walled\0")
    assert list(cover.iterdir()) == [], "a write got past the shim's redirect"
    # Nothing leaked into the machine's mount table.
    assert _mount_points("self") == mounts_before


def test_wrapper_joins_a_given_network_namespace(kvp_lab: Lab, tmp_path: Path) -> None:
    """Both daemons of a GET_IP_INFO session see the lab's NICs in /sys/class/net."""
    command = isolated_command(
        ["/bin/ls", "/sys/class/net"], Isolation(tmp_path / "cover", netns=kvp_lab.netns)
    )
    (tmp_path / "cover").mkdir()
    listed = subprocess.run(
        command, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=True
    )
    assert set(listed.stdout.split()) == {"lo", *kvp_lab.addresses}


def test_wrapper_refuses_to_run_when_isolation_fails(tmp_path: Path) -> None:
    """No namespace, no daemon: a failed step stops the wrapper before the exec."""
    marker = tmp_path / "ran"
    command = isolated_command(
        ["/usr/bin/touch", str(marker)],
        Isolation(tmp_path / "cover", netns=tmp_path / "no-such-netns"),
    )
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False
    )
    assert result.returncode != 0
    assert "no-such-netns" in result.stderr
    assert not marker.exists()
