"""`hv_vss_daemon` flags and `hvguest vss plan|thaw` over a fake /proc (no root needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.daemon.cli import main
from hvguest.daemon.vss_cli import vss_daemon_main
from hvguest.errors import OperationFailed
from hvguest.linux.freeze import LinuxFreezer, StateFileJournal, state_file_path
from hvguest.services.ports import FreezeOutcome, FrozenRecord

MOUNTINFO = """\
22 1 0:21 / /proc rw - proc proc rw
29 1 254:0 / / rw - ext4 /dev/vda rw
40 29 8:17 / /data rw - xfs /dev/sdb1 rw
41 29 0:40 / /run rw - tmpfs tmpfs rw
"""


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert vss_daemon_main(["-h"]) == 0
    assert "Usage: hv_vss_daemon" in capsys.readouterr().err


def test_unknown_option_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert vss_daemon_main(["--debug"]) == 1
    assert "Usage: hv_vss_daemon" in capsys.readouterr().err


def test_bad_config_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[vss]\nauto_thaw_after = 1000\n")
    monkeypatch.setenv("HVGUEST_CONFIG", str(config))
    assert vss_daemon_main(["-n"]) == 1
    assert "auto_thaw_after" in capsys.readouterr().err


def fake_root(tmp_path: Path, extra: str = "") -> Path:
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "mountinfo").write_text(MOUNTINFO)
    config = tmp_path / "hvguest.toml"
    config.write_text(
        f'[paths]\nproc = "{tmp_path / "proc"}"\nsys = "{tmp_path / "sys"}"\n'
        f'run = "{tmp_path / "run"}"\n[vss]\nhooks_dir = "{tmp_path / "hooks"}"\n{extra}'
    )
    return config


def test_plan_json_lists_order_and_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fake_root(tmp_path)
    assert main(["vss", "plan", "--json", "--config", str(config)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [item["mountpoint"] for item in document["freeze"]] == ["/data", "/"]
    reasons = {item["mountpoint"]: item["reason"] for item in document["skipped"]}
    assert set(reasons) == {"/proc", "/run"}
    assert document["hooks"] == []


def test_plan_text_in_crash_consistent_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fake_root(tmp_path, "crash_consistent = true\n")
    assert main(["vss", "--config", str(config), "plan"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Mode: crash-consistent")
    assert out[1:4] == [
        "Would freeze, in this order:",
        "  1. /data  xfs on /dev/sdb1",
        "  2. /      ext4 on /dev/vda",
    ]


def test_thaw_skips_a_recorded_mount_that_is_no_longer_mounted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Exclude every real mount so nothing on this machine is touched.
    config = fake_root(tmp_path, 'include_mounts = ["/nowhere"]\n')
    gone = tmp_path / "gone"
    StateFileJournal(state_file_path(tmp_path / "run")).record(FrozenRecord((str(gone),), ()))
    assert main(["vss", "thaw", "--config", str(config)]) == 0
    assert capsys.readouterr().err == (
        f"hvguest vss thaw: {gone}: recorded as frozen, no longer mounted: skipped\n"
    )
    assert StateFileJournal(state_file_path(tmp_path / "run")).recorded() is None


def test_thaw_reports_a_failed_fithaw_and_keeps_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fake_root(tmp_path, 'include_mounts = ["/nowhere"]\n')
    StateFileJournal(state_file_path(tmp_path / "run")).record(FrozenRecord(("/data",), ()))
    thawed: list[str] = []

    def refuse(_self: object, mountpoint: str) -> FreezeOutcome:
        thawed.append(mountpoint)  # the fake mountinfo's /data: never the real ioctl
        raise OperationFailed(HvStatus.E_FAIL, "FITHAW: Operation not permitted")

    monkeypatch.setattr(LinuxFreezer, "thaw", refuse)
    assert main(["vss", "thaw", "--config", str(config)]) == 1
    assert thawed == ["/data"]
    assert capsys.readouterr().err == "hvguest vss thaw: /data: FITHAW: Operation not permitted\n"
    assert StateFileJournal(state_file_path(tmp_path / "run")).recorded() is not None


def test_thaw_with_nothing_recorded_or_planned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fake_root(tmp_path, 'include_mounts = ["/nowhere"]\n')
    assert main(["vss", "thaw", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "nothing was frozen (0 filesystem(s) checked)\n"


def test_hvguest_vss_serve_options_are_parsed_without_argparse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hvguest.daemon.vss_cli import serve_without_argparse

    assert serve_without_argparse(["plan"]) is None
    assert serve_without_argparse(["--bogus"]) is None
    assert serve_without_argparse(["-n", "--config", str(tmp_path / "missing.toml")]) == 1
    assert "no such configuration file" in capsys.readouterr().err


def test_thaw_writes_no_bytecode(tmp_path: Path) -> None:
    # `hvguest vss thaw` runs when a filesystem may still be frozen (a killed
    # daemon's ExecStopPost=): writing a .pyc for a module it imports late
    # would block on that filesystem before anything is thawed.
    import subprocess
    import sys

    config = fake_root(tmp_path, 'include_mounts = ["/nowhere"]\n')
    cache = tmp_path / "pycache"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    script = "import sys; from hvguest.daemon.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", script, "vss", "thaw", "--config", str(config)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    written = sorted(path.name for path in cache.rglob("*.pyc")) if cache.exists() else []
    late = [name for name in written if name.split(".")[0] in {"freeze", "mounts", "hooks", "vss"}]
    assert late == []
