"""The ``netns_lab`` fixture: a network namespace built with pyroute2, always deleted.

The namespace is deleted on teardown whatever happened; deleting it destroys
the veth pairs inside it too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest

from .lab import NetnsLab, build


@pytest.fixture(scope="module")
def netns_lab() -> Iterator[NetnsLab]:
    """The namespace described by LINKS plus routes; deleted after the module."""
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    try:
        from pyroute2 import IPRoute, netns
    except ImportError as error:  # pragma: no cover - pyroute2 is a test dependency
        pytest.skip(f"pyroute2 is not installed: {error}")
    name = f"hvguest-test-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        netns.create(name)
    except OSError as error:
        # A half-made namespace may have left its mount point file behind.
        with contextlib.suppress(OSError):
            netns.remove(name)
        pytest.skip(f"cannot create a network namespace: {error}")
    try:
        lab = NetnsLab(name)
        with IPRoute(netns=name) as ipr:
            build(ipr, lab)
        yield lab
    finally:
        netns.remove(name)
