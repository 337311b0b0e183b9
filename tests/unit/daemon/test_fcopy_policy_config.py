"""`[fcopy] allowed_dirs/denied_dirs` are compared with resolved destinations, resolved too."""

from __future__ import annotations

from pathlib import Path

from hvguest.abi.constants import HvStatus
from hvguest.config import Config, FcopyConfig, PathsConfig
from hvguest.daemon.fcopy import build_fcopy_service
from hvguest.protocol.fcopy_messages import FcopyComplete, FcopyStart


def _config(tmp_path: Path, **fcopy: tuple[str, ...]) -> Config:
    return Config(
        paths=PathsConfig(run=tmp_path / "run", state=tmp_path / "state"),
        fcopy=FcopyConfig(fsync=False, **fcopy),  # type: ignore[arg-type]
    )


def test_a_denied_prefix_given_through_a_link_denies_the_real_directory(tmp_path: Path) -> None:
    real = tmp_path / "usr-lib"
    real.mkdir()
    link = tmp_path / "lib"  # as /lib -> /usr/lib on a merged-/usr system
    link.symlink_to(real)
    service = build_fcopy_service(_config(tmp_path, denied_dirs=(str(link),)))
    assert service.handle(FcopyStart("a", str(real), 0, 0)) is HvStatus.E_FAIL
    assert list(real.iterdir()) == []


def test_an_allowed_prefix_given_through_a_link_allows_the_real_directory(tmp_path: Path) -> None:
    real = tmp_path / "srv-in"
    real.mkdir()
    link = tmp_path / "in"
    link.symlink_to(real)
    service = build_fcopy_service(_config(tmp_path, allowed_dirs=(str(link),)))
    assert service.handle(FcopyStart("a", str(real), 0, 0)) is HvStatus.S_OK
    assert service.handle(FcopyComplete()) is HvStatus.S_OK
    assert (real / "a").read_bytes() == b""
