"""The reference hv_kvp_daemon runs unmodified under the simulator through the LD_PRELOAD shim.

Smoke test of hvguest.testing.refshim: the C daemon from Debian's hyperv-daemons
registers on a simulated /dev/vmbus/hv_kvp, answers the AUTO pool sweep and a
SET/ENUMERATE on the guest pool, keeps its pools in a scratch directory, and
never touches the machine's /var/lib/hyperv. A few shim semantics (short read,
poll, EBUSY, failing closed) are checked with a Python child that has the shim
preloaded, so the kernel rules it promises are tested directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvguest.abi.constants import KVP_OP_REGISTER1, HvStatus, KvpPool
from hvguest.abi.structs import KVP_MSG_SIZE, KVP_POOL_RECORD_SIZE
from hvguest.testing.daemon_process import kvp_daemon
from hvguest.testing.refshim import (
    REFERENCE_KVP_DAEMON,
    build_shim,
    launch_reference_kvp,
    reference_daemon_command,
    reference_environment,
    stop_daemon,
)
from hvguest.testing.simulator import Simulator

pytestmark = [pytest.mark.root, pytest.mark.gcc]

#: Seconds any one step (registration, a host request, a child) may take.
STEP = 10.0
REAL_STATE_DIR = Path("/var/lib/hyperv")
AUTO_KEYS = [
    "FullyQualifiedDomainName",
    "IntegrationServicesVersion",
    "NetworkAddressIPv4",
    "NetworkAddressIPv6",
    "OSBuildNumber",
    "OSName",
    "OSMajorVersion",
    "OSMinorVersion",
    "OSVersion",
    "ProcessorArchitecture",
]


def _snapshot(directory: Path) -> dict[str, tuple[int, int]] | None:
    """Names, sizes and mtimes under ``directory`` (None if it does not exist)."""
    if not directory.exists():
        return None
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in [directory, *directory.rglob("*")]
    }


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the shim")
    return build_shim(tmp_path_factory.mktemp("shim"))


@pytest.fixture
def reference_daemon() -> Path:
    if not REFERENCE_KVP_DAEMON.exists():
        pytest.skip(f"{REFERENCE_KVP_DAEMON} absent: .ci/run installs hyperv-daemons as root")
    return REFERENCE_KVP_DAEMON


@pytest.fixture
def real_state_untouched() -> Iterator[None]:
    before = _snapshot(REAL_STATE_DIR)
    yield
    assert _snapshot(REAL_STATE_DIR) == before, "the reference touched /var/lib/hyperv"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    with Simulator(tmp_path / "dev", reply_timeout=STEP) as simulator:
        yield simulator


@pytest.mark.usefixtures("real_state_untouched")
def test_reference_registers_and_answers_auto_and_guest_pools(
    shim: Path, reference_daemon: Path, sim: Simulator, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    daemon = launch_reference_kvp(shim, sim.kvp_device_path, state_dir, daemon=reference_daemon)
    try:
        sim.wait_registered(STEP)
        assert sim.host.kvp_negotiate(timeout=STEP).status == HvStatus.S_OK

        auto = [sim.host.kvp_enumerate(KvpPool.AUTO, i, timeout=STEP) for i in range(11)]
        assert [reply.status for reply in auto] == [HvStatus.S_OK] * 10 + [HvStatus.S_CONT]
        assert [reply.key for reply in auto[:10]] == AUTO_KEYS
        values = {reply.key: reply.value for reply in auto[:10]}
        assert values["IntegrationServicesVersion"] == "3.1"
        assert values["OSBuildNumber"] == os.uname().release
        assert values["ProcessorArchitecture"] == os.uname().machine

        assert sim.host.kvp_set(KvpPool.GUEST, "Shim", "works", timeout=STEP).ok
        first = sim.host.kvp_enumerate(KvpPool.GUEST, 0, timeout=STEP)
        assert (first.status, first.key, first.value) == (HvStatus.S_OK, "Shim", "works")
        assert sim.host.kvp_enumerate(KvpPool.GUEST, 1, timeout=STEP).status == HvStatus.S_CONT
    finally:
        stop_daemon(daemon)
    # The redirect put the pool where we said, in the reference's own format.
    pool = (state_dir / ".kvp_pool_1").read_bytes()
    assert len(pool) == KVP_POOL_RECORD_SIZE
    assert pool.startswith(b"Shim\0")


def test_a_busy_device_ends_the_reference_while_hvguest_waits_for_it(
    shim: Path, reference_daemon: Path, tmp_path: Path
) -> None:
    """compat K21: with the device held by another daemon, the reference exits 1 at once."""
    with kvp_daemon(tmp_path / "holder") as holder:
        reference = launch_reference_kvp(
            shim, holder.sim.kvp_device_path, tmp_path / "ref-state", daemon=reference_daemon
        )
        try:
            assert reference.wait(timeout=STEP) == 1
        finally:
            stop_daemon(reference)
        # hvguest's side of K21 (waits, logs once, takes over) is tests/e2e/test_kvp_daemon.py.
        assert holder.sim.host.kvp_set(KvpPool.GUEST, "k", "held", timeout=STEP).ok


@pytest.mark.usefixtures("real_state_untouched")
def test_reference_without_state_dir_fails_closed(
    shim: Path, reference_daemon: Path, sim: Simulator
) -> None:
    """No HVSIM_STATE_DIR: /var/lib/hyperv is refused (EACCES), so the daemon exits 1."""
    env = reference_environment(shim, state_dir=Path("unused"), kvp_socket=sim.kvp_device_path)
    del env["HVSIM_STATE_DIR"]
    result = subprocess.run(
        reference_daemon_command(reference_daemon),
        env=env,
        capture_output=True,
        timeout=STEP,
        check=False,
    )
    assert result.returncode == 1
    assert not sim.is_registered()


# The client below runs in a child with the shim preloaded: os.open/os.read/
# os.write/select.poll go through libc, so they hit the shim like C code does.
_DEVICE_CLIENT = textwrap.dedent(
    """
    import errno, os, select, struct, sys
    size, register = int(sys.argv[1]), int(sys.argv[2])
    fd = os.open("/dev/vmbus/hv_kvp", os.O_RDWR | os.O_CLOEXEC)
    try:
        os.open("/dev/vmbus/hv_kvp", os.O_RDWR)
    except OSError as error:
        print("second-open", errno.errorcode[error.errno])
    print("write", os.write(fd, struct.pack("<B", register) + bytes(size - 1)))
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLOUT)
    print("poll", poller.poll(10_000) == [(fd, select.POLLIN)])
    try:
        os.read(fd, 16)
    except OSError as error:
        print("short-read", errno.errorcode[error.errno])
    answer = os.read(fd, 65536)
    print("read", len(answer), answer[0])
    print("version", answer[4:7].decode())
    os.close(fd)
    """
)


def test_shim_keeps_the_kernel_device_rules(shim: Path, sim: Simulator, tmp_path: Path) -> None:
    env = reference_environment(shim, state_dir=tmp_path / "state", kvp_socket=sim.kvp_device_path)
    result = subprocess.run(
        [sys.executable, "-c", _DEVICE_CLIENT, str(KVP_MSG_SIZE), str(KVP_OP_REGISTER1)],
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "second-open EBUSY",  # one opener at a time
        f"write {KVP_MSG_SIZE}",
        "poll True",  # POLLIN for the queued answer, never POLLOUT
        "short-read EINVAL",  # and the message stays queued ...
        f"read {KVP_MSG_SIZE} {KVP_OP_REGISTER1}",  # ... for the next, big enough read
        "version 3.1",
    ]


def test_shim_reports_an_absent_device_as_enoent(shim: Path, tmp_path: Path) -> None:
    env = reference_environment(
        shim, state_dir=tmp_path / "state", kvp_socket=tmp_path / "no-such-socket"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import os; os.open('/dev/vmbus/hv_kvp', os.O_RDWR)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP,
        check=False,
    )
    assert "FileNotFoundError" in result.stderr


_HANGUP_CLIENT = textwrap.dedent(
    """
    import errno, os, select, struct, sys
    size, register = int(sys.argv[1]), int(sys.argv[2])
    fd = os.open("/dev/vmbus/hv_kvp", os.O_RDWR | os.O_CLOEXEC)
    os.write(fd, struct.pack("<B", register) + bytes(size - 1))
    os.read(fd, size)
    print("registered", flush=True)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    events = poller.poll(10_000)
    print("poll", events == [(fd, select.POLLERR | select.POLLHUP)])
    for name, call in (("read", lambda: os.read(fd, size)), ("write", lambda: os.write(fd, b"x"))):
        try:
            call()
        except OSError as error:
            print(name, errno.errorcode[error.errno])
    os.close(fd)
    """
)


def test_shim_reports_a_rescind_as_hangup_and_ebadf(
    shim: Path, sim: Simulator, tmp_path: Path
) -> None:
    env = reference_environment(shim, state_dir=tmp_path / "state", kvp_socket=sim.kvp_device_path)
    child = subprocess.Popen(
        [sys.executable, "-c", _HANGUP_CLIENT, str(KVP_MSG_SIZE), str(KVP_OP_REGISTER1)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "registered\n"
        sim.destroy("kvp", reoffer=False)
        out, err = child.communicate(timeout=STEP)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(STEP)
    assert child.returncode == 0, err
    assert out.splitlines() == ["poll True", "read EBADF", "write EBADF"]
