"""The VSS step of `hvguest demo`: a host backup's HOT_BACKUP, FREEZE and THAW.

With no filesystems given the daemon runs in crash-consistent mode (answers
FREEZE/THAW without freezing), so the demo needs no root. With ``--vss-fs``
it freezes exactly those mounts for real, after checking that its plan names
nothing else, the same guard the tests use.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from hvguest.abi.constants import HvStatus
from hvguest.linux.freeze import FIFREEZE, FITHAW
from hvguest.testing.daemon_process import RunningDaemon, vss_daemon
from hvguest.testing.vss_host import vss_freeze, vss_hot_backup, vss_thaw

_STEP_TIMEOUT: Final = 10.0


def _status(code: int) -> str:
    try:
        return HvStatus(code).name
    except ValueError:
        return f"0x{code:08X}"


def _is_frozen(mountpoint: Path) -> bool:
    """FIFREEZE answers EBUSY only on a frozen filesystem; otherwise undo the probe."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as error:
            return error.errno == errno.EBUSY
        fcntl.ioctl(fd, FITHAW, 0)
        return False
    finally:
        os.close(fd)


def _planned(daemon_dir: Path) -> list[str]:
    """What the daemon's configuration would freeze (`hvguest vss plan --json`)."""
    from hvguest.config import load_config
    from hvguest.daemon.vss_cli import plan_document

    document = plan_document(load_config(daemon_dir / "hvguest.toml"))
    return [str(item["mountpoint"]) for item in document["freeze"]]


def demo_vss(say: Callable[[str, str], None], root: Path, vss_fs: Sequence[Path]) -> bool:
    """Play the VSS step under ``root`` (a scratch directory); True if every answer was right."""
    mounts = [str(Path(path).resolve()) for path in vss_fs]
    directory = root / "vss"
    directory.mkdir(parents=True, exist_ok=True)
    scratch_device = directory.stat().st_dev
    for mount in mounts:
        if mount == "/" or Path(mount).stat().st_dev == scratch_device:
            say("guest", f"refusing to freeze {mount}: the demo itself lives on it")
            return False
    if mounts:
        config = f"include_mounts = {json.dumps(mounts)}\n"
    else:
        # Crash-consistent, and an allow-list naming nothing for good measure.
        config = 'include_mounts = ["/nonexistent/hvguest-demo"]\ncrash_consistent = true\n'
    with vss_daemon(directory, config=config) as daemon:
        say("sim", f"simulated /dev/vmbus/hv_vss at {daemon.sim.device_path('vss')}")
        say("guest", f"started hv_vss_daemon (pid {daemon.process.pid}): python -m hvguest vss -n")
        ok = _session(say, daemon, directory, mounts)
        code = daemon.stop()
        say("guest", f"SIGTERM -> daemon exited with status {code}")
        for line in daemon.log().splitlines():
            say("", f"  log: {line}")
    return ok and code == 0


def _session(
    say: Callable[[str, str], None], daemon: RunningDaemon, directory: Path, mounts: list[str]
) -> bool:
    host = daemon.sim.host
    hot = vss_hot_backup(host, timeout=_STEP_TIMEOUT)
    say("host", f"HOT_BACKUP: can the guest take part in a live backup? -> {_status(hot.status)}")
    if mounts:
        planned = _planned(directory)
        say("guest", f"plan: freeze {', '.join(planned) or 'nothing'}")
        if sorted(planned) != sorted(mounts):
            say("guest", "refusing: the plan does not freeze exactly the --vss-fs mounts")
            return False
    else:
        say("guest", "crash-consistent mode: FREEZE and THAW succeed without freezing")
    frozen = vss_freeze(host, timeout=_STEP_TIMEOUT)
    say("host", f"FREEZE -> {_status(frozen.status)}")
    really = all(_is_frozen(Path(mount)) for mount in mounts)
    if mounts:
        say("guest", f"{'all' if really else 'NOT all'} of {', '.join(mounts)} frozen")
    thawed = vss_thaw(host, timeout=_STEP_TIMEOUT)
    say("host", f"THAW -> {_status(thawed.status)}")
    still = [mount for mount in mounts if _is_frozen(Path(mount))]
    if mounts:
        say("guest", f"still frozen: {', '.join(still)}" if still else "everything thawed")
    return (
        hot.status == HvStatus.S_OK
        and frozen.status == HvStatus.S_OK
        and thawed.status == HvStatus.S_OK
        and really
        and not still
    )
