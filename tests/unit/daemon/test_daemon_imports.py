"""The daemons' start-up paths stay lean: modules they must not keep in memory.

Each module named here cost measurable RSS for the daemon's whole life
(argparse/getopt pull gettext; ctypes.util pulls shutil, bz2, lzma and
subprocess; a str host name for getaddrinfo loads the idna codec with
unicodedata; dataclasses pulls inspect, ast, dis and tokenize, about 1 MB).
A fresh interpreter builds the real KVP service, answers a request through
the real runner, resolves a name, and reports what it imported; and each of
the three real daemon processes serves the simulator with
PYTHONPROFILEIMPORTTIME set, so its log names every module it imported.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.testing.daemon_process import RunningDaemon, fcopy_daemon, kvp_daemon, vss_daemon
from hvguest.testing.fcopy_host import copy_bytes
from hvguest.testing.uio_sim import UioSimulator
from hvguest.testing.vss_host import vss_freeze, vss_hot_backup, vss_thaw

#: Never on the daemon path; each is loaded only by the command or the rare
#: operation that needs it.
FORBIDDEN = (
    "argparse",
    "gettext",
    "getopt",
    "ctypes.util",
    "shutil",
    "subprocess",
    "tempfile",
    "encodings.idna",
    "unicodedata",
    "json",
    "hvguest.daemon.pool_cli",
    "pyroute2",
    "dataclasses",
    "inspect",
    "ast",
    "dis",
)

#: Seconds any host request in these tests may take.
WAIT = 10.0

SCRIPT = """
import socket, sys
from pathlib import Path
from hvguest.config import Config, KvpConfig
from hvguest.daemon import cli
from hvguest.daemon.kvp import build_kvp_service
from hvguest.linux.osinfo import getaddrinfo_ascii
from hvguest.protocol.kvp import KvpEnumerate
from hvguest.abi.constants import KvpPool

options = cli._parse_kvp_options(["-n", "--device", "/nonexistent", "--state-dir", sys.argv[1]])
assert options is not None
config = Config(kvp=KvpConfig(state_dir=Path(sys.argv[1]), ip_injection=True))
service, release, _watchers = build_kvp_service(config)
service.handle(KvpEnumerate(KvpPool.AUTO, 0))
service.handle(KvpEnumerate(KvpPool.GUEST, 0))
getaddrinfo_ascii("localhost", None, socket.AF_INET, socket.SOCK_STREAM, 0, 0)
release()
print(" ".join(sorted(sys.modules)))
"""


def test_the_daemon_path_imports_none_of_the_heavy_modules(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    imported = set(result.stdout.splitlines()[-1].split())
    assert sorted(imported & set(FORBIDDEN)) == []
    assert "hvguest.services.kvp" in imported  # the script did build the service


_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| *(\S+)\s*$", re.MULTILINE)


def imported_by(log: str) -> set[str]:
    """Every module a daemon imported, from the PYTHONPROFILEIMPORTTIME lines of its log."""
    return set(_IMPORT_LINE.findall(log))


def _exercise_kvp(daemon: RunningDaemon) -> None:
    host = daemon.sim.host
    assert host.kvp_set(KvpPool.EXTERNAL, "key", "value", timeout=WAIT).ok
    assert host.kvp_get(KvpPool.EXTERNAL, "key", timeout=WAIT).ok
    assert len(host.kvp_enumerate_all(KvpPool.AUTO, timeout=WAIT)) > 0


def _exercise_vss(daemon: RunningDaemon) -> None:
    host = daemon.sim.host
    assert vss_freeze(host, timeout=WAIT).status == HvStatus.S_OK
    assert vss_thaw(host, timeout=WAIT).status == HvStatus.S_OK
    assert vss_hot_backup(host, timeout=WAIT).status == HvStatus.S_OK


def _exercise_fcopy(daemon: RunningDaemon) -> None:
    target = daemon.state_dir.parent / "target"
    status = copy_bytes(daemon.sim.host, b"x" * 10_000, str(target), "copied", timeout=WAIT)
    assert status == HvStatus.S_OK
    assert (target / "copied").read_bytes() == b"x" * 10_000


def _start(service: str, tmp_path: Path) -> AbstractContextManager[RunningDaemon]:
    if service == "kvp":
        return kvp_daemon(tmp_path)
    if service == "vss":
        # A mount point that exists nowhere: the plan is empty, nothing is frozen.
        return vss_daemon(tmp_path, config='include_mounts = ["/nonexistent/hvguest-test"]\n')
    (tmp_path / "target").mkdir()
    return fcopy_daemon(tmp_path, config=f'allowed_dirs = ["{tmp_path / "target"}"]\n')


_EXERCISE: dict[str, Callable[[RunningDaemon], None]] = {
    "kvp": _exercise_kvp,
    "vss": _exercise_vss,
    "fcopy": _exercise_fcopy,
}


@pytest.mark.parametrize("service", ["kvp", "vss", "fcopy"])
def test_each_daemon_process_serves_without_the_heavy_modules(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon inherits it from this process's environment (read only at start-up).
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    with _start(service, tmp_path) as daemon:
        _EXERCISE[service](daemon)
        assert daemon.stop() == 0
    imported = imported_by(daemon.log())
    assert f"hvguest.daemon.{service}" in imported  # the profile lines were read
    assert sorted(imported & set(FORBIDDEN)) == []


def test_the_fcopy_uio_daemon_process_serves_without_the_heavy_modules(tmp_path: Path) -> None:
    """The same for FCOPY on Linux >= 6.10: "auto" finds the simulated UIO device."""
    target = tmp_path / "target"
    target.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    config = tmp_path / "hvguest.toml"
    log_path = tmp_path / "daemon.log"
    with UioSimulator(tmp_path / "uio") as sim:
        config.write_text(
            f'[fcopy]\ndevice = "{tmp_path / "no-hv_fcopy"}"\nfsync = false\n'
            f'[paths]\nsys = "{sim.sys_root}"\ndev = "{sim.dev_root}"\nrun = "{run}"\n'
            f'state = "{tmp_path / "state"}"\n',
            encoding="utf-8",
        )
        env = dict(os.environ, HVGUEST_CONFIG=str(config), PYTHONPROFILEIMPORTTIME="1")
        env.pop("NOTIFY_SOCKET", None)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "hvguest", "fcopy", "-n"], env=env, stderr=log
            )
        try:
            sim.wait_open(WAIT)
            assert sim.host.negotiate().status == HvStatus.S_OK
            assert sim.host.fcopy_start(str(target), "copied", file_size=3) == HvStatus.S_OK
            assert sim.host.fcopy_write(0, b"abc") == HvStatus.S_OK
            assert sim.host.fcopy_complete() == HvStatus.S_OK
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=WAIT) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=WAIT)
    assert (target / "copied").read_bytes() == b"abc"
    imported = imported_by(log_path.read_text(encoding="utf-8"))
    assert "hvguest.daemon.fcopy_uio" in imported  # the profile lines were read
    assert sorted(imported & set(FORBIDDEN)) == []
