"""Run the real KVP daemon (`python -m hvguest kvp -n`) against a simulator.

Shared by the end-to-end tests and the demo-style tools: the daemon is a child
process with its own config file, state directory and NOTIFY_SOCKET, so what
is tested is exactly what a unit would start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hvguest.testing.simulator import Simulator

#: Seconds any single step (start, registration, stop) may take.
STEP_TIMEOUT = 10.0


@dataclass
class RunningDaemon:
    """A daemon child process and the simulator it talks to."""

    sim: Simulator
    process: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path
    notify: socket.socket

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STEP_TIMEOUT)

    def notifications(self) -> list[str]:
        messages: list[str] = []
        self.notify.setblocking(False)
        try:
            while True:
                messages.append(self.notify.recv(4096).decode())
        except BlockingIOError:
            pass
        return messages


@contextmanager
def _run_daemon(
    tmp_path: Path,
    sim: Simulator,
    service: str,
    config_text: str,
    state_dir: Path,
    *,
    wait: bool,
) -> Iterator[RunningDaemon]:
    """Write the config, start `python -m hvguest <service> -n`, always reap it."""
    config_path = tmp_path / "hvguest.toml"
    notify_path = tmp_path / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        notify.bind(str(notify_path))
        config_path.write_text(config_text, encoding="utf-8")
        env = dict(os.environ, HVGUEST_CONFIG=str(config_path), NOTIFY_SOCKET=str(notify_path))
        log_path = tmp_path / "daemon.log"
        # Appending keeps the log of a daemon this one replaces (restart tests).
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "hvguest", service, "-n"], env=env, stderr=log_file
            )
        daemon = RunningDaemon(sim, process, state_dir, log_path, notify)
        try:
            if wait:
                sim.wait_registered(timeout=STEP_TIMEOUT, name=service)
            yield daemon
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STEP_TIMEOUT)
    finally:
        notify.close()


@contextmanager
def kvp_daemon(
    tmp_path: Path, *, reply_timeout: float = 5.0, config: str = "", wait: bool = True
) -> Iterator[RunningDaemon]:
    """`python -m hvguest kvp -n` against a simulator; ``config`` continues ``[kvp]``."""
    state_dir = tmp_path / "state"
    with Simulator(tmp_path / "dev", reply_timeout=reply_timeout) as sim:
        text = (
            f'[kvp]\ndevice = "{sim.kvp_device_path}"\nstate_dir = "{state_dir}"\n'
            "ip_injection = false\n" + config
        )
        with _run_daemon(tmp_path, sim, "kvp", text, state_dir, wait=wait) as daemon:
            yield daemon


@contextmanager
def vss_daemon(
    tmp_path: Path,
    *,
    config: str = "",
    reply_timeout: float = 5.0,
    freeze_timeout: float = 30.0,
    wait: bool = True,
) -> Iterator[RunningDaemon]:
    """`python -m hvguest vss -n` against a simulator serving only /dev/vmbus/hv_vss.

    ``config`` continues the ``[vss]`` table (give tests' include_mounts here);
    the state file goes to ``tmp_path/run`` and hooks default to ``tmp_path/hooks``.
    """
    run_dir = tmp_path / "run"
    with Simulator(
        tmp_path / "dev",
        reply_timeout=reply_timeout,
        services=("vss",),
        vss_freeze_timeout=freeze_timeout,
    ) as sim:
        hooks = "" if "hooks_dir" in config else f'hooks_dir = "{tmp_path / "hooks"}"\n'
        text = (
            f'[paths]\nrun = "{run_dir}"\n[vss]\ndevice = "{sim.device_path("vss")}"\n'
            + hooks
            + config
        )
        with _run_daemon(tmp_path, sim, "vss", text, run_dir, wait=wait) as daemon:
            yield daemon


@contextmanager
def fcopy_daemon(
    tmp_path: Path,
    *,
    config: str = "",
    reply_timeout: float = 5.0,
    wait: bool = True,
    sim: Simulator | None = None,
    flavour: str = "auto",
) -> Iterator[RunningDaemon]:
    """`python -m hvguest fcopy -n` against a simulator serving /dev/vmbus/hv_fcopy.

    ``config`` continues the ``[fcopy]`` table (allowed_dirs, file_mode...);
    the temp-file journal goes to ``tmp_path/state`` (``state_dir`` of the
    result), ``[paths] sys`` to an empty ``tmp_path/sys`` so "auto" finds
    only the char device. Pass ``sim`` to restart a daemon on the same
    simulator (the kill -9 tests); otherwise a new one is started.
    """
    run_dir = tmp_path / "run"
    state_dir = tmp_path / "state"
    (tmp_path / "sys").mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        if sim is None:
            sim = stack.enter_context(
                Simulator(tmp_path / "dev", reply_timeout=reply_timeout, services=("fcopy",))
            )
        text = (
            f'[paths]\nrun = "{run_dir}"\nstate = "{state_dir}"\nsys = "{tmp_path / "sys"}"\n'
            f'[fcopy]\ndevice = "{sim.device_path("fcopy")}"\nflavour = "{flavour}"\n' + config
        )
        with _run_daemon(tmp_path, sim, "fcopy", text, state_dir, wait=wait) as daemon:
            yield daemon
