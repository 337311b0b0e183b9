"""Run the reference hv_fcopy_daemon (tools/hv/hv_fcopy_daemon.c, Linux 6.1) on the simulator.

What the 6.1 daemon does (protocol.md section 5, confirmed against Debian's
binary: it imports open/write/pread/pwrite/close/access/mkdir/unlink and
nothing that reads other state): it opens ``/dev/vmbus/hv_fcopy``, writes the
4-byte version 1, reads the kernel's answer and then loops on
``pread(fd, buf, 6196, 0)`` without poll, answering each request with a 4-byte
``pwrite``. The shim maps the device to the simulator's socket; there is no
state directory to redirect (one is still given, empty, so that
/var/lib/hyperv stays out of reach).

It creates directories and files wherever the host says, as root, following
symlinks: send it only targets inside a temporary directory the caller owns.
It logs through syslog only, so its stdout/stderr stay empty.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO, Final

from hvguest.testing.refshim import reference_daemon_command, reference_environment

#: Where Debian's hyperv-daemons package installs the reference FCOPY daemon.
REFERENCE_FCOPY_DAEMON: Final = Path("/usr/sbin/hv_fcopy_daemon")


def launch_reference_fcopy(
    shim: Path,
    fcopy_socket: Path,
    state_dir: Path,
    *,
    daemon: Path = REFERENCE_FCOPY_DAEMON,
    cwd: Path | None = None,
    umask: int = -1,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``hv_fcopy_daemon -n`` on a simulated FCOPY device.

    ``state_dir`` stands in for /var/lib/hyperv (the daemon does not use it);
    ``cwd`` is where relative target paths would land (default: ``state_dir``);
    ``umask`` (if not -1) is set in the child, which creates files 0744 & ~umask.
    Stop it with :func:`hvguest.testing.refshim.stop_daemon`.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    env = reference_environment(shim, state_dir=state_dir, fcopy_socket=fcopy_socket)
    return subprocess.Popen(
        reference_daemon_command(daemon),
        env=env,
        cwd=state_dir if cwd is None else cwd,
        umask=umask,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )
