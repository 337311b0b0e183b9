"""Process identity and daemonizing (the daemon(3) and prctl(2) calls of the C daemons)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Final

_PR_SET_NAME: Final = 15


def set_process_name(name: str) -> bool:
    """Set comm (what `pgrep -x` and `ps -o comm` see); True on success.

    WALinuxAgent and scripts look for "hv_kvp_daemon" by name, so `hvguest kvp`
    takes the C daemon's name.
    """
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    libc = ctypes.CDLL(library, use_errno=True)
    return int(libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)) == 0


def daemonize() -> None:
    """daemon(1, 0): detach from the terminal, keep the cwd, stdio to /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
