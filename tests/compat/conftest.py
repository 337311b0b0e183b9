"""Fixtures for the KVP differential tests: the shim, the reference, the NIC namespace.

Not root: the reference tests skip (they need namespaces). Root: a missing
gcc or reference daemon is a failure, not a skip: CI installs both, and a
compat suite that silently tested nothing would prove nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvguest.testing.refshim import REFERENCE_KVP_DAEMON, build_shim

from .kvp_lab import Lab, network_lab
from .kvp_sessions import Sandbox, write_resolv_conf

REAL_STATE_DIR = Path("/var/lib/hyperv")


def require(condition: bool, reason: str) -> None:
    """Skip when not root; fail when root (where CI guarantees the tools)."""
    if condition:
        return
    if os.geteuid() != 0:
        pytest.skip(reason)
    pytest.fail(f"{reason} (running as root, where .ci/run installs it)")


def state_snapshot(directory: Path = REAL_STATE_DIR) -> dict[str, tuple[int, int, bytes]] | None:
    """Names, sizes, mtimes and contents under ``directory`` (None if absent)."""
    if not directory.exists():
        return None
    return {
        str(path.relative_to(directory)): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            path.read_bytes() if path.is_file() else b"",
        )
        for path in [directory, *directory.rglob("*")]
    }


@pytest.fixture(scope="session")
def kvp_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(os.geteuid() == 0, "the KVP reference runs in namespaces: needs root")
    require(shutil.which("gcc") is not None, "gcc is needed to build the shim")
    require(REFERENCE_KVP_DAEMON.exists(), f"{REFERENCE_KVP_DAEMON} is absent")
    return build_shim(tmp_path_factory.mktemp("kvp-shim"))


@pytest.fixture(scope="session")
def kvp_resolv_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_resolv_conf(tmp_path_factory.mktemp("kvp-etc"))


@pytest.fixture(scope="module")
def kvp_lab(kvp_shim: Path) -> Iterator[Lab]:
    """The NIC namespace (needs the shim fixture first: it does the root check)."""
    require(shutil.which("ip") is not None, "iproute2 (ip) is needed for the namespace")
    with network_lab() as lab:
        yield lab


@pytest.fixture
def plain_sandbox(kvp_shim: Path, kvp_resolv_conf: Path) -> Sandbox:
    """Each daemon in a new, empty network namespace."""
    return Sandbox(kvp_shim, None, kvp_resolv_conf)


@pytest.fixture
def lab_sandbox(kvp_shim: Path, kvp_resolv_conf: Path, kvp_lab: Lab) -> Sandbox:
    """Both daemons inside the NIC namespace."""
    return Sandbox(kvp_shim, kvp_lab.netns, kvp_resolv_conf)


@pytest.fixture
def real_state_untouched() -> Iterator[None]:
    before = state_snapshot()
    yield
    assert state_snapshot() == before, "something touched the machine's /var/lib/hyperv"
