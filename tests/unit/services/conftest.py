"""Fixtures shared by the service tests."""

from __future__ import annotations

import pytest

from hvguest.testing.fakes.fcopy import FakeFileSink


@pytest.fixture
def sink() -> FakeFileSink:
    """A fake filesystem for the FCOPY writer with one directory, /srv/in."""
    fake = FakeFileSink()
    fake.add_dir("/srv/in")
    return fake
