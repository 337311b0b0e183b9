"""Process identity and daemonizing (the daemon(3) and prctl(2) calls of the C daemons)."""

from __future__ import annotations

import os


def set_process_name(name: str) -> bool:
    """Set comm (what `pgrep -x` and `ps -o comm` see); True on success.

    WALinuxAgent and scripts look for "hv_kvp_daemon" by name, so `hvguest kvp`
    takes the C daemon's name. Writing /proc/self/comm is prctl(PR_SET_NAME)
    for the main thread without ctypes.util, whose find_library would pull
    shutil and subprocess into the daemon for good.
    """
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, name.encode()[:15])
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


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
