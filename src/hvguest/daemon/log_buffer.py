"""Hold log records back while filesystems are frozen; write them out after thaw.

Replaces the rule in vss_operate() of tools/hv/hv_vss_daemon.c that no
syslog() call happens while frozen: a log target (a file, or a syslog daemon
writing to disk) can block on a frozen filesystem, and a blocked VSS daemon
never gets to THAW (microsoft/backupessentials #1). Records are buffered
whatever the target is, since the daemon cannot know where they end up.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

#: Records kept while frozen; beyond that the oldest are dropped (and counted).
DEFAULT_CAPACITY: Final = 2000


class FreezeSafeHandler(logging.Handler):
    """Forwards to ``target``, except between ``hold()`` and ``resume()``."""

    def __init__(self, target: logging.Handler, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__(level=target.level)
        self.target = target
        self._held: deque[logging.LogRecord] | None = None
        self._capacity = capacity
        self._dropped = 0

    @property
    def holding(self) -> bool:
        """Records are being buffered."""
        return self._held is not None

    def hold(self) -> None:
        """Buffer from now on (called right before the first FIFREEZE)."""
        if self._held is None:
            self._held = deque(maxlen=self._capacity)
            self._dropped = 0

    def resume(self) -> None:
        """Write out what was buffered, in order, and forward directly again.

        (Not ``release``: logging.Handler uses that name for its lock.)
        """
        held, self._held = self._held, None
        if held is None:
            return
        records = list(held)
        if self._dropped:
            note = logging.LogRecord(
                "hvguest.vss", logging.WARNING, __file__, 0,
                "%d log record(s) dropped while frozen", (self._dropped,), None,
            )  # fmt: skip
            records.insert(0, note)
        for record in records:
            self.target.handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer or forward one record."""
        held = self._held
        if held is None:
            self.target.handle(record)
            return
        if len(held) == held.maxlen:
            self._dropped += 1
        # Format the message now: its arguments may change before the flush.
        record.msg = record.getMessage()
        record.args = None
        held.append(record)

    def flush(self) -> None:
        """Flush the target (not the buffer: that waits for ``resume``)."""
        self.target.flush()

    def close(self) -> None:
        """Write anything still held, then close the target."""
        self.resume()
        self.target.close()
        super().close()


def install_log_buffer(logger: logging.Logger) -> list[FreezeSafeHandler]:
    """Wrap every handler of ``logger`` so that it can be held; returns the wrappers."""
    wrappers: list[FreezeSafeHandler] = []
    for handler in list(logger.handlers):
        if isinstance(handler, FreezeSafeHandler):
            wrappers.append(handler)
            continue
        wrapper = FreezeSafeHandler(handler)
        logger.removeHandler(handler)
        logger.addHandler(wrapper)
        wrappers.append(wrapper)
    return wrappers


class LogHold:
    """``on_frozen`` for the VSS service: hold or release every wrapped handler."""

    def __init__(self, handlers: list[FreezeSafeHandler]) -> None:
        self.handlers = handlers

    def __call__(self, frozen: bool) -> None:
        """Hold while ``frozen``; resume otherwise."""
        for handler in self.handlers:
            if frozen:
                handler.hold()
            else:
                handler.resume()
