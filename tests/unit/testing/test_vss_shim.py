"""The shim's VSS safety: mount tables redirected, FIFREEZE refused off the allow-list and on "/".

Every check that could freeze something if the shim were broken runs so that
a broken shim still freezes nothing: the FIFREEZE-on-"/" child runs without
CAP_SYS_ADMIN (the kernel would refuse too; only the shim's own log line
tells its refusal apart), and every other freeze targets a zram filesystem
this test created.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.testing.refshim import build_shim, stop_daemon
from hvguest.testing.refshim.vss import (
    REFERENCE_VSS_DAEMON,
    ReferenceVssFiles,
    UnsafeFreezeTarget,
    checked_allow_list,
    filter_mount_table,
    launch_reference_vss,
    redirection_proven,
    shim_log_lines,
)
from hvguest.testing.simulator import Simulator
from hvguest.testing.vss_host import vss_freeze, vss_thaw
from hvguest.testing.zram import FIFREEZE, ScratchFs, scratch_filesystems, zram_supported

pytestmark = pytest.mark.gcc

STEP = 10.0
IS_ROOT = os.geteuid() == 0
needs_zram = pytest.mark.skipif(not zram_supported(), reason="needs root, zram and mkfs.ext4")


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the shim")
    return build_shim(tmp_path_factory.mktemp("shim"))


def run_child(
    shim: Path,
    code: str,
    env: dict[str, str],
    args: list[str] | None = None,
    *,
    drop_sys_admin: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` with the shim preloaded and exactly the HVSIM_* variables in ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HVSIM_")}
    argv = [sys.executable, "-c", textwrap.dedent(code), *(args or [])]
    if drop_sys_admin and IS_ROOT:
        # Without CAP_SYS_ADMIN the kernel refuses FIFREEZE as well: nothing can freeze.
        argv = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--", *argv]
    return subprocess.run(
        argv,
        env={**base, "LD_PRELOAD": str(shim), **env},
        capture_output=True,
        text=True,
        timeout=STEP,
        check=False,
    )


FREEZE_CHILD = """
    import errno, fcntl, os, sys
    for path, request in zip(sys.argv[1::2], sys.argv[2::2]):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, int(request), 0)
            print(path, request, "ok")
        except OSError as error:
            print(path, request, errno.errorcode[error.errno])
        finally:
            os.close(fd)
