"""Helpers for real freeze/thaw tests on zram filesystems this run creates.

Safety: every daemon here gets an explicit ``include_mounts`` allow-list of the
test's own mounts, and ``VssRig.guard`` asks the same configuration for its
plan (``hvguest vss plan --json``) and fails the test unless the plan freezes
exactly those mounts, *before* any FREEZE is sent. Freezing the machine's root
filesystem would hang it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hvguest.linux.freeze import FIFREEZE, FITHAW
from hvguest.testing.daemon_process import RunningDaemon
from hvguest.testing.zram import thaw_quietly, zram_supported

#: Seconds any wait in these tests may take.
WAIT = 15.0


def require_zram() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (zram devices, mounts, FIFREEZE)")
    if not zram_supported():
        pytest.skip("needs /sys/class/zram-control and mkfs.ext4")


def is_frozen(mountpoint: Path) -> bool:
    """Probe without changing anything: FIFREEZE answers EBUSY iff already frozen."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as error:
            if error.errno == errno.EBUSY:
                return True
            raise
        fcntl.ioctl(fd, FITHAW, 0)
        return False
    finally:
        os.close(fd)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def toml_list(paths: Sequence[Path | str]) -> str:
    return "[" + ", ".join(json.dumps(str(path)) for path in paths) + "]"


def hvguest(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m hvguest ...` with the test's configuration file."""
    env = dict(os.environ, HVGUEST_CONFIG=str(config_path))
    return subprocess.run(
        [sys.executable, "-m", "hvguest", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class VssRig:
    daemon: RunningDaemon
    tmp_path: Path

    @property
    def config_path(self) -> Path:
        return self.tmp_path / "hvguest.toml"

    def plan(self) -> dict[str, Any]:
        result = hvguest(self.config_path, "vss", "plan", "--json")
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def guard(self, expected: Sequence[Path]) -> None:
        """Fail unless the plan freezes exactly ``expected`` (checked before any FREEZE)."""
        planned = [item["mountpoint"] for item in self.plan()["freeze"]]
        assert sorted(planned) == sorted(str(path) for path in expected), planned


@contextlib.contextmanager
def blocked_writer(path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child writing ``path`` (in a scratch mount); thawed and killed if still running."""
    code = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "os.write(fd, b'written')\n"
        "os.fsync(fd)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(path)])
    try:
        yield child
    finally:
        if child.poll() is None:
            # A writer blocked on a frozen fs cannot die until it is thawed.
            thaw_quietly(path.parent)
            child.kill()
            child.wait(timeout=WAIT)


def process_state(pid: int) -> str:
    """The one-letter state from /proc/<pid>/stat ("D" = blocked in the kernel)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()[0]


def recorded(rig: VssRig) -> str:
    """The daemon's state file ("" when it records nothing, or is gone after shutdown)."""
    path = rig.daemon.state_dir / "hvguest" / "vss-frozen"
    return path.read_text() if path.exists() else ""
