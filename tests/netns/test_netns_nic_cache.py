"""The kept NIC list follows every link and address change in a real namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .lab import NetnsLab

pytestmark = pytest.mark.root

PROBE = Path(__file__).with_name("change_probe.py")


@pytest.fixture(scope="module")
def report(netns_lab: NetnsLab) -> dict[str, Any]:
    result: dict[str, Any] = netns_lab.run(PROBE, None)
    return result


def test_the_monitor_reports_an_address_change_once(report: dict[str, Any]) -> None:
    assert report["raw_saw_add"] is True
    assert report["raw_quiet_after_drain"] is False


def test_added_and_removed_addresses_are_seen_at_once(report: dict[str, Any]) -> None:
    assert "192.0.2.77/24" not in report["before"]
    assert "192.0.2.77/24" in report["after_add"]
    assert report["after_del"] == report["before"]


def test_links_added_renamed_and_removed_are_seen_at_once(report: dict[str, Any]) -> None:
    assert {"cache0", "cache1"} <= set(report["after_link_add"])
    assert "cache9" in report["after_rename"]
    assert "cache0" not in report["after_rename"]
    assert "cache9" not in report["after_link_del"]
    assert "cache1" not in report["after_link_del"]  # a veth pair goes as a whole
