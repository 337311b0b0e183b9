"""Fixtures for the FCOPY daemon tests: a real daemon process on the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hvguest.testing.daemon_process import RunningDaemon, fcopy_daemon


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """The destination directory the host copies into."""
    directory = tmp_path / "dest"
    directory.mkdir()
    return directory


@pytest.fixture
def daemon(tmp_path: Path, dest: Path) -> Iterator[RunningDaemon]:
    """A registered `hvguest fcopy -n` with default configuration."""
    with fcopy_daemon(tmp_path) as running:
        yield running
