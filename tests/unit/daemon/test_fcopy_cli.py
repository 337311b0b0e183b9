"""`hv_fcopy_daemon` / `hv_fcopy_uio_daemon` options and exit codes, flavour choice, logging."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hvguest.abi.constants import FCOPY_CLASS_GUID, HvStatus
from hvguest.config import Config, FcopyConfig, PathsConfig
from hvguest.daemon.cli import main
from hvguest.daemon.fcopy import build_fcopy_service, log_fcopy_event
from hvguest.daemon.fcopy_cli import fcopy_daemon_main, fcopy_uio_daemon_main, run_fcopy_fast
from hvguest.daemon.fcopy_main import detect_flavour, wait_for_flavour
from hvguest.errors import ConfigError
from hvguest.services.fcopy import CopyAbandoned, CopyFinished, CopyRefused, LeftoverRemoved


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["-x"], ["--bogus"]])
def test_hv_fcopy_daemon_usage_exits_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert fcopy_daemon_main(argv) == 1
    assert "Usage: hv_fcopy_daemon" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["-h"], ["-x"]])
def test_hv_fcopy_uio_daemon_usage_exits_234(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # hv_fcopy_uio_daemon.c: exit(-EINVAL) -> 234.
    assert fcopy_uio_daemon_main(argv) == 234
    assert "Usage: hv_fcopy_uio_daemon" in capsys.readouterr().err


def test_an_unknown_owner_is_refused_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hvguest.toml"
    config.write_text('[fcopy]\nowner = "no-such-user-hvguest"\n', encoding="utf-8")
    monkeypatch.setenv("HVGUEST_CONFIG", str(config))
    assert fcopy_daemon_main(["-n"]) == 1
    assert "no such owner" in capsys.readouterr().err


def test_a_broken_config_file_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hvguest.toml"
    config.write_text('[fcopy]\nflavour = "floppy"\n', encoding="utf-8")
    monkeypatch.setenv("HVGUEST_CONFIG", str(config))
    assert fcopy_uio_daemon_main(["-n"]) == 1
    assert "flavour" in capsys.readouterr().err


def config_for(tmp_path: Path, flavour: str = "auto") -> Config:
    return Config(
        fcopy=FcopyConfig(device=tmp_path / "hv_fcopy", flavour=flavour),
        paths=PathsConfig(sys=tmp_path / "sys", run=tmp_path / "run", state=tmp_path / "state"),
    )


def offer_uio_device(tmp_path: Path) -> None:
    device = tmp_path / "sys" / "bus" / "vmbus" / "devices" / "some-instance"
    device.mkdir(parents=True)
    (device / "class_id").write_text("{" + FCOPY_CLASS_GUID + "}\n", encoding="ascii")


def test_detect_flavour(tmp_path: Path) -> None:
    assert detect_flavour(config_for(tmp_path)) is None
    assert detect_flavour(config_for(tmp_path, "char")) == "char"
    assert detect_flavour(config_for(tmp_path, "uio")) == "uio"
    offer_uio_device(tmp_path)
    assert detect_flavour(config_for(tmp_path)) == "uio"
    (tmp_path / "hv_fcopy").touch()
    assert detect_flavour(config_for(tmp_path)) == "char"  # the char device wins


def test_wait_for_flavour_returns_once_a_device_appears(tmp_path: Path) -> None:
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 5:
            offer_uio_device(tmp_path)

    assert wait_for_flavour(config_for(tmp_path), stop=lambda: False, sleep=sleep) == "uio"
    assert all(0 <= seconds <= 0.1 for seconds in slept)


def test_wait_for_flavour_gives_up_when_stopped(tmp_path: Path) -> None:
    calls: list[float] = []
    result = wait_for_flavour(
        config_for(tmp_path), stop=lambda: len(calls) >= 3, sleep=calls.append
    )
    assert result is None


def test_build_fcopy_service_refuses_an_unknown_group(tmp_path: Path) -> None:
    config = Config(fcopy=FcopyConfig(group="no-such-group-hvguest"))
    with pytest.raises(ConfigError, match="no such group"):
        build_fcopy_service(config)


def test_every_event_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hvguest.fcopy")
    log_fcopy_event(CopyFinished("/srv/a", 3_000_000, 1.5))
    log_fcopy_event(CopyRefused("/proc/x", "denied", HvStatus.E_FAIL))
    log_fcopy_event(CopyRefused("", "WRITE_TO_FILE without an open copy", HvStatus.E_FAIL))
    log_fcopy_event(CopyAbandoned("/srv/b", "the host cancelled the copy", 10))
    log_fcopy_event(LeftoverRemoved("/srv/.hvguest-fcopy.c.0000.tmp"))
    assert [record.getMessage() for record in caplog.records] == [
        "copied /srv/a: 3000000 bytes in 1.500 s (2.0 MB/s)",
        "refused /proc/x: denied (answering 0x80004005 E_FAIL)",
        "refused request: WRITE_TO_FILE without an open copy (answering 0x80004005 E_FAIL)",
        "abandoned /srv/b after 10 bytes: the host cancelled the copy; nothing kept",
        "removed /srv/.hvguest-fcopy.c.0000.tmp, left by an interrupted copy",
    ]


@pytest.mark.parametrize("argv", [["--bogus"], ["extra"], ["--flavour", "floppy"]])
def test_unusual_hvguest_fcopy_options_fall_back_to_argparse(argv: list[str]) -> None:
    assert run_fcopy_fast(argv) is None


def test_hvguest_fcopy_help_comes_from_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["fcopy", "--help"])
    assert caught.value.code == 0
    assert "--flavour" in capsys.readouterr().out


def test_hvguest_fcopy_with_a_missing_config_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fcopy", "-n", "--config", str(tmp_path / "missing.toml")]) == 1
    assert "no such configuration file" in capsys.readouterr().err
