"""Wires the VSS service to its Linux adapters, the event loop and the auto-thaw watchdog.

The process equivalent of main() in tools/hv/hv_vss_daemon.c, minus the loop
(daemon/loop.py) and the process start-up (daemon/vss_main.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Final

from hvguest.config import Config
from hvguest.daemon.loop import ChannelRunner
from hvguest.linux.freeze import LinuxFreezer, StateFileJournal, state_file_path
from hvguest.linux.hooks import LinuxHookRunner
from hvguest.linux.mounts import LinuxMountSource
from hvguest.protocol.vss import VssCodec, VssReply, VssRequest
from hvguest.services.vss import FreezePolicy, VssService

#: Read buffer: larger than a VSS message, so an oversized one is read whole
#: and answered HV_E_FAIL instead of failing every read with EINVAL.
VSS_READ_SIZE: Final = 256
#: Seconds between attempts when an automatic thaw left something frozen.
RETRY_THAW_AFTER: Final = 1.0

log = logging.getLogger("hvguest.vss")


def _ignore(_frozen: bool) -> None:
    """Default ``on_frozen``."""


def build_vss_service(
    config: Config,
    *,
    on_frozen: Callable[[bool], None] = _ignore,
    journal: StateFileJournal | None = None,
) -> VssService:
    """The service with its real adapters; ``on_frozen`` brackets the frozen time."""
    vss = config.vss
    return VssService(
        mounts=LinuxMountSource(config.paths.proc, config.paths.sys),
        freezer=LinuxFreezer(),
        journal=journal or StateFileJournal(state_file_path(config.paths.run)),
        hooks=LinuxHookRunner(vss.hooks_dir, vss.hook_timeout),
        policy=FreezePolicy.from_config(vss),
        log=log,
        crash_consistent=vss.crash_consistent,
        hook_failure_aborts=vss.hook_failure_aborts,
        on_frozen=on_frozen,
    )


def vss_runner(config: Config, service: VssService) -> ChannelRunner[VssRequest, VssReply]:
    """The channel runner serving ``service`` on the configured device.

    Closing the device (an I/O error, a reset, shutdown) thaws first, as
    hv_vss_daemon's reopen does: the kernel has already failed the request in
    flight, so no THAW for this FREEZE will ever come.
    """
    return ChannelRunner(
        name="vss",
        device_path=config.vss.device,
        codec=VssCodec(),
        handle=service.handle,
        read_size=VSS_READ_SIZE,
        log=log,
        on_reset=lambda: _release(service, "device closed while frozen"),
    )


def _release(service: VssService, why: str) -> None:
    service.release(why)


class AutoThawWatchdog:
    """Ticker: thaws a FREEZE that got no THAW within ``limit`` seconds.

    The kernel gives up on FREEZE after 900 s and never sends THAW for it, and
    a host can die between FREEZE and THAW; hv_vss_daemon then stays frozen
    until something reopens the device (sharp edge S20).
    """

    def __init__(
        self, service: VssService, limit: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._service = service
        self._limit = limit
        self._clock = clock
        self._armed_for = -1
        self._due: float | None = None

    def deadline(self) -> float | None:
        """When the current freeze must be undone; armed the first time it is seen.

        Also due at once when a THAW left its thaw hooks for after its reply.
        """
        service = self._service
        if service.hooks_pending:
            return -math.inf
        if not service.frozen:
            self._due = None
            return None
        if self._due is None or self._armed_for != service.freezes:
            self._armed_for = service.freezes
            self._due = self._clock() + self._limit
        return self._due

    def tick(self, now: float) -> None:
        """The limit passed with no THAW: thaw now (retry soon if something stays frozen)."""
        if self._service.hooks_pending:
            self._service.run_deferred_hooks()
            return
        if self._service.release(f"no THAW within {self._limit:g} s of FREEZE"):
            self._due = None
        else:
            self._due = now + RETRY_THAW_AFTER
