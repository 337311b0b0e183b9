"""Logging set-up: stderr for journald (-n) or syslog like the C daemons.

The C daemons log to syslog with idents "KVP", "Hyper-V VSS", "HV_FCOPY"; in
the foreground we write one line per record to stderr, which journald
captures with the unit's SyslogIdentifier.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure_logging(*, level: str, syslog_ident: str | None = None) -> None:
    """Send hvguest's records to stderr, or to syslog under ``syslog_ident``."""
    root = logging.getLogger("hvguest")
    root.setLevel(level.upper())
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if syslog_ident is not None and Path("/dev/log").exists():
        # Imported only here: logging.handlers costs ~3 MB RSS in the foreground daemon.
        from logging.handlers import SysLogHandler

        handler = SysLogHandler(address="/dev/log", facility=SysLogHandler.LOG_USER)
        handler.ident = f"{syslog_ident}: "
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    root.propagate = False
