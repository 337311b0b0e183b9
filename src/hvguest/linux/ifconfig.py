"""Applies SET_IP_INFO the drop-in way: write ifcfg + keyfile, run hv_set_ifconfig.

Replaces the fopen()/fprintf() and system() half of kvp_set_ip_info() in
tools/hv/hv_kvp_daemon.c; the text comes from ``hvguest.services.ipconfig``.

The script contract is kept (``hv_set_ifconfig <ifcfg> <nmconnection>``, exit
status 0 = success) so distribution scripts keep working, with the sharp
edges of the C code removed (S12, S13):

* Both files are rendered before either is written, then each is written to
  a temporary file, fsynced and renamed into place: the script never sees a
  half-written file, and a failure leaves the previous files untouched.
* The files are mode 0600 (the C code leaves them 0666 & ~umask): they name
  the interface's static addresses, gateways and DNS servers, which an admin
  may consider private, and only root-run scripts read them.
* The program runs from an argv list, never a shell, so no host string can
  reach a shell.
* It runs with a timeout below the kernel's 30 s reply timeout. It gets its
  own session, so on timeout the whole process group (ifup and what it
  started) is killed and the host gets HV_E_FAIL from us instead of a kernel
  timeout followed by a channel reset.
* Its output goes to unnamed temporary files rather than pipes: a helper that
  daemonizes (dhclient under ifup) keeps inherited pipes open forever, which
  would make reading them hang; files only need the main process to exit.

With no program configured, the files are the whole interface (for a path
unit or an admin's own tooling) and the request succeeds once they are written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Final

from hvguest.abi.constants import HV_UTIL_TIMEOUT, HvStatus
from hvguest.errors import ConfigError, OperationFailed
from hvguest.services.ipconfig import (
    ifcfg_filename,
    nmconnection_filename,
    render_ifcfg,
    render_nmconnection,
)
from hvguest.services.ports import IpSettings

#: Where hv_kvp_daemon writes the two files (KVP_CONFIG_LOC).
DEFAULT_STATE_DIR: Final = Path("/var/lib/hyperv")
#: KVP_SCRIPTS_PATH "hv_set_ifconfig" as Fedora/RHEL install it.
DEFAULT_SET_IFCONFIG: Final = ("/usr/libexec/hypervkvpd/hv_set_ifconfig",)
#: Seconds the program may run: the kernel gives up on our reply after 30 s.
DEFAULT_TIMEOUT: Final = 25.0
#: Mode of the two files (see the module docstring for why not 0644).
CONFIG_FILE_MODE: Final = 0o600

#: How much of the program's output is kept for the log.
_OUTPUT_TAIL_BYTES: Final = 4096

log = logging.getLogger(__name__)


class ScriptIpConfigurator:
    """IpConfigurator that writes ifcfg-<if> and <if>.nmconnection, then runs a program.

    ``argv`` is the program and any leading arguments; the two file paths
    are appended. ``None`` (or empty) means: write the files and stop.
    """

    def __init__(
        self, state_dir: Path, argv: Sequence[str] | None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if not 0 < timeout < HV_UTIL_TIMEOUT:
            raise ConfigError(
                f"[kvp] set_ifconfig_timeout: expected a number of seconds above 0 and below"
                f" the kernel's {HV_UTIL_TIMEOUT} s reply timeout, got {timeout!r}"
            )
        self._state_dir = state_dir
        self._argv = tuple(argv) if argv else None
        self._timeout = timeout

    def apply(self, settings: IpSettings) -> None:
        """Write both files, then run the program; ``OperationFailed(E_FAIL)`` on any failure."""
        contents = {
            ifcfg_filename(settings.interface): render_ifcfg(settings),
            nmconnection_filename(settings.interface): render_nmconnection(settings),
        }
        paths = write_files_atomically(self._state_dir, contents)
        if self._argv is None:
            log.info(
                "SET_IP_INFO %s: wrote %s (no set_ifconfig program configured)",
                settings.interface,
                ", ".join(map(str, paths)),
            )
            return
        run_program(
            [*self._argv, *map(str, paths)], timeout=self._timeout, output_dir=self._state_dir
        )
        log.info("SET_IP_INFO %s: %s succeeded", settings.interface, self._argv[0])


def write_files_atomically(directory: Path, contents: Mapping[str, str]) -> list[Path]:
    """Write every ``name -> text`` into ``directory`` via temp file + rename; the final paths.

    All temporary files are written and fsynced before the first rename, so
    a full disk or an I/O error leaves every old file as it was.
    """
    staged: list[tuple[Path, Path]] = []
    target = directory
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name, text in contents.items():
            target = directory / name
            staged.append((_stage(directory, name, text.encode("utf-8")), target))
        for temporary, target in staged:
            temporary.replace(target)
        _fsync_directory(directory)
    except OSError as error:
        raise OperationFailed(
            HvStatus.E_FAIL, f"cannot write {target}: {error.strerror or error}"
        ) from error
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
    return [target for _, target in staged]


def run_program(argv: Sequence[str], *, timeout: float, output_dir: Path | None = None) -> None:
    """Run ``argv`` (no shell, stdin /dev/null) and wait at most ``timeout`` seconds.

    Raises ``OperationFailed(E_FAIL)`` when it is missing, cannot start, exits
    non-zero, dies from a signal or runs too long (then its process group is
    killed). The message carries the last line it wrote to stderr. Its output
    is kept in unnamed files in ``output_dir`` (default: the temp directory).
    """
    # Imported here: SET_IP_INFO is rare, and these two (with random, bisect and
    # shutil behind them) would otherwise stay in the daemon's memory for good.
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    program = argv[0]
    with contextlib.ExitStack() as files:
        try:
            stdout = files.enter_context(tempfile.TemporaryFile(dir=output_dir))
            stderr = files.enter_context(tempfile.TemporaryFile(dir=output_dir))
        except OSError as error:
            raise OperationFailed(
                HvStatus.E_FAIL,
                f"cannot create a file for {program}'s output: {error.strerror or error}",
            ) from error
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise OperationFailed(
                HvStatus.E_FAIL,
                f"{program}: no such program. Install the distribution's hv_set_ifconfig"
                " there, point [kvp] set_ifconfig at your own injector, or set it to []"
                " to only write the files",
            ) from None
        except OSError as error:
            raise OperationFailed(
                HvStatus.E_FAIL, f"{program}: cannot run: {error.strerror or error}"
            ) from error
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        else:
            timed_out = False
        finally:
            if process.returncode is None:
                # Kill before reaping: while the leader is an unreaped zombie
                # its pid (the group id) cannot be reused by another group.
                _kill_group(process.pid)
                process.wait()
        failed = timed_out or process.returncode != 0
        _log_output(program, stdout, stderr, failed=failed)
        last_line = _last_line(stderr)
    detail = f": {last_line}" if last_line else ""
    if timed_out:
        raise OperationFailed(
            HvStatus.E_FAIL,
            f"{program} did not finish within {timeout:g} s; killed its process group{detail}",
        )
    if process.returncode < 0:
        raise OperationFailed(
            HvStatus.E_FAIL,
            f"{program} was killed by {signal.Signals(-process.returncode).name}{detail}",
        )
    if process.returncode != 0:
        raise OperationFailed(
            HvStatus.E_FAIL, f"{program} exited with status {process.returncode}{detail}"
        )


def _stage(directory: Path, name: str, data: bytes) -> Path:
    """``data`` in a fresh fsynced temp file next to ``name``; removed again on failure."""
    import tempfile  # noqa: PLC0415 - see run_program

    fd, temporary_name = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    temporary = Path(temporary_name)
    try:
        with open(fd, "wb") as file:  # noqa: PTH123 - wraps the descriptor mkstemp made
            os.fchmod(file.fileno(), CONFIG_FILE_MODE)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (a crash must not bring back the old files)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _kill_group(pgid: int) -> None:
    # SIGKILL, not SIGTERM: the time the host grants is already spent.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(file: IO[bytes]) -> str:
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - _OUTPUT_TAIL_BYTES))
    return file.read().decode("utf-8", errors="replace")


def _last_line(file: IO[bytes]) -> str:
    lines = [line.strip() for line in _tail(file).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _log_output(program: str, stdout: IO[bytes], stderr: IO[bytes], *, failed: bool) -> None:
    """The output tails go to the log: stderr as a warning when the program failed."""
    for stream, text in (("stdout", _tail(stdout)), ("stderr", _tail(stderr))):
        if text.strip():
            level = logging.WARNING if failed and stream == "stderr" else logging.DEBUG
            log.log(
                level,
                "%s %s (last %d bytes at most):\n%s",
                program,
                stream,
                _OUTPUT_TAIL_BYTES,
                text.rstrip(),
            )
