"""ScriptIpConfigurator's file half: both files complete, private and atomic, or none."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.errors import ConfigError, OperationFailed
from hvguest.linux.ifconfig import ScriptIpConfigurator, write_files_atomically
from hvguest.services.ipconfig import parse_ip_settings, render_ifcfg, render_nmconnection
from hvguest.services.ports import IpSettings


def parse(ip_addr: str = "10.0.0.5;fe80::1", sub_net: str = "24;64") -> IpSettings:
    return parse_ip_settings(
        "eth0",
        "00:15:5D:01:02:03",
        dhcp_enabled=False,
        ip_addr=ip_addr,
        sub_net=sub_net,
        gate_way="10.0.0.1",
        dns_addr="8.8.8.8",
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_both_files_with_mode_0600_and_no_leftovers(tmp_path: Path) -> None:
    settings = parse()
    ScriptIpConfigurator(tmp_path, None).apply(settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eth0.nmconnection", "ifcfg-eth0"]
    assert (tmp_path / "ifcfg-eth0").read_text() == render_ifcfg(settings)
    assert (tmp_path / "eth0.nmconnection").read_text() == render_nmconnection(settings)
    assert mode(tmp_path / "ifcfg-eth0") == mode(tmp_path / "eth0.nmconnection") == 0o600


def test_replaces_world_readable_files_from_the_c_daemon(tmp_path: Path) -> None:
    for name in ("ifcfg-eth0", "eth0.nmconnection"):
        (tmp_path / name).write_text("old, much longer content than the new file will have\n" * 9)
        (tmp_path / name).chmod(0o666)
    settings = parse()
    ScriptIpConfigurator(tmp_path, None).apply(settings)
    assert (tmp_path / "ifcfg-eth0").read_text() == render_ifcfg(settings)
    assert mode(tmp_path / "ifcfg-eth0") == mode(tmp_path / "eth0.nmconnection") == 0o600


def test_creates_a_missing_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "var" / "lib" / "hyperv"
    ScriptIpConfigurator(state, None).apply(parse())
    assert (state / "ifcfg-eth0").is_file()


def test_nothing_is_written_on_invalidarg(tmp_path: Path) -> None:
    (tmp_path / "ifcfg-eth0").write_text("previous\n")
    configurator = ScriptIpConfigurator(tmp_path, None)
    with pytest.raises(OperationFailed) as caught:
        configurator.apply(parse(ip_addr="10.0.0.5;10.0.0.300", sub_net="24;24"))
    assert caught.value.status is HvStatus.INVALIDARG
    assert [p.name for p in tmp_path.iterdir()] == ["ifcfg-eth0"]
    assert (tmp_path / "ifcfg-eth0").read_text() == "previous\n"


def test_nothing_is_written_when_rendering_fails(tmp_path: Path) -> None:
    good = parse()
    bad = IpSettings("eth0/../../x", good.mac, good.dhcp, good.addresses, (), ())
    with pytest.raises(OperationFailed) as caught:
        ScriptIpConfigurator(tmp_path, None).apply(bad)
    assert caught.value.status is HvStatus.E_FAIL
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_temporary_files_and_runs_nothing(tmp_path: Path) -> None:
    # A directory where the ifcfg file should go makes the rename fail.
    (tmp_path / "ifcfg-eth0").mkdir()
    marker = tmp_path / "script-ran"
    script = tmp_path / "set_ifconfig"
    script.write_text(f"#!/bin/sh\ntouch '{marker}'\n")
    script.chmod(0o755)
    with pytest.raises(OperationFailed) as caught:
        ScriptIpConfigurator(tmp_path, [str(script)]).apply(parse())
    assert caught.value.status is HvStatus.E_FAIL
    assert "ifcfg-eth0" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ifcfg-eth0", "set_ifconfig"]
    assert not marker.exists()


def test_write_files_atomically_returns_paths_in_order(tmp_path: Path) -> None:
    paths = write_files_atomically(tmp_path, {"b": "2\n", "a": "1\n"})
    assert paths == [tmp_path / "b", tmp_path / "a"]
    assert [p.read_text() for p in paths] == ["2\n", "1\n"]


@pytest.mark.parametrize("timeout", [0.0, -1.0, 30.0, 31.0])
def test_timeout_must_be_below_the_kernels(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(ConfigError, match="set_ifconfig_timeout"):
        ScriptIpConfigurator(tmp_path, ["true"], timeout=timeout)
