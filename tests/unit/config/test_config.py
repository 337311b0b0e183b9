from __future__ import annotations

from pathlib import Path

import pytest

from hvguest.config import DEFAULT_EXCLUDE_NICS, Config, PathsConfig, load_config, parse_config
from hvguest.errors import ConfigError


def test_empty_document_gives_the_defaults() -> None:
    assert parse_config("") == Config()
    assert Config().kvp.device == Path("/dev/vmbus/hv_kvp")
    assert Config().kvp.state_dir == Path("/var/lib/hyperv")
    assert Config().kvp.exclude_nics == DEFAULT_EXCLUDE_NICS


def test_every_kvp_key_is_read() -> None:
    config = parse_config(
        """
        [kvp]
        device = "/run/sim/hv_kvp"
        state_dir = "/srv/kvp"
        pool_file_mode = "0600"
        fsync = false
        exclude_nics = ["docker*"]
        ip_injection = false
        set_ifconfig = ["/usr/local/bin/apply-ip", "--quiet"]
        set_ifconfig_timeout = 10
        [paths]
        sys = "/fake/sys"
        state = "/fake/state"
        [logging]
        level = "debug"
        """
    )
    assert config.kvp.device == Path("/run/sim/hv_kvp")
    assert config.kvp.state_dir == Path("/srv/kvp")
    assert config.kvp.pool_file_mode == 0o600
    assert config.kvp.fsync is False
    assert config.kvp.exclude_nics == ("docker*",)
    assert config.kvp.ip_injection is False
    assert config.kvp.set_ifconfig == ("/usr/local/bin/apply-ip", "--quiet")
    assert config.kvp.set_ifconfig_timeout == 10.0
    assert config.paths.sys == Path("/fake/sys")
    assert config.paths.etc == Path("/etc")
    assert config.paths.state == Path("/fake/state")
    assert PathsConfig().state == Path("/var/lib/hvguest")  # survives a reboot, unlike /run
    assert config.log_level == "debug"


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ('[kvp]\npool_file_mode = "rw"', "pool_file_mode"),
        ("[kvp]\npool_file_mode = 4095", "pool_file_mode"),
        ('[kvp]\nfsync = "yes"', "fsync"),
        ("[kvp]\nexclude_nics = 3", "exclude_nics"),
        ("[kvp]\nset_ifconfig_timeout = -1", "set_ifconfig_timeout"),
        # The kernel answers the host itself after 30 s: a longer wait is useless.
        ("[kvp]\nset_ifconfig_timeout = 30", "set_ifconfig_timeout"),
        ("[kvp]\ndevice = 1", "device"),
        ("[kvp]\ndevcie = '/dev/x'", "devcie"),
        ("[kvpp]\n", "kvpp"),
        ('[logging]\nlevel = "loud"', "level"),
        ("kvp = 1", "[kvp]"),
    ],
)
def test_invalid_values_name_the_key(document: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_config(document)


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[kvp\n")


def test_missing_default_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HVGUEST_CONFIG", raising=False)
    monkeypatch.setattr("hvguest.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert load_config() == Config()


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")


def test_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hvguest.toml"
    path.write_text('[kvp]\nstate_dir = "/x"\n', encoding="utf-8")
    monkeypatch.setenv("HVGUEST_CONFIG", str(path))
    assert load_config().kvp.state_dir == Path("/x")


def test_vss_and_fcopy_sections_are_read() -> None:
    config = parse_config(
        """
        [vss]
        device = "/run/sim/hv_vss"
        include_mounts = ["/srv/data"]
        exclude_fstypes = ["xfs"]
        crash_consistent = true
        hooks_dir = "/opt/hooks"
        hook_timeout = 5
        hook_failure_aborts = false
        auto_thaw_after = 60
        [fcopy]
        flavour = "uio"
        file_mode = "0600"
        owner = "backup"
        allowed_dirs = ["/srv/incoming"]
        denied_dirs = ["/srv/incoming/private"]
        fsync = false
        [paths]
        dev = "/fake/dev"
        """
    )
    assert config.vss.device == Path("/run/sim/hv_vss")
    assert config.vss.include_mounts == ("/srv/data",)
    assert config.vss.exclude_fstypes == ("xfs",)
    assert config.vss.crash_consistent is True
    assert config.vss.hooks_dir == Path("/opt/hooks")
    assert config.vss.hook_timeout == 5.0
    assert config.vss.hook_failure_aborts is False
    assert config.vss.auto_thaw_after == 60.0
    assert config.fcopy.flavour == "uio"
    assert config.fcopy.file_mode == 0o600
    assert config.fcopy.owner == "backup"
    assert config.fcopy.group == ""
    assert config.fcopy.allowed_dirs == ("/srv/incoming",)
    assert config.fcopy.denied_dirs == ("/srv/incoming/private",)
    assert config.fcopy.fsync is False
    assert config.paths.dev == Path("/fake/dev")


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ("[vss]\nauto_thaw_after = 900", "auto_thaw_after"),
        ("[vss]\nhook_timeout = 0", "hook_timeout"),
        ('[vss]\ncrash_consistent = "yes"', "crash_consistent"),
        ('[fcopy]\nflavour = "netlink"', "flavour"),
        ("[fcopy]\nowner = 0", "owner"),
        ('[fcopy]\nfile_mode = "rwx"', "file_mode"),
    ],
)
def test_invalid_vss_and_fcopy_values_name_the_key(document: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_config(document)
