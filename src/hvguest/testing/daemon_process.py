"""Run the real KVP daemon (`python -m hvguest kvp -n`) against a simulator.

Shared by the end-to-end tests and the demo-style tools: the daemon is a child
process with its own config file, state directory and NOTIFY_SOCKET, so what
is tested is exactly what a unit would start.
"""

from __future__ import annotations

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
def kvp_daemon(
    tmp_path: Path, *, reply_timeout: float = 5.0, config: str = "", wait: bool = True
) -> Iterator[RunningDaemon]:
    state_dir = tmp_path / "state"
    config_path = tmp_path / "hvguest.toml"
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    with Simulator(tmp_path / "dev", reply_timeout=reply_timeout) as sim:
        config_path.write_text(
            f'[kvp]\ndevice = "{sim.kvp_device_path}"\nstate_dir = "{state_dir}"\n'
            "ip_injection = false\n" + config,
            encoding="utf-8",
        )
        env = dict(os.environ, HVGUEST_CONFIG=str(config_path), NOTIFY_SOCKET=str(notify_path))
        log_path = tmp_path / "daemon.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "hvguest", "kvp", "-n"], env=env, stderr=log_file
            )
        daemon = RunningDaemon(sim, process, state_dir, log_path, notify)
        try:
            if wait:
                sim.wait_registered(timeout=STEP_TIMEOUT)
            yield daemon
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STEP_TIMEOUT)
            notify.close()
