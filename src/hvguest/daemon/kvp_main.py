"""The KVP daemon process: start-up, serve until SIGTERM, clean shutdown."""

from __future__ import annotations

import gc
import logging
import os

from hvguest.config import Config
from hvguest.daemon.kvp import build_kvp_service, kvp_runner
from hvguest.daemon.loop import EventLoop
from hvguest.daemon.systemd import notify
from hvguest.linux.process import set_process_name

log = logging.getLogger("hvguest.kvp")


def serve_kvp(config: Config) -> int:
    """Serve the KVP device until SIGTERM/SIGINT; returns the exit code."""
    set_process_name("hv_kvp_daemon")
    log.info("KVP starting; pid is:%d", os.getpid())
    service, release, watchers = build_kvp_service(config)
    runner = kvp_runner(config, service)

    def on_ready() -> None:
        notify(f"READY=1\nSTATUS=registered with the kernel (version {service.kernel_version})")

    loop = EventLoop([runner], on_ready=on_ready, watchers=watchers)
    loop.install_signal_handlers()
    # Everything built so far lives as long as the process: keep the cyclic
    # collector from walking it again and again while requests come in.
    gc.freeze()
    try:
        loop.run()
    finally:
        notify("STOPPING=1")
        release()
    log.info("KVP stopping (signal %s)", loop.stop_signal)
    return 0
