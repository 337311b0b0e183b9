"""Fixtures for the end-to-end tests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

import pytest

from hvguest.testing.daemon_process import RunningDaemon, kvp_daemon


class StartDaemon(Protocol):
    def __call__(
        self, *, reply_timeout: float = 5.0, config: str = "", wait: bool = True
    ) -> contextlib.AbstractContextManager[RunningDaemon]: ...


@pytest.fixture
def start_kvp_daemon(tmp_path: Path) -> StartDaemon:
    """``with start_kvp_daemon() as daemon:`` runs a registered daemon for the block."""

    def start(
        *, reply_timeout: float = 5.0, config: str = "", wait: bool = True
    ) -> contextlib.AbstractContextManager[RunningDaemon]:
        return kvp_daemon(tmp_path, reply_timeout=reply_timeout, config=config, wait=wait)

    return start