"""
FITHAW = 0xC0045878


def freeze_child(
    shim: Path, steps: list[tuple[Path, int]], env: dict[str, str], **kwargs: bool
) -> tuple[list[str], str]:
    args = [item for path, request in steps for item in (str(path), str(request))]
    result = run_child(shim, FREEZE_CHILD, env, args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), result.stderr


# --- FIFREEZE guard ------------------------------------------------------------


def test_fifreeze_on_the_root_filesystem_is_refused_by_the_shim(shim: Path, tmp_path: Path) -> None:
    log = tmp_path / "shim.log"
    lines, stderr = freeze_child(
        shim,
        [(Path("/"), FIFREEZE), (tmp_path, FIFREEZE)],
        {"HVSIM_LOG": str(log), "HVSIM_FREEZE_ALLOW": f"/:{tmp_path}"},
        drop_sys_admin=True,
    )
    assert lines == [f"/ {FIFREEZE} EPERM", f"{tmp_path} {FIFREEZE} EPERM"]
    # The shim's own words: the refusal happened before the real ioctl.
    assert log.read_text().splitlines() == [
        "refuse FIFREEZE /: the root filesystem is never frozen",
        f"refuse FIFREEZE {tmp_path}: the root filesystem is never frozen",
    ]
    assert "hv_sim_preload: refuse FIFREEZE /" in stderr


def test_without_an_allow_list_nothing_may_be_frozen_or_thawed(shim: Path, tmp_path: Path) -> None:
    log = tmp_path / "shim.log"
    lines, _ = freeze_child(
        shim, [(tmp_path, FITHAW)], {"HVSIM_LOG": str(log)}, drop_sys_admin=True
    )
    assert lines == [f"{tmp_path} {FITHAW} EPERM"]
    assert log.read_text() == f"refuse FITHAW {tmp_path}: not on HVSIM_FREEZE_ALLOW\n"


@pytest.mark.root
@needs_zram
def test_freeze_is_allowed_only_on_allow_listed_mounts(shim: Path, tmp_path: Path) -> None:
    with scratch_filesystems(2, tmp_path / "mnt") as (allowed, other):
        log = tmp_path / "shim.log"
        lines, _ = freeze_child(
            shim,
            [
                (allowed.mountpoint, FIFREEZE),
                (allowed.mountpoint, FITHAW),
                (other.mountpoint, FIFREEZE),
                (other.mountpoint, FITHAW),
                (allowed.mountpoint / "lost+found", FIFREEZE),
            ],
            {"HVSIM_LOG": str(log), "HVSIM_FREEZE_ALLOW": str(allowed.mountpoint)},
        )
        assert lines == [
            f"{allowed.mountpoint} {FIFREEZE} ok",
            f"{allowed.mountpoint} {FITHAW} ok",
            f"{other.mountpoint} {FIFREEZE} EPERM",
            f"{other.mountpoint} {FITHAW} EPERM",
            f"{allowed.mountpoint / 'lost+found'} {FIFREEZE} EPERM",  # exact paths only
        ]
        assert log.read_text().splitlines()[:3] == [
            f"allow FIFREEZE {allowed.mountpoint}",
            f"allow FITHAW {allowed.mountpoint}",
            f"refuse FIFREEZE {other.mountpoint}: not on HVSIM_FREEZE_ALLOW",
        ]
        (other.mountpoint / "still-writable").write_text("yes")


# --- mount table redirection ---------------------------------------------------------

READ_TABLES = """
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setmntent.restype = ctypes.c_void_p
    libc.setmntent.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.endmntent.argtypes = [ctypes.c_void_p]
    for path in ("/proc/mounts", "/proc/self/mounts", "/etc/mtab", "/proc/self/mountinfo"):
        try:
            with open(path) as table:
                print(path, table.read().strip())
        except OSError as error:
            print(path, "error", error.errno)
    handle = libc.setmntent(b"/proc/mounts", b"r")
    print("setmntent", "error" if not handle else "ok", ctypes.get_errno() if not handle else "")
    if handle:
        libc.endmntent(handle)
