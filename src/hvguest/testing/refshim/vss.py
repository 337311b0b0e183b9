"""Run the reference hv_vss_daemon (tools/hv/hv_vss_daemon.c) safely under the simulator.

The reference daemon freezes every writable block-device filesystem in
``/proc/mounts``; on this machine that includes the root filesystem, and a
frozen root hangs the machine. So it only ever runs through
:func:`launch_reference_vss`, which

* refuses to start without an explicit allow-list of mount points, and refuses
  any entry that is not a mount point or lives on the root filesystem's device;
* writes a mount table (and mountinfo) holding only those mounts, copied from
  the real ``/proc/self/mounts`` lines, and points the shim's ``HVSIM_MOUNTS``
  / ``HVSIM_MOUNTINFO`` at them, so every way the daemon reads the table
  (setmntent, fopen, open) sees only the test's filesystems;
* sets ``HVSIM_FREEZE_ALLOW`` to the same list, so the shim refuses FIFREEZE /
  FITHAW (EPERM, before the real ioctl) anywhere else, and FIFREEZE on ``/``
  always;
* logs through ``HVSIM_LOG`` what the daemon opened and what it froze, so a
  test can prove the redirection took effect (:func:`redirection_proven`)
  before it ever sends FREEZE.

:func:`launch_hvguest_vss` runs hvguest's daemon under the same guard, so
side-by-side tests and benchmarks differ only in the daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from hvguest.errors import HvError
from hvguest.testing.refshim import reference_daemon_command, reference_environment

#: Where Debian's hyperv-daemons package installs the reference VSS daemon.
REFERENCE_VSS_DAEMON: Final = Path("/usr/sbin/hv_vss_daemon")
ENV_MOUNTS: Final = "HVSIM_MOUNTS"
ENV_MOUNTINFO: Final = "HVSIM_MOUNTINFO"
ENV_FREEZE_ALLOW: Final = "HVSIM_FREEZE_ALLOW"
ENV_LOG: Final = "HVSIM_LOG"
PROC_MOUNTS: Final = Path("/proc/self/mounts")
PROC_MOUNTINFO: Final = Path("/proc/self/mountinfo")


class UnsafeFreezeTarget(HvError):
    """The allow-list is empty, or names something the reference must never freeze."""


@dataclass(frozen=True)
class ReferenceVssFiles:
    """What :func:`prepare_reference_vss` wrote: the fake tables, the shim log, the state dir."""

    mounts: Path
    mountinfo: Path
    log: Path
    state_dir: Path
    allowed: tuple[Path, ...]


def checked_allow_list(mountpoints: Iterable[Path]) -> tuple[Path, ...]:
    """The resolved mount points, or UnsafeFreezeTarget if any may not be frozen."""
    allowed = tuple(Path(os.path.realpath(path)) for path in mountpoints)
    if not allowed:
        raise UnsafeFreezeTarget("refusing to run hv_vss_daemon without an allow-list of mounts")
    root_device = Path("/").stat().st_dev
    for path in allowed:
        if ":" in str(path):
            raise UnsafeFreezeTarget(f"{path}: ':' separates HVSIM_FREEZE_ALLOW entries")
        if not os.path.ismount(path):
            raise UnsafeFreezeTarget(f"{path} is not a mount point")
        if path == Path("/") or path.stat().st_dev == root_device:
            raise UnsafeFreezeTarget(f"{path} is on the root filesystem: never frozen")
    return allowed


def _unescape(field: str) -> str:
    """Undo the octal escapes of /proc/mounts fields (\\040 for a space, ...)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def filter_mount_table(text: str, allowed: Sequence[Path], mountpoint_field: int) -> str:
    """The lines of a mounts/mountinfo ``text`` whose mount point is in ``allowed``."""
    wanted = {str(path) for path in allowed}
    kept = [
        line
        for line in text.splitlines()
        if len(fields := line.split()) > mountpoint_field
        and _unescape(fields[mountpoint_field]) in wanted
    ]
    return "".join(f"{line}\n" for line in kept)


