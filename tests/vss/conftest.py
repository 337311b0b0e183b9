"""Fixtures for the real-filesystem VSS tests (see rig.py for the safety guard)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from hvguest.testing.daemon_process import vss_daemon

from .rig import VssRig, toml_list


@pytest.fixture
def start_vss(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[VssRig]]:
    """``with start_vss(mounts, expect=..., config=...) as rig:``; guards the plan first."""

    @contextlib.contextmanager
    def start(
        mounts: Sequence[Path],
        *,
        expect: Sequence[Path] | None = None,
        config: str = "",
        freeze_timeout: float = 30.0,
    ) -> Iterator[VssRig]:
        assert mounts, "every VSS daemon in tests gets an explicit allow-list"
        allow = f"include_mounts = {toml_list(mounts)}\n"
        with vss_daemon(tmp_path, config=allow + config, freeze_timeout=freeze_timeout) as daemon:
            rig = VssRig(daemon, tmp_path)
            rig.guard(mounts if expect is None else expect)
            yield rig

    return start
