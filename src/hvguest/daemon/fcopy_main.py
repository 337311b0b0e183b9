"""The FCOPY daemon process: clean up, pick the flavour, serve until SIGTERM.

Replaces main() of tools/hv/hv_fcopy_daemon.c (char device, Linux <= 6.9)
and tools/hv/hv_fcopy_uio_daemon.c (VMBus ring via uio_hv_generic, Linux >=
6.10) with one process that works on either kernel. ``[fcopy] flavour``:

- "char": serve ``[fcopy] device`` (waiting for it if it is not there yet);
- "uio": serve the FCOPY VMBus device under ``[paths] sys``;
- "auto" (default): the char device if it exists, else the UIO device if
  sysfs lists it, else wait (with capped backoff) until one of them appears -
  the host may offer Guest Services long after boot.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Final

from hvguest.config import Config
from hvguest.daemon.fcopy import build_fcopy_service
from hvguest.daemon.systemd import notify
from hvguest.linux.process import set_process_name

log = logging.getLogger("hvguest.fcopy")

#: Flavour probing backoff while neither device exists (seconds).
PROBE_FIRST: Final = 0.1
PROBE_CAP: Final = 2.0
#: Longest single sleep, so SIGTERM ends the wait promptly.
_SLEEP_STEP: Final = 0.1


def detect_flavour(config: Config) -> str | None:
    """ "char" or "uio" if that device is there now (or configured), else None."""
    flavour = config.fcopy.flavour
    if flavour != "auto":
        return flavour
    if os.path.lexists(config.fcopy.device):
        return "char"
    from hvguest.linux.uio import find_fcopy_device

    if find_fcopy_device(config.paths.sys) is not None:
        return "uio"
    return None


def wait_for_flavour(
    config: Config,
    *,
    stop: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """The flavour once a device appears, or None if ``stop()`` became true first."""
    delay = 0.0
    logged = False
    while not stop():
        flavour = detect_flavour(config)
        if flavour is not None:
            return flavour
        if not logged:
            log.info(
                "waiting for %s or the FCOPY VMBus device under %s",
                config.fcopy.device,
                Path(config.paths.sys) / "bus" / "vmbus" / "devices",
            )
            logged = True
        delay = PROBE_FIRST if delay == 0 else min(delay * 2, PROBE_CAP)
        deadline = time.monotonic() + delay
        while not stop() and time.monotonic() < deadline:
            sleep(min(_SLEEP_STEP, max(0.0, deadline - time.monotonic())))
    return None


class _StopFlag:
    """SIGTERM/SIGINT while no loop is running yet (during the flavour wait)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def install(self) -> None:
        def _handler(signum: int, _frame: FrameType | None) -> None:
            self.signal = signum

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)


def serve_fcopy(config: Config, loop_stop: Callable[[], bool] | None = None) -> int:
    """Serve FCOPY in the right flavour until SIGTERM/SIGINT; returns the exit code.

    ``loop_stop`` (tests, embedding) also ends the device wait and the UIO
    loop; the char-device loop stops on signals only.
    """
    set_process_name("hv_fcopy_daemon")
    log.info("FCOPY starting; pid is:%d", os.getpid())
    service = build_fcopy_service(config)
    # Before serving anything: temp files of a killed earlier run go now.
    service.cleanup_leftovers()
    stopped = _StopFlag()
    stopped.install()

    def stop() -> bool:
        return stopped() or (loop_stop is not None and loop_stop())

    flavour = wait_for_flavour(config, stop=stop)
    # stop() is checked again: a SIGTERM right after the device appeared
    # would otherwise be lost before the serving loop installs its handlers.
    if flavour is None or stop():
        log.info("FCOPY stopping (signal %s) before any device appeared", stopped.signal)
        return 0
    log.info("FCOPY flavour: %s", flavour)
    if flavour == "char":
        from hvguest.daemon.fcopy_char import serve_fcopy_char

        return serve_fcopy_char(config, service)
    from hvguest.daemon.fcopy_uio import serve_fcopy_uio

    notify("READY=1\nSTATUS=serving the FCOPY VMBus device through uio_hv_generic")
    try:
        return serve_fcopy_uio(config, service, loop_stop)
    finally:
        notify("STOPPING=1")
