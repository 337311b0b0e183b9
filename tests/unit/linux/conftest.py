"""Fixtures shared by the tests of hvguest.linux."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """An empty destination directory for FCOPY's file writer."""
    directory = tmp_path / "dest"
    directory.mkdir()
    return directory
