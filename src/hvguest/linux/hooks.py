"""The VSS hook directory: find trustworthy executables and run one under a timeout.

No C counterpart (hv_vss_daemon has no hooks); modelled on what users asked
for: qemu-ga's fsfreeze-hook, VMware's backupScripts.d. Each hook is run as
``<hook> freeze`` before freezing and ``<hook> thaw`` (or ``freeze-fail``)
after thawing; the order is the service's decision.

As root we run whatever is in the directory, so a hook (and the directory)
must be owned by root and not writable by group or others; anything else is
refused with its reason. A hook that outlives its timeout is killed with its
whole process group, so a stuck database client cannot keep the guest frozen.
A killed hook is waited for a few seconds more, not for ever: SIGKILL cannot
end a process in uninterruptible sleep (writing to a filesystem someone else
froze, or to a dead NFS server), and the daemon must go on answering the host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hvguest.services.ports import HookResult, HookSet

if TYPE_CHECKING:
    import subprocess

#: Hook output kept for the log line of a failed hook (the tail of it).
_OUTPUT_TAIL: Final = 200
#: Editor and package-manager leftovers that are never hooks.
_IGNORED_SUFFIXES: Final = ("~", ".dpkg-old", ".dpkg-new", ".dpkg-dist", ".rpmnew", ".rpmsave")
#: Seconds a killed hook gets to go before it is left behind.
DEFAULT_KILL_GRACE: Final = 5.0


def _unsafe(info: os.stat_result, trusted_uid: int) -> str | None:
    if info.st_uid != trusted_uid:
        return f"owned by uid {info.st_uid}, not {trusted_uid}"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group- or world-writable (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


class LinuxHookRunner:
    """``HookRunner`` over a directory of executables."""

    def __init__(
        self,
        directory: Path,
        timeout: float,
        *,
        trusted_uid: int = 0,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        self.directory = directory
        self.timeout = timeout
        self.trusted_uid = trusted_uid
        self.kill_grace = kill_grace

    def discover(self) -> HookSet:
        """Executable, safely owned regular files, sorted by name; the rest with a reason."""
        try:
            directory_info = self.directory.stat()
        except FileNotFoundError:
            return HookSet()
        except OSError as error:
            return HookSet(refused=((str(self.directory), f"cannot read: {error.strerror}"),))
        problem = _unsafe(directory_info, self.trusted_uid)
        if problem is not None:
            return HookSet(refused=((str(self.directory), f"hook directory {problem}"),))
        hooks: list[str] = []
        refused: list[tuple[str, str]] = []
        for entry in sorted(self.directory.iterdir(), key=lambda path: path.name):
            name = entry.name
            if name.startswith(".") or name.endswith(_IGNORED_SUFFIXES):
                continue
            try:
                info = entry.lstat()
            except OSError as error:
                refused.append((name, f"cannot stat: {error.strerror}"))
                continue
            if not stat.S_ISREG(info.st_mode):
                refused.append((name, "not a regular file (symlinks are not followed)"))
                continue
            if not info.st_mode & stat.S_IXUSR:
                refused.append((name, "not executable"))
                continue
            problem = _unsafe(info, self.trusted_uid)
            if problem is not None:
                refused.append((name, problem))
                continue
            hooks.append(name)
        return HookSet(tuple(hooks), tuple(refused))

    def run(self, hook: str, phase: str) -> HookResult:
        """``<dir>/<hook> <phase>``; ok if it exits 0 within the timeout."""
        path = self.directory / hook
        # Output goes to an in-memory file, not a pipe: a hook that starts
        # something in the background (a thaw hook resuming a service) leaves
        # it holding stdout, and waiting for a pipe's EOF would wait for that
        # program, then count the hook as timed out and kill what it started.
        output_fd = os.memfd_create("hvguest-vss-hook", os.MFD_CLOEXEC)
        try:
            return self._run(path, hook, phase, output_fd)
        finally:
            os.close(output_fd)

    def _run(self, path: Path, hook: str, phase: str, output_fd: int) -> HookResult:
        # Imported on first use: most guests have no hooks, and subprocess
        # costs the resident daemon about 0.5 MB. Runs before FIFREEZE, so
        # reading the module cannot block on a frozen disk.
        import subprocess  # noqa: PLC0415

        try:
            process = subprocess.Popen(
                [str(path), phase],
                stdin=subprocess.DEVNULL,
                stdout=output_fd,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
            )
        except OSError as error:
            return HookResult(hook, ok=False, detail=f"cannot start: {error.strerror}")
        try:
            process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            detail = f"timed out after {self.timeout:g} s; killed"
            if not _kill_group(process, self.kill_grace):
                detail += (
                    f", but still there {self.kill_grace:g} s later"
                    f" (pid {process.pid}, stuck in the kernel?): left behind"
                )
            return HookResult(hook, ok=False, detail=detail)
        if process.returncode == 0:
            return HookResult(hook, ok=True)
        tail = _output_tail(output_fd)
        how = (
            f"killed by signal {-process.returncode}"
            if process.returncode < 0
            else f"exit status {process.returncode}"
        )
        return HookResult(hook, ok=False, detail=f"{how}: {tail}" if tail else how)


def _output_tail(output_fd: int) -> str:
    """The last characters the hook wrote (decoded leniently, stripped)."""
    size = os.fstat(output_fd).st_size
    # Four bytes per character at most, so the decoded tail is long enough.
    chunk = os.pread(output_fd, _OUTPUT_TAIL * 4, max(0, size - _OUTPUT_TAIL * 4))
    return chunk.decode("utf-8", "replace").strip()[-_OUTPUT_TAIL:]


def _kill_group(process: subprocess.Popen[bytes], grace: float) -> bool:
    """SIGKILL the hook's process group (it is its own session leader); True once reaped.

    False if the hook is still there after ``grace`` seconds. Its Popen, once
    dropped, goes on subprocess's list of children to reap, and the next hook
    started reaps it, so a left-behind hook is at worst one zombie.
    """
    import subprocess  # noqa: PLC0415 - already imported by the caller: no cost

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        return False
    return True
