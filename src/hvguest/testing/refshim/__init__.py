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
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
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


def launch_reference_kvp(
    shim: Path,
    kvp_socket: Path,
    state_dir: Path,
    *,
    daemon: Path = REFERENCE_KVP_DAEMON,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the reference KVP daemon on a simulated device, its pools in ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    env = reference_environment(shim, state_dir=state_dir, kvp_socket=kvp_socket)
    return subprocess.Popen(
        reference_daemon_command(daemon),
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
