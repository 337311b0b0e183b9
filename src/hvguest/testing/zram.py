"""Scratch filesystems for freeze tests: zram- and loop-backed, created and destroyed here.

VSS tests must freeze real filesystems, and freezing anything the test did not
create (the machine's root filesystem above all) hangs the machine. So every
filesystem a test freezes comes from this module: a zram device made through
``/sys/class/zram-control/hot_add`` (zram is not a loop device, so the
reference daemon's loop-skip rule in vss_operate() does not hide it) or a loop
device over a file in the test's own directory (to check that skip rule).

Teardown only ever touches what this module created, by the index/name it
recorded, and runs on error too: FITHAW first (a test may have left the
filesystem frozen, and a frozen filesystem cannot be unmounted), umount (lazy as
a last resort), then zram ``reset`` + ``hot_remove`` or ``LOOP_CLR_FD``.
There is no C counterpart; it stands in for the disks of a real guest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: _IOWR('X', 119, int) and _IOWR('X', 120, int) from include/uapi/linux/fs.h.
FIFREEZE: Final = 0xC0045877
FITHAW: Final = 0xC0045878
#: include/uapi/linux/loop.h
LOOP_SET_FD: Final = 0x4C00
LOOP_CLR_FD: Final = 0x4C01
LOOP_CTL_GET_FREE: Final = 0x4C82

ZRAM_CONTROL: Final = Path("/sys/class/zram-control")
SYS_BLOCK: Final = Path("/sys/block")
DEV: Final = Path("/dev")
LOOP_CONTROL: Final = Path("/dev/loop-control")

#: mkfs.xfs on Debian 12 refuses filesystems smaller than 300 MiB.
XFS_MIN_MIB: Final = 300
#: Seconds to wait for udev to create a device node, or for the kernel to release a device.
SETTLE_TIMEOUT: Final = 10.0
_COMMAND_TIMEOUT: Final = 60.0


@dataclass(frozen=True)
class ScratchFs:
    """One mounted scratch filesystem: its block device, mount point and type."""

    device: Path
    mountpoint: Path
    fstype: str


def zram_supported() -> bool:
    """True when this process can create zram filesystems (root, zram-control, mkfs.ext4)."""
    return (
        os.geteuid() == 0
        and (ZRAM_CONTROL / "hot_add").exists()
        and shutil.which("mkfs.ext4") is not None
    )


def xfs_supported() -> bool:
    """True when mkfs.xfs exists (the xfs variants of the tests need it)."""
    return shutil.which("mkfs.xfs") is not None


def thaw_quietly(mountpoint: Path) -> None:
    """FITHAW ``mountpoint``, ignoring "not frozen" (EINVAL) and any other error.

    Used on teardown paths, where the filesystem may or may not be frozen and a
    failure must not hide the test's own error.
    """
    try:
        fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def scratch_filesystems(
    count: int, base: Path, *, fstype: str = "ext4", size_mib: int = 32
) -> Iterator[list[ScratchFs]]:
    """Create ``count`` zram devices with ``fstype`` mounted under ``base``; remove them on exit."""
    if fstype == "xfs":
        size_mib = max(size_mib, XFS_MIN_MIB)
    base.mkdir(parents=True, exist_ok=True)
    created: list[int] = []
    mounted: list[Path] = []
    filesystems: list[ScratchFs] = []
    try:
        for _ in range(count):
            index = _zram_hot_add()
            created.append(index)
            device = DEV / f"zram{index}"
            (SYS_BLOCK / f"zram{index}" / "disksize").write_text(f"{size_mib}M\n")
            _wait_for_node(device)
            _mkfs(device, fstype)
            mountpoint = base / f"zram{index}"
            mountpoint.mkdir()
            _run(["mount", "-t", fstype, str(device), str(mountpoint)])
            mounted.append(mountpoint)
            filesystems.append(ScratchFs(device, mountpoint, fstype))
        yield filesystems
    finally:
        for mountpoint in reversed(mounted):
            _unmount(mountpoint)
        for index in reversed(created):
            _zram_remove(index)


@contextlib.contextmanager
def loop_filesystem(base: Path, *, fstype: str = "ext4", size_mib: int = 16) -> Iterator[ScratchFs]:
    """One ``fstype`` filesystem on a loop device over a file in ``base``; detached on exit."""
    if fstype == "xfs":
        size_mib = max(size_mib, XFS_MIN_MIB)
    base.mkdir(parents=True, exist_ok=True)
    backing = base / "loop-backing.img"
    with backing.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    device = _loop_attach(backing)
    mountpoint = base / device.name
    mounted = False
    try:
        _mkfs(device, fstype)
        mountpoint.mkdir()
        _run(["mount", "-t", fstype, str(device), str(mountpoint)])
        mounted = True
        yield ScratchFs(device, mountpoint, fstype)
    finally:
        if mounted:
            _unmount(mountpoint)
        _loop_detach(device)
        backing.unlink(missing_ok=True)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, timeout=_COMMAND_TIMEOUT, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()
        raise OSError(f"{' '.join(argv)} failed ({result.returncode}): {detail}")


def _mkfs(device: Path, fstype: str) -> None:
    if fstype == "xfs":
        _run(["mkfs.xfs", "-f", "-q", str(device)])
    elif fstype.startswith("ext"):
        _run([f"mkfs.{fstype}", "-q", "-F", str(device)])
    else:
        _run([f"mkfs.{fstype}", str(device)])


def _wait_for_node(device: Path) -> None:
    """Wait for udev to create the device node (block devices are usually there at once)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not device.exists():
        if time.monotonic() > deadline:
            raise OSError(errno.ENODEV, f"{device} did not appear")
        time.sleep(0.01)


