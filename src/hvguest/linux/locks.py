"""Whole-file locks that every KVP pool writer respects; replaces kvp_acquire_lock().

hv_kvp_daemon.c and kvp_client take POSIX record locks (fcntl F_SETLKW, whole
file); cloud-init and azure-init take BSD ``flock`` locks. On Linux the two
kinds never conflict with each other, so only holding *both* excludes every
peer. We take flock first, then the POSIX lock, and release in reverse.

Two caveats of POSIX locks hold here too: they belong to the process (two
descriptors of one process never conflict), and closing *any* descriptor of
the file drops all of the process's POSIX locks on it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager


def acquire_pool_lock(fd: int, *, exclusive: bool) -> None:
    """Take flock, then a whole-file POSIX lock on ``fd``; shared unless ``exclusive``.

    Blocks until both are granted (Python retries EINTR). A shared POSIX lock
    needs ``fd`` open for reading, an exclusive one for writing. On failure
    nothing stays held.
    """
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    fcntl.flock(fd, mode)
    try:
        # lockf(len=0, start=0, whence=SEEK_SET) is F_SETLKW over the whole file,
        # exactly the lock hv_kvp_daemon.c takes (F_WRLCK) and kvp_client (F_RDLCK).
        fcntl.lockf(fd, mode, 0, 0, 0)
    except BaseException:
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise


def release_pool_lock(fd: int) -> None:
    """Drop what ``acquire_pool_lock`` took, in reverse order."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_UN, 0, 0, 0)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def pool_lock(fd: int, *, exclusive: bool) -> Iterator[None]:
    """Hold both locks on ``fd`` for the ``with`` body (see ``acquire_pool_lock``)."""
    acquire_pool_lock(fd, exclusive=exclusive)
    try:
        yield
    finally:
        release_pool_lock(fd)
