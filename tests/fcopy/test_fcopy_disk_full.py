"""ENOSPC on a real, small filesystem: HV_ERROR_DISK_FULL and nothing left behind."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.testing.daemon_process import RunningDaemon
from hvguest.testing.fcopy_host import WriteStream, copy_bytes, fcopy_cancel, fcopy_start

from .helpers import entries

pytestmark = pytest.mark.root

MIB = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "hvguest-fcopy-test", str(mountpoint)],
        check=True,
        timeout=10,
    )
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False, timeout=10).returncode:
            # The daemon may still hold a directory fd for an instant: detach lazily.
            subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=10)


def fill(directory: Path) -> Path:
    """Write a filler file until the filesystem is full (ENOSPC; any other error raises)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        while _wrote(out.fileno(), b"\xff" * 65536):
            pass
    return filler


def _wrote(fd: int, chunk: bytes) -> bool:
    try:
        os.write(fd, chunk)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        return False
    return True


def test_start_larger_than_the_free_space_is_disk_full(
    daemon: RunningDaemon, small_fs: Path
) -> None:
    status = fcopy_start(daemon.sim.host, str(small_fs), "big", file_size=2 * MIB)
    assert status == HvStatus.ERROR_DISK_FULL
    assert entries(small_fs) == []
    daemon.stop()
    assert "2097152 bytes announced" in daemon.log()


def test_enospc_during_the_copy_is_disk_full_and_leaves_nothing(
    daemon: RunningDaemon, small_fs: Path
) -> None:
    host = daemon.sim.host
    assert fcopy_start(host, str(small_fs), "f", file_size=512 * 1024) == 0
    filler = fill(small_fs)
    status = WriteStream(host).send_all(b"\x01" * 512 * 1024)
    assert status == HvStatus.ERROR_DISK_FULL
    assert fcopy_cancel(host) == 0
    assert entries(small_fs) == ["filler"]
    # Space back: the daemon serves the next copy as if nothing happened.
    filler.unlink()
    assert copy_bytes(host, b"fits" * 1000, str(small_fs), "f") == 0
    assert entries(small_fs) == ["f"]