"""


def test_every_way_to_read_the_mount_table_is_redirected(shim: Path, tmp_path: Path) -> None:
    mounts, mountinfo, log = tmp_path / "mounts", tmp_path / "mountinfo", tmp_path / "log"
    mounts.write_text("fake-mounts")
    mountinfo.write_text("fake-mountinfo")
    env = {
        "HVSIM_VSS": "unused",
        "HVSIM_MOUNTS": str(mounts),
        "HVSIM_MOUNTINFO": str(mountinfo),
        "HVSIM_LOG": str(log),
    }
    result = run_child(shim, READ_TABLES, env)
    assert result.stdout.splitlines() == [
        "/proc/mounts fake-mounts",
        "/proc/self/mounts fake-mounts",
        "/etc/mtab fake-mounts",
        "/proc/self/mountinfo fake-mountinfo",
        "setmntent ok ",
    ]
    assert log.read_text().splitlines() == [
        f"mounts /proc/mounts -> {mounts}",
        f"mounts /proc/self/mounts -> {mounts}",
        f"mounts /etc/mtab -> {mounts}",
        f"mounts /proc/self/mountinfo -> {mountinfo}",
        f"mounts /proc/mounts -> {mounts}",
    ]


def test_a_vss_process_without_replacement_tables_cannot_read_the_real_ones(
    shim: Path, tmp_path: Path
) -> None:
    result = run_child(shim, READ_TABLES, {"HVSIM_VSS": "unused"})
    assert result.stdout.splitlines() == [
        f"{path} error {errno.EACCES}"
        for path in ("/proc/mounts", "/proc/self/mounts", "/etc/mtab", "/proc/self/mountinfo")
    ] + [f"setmntent error {errno.EACCES}"]
    assert "refuse mounts /proc/mounts: no replacement table set" in result.stderr


def test_other_daemons_still_see_the_real_mount_table(shim: Path) -> None:
    result = run_child(shim, READ_TABLES, {})
    assert result.stdout.splitlines()[0].startswith("/proc/mounts ")
    assert " / " in result.stdout  # the real root entry


# --- the launcher ---------------------------------------------------------------------


def test_the_launcher_refuses_an_empty_allow_list() -> None:
    with pytest.raises(UnsafeFreezeTarget, match="without an allow-list"):
        checked_allow_list([])


def test_the_launcher_refuses_the_root_filesystem() -> None:
    with pytest.raises(UnsafeFreezeTarget, match="root filesystem"):
        checked_allow_list([Path("/")])


def test_the_launcher_refuses_a_directory_that_is_not_a_mount_point(tmp_path: Path) -> None:
    with pytest.raises(UnsafeFreezeTarget, match="not a mount point"):
        checked_allow_list([tmp_path])


def test_launch_refuses_before_starting_anything(shim: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsafeFreezeTarget):
        launch_reference_vss(shim, tmp_path / "hv_vss", [Path("/")], tmp_path / "work")
    assert not (tmp_path / "work" / "mounts").exists()


def test_filter_keeps_only_the_allowed_mount_points() -> None:
    table = (
        "/dev/vda1 / ext4 rw 0 0\n"
        "/dev/zram5 /tmp/a\\040b ext4 rw 0 0\n"
        "/dev/zram6 /tmp/c ext4 rw 0 0\n"
        "tmpfs /tmp/c/d tmpfs rw 0 0\n"
    )
    kept = filter_mount_table(table, [Path("/tmp/a b"), Path("/tmp/c")], 1)
    assert kept == "/dev/zram5 /tmp/a\\040b ext4 rw 0 0\n/dev/zram6 /tmp/c ext4 rw 0 0\n"


# --- the reference daemon itself --------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[list[ScratchFs]]:
    if not zram_supported():
        pytest.skip("needs root, zram and mkfs.ext4")
    with scratch_filesystems(2, tmp_path / "mnt") as filesystems:
        yield filesystems


def _frozen(mountpoint: Path) -> bool:
    """FIFREEZE answers EBUSY on a frozen filesystem (ours only; thawed again at once)."""
    fd = os.open(mountpoint, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    except OSError as error:
        if error.errno == errno.EBUSY:
            return True
        raise
    else:
        fcntl.ioctl(fd, FITHAW, 0)
        return False
    finally:
        os.close(fd)


@pytest.mark.root
def test_reference_daemon_reads_only_the_fake_table_before_any_freeze(
    shim: Path, tmp_path: Path, scratch: list[ScratchFs]
) -> None:
    if not REFERENCE_VSS_DAEMON.exists():
        pytest.skip(f"{REFERENCE_VSS_DAEMON} absent: .ci/run installs hyperv-daemons")
    mountpoints = [fs.mountpoint for fs in scratch]
    with Simulator(tmp_path / "dev", services=("vss",), reply_timeout=STEP) as sim:
        process, files = launch_reference_vss(
            shim, sim.device_path("vss"), mountpoints, tmp_path / "work"
        )
        try:
            sim.wait_registered(STEP, "vss")
            # A THAW of nothing frozen is harmless and makes the daemon read the table.
            assert vss_thaw(sim.host, timeout=STEP).status == HvStatus.S_OK
            assert_only_test_mounts_touched(files, "FITHAW")
            assert redirection_proven(files)
            assert vss_freeze(sim.host, timeout=STEP).status == HvStatus.S_OK
            assert all(_frozen(path) for path in mountpoints)
            assert vss_thaw(sim.host, timeout=STEP).status == HvStatus.S_OK
            assert not any(_frozen(path) for path in mountpoints)
            assert_only_test_mounts_touched(files, "FIFREEZE")
        finally:
            stop_daemon(process)


def assert_only_test_mounts_touched(files: ReferenceVssFiles, request: str) -> None:
    lines = shim_log_lines(files)
    assert f"mounts /proc/mounts -> {files.mounts}" in lines
    verdicts = [line for line in lines if line.startswith(("allow ", "refuse "))]
    assert not [line for line in verdicts if line.startswith("refuse ")]
    assert sorted({line for line in verdicts if request in line}) == sorted(
        f"allow {request} {path}" for path in files.allowed
    )
