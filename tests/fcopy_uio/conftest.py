"""Fixtures: the UIO daemon loop serving the real FCOPY writer through the UIO simulator.

The daemon runs ``serve_fcopy_uio`` with the production service
(``build_fcopy_service``) in a thread of the test process (stopped
through ``loop_stop``); the simulator and its host run here too. Files go to
real directories under tmp_path.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hvguest.config import Config, FcopyConfig, PathsConfig
from hvguest.daemon.fcopy import build_fcopy_service
from hvguest.daemon.fcopy_uio import serve_fcopy_uio
from hvguest.services.fcopy import FcopyService
from hvguest.testing.uio_sim import UioHost, UioSimulator

#: Seconds any single step (start, stop, a reply) may take.
STEP = 10.0


@dataclass
class RunningUioDaemon:
    """A daemon thread, its simulator and the directory copies go to."""

    sim: UioSimulator
    config: Config
    service: FcopyService
    target: Path
    _threads: list[tuple[threading.Thread, threading.Event]] = field(default_factory=list)

    @property
    def host(self) -> UioHost:
        return self.sim.host

    def start(self) -> None:
        stop = threading.Event()
        thread = threading.Thread(
            target=serve_fcopy_uio,
            args=(self.config, self.service, stop.is_set),
            kwargs={"modprobe": self.sim.modprobe_argv},
            name="fcopy-uio-daemon",
            daemon=True,
        )
        thread.start()
        self._threads.append((thread, stop))

    def stop(self) -> None:
        while self._threads:
            thread, stop = self._threads.pop()
            stop.set()
            thread.join(timeout=STEP)
            assert not thread.is_alive(), "the daemon loop did not stop"

    def ready(self) -> None:
        """Wait for the daemon to open the channel, then negotiate as a host does first."""
        self.sim.wait_open(STEP)
        negotiation = self.host.negotiate()
        assert negotiation.status == 0

    def leftovers(self) -> list[str]:
        """Temporary files anywhere under the target directory."""
        return sorted(p.name for p in self.target.rglob(".hvguest-fcopy.*"))


def names(directory: Path) -> list[str]:
    """The entries of ``directory``, sorted."""
    return sorted(entry.name for entry in directory.iterdir())


StartUioDaemon = Callable[..., contextlib.AbstractContextManager[RunningUioDaemon]]


@pytest.fixture
def start_uio_daemon(tmp_path: Path) -> StartUioDaemon:
    """``with start_uio_daemon(bound=False) as daemon:`` (simulator options as keywords)."""

    @contextlib.contextmanager
    def start(*, wait: bool = True, **sim_options: object) -> Iterator[RunningUioDaemon]:
        target = tmp_path / "target"
        target.mkdir()
        run = tmp_path / "run"
        run.mkdir()
        with UioSimulator(tmp_path / "uio", **sim_options) as sim:  # type: ignore[arg-type]
            config = Config(
                fcopy=FcopyConfig(flavour="uio", fsync=False),
                paths=PathsConfig(
                    sys=sim.sys_root, dev=sim.dev_root, run=run, state=tmp_path / "state"
                ),
            )
            daemon = RunningUioDaemon(sim, config, build_fcopy_service(config), target)
            daemon.start()
            try:
                if wait:
                    daemon.ready()
                yield daemon
            finally:
                daemon.stop()

    return start
