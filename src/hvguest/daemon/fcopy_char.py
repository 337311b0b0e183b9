"""The FCOPY char-device flavour: /dev/vmbus/hv_fcopy (Linux <= 6.9).

Replaces the main loop of tools/hv/hv_fcopy_daemon.c (protocol.md 5.1) with
the shared event loop: the device is waited for instead of exiting, a read or
write error reopens it instead of exiting, and every reopen (the kernel
failed the open transaction) abandons the open copy so no partial file stays.

A blocking read()-only loop like the C daemon's was measured against this
one (32 MiB copies, daemon pinned, alternating runs): within the noise of the
harness (about 5 % less daemon CPU per fragment at best), so the shared loop,
with its signal and reconnect handling, is kept.
"""

from __future__ import annotations

import logging
from typing import Final

from hvguest.abi.constants import HvStatus
from hvguest.config import Config
from hvguest.daemon.loop import ChannelRunner, EventLoop
from hvguest.daemon.systemd import notify
from hvguest.protocol.fcopy import FcopyCodec
from hvguest.protocol.fcopy_messages import FcopyRequest
from hvguest.services.fcopy import FcopyService

#: Read buffer: the kernel forwards COMPLETE/CANCEL with the whole packet
#: length (up to its 8192-byte receive limit), so read more than any of them;
#: an oversized message is then read whole and answered instead of EINVAL.
FCOPY_READ_SIZE: Final = 16384

log = logging.getLogger("hvguest.fcopy")


def fcopy_char_runner(
    config: Config, service: FcopyService
) -> ChannelRunner[FcopyRequest, HvStatus]:
    """The channel runner serving ``service`` on ``[fcopy] device``."""
    return ChannelRunner(
        name="fcopy",
        device_path=config.fcopy.device,
        codec=FcopyCodec(),
        handle=service.handle,
        read_size=FCOPY_READ_SIZE,
        log=log,
        on_reset=service.reset,
    )


def serve_fcopy_char(config: Config, service: FcopyService) -> int:
    """Serve the char device until SIGTERM/SIGINT; returns the exit code."""
    runner = fcopy_char_runner(config, service)

    def on_ready() -> None:
        notify("READY=1\nSTATUS=registered with the kernel (char device)")

    loop = EventLoop([runner], on_ready=on_ready)
    loop.install_signal_handlers()
    try:
        loop.run()
    finally:
        service.reset()
        notify("STOPPING=1")
    log.info("FCOPY stopping (signal %s)", loop.stop_signal)
    return 0
