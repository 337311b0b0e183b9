"""The VSS daemon process: start-up, serve until SIGTERM, thaw on the way out.

Replaces main() of tools/hv/hv_vss_daemon.c around its poll() loop.
"""

from __future__ import annotations

import logging
import os
import sys

from hvguest.config import Config
from hvguest.daemon.log_buffer import LogHold, install_log_buffer
from hvguest.daemon.loop import EventLoop
from hvguest.daemon.systemd import notify
from hvguest.daemon.vss import AutoThawWatchdog, build_vss_service, vss_runner
from hvguest.linux.freeze import StateFileJournal, state_file_path
from hvguest.linux.process import set_process_name

log = logging.getLogger("hvguest.vss")


def serve_vss(config: Config) -> int:
    """Serve the VSS device until SIGTERM/SIGINT; returns the exit code."""
    set_process_name("hv_vss_daemon")
    # Nothing may be written to disk while frozen, and a lazy import would
    # otherwise write its .pyc; everything the freeze path needs is imported above.
    sys.dont_write_bytecode = True
    log.info("VSS starting; pid is:%d", os.getpid())
    hold = LogHold(install_log_buffer(logging.getLogger("hvguest")))
    journal = StateFileJournal(state_file_path(config.paths.run))
    service = build_vss_service(config, on_frozen=hold, journal=journal)
    service.recover()
    runner = vss_runner(config, service)
    watchdog = AutoThawWatchdog(service, config.vss.auto_thaw_after)

    def on_ready() -> None:
        mode = "crash-consistent" if config.vss.crash_consistent else "freezing"
        notify(f"READY=1\nSTATUS=registered with the kernel ({mode} mode)")

    loop = EventLoop([runner], on_ready=on_ready, tickers=[watchdog])
    loop.install_signal_handlers()
    try:
        loop.run()
    finally:
        # The loop's close already thawed (on_reset); this covers a loop that
        # died between FREEZE and its device close.
        service.release("shutting down while frozen")
        service.run_deferred_hooks()
        journal.close()
        hold(False)
        notify("STOPPING=1")
    log.info("VSS stopping (signal %s)", loop.stop_signal)
    return 0
