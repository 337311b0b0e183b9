"""Wires the FCOPY file writer to its Linux adapter and to the daemon's log.

The shared half of main() in tools/hv/hv_fcopy_daemon.c and
hv_fcopy_uio_daemon.c: both flavours serve the same ``FcopyService``, built
here from ``[fcopy]`` and ``[paths] state`` (where the temp-file journal lives).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from hvguest.config import Config
from hvguest.linux.fcopy_files import JOURNAL_NAME, LinuxFileSink, resolve_owner
from hvguest.services.fcopy import (
    CopyAbandoned,
    CopyFinished,
    CopyRefused,
    DestinationPolicy,
    FcopyEvent,
    FcopyService,
    LeftoverRemoved,
)

log = logging.getLogger("hvguest.fcopy")


def log_fcopy_event(event: FcopyEvent) -> None:
    """One line per finished copy, per refusal, per abandoned copy, per leftover."""
    if isinstance(event, CopyFinished):
        log.info(
            "copied %s: %d bytes in %.3f s (%.1f MB/s)",
            event.target,
            event.size,
            event.seconds,
            event.megabytes_per_second,
        )
    elif isinstance(event, CopyRefused):
        log.warning(
            "refused %s: %s (answering 0x%08X %s)",
            event.target or "request",
            event.reason,
            event.status,
            event.status.name,
        )
    elif isinstance(event, CopyAbandoned):
        log.info(
            "abandoned %s after %d bytes: %s; nothing kept",
            event.target,
            event.received,
            event.reason,
        )
    elif isinstance(event, LeftoverRemoved):
        log.info("removed %s, left by an interrupted copy", event.path)


def _with_resolved(prefixes: Sequence[str], resolve: Callable[[str], str]) -> tuple[str, ...]:
    """Each prefix as written and resolved: destinations are compared resolved.

    Denying "/lib" must deny "/usr/lib/..." too where /lib is a link to it.
    """
    return tuple(dict.fromkeys(form for prefix in prefixes for form in (prefix, resolve(prefix))))


def build_fcopy_service(config: Config) -> FcopyService:
    """The service over the real filesystem; ``ConfigError`` for an unknown owner/group."""
    fcopy = config.fcopy
    uid, gid = resolve_owner(fcopy.owner, fcopy.group)
    sink = LinuxFileSink(
        config.paths.state / JOURNAL_NAME,
        file_mode=fcopy.file_mode,
        uid=uid,
        gid=gid,
        fsync=fcopy.fsync,
    )
    return FcopyService(
        sink,
        policy=DestinationPolicy.from_prefixes(
            _with_resolved(fcopy.allowed_dirs, sink.resolve),
            _with_resolved(fcopy.denied_dirs, sink.resolve),
        ),
        clock=time.monotonic,
        report=log_fcopy_event,
    )
