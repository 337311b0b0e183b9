"""Run the reference C daemons (tools/hv/hv_kvp_daemon.c) under hvguest's simulator.

The reference ``hv_kvp_daemon`` opens ``/dev/vmbus/hv_kvp`` and keeps its pools
in ``/var/lib/hyperv``. ``hv_sim_preload.c``, an ``LD_PRELOAD`` shim shipped
here as C source, turns that device into a connection to a simulated device
(the socket protocol of :mod:`hvguest.testing.wire`) and moves
``/var/lib/hyperv`` to a scratch directory, so the C daemon runs unmodified,
without Hyper-V, and never touches the machine's own state. Compatibility
tests and the benchmark use it to put the reference next to hvguest.

The shim is compiled at run time (:func:`build_shim`) because it is only
needed where gcc and the reference daemon are present.

Never send SET_IP_INFO to a reference daemon: it runs ``hv_set_ifconfig``,
which (where a distribution ships one) reconfigures the machine's own
network; only the state directory is redirected, not what scripts do.

:class:`Isolation` adds a second, kernel-enforced layer under the shim's
redirect (needs root): the daemon is started by a small Python wrapper
(:func:`isolated_command`) that enters a private mount namespace and a
network namespace (a new, empty one or a test's own), mounts a fresh sysfs
so ``/sys/class/net`` shows that namespace's NICs, bind-mounts a scratch
directory over ``/var/lib/hyperv`` and then execs the daemon, which thus
keeps its pid. Whatever the daemon or its helper scripts do to files under
``/var/lib/hyperv`` or to the network stays inside those namespaces.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Final

from hvguest.errors import HvError

#: Where Debian's hyperv-daemons package installs the reference KVP daemon.
REFERENCE_KVP_DAEMON: Final = Path("/usr/sbin/hv_kvp_daemon")
#: The shim's C source, inside this package.
SHIM_SOURCE_NAME: Final = "hv_sim_preload.c"
#: The compiled shim's file name in the output directory.
SHIM_LIBRARY_NAME: Final = "hv_sim_preload.so"
#: Compiler flags: warnings are errors, so a libc that changes a prototype is noticed.
COMPILER_FLAGS: Final = ("-shared", "-fPIC", "-O2", "-Wall", "-Werror")
#: The shim's environment variables (see the C source's header).
ENV_KVP: Final = "HVSIM_KVP"
ENV_VSS: Final = "HVSIM_VSS"
ENV_FCOPY: Final = "HVSIM_FCOPY"
ENV_STATE_DIR: Final = "HVSIM_STATE_DIR"
#: How long :func:`stop_daemon` waits after SIGTERM before SIGKILL.
STOP_TIMEOUT: Final = 5.0
#: The directory :class:`Isolation` covers with its scratch directory.
REAL_STATE_DIR: Final = Path("/var/lib/hyperv")

# <sched.h> and <sys/mount.h> values (stable kernel ABI).
_CLONE_NEWNS: Final = 0x00020000
_CLONE_NEWNET: Final = 0x40000000
_MS_RDONLY: Final = 0x1
_MS_REMOUNT: Final = 0x20
_MS_BIND: Final = 0x1000
_MS_REC: Final = 0x4000
_MS_PRIVATE: Final = 0x40000


class ShimBuildError(HvError):
    """The shim did not compile (no gcc, or the compiler's output says why)."""


def shim_source() -> Path:
    """The path of ``hv_sim_preload.c`` as installed with the package."""
    return Path(str(resources.files(__name__).joinpath(SHIM_SOURCE_NAME)))


def build_shim(out_dir: Path, *, compiler: str = "gcc") -> Path:
    """Compile the shim into ``out_dir``; the path of the shared object.

    Raises :class:`ShimBuildError` if the compiler is missing or fails.
    """
    gcc = shutil.which(compiler)
    if gcc is None:
        raise ShimBuildError(f"{compiler} not found on PATH; it is needed to build the shim")
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / SHIM_LIBRARY_NAME
    command = [gcc, *COMPILER_FLAGS, "-o", str(library), str(shim_source()), "-ldl"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ShimBuildError(f"building the shim failed:\n{result.stderr.strip()}")
    return library


def reference_environment(
    shim: Path,
    *,
    state_dir: Path,
    kvp_socket: Path | None = None,
    vss_socket: Path | None = None,
    fcopy_socket: Path | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a reference daemon: the shim preloaded, devices and state mapped.

    ``base`` defaults to this process's environment; any preload or simulator
    variables in it are replaced, so the daemon can only reach what is given here.
    """
    env = dict(os.environ if base is None else base)
    for name in (ENV_KVP, ENV_VSS, ENV_FCOPY):
        env.pop(name, None)
    env["LD_PRELOAD"] = str(shim)
    env[ENV_STATE_DIR] = str(state_dir)
    for name, socket_path in (
        (ENV_KVP, kvp_socket),
        (ENV_VSS, vss_socket),
        (ENV_FCOPY, fcopy_socket),
    ):
        if socket_path is not None:
            env[name] = str(socket_path)
    return env


def reference_daemon_command(
    daemon: Path = REFERENCE_KVP_DAEMON, extra_args: Sequence[str] = ()
) -> list[str]:
    """argv for a reference daemon in the foreground (``-n``: no fork, no detach)."""
    return [str(daemon), "-n", *extra_args]


@dataclass(frozen=True, slots=True)
class Isolation:
    """Namespaces for a daemon: a private mount tree and a network namespace of its own.

    ``state_cover`` is bind-mounted over ``/var/lib/hyperv`` (created if
    needed); ``netns`` names a network namespace file (``/run/netns/<name>``)
    to join, or None for a new, empty one; ``binds`` are extra read-only bind
    mounts (source, target), e.g. a fixed resolv.conf over ``/etc/resolv.conf``.
    """

    state_cover: Path
    netns: Path | None = None
    binds: tuple[tuple[Path, Path], ...] = ()


class IsolationError(HvError):
    """A namespace or mount step of the isolation wrapper failed."""


# The wrapper's whole program: the real work is in isolate_and_exec().
_WRAPPER = "from hvguest.testing.refshim import isolate_and_exec; isolate_and_exec()"


def isolated_command(
    command: Sequence[str], isolation: Isolation, *, preload: str | None = None
) -> list[str]:
    """argv that runs ``command`` inside ``isolation`` (the wrapper execs it: same pid).

    ``preload`` becomes ``LD_PRELOAD`` only for ``command``: the wrapper itself
    must see the real paths it mounts on, not the shim's redirections.
    """
    plan = {
        "preload": preload,
        "state_cover": str(isolation.state_cover),
        "netns": None if isolation.netns is None else str(isolation.netns),
        "binds": [[str(source), str(target)] for source, target in isolation.binds],
    }
    return [sys.executable, "-c", _WRAPPER, json.dumps(plan), *command]


def isolate_and_exec(argv: Sequence[str] | None = None) -> None:
    """The wrapper's body: ``argv`` is [plan JSON, program, args...]; never returns."""
    args = list(sys.argv[1:] if argv is None else argv)
    plan, command = json.loads(args[0]), args[1:]
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            error = ctypes.get_errno()
            raise IsolationError(f"isolation: {what}: {os.strerror(error)}")

    def mount(source: str, target: str, fstype: str | None, flags: int) -> None:
        check(
            libc.mount(
                source.encode(),
                target.encode(),
                None if fstype is None else fstype.encode(),
                ctypes.c_ulong(flags),
                None,
            ),
            f"mount {source} on {target}",
        )

    if plan["netns"] is not None:
        netns_fd = os.open(plan["netns"], os.O_RDONLY | os.O_CLOEXEC)
        try:
            check(libc.setns(netns_fd, _CLONE_NEWNET), f"setns {plan['netns']}")
        finally:
            os.close(netns_fd)
        check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    else:
        check(libc.unshare(_CLONE_NEWNS | _CLONE_NEWNET), "unshare(CLONE_NEWNS|CLONE_NEWNET)")
    # Private first: nothing mounted below may propagate back to the machine.
    mount("none", "/", None, _MS_REC | _MS_PRIVATE)
    # sysfs shows the network namespace of whoever mounts it: a fresh one
    # makes /sys/class/net list this namespace's NICs (as `ip netns exec`).
    mount("sysfs", "/sys", "sysfs", 0)
    if not REAL_STATE_DIR.is_dir():
        # Nothing to mount over: cover /var/lib with an empty tmpfs instead
        # of creating the directory on the machine.
        mount("tmpfs", str(REAL_STATE_DIR.parent), "tmpfs", 0)
        REAL_STATE_DIR.mkdir()
    mount(plan["state_cover"], str(REAL_STATE_DIR), None, _MS_BIND)
    for source, target in plan["binds"]:
        mount(source, target, None, _MS_BIND)
        mount("none", target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY)
    if plan["preload"] is not None:
        os.environ["LD_PRELOAD"] = plan["preload"]
    os.execv(command[0], command)  # noqa: S606 - argv list, no shell: it is the point


def launch_reference_kvp(
    shim: Path,
    kvp_socket: Path,
    state_dir: Path,
    *,
    daemon: Path = REFERENCE_KVP_DAEMON,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = None,
    isolation: Isolation | None = None,
) -> subprocess.Popen[bytes]:
    """Start the reference KVP daemon on a simulated device, its pools in ``state_dir``.

    With ``isolation`` (root only) it also runs in its own mount and network
    namespaces, ``/var/lib/hyperv`` covered by ``isolation.state_cover``.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    env = reference_environment(shim, state_dir=state_dir, kvp_socket=kvp_socket)
    command = reference_daemon_command(daemon)
    if isolation is not None:
        isolation.state_cover.mkdir(parents=True, exist_ok=True)
        command = isolated_command(command, isolation, preload=env.pop("LD_PRELOAD"))
    return subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )


def stop_daemon(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, then SIGKILL if it is still running after ``timeout``; the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout)