def _unmount(mountpoint: Path) -> None:
    """Thaw (a test may have left it frozen), umount, lazily if it stays busy; drop the dir."""
    thaw_quietly(mountpoint)
    for _ in range(5):
        result = subprocess.run(
            ["umount", str(mountpoint)], capture_output=True, timeout=_COMMAND_TIMEOUT, check=False
        )
        if result.returncode == 0 or not os.path.ismount(mountpoint):
            break
        thaw_quietly(mountpoint)
        time.sleep(0.1)
    else:
        subprocess.run(
            ["umount", "-l", str(mountpoint)],
            capture_output=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
    with contextlib.suppress(OSError):
        mountpoint.rmdir()


def _zram_hot_add() -> int:
    # Reading hot_add allocates a new device and returns its index.
    return int((ZRAM_CONTROL / "hot_add").read_text().strip())


def _zram_remove(index: int) -> None:
    """Reset and hot-remove zram<index>; retried while the kernel still holds it (EBUSY)."""
    block = SYS_BLOCK / f"zram{index}"
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        try:
            if block.exists():
                (block / "reset").write_text("1\n")
            (ZRAM_CONTROL / "hot_remove").write_text(f"{index}\n")
            return
        except OSError as error:
            if error.errno == errno.ENODEV and not block.exists():
                return
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _loop_attach(backing: Path) -> Path:
    """LOOP_CTL_GET_FREE + LOOP_SET_FD; retried when another process takes the same device."""
    control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    backing_fd = os.open(backing, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(20):
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            device = DEV / f"loop{number}"
            _wait_for_node(device)
            loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(loop_fd, LOOP_SET_FD, backing_fd)
            except OSError as error:
                if error.errno != errno.EBUSY:
                    raise
                continue
            finally:
                os.close(loop_fd)
            return device
        raise OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(backing_fd)
        os.close(control)


def _loop_detach(device: Path) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, LOOP_CLR_FD, 0)
            return
        except OSError as error:
            if error.errno == errno.ENXIO:  # already detached
                return
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        finally:
            os.close(fd)
        time.sleep(0.05)
