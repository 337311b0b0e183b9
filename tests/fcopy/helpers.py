"""Small helpers shared by the FCOPY daemon tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hvguest.linux.fcopy_files import TEMP_PREFIX


def leftovers(directory: Path) -> list[Path]:
    """Our temporary files anywhere under ``directory``."""
    return [path for path in directory.rglob("*") if path.name.startswith(TEMP_PREFIX)]


def entries(directory: Path) -> list[str]:
    """The names in ``directory``, sorted."""
    return sorted(path.name for path in directory.iterdir())


def poll_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Check ``predicate`` every 20 ms (for conditions no simulator event announces)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)
