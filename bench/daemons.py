"""The daemons under test: how each is started on a simulated device, and stopped.

* ``hvguest``: ``python -m hvguest kvp -n --device SOCKET --state-dir DIR`` with an
  otherwise empty configuration file, so no machine-wide config is read;
* ``reference``: Debian's /usr/sbin/hv_kvp_daemon with the LD_PRELOAD shim of
  :mod:`hvguest.testing.refshim` (its /var/lib/hyperv redirected to DIR);
* ``echo``: :mod:`bench.echo`, canned answers, to measure the harness itself;
* ``python-floor``: :mod:`bench.floor`, the least a Python daemon does per request.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.procfs import can_pin, pin_daemon
from hvguest.testing.refshim import launch_reference_kvp, stop_daemon
from hvguest.testing.simulator import Simulator
from hvguest.testing.transport import TransportMode

#: Seconds a daemon may take to register or to let go of the device.
STEP_TIMEOUT: Final = 30.0
_REPO_ROOT: Final = Path(__file__).resolve().parents[1]
#: Variables a daemon under test must not see (a preload, a systemd notify socket).
_NOT_INHERITED: Final = frozenset(
    {"LD_PRELOAD", "NOTIFY_SOCKET", "HVGUEST_CONFIG", "PYTHONDONTWRITEBYTECODE"}
)

#: (device socket, state directory, log file) -> the started process.
Launcher = Callable[[Path, Path, Path], "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class DaemonSpec:
    """A daemon under test: its name in the report and how to start it."""

    name: str
    launch: Launcher


def hvguest_daemon(config_path: Path, bytecode_cache: Path) -> DaemonSpec:
    """hvguest's KVP daemon; ``config_path`` is written empty but for ip_injection off.

    Compiled bytecode goes to ``bytecode_cache`` (PYTHONPYCACHEPREFIX) even where
    PYTHONDONTWRITEBYTECODE is set: an installed package starts from .pyc files,
    and compiling on every start would add time and memory no user pays.
    """
    config_path.write_text("[kvp]\nip_injection = false\n", encoding="utf-8")

    def launch(device: Path, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env["HVGUEST_CONFIG"] = str(config_path)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode_cache)
        command = [sys.executable, "-m", "hvguest", "kvp", "-n"]
        command += ["--device", str(device), "--state-dir", str(state_dir)]
        with log.open("ab") as log_file:
            return subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )

    return DaemonSpec("hvguest", launch)


def reference_daemon(shim: Path) -> DaemonSpec:
    """The C hv_kvp_daemon under the LD_PRELOAD shim."""

    def launch(device: Path, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as log_file:
            return launch_reference_kvp(shim, device, state_dir, stdout=log_file, stderr=log_file)

    return DaemonSpec("reference", launch)


def _bench_module(
    name: str, module: str, *, with_state_dir: bool, options: tuple[str, ...] = ()
) -> DaemonSpec:
    """``python -m MODULE SOCKET [STATE_DIR] [OPTIONS]`` from the repository root."""

    def launch(device: Path, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
        arguments = [str(device), str(state_dir)] if with_state_dir else [str(device)]
        arguments += options
        with log.open("ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", module, *arguments],
                cwd=_REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )

    return DaemonSpec(name, launch)


def echo_daemon() -> DaemonSpec:
    """The canned-answer daemon of :mod:`bench.echo` (it keeps no pools)."""
    return _bench_module("echo", "bench.echo", with_state_dir=False)


def floor_daemon(*, write_file: bool = False) -> DaemonSpec:
    """The bare Python loop of :mod:`bench.floor`, which reads the prefilled pool.

    ``write_file``: its SETs also write the pool file, under the peers' locks.
    """
    if write_file:
        return _bench_module(
            "python-floor+file", "bench.floor", with_state_dir=True, options=("--write-file",)
        )
    return _bench_module("python-floor", "bench.floor", with_state_dir=True)


@dataclass
class Started:
    """A registered daemon and how long it took from exec to registration."""

    process: subprocess.Popen[bytes]
    registered_after: float


def start(spec: DaemonSpec, sim: Simulator, state_dir: Path, log: Path) -> Started:
    """Start ``spec`` on the simulator's KVP device and wait for its registration.

    The time runs from just before the exec to the moment the simulator sees
    the registration answer read (the service turns READY).
    """
    begin = time.perf_counter()
    process = spec.launch(sim.kvp_device_path, state_dir, log)
    if can_pin():
        pin_daemon(process.pid)
    try:
        sim.wait_registered(STEP_TIMEOUT)
    except TimeoutError:
        stop_daemon(process)
        raise RuntimeError(
            f"{spec.name} did not register within {STEP_TIMEOUT} s; log {log}:\n"
            + log.read_text(errors="replace")[-2000:]
        ) from None
    registered_after = time.perf_counter() - begin
    if can_pin():
        pin_daemon(process.pid)  # threads it started before the first pinning
    return Started(process, registered_after)


def stop(started: Started, sim: Simulator) -> None:
    """Stop the daemon and wait until the simulated device is free for the next one."""
    stop_daemon(started.process)
    deadline = time.monotonic() + STEP_TIMEOUT
    while sim.transport_mode() != TransportMode.INIT:
        if time.monotonic() > deadline:
            raise RuntimeError("the simulated device was not released after the daemon exited")
        time.sleep(0.001)


def warm_bytecode() -> None:
    """Compile hvguest's .pyc files where Python looks for them, before any daemon starts.

    An installed package starts from .pyc files; without this the first
    daemon compiles every module and its peak RSS measures the compiler.
    No PYTHONPYCACHEPREFIX: under a prefix even the standard library's
    bytecode is looked for there, so every stdlib module would be compiled.
    """
    import hvguest

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    package = Path(hvguest.__file__).resolve().parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
