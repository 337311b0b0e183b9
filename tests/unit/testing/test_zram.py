"""Scratch zram/loop filesystems: created, usable, frozen-safe teardown, and really gone after."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from hvguest.testing.zram import (
    FIFREEZE,
    SYS_BLOCK,
    loop_filesystem,
    scratch_filesystems,
    thaw_quietly,
    xfs_supported,
    zram_supported,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not zram_supported(), reason="needs root, zram-control and mkfs.ext4"),
]


def _mounted_devices() -> set[str]:
    return {line.split()[0] for line in Path("/proc/self/mounts").read_text().splitlines()}


def _freeze(mountpoint: Path) -> None:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    finally:
        os.close(fd)


def test_scratch_filesystems_are_mounted_writable_and_removed_after(tmp_path: Path) -> None:
    with scratch_filesystems(2, tmp_path / "mnt") as filesystems:
        assert len(filesystems) == 2
        assert len({fs.device for fs in filesystems}) == 2
        for fs in filesystems:
            assert fs.fstype == "ext4"
            assert str(fs.device) in _mounted_devices()
            (fs.mountpoint / "data").write_bytes(b"x" * 4096)
            assert (fs.mountpoint / "data").stat().st_size == 4096
        names = [fs.device.name for fs in filesystems]
    for name in names:
        assert not (SYS_BLOCK / name).exists()
        assert f"/dev/{name}" not in _mounted_devices()
    assert not (tmp_path / "mnt" / names[0]).exists()


def test_teardown_thaws_a_filesystem_left_frozen(tmp_path: Path) -> None:
    with scratch_filesystems(1, tmp_path / "mnt") as filesystems:
        _freeze(filesystems[0].mountpoint)
        name = filesystems[0].device.name
    assert not (SYS_BLOCK / name).exists()


def test_devices_are_removed_when_the_body_raises(tmp_path: Path) -> None:
    names: list[str] = []

    def body() -> None:
        with scratch_filesystems(1, tmp_path / "m") as filesystems:
            names.extend(fs.device.name for fs in filesystems)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert names
    assert not (SYS_BLOCK / names[0]).exists()


def test_thaw_quietly_ignores_a_filesystem_that_is_not_frozen(tmp_path: Path) -> None:
    with scratch_filesystems(1, tmp_path / "mnt") as filesystems:
        thaw_quietly(filesystems[0].mountpoint)
        thaw_quietly(tmp_path / "does-not-exist")
        (filesystems[0].mountpoint / "still-writable").write_text("ok")
        assert (filesystems[0].mountpoint / "still-writable").read_text() == "ok"


@pytest.mark.skipif(not xfs_supported(), reason="needs mkfs.xfs")
def test_xfs_scratch_filesystem(tmp_path: Path) -> None:
    with scratch_filesystems(1, tmp_path / "mnt", fstype="xfs") as filesystems:
        assert filesystems[0].fstype == "xfs"
        (filesystems[0].mountpoint / "f").write_text("xfs")
        mounts = Path("/proc/self/mounts").read_text()
        assert f"{filesystems[0].device} {filesystems[0].mountpoint} xfs" in mounts
        name = filesystems[0].device.name
    assert not (SYS_BLOCK / name).exists()


def test_loop_filesystem_is_attached_mounted_and_detached_after(tmp_path: Path) -> None:
    with loop_filesystem(tmp_path / "loop") as fs:
        assert fs.device.name.startswith("loop")
        assert (SYS_BLOCK / fs.device.name / "loop" / "backing_file").read_text().strip() == str(
            tmp_path / "loop" / "loop-backing.img"
        )
        (fs.mountpoint / "f").write_text("loop")
        name = fs.device.name
    assert not (SYS_BLOCK / name / "loop").exists()
    assert not (tmp_path / "loop" / "loop-backing.img").exists()