def prepare_reference_vss(work_dir: Path, mountpoints: Iterable[Path]) -> ReferenceVssFiles:
    """Write the fake mount tables for ``mountpoints`` into ``work_dir`` (after the checks)."""
    allowed = checked_allow_list(mountpoints)
    work_dir.mkdir(parents=True, exist_ok=True)
    mounts = work_dir / "mounts"
    mountinfo = work_dir / "mountinfo"
    table = filter_mount_table(PROC_MOUNTS.read_text(), allowed, 1)
    missing = [path for path in allowed if f" {path} " not in table]
    if missing:
        raise UnsafeFreezeTarget(f"not in {PROC_MOUNTS}: {missing}")
    mounts.write_text(table)
    mountinfo.write_text(filter_mount_table(PROC_MOUNTINFO.read_text(), allowed, 4))
    state_dir = work_dir / "state"
    state_dir.mkdir(exist_ok=True)
    return ReferenceVssFiles(mounts, mountinfo, work_dir / "shim.log", state_dir, allowed)


def reference_vss_environment(
    shim: Path, vss_socket: Path, files: ReferenceVssFiles
) -> dict[str, str]:
    """The shim environment for hv_vss_daemon: device, fake tables, allow-list, log."""
    env = reference_environment(shim, state_dir=files.state_dir, vss_socket=vss_socket)
    env[ENV_MOUNTS] = str(files.mounts)
    env[ENV_MOUNTINFO] = str(files.mountinfo)
    env[ENV_FREEZE_ALLOW] = ":".join(str(path) for path in files.allowed)
    env[ENV_LOG] = str(files.log)
    return env


def launch_reference_vss(
    shim: Path,
    vss_socket: Path,
    mountpoints: Iterable[Path],
    work_dir: Path,
    *,
    daemon: Path = REFERENCE_VSS_DAEMON,
    log: bool = True,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = None,
) -> tuple[subprocess.Popen[bytes], ReferenceVssFiles]:
    """Start hv_vss_daemon -n on a simulated device, freezing at most ``mountpoints``.

    ``log=False`` leaves out the shim log (the benchmark: no file write per
    ioctl); refusals still go to stderr.
    """
    files = prepare_reference_vss(work_dir, mountpoints)
    env = reference_vss_environment(shim, vss_socket, files)
    if not log:
        del env[ENV_LOG]
    process = subprocess.Popen(
        reference_daemon_command(daemon),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )
    return process, files


def launch_hvguest_vss(
    shim: Path,
    vss_socket: Path,
    mountpoints: Iterable[Path],
    work_dir: Path,
    *,
    log: bool = True,
    extra_config: str = "",
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = None,
) -> tuple[subprocess.Popen[bytes], ReferenceVssFiles]:
    """Start ``python -m hvguest vss -n`` under the same shim guard as the reference.

    hvguest is confined twice: ``[vss] include_mounts`` names exactly
    ``mountpoints``, and the shim shows it the same filtered mountinfo and
    refuses FIFREEZE off the allow-list. Side-by-side runs thus differ only in
    the daemon. ``extra_config`` continues the ``[vss]`` table.
    """
    files = prepare_reference_vss(work_dir, mountpoints)
    config = work_dir / "hvguest.toml"
    mounts = ", ".join(json.dumps(str(path)) for path in files.allowed)
    config.write_text(
        f"[paths]\nrun = {json.dumps(str(work_dir / 'run'))}\n"
        f"[vss]\ndevice = {json.dumps(str(vss_socket))}\n"
        f"include_mounts = [{mounts}]\n"
        f"hooks_dir = {json.dumps(str(work_dir / 'hooks'))}\n" + extra_config,
        encoding="utf-8",
    )
    env = reference_vss_environment(shim, vss_socket, files)
    env["HVGUEST_CONFIG"] = str(config)
    env.pop("NOTIFY_SOCKET", None)
    if not log:
        del env[ENV_LOG]
    process = subprocess.Popen(
        [sys.executable, "-m", "hvguest", "vss", "-n"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )
    return process, files


def shim_log_lines(files: ReferenceVssFiles) -> list[str]:
    """The shim's log so far (empty if nothing was logged yet)."""
    try:
        return files.log.read_text().splitlines()
    except FileNotFoundError:
        return []


def redirection_proven(files: ReferenceVssFiles) -> bool:
    """The daemon read the fake table and touched nothing but allowed mounts (so far)."""
    lines = shim_log_lines(files)
    redirected = any(
        line.endswith((f"-> {files.mounts}", f"-> {files.mountinfo}")) for line in lines
    )
    allowed = {str(path) for path in files.allowed}
    touched = [line.split(" ", 2)[2] for line in lines if line.startswith(("allow ", "refuse "))]
    return redirected and all(path in allowed for path in touched)
