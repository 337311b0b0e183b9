"""Shared pytest wiring: markers, the CI rule that nothing may be skipped, and a guard
that no test writes hvguest's state directories on this machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hvguest.config import KvpConfig, PathsConfig

#: The machine's own directories a daemon under test would use without an override.
_MACHINE_STATE = (PathsConfig().state, KvpConfig().state_dir)


def _snapshot(directory: Path) -> list[tuple[str, int]] | None:
    if not directory.exists():
        return None
    return sorted((entry.name, entry.stat().st_mtime_ns) for entry in directory.iterdir())


@pytest.fixture(autouse=True, scope="session")
def _machine_state_untouched() -> Iterator[None]:
    """Every test's config must point [paths] state and [kvp] state_dir into its tmp_path."""
    before = [_snapshot(directory) for directory in _MACHINE_STATE]
    yield
    after = [_snapshot(directory) for directory in _MACHINE_STATE]
    changed = [str(d) for d, b, a in zip(_MACHINE_STATE, before, after, strict=True) if b != a]
    assert not changed, f"tests wrote the machine's own {', '.join(changed)}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fail-on-skip",
        action="store_true",
        default=False,
        help="turn every skipped test into a failure (CI runs as root with every tool installed)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and item.config.getoption("--fail-on-skip"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under --fail-on-skip: {reason}"
