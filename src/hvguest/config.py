"""The configuration file: one TOML document, one section per service.

Default location ``/etc/hvguest/hvguest.toml`` (``HVGUEST_CONFIG`` or
``--config`` override it). A missing file at the default location means
"all defaults"; a named file that is missing is an error. Every problem is a
``ConfigError`` whose message names the offending key, e.g.
``[kvp] pool_file_mode: expected an octal mode such as "0644", got "rw"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from hvguest.errors import ConfigError
from hvguest.records import field, record

DEFAULT_CONFIG_PATH: Final = Path("/etc/hvguest/hvguest.toml")
CONFIG_ENV: Final = "HVGUEST_CONFIG"

#: Interfaces whose addresses never reach the AUTO pool by default: container
#: and bridge plumbing (the open-vm-tools exclude-nics idea).
DEFAULT_EXCLUDE_NICS: Final = ("docker*", "veth*", "br-*", "cni*", "flannel*", "virbr*", "lo")


@record
class PathsConfig:
    """Roots of the OS trees the adapters read; tests and containers move them."""

    sys: Path = Path("/sys")
    etc: Path = Path("/etc")
    run: Path = Path("/run")
    #: hvguest's own state that must outlive a reboot (the FCOPY open-copy journal).
    state: Path = Path("/var/lib/hvguest")
    proc: Path = Path("/proc")
    dev: Path = Path("/dev")


@record
class KvpConfig:
    """``[kvp]``: the key/value exchange daemon."""

    device: Path = Path("/dev/vmbus/hv_kvp")
    state_dir: Path = Path("/var/lib/hyperv")
    #: Mode for pool files we create; existing files keep theirs.
    pool_file_mode: int = 0o644
    #: fdatasync pool changes before answering the host.
    fsync: bool = True
    exclude_nics: tuple[str, ...] = DEFAULT_EXCLUDE_NICS
    #: Accept SET_IP_INFO at all.
    ip_injection: bool = True
    #: The program run after the ifcfg/keyfile are written (argv, never a shell).
    set_ifconfig: tuple[str, ...] = ("/usr/libexec/hypervkvpd/hv_set_ifconfig",)
    #: Seconds; below the kernel's 30 s so the host gets our answer, not a timeout.
    set_ifconfig_timeout: float = 25.0


#: Where VSS hooks live: executables run with freeze / thaw / freeze-fail.
DEFAULT_VSS_HOOKS_DIR: Final = Path("/etc/hvguest/vss-hooks.d")


@record
class VssConfig:
    """``[vss]``: the freeze/thaw daemon for host backups."""

    device: Path = Path("/dev/vmbus/hv_vss")
    #: Mount points to consider; empty means every mount the policy accepts.
    include_mounts: tuple[str, ...] = ()
    exclude_mounts: tuple[str, ...] = ()
    #: Filesystem types to consider; empty means every type the policy accepts.
    include_fstypes: tuple[str, ...] = ()
    exclude_fstypes: tuple[str, ...] = ()
    #: Answer FREEZE/THAW with success without freezing (crash-consistent backups).
    crash_consistent: bool = False
    hooks_dir: Path = DEFAULT_VSS_HOOKS_DIR
    #: Seconds one hook may run before it is killed and counted as failed.
    hook_timeout: float = 30.0
    #: A failing pre-freeze hook aborts the freeze (HV_E_FAIL to the host).
    hook_failure_aborts: bool = True
    #: Seconds after which a freeze with no THAW is undone by the daemon itself;
    #: well under the kernel's 900 s so the guest never stays frozen that long.
    auto_thaw_after: float = 120.0


@record
class FcopyConfig:
    """``[fcopy]``: host-to-guest file copy (Copy-VMFile)."""

    device: Path = Path("/dev/vmbus/hv_fcopy")
    #: "char" (/dev/vmbus/hv_fcopy, Linux <= 6.9), "uio" (Linux >= 6.10) or "auto".
    flavour: str = "auto"
    #: Mode of copied files (the reference uses 0744).
    file_mode: int = 0o644
    #: Owner and group of copied files (name or number); empty keeps the daemon's.
    owner: str = ""
    group: str = ""
    #: Destination directory prefixes that may receive files; empty means all.
    allowed_dirs: tuple[str, ...] = ()
    #: Destination prefixes refused in addition to /proc, /sys and /dev.
    denied_dirs: tuple[str, ...] = ()
    #: fsync each copied file before it appears under its final name.
    fsync: bool = True


@record
class Config:
    """The whole file."""

    kvp: KvpConfig = field(default_factory=KvpConfig)
    vss: VssConfig = field(default_factory=VssConfig)
    fcopy: FcopyConfig = field(default_factory=FcopyConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    log_level: str = "info"


_LOG_LEVELS: Final = ("debug", "info", "warning", "error")


def load_config(path: Path | None = None) -> Config:
    """Read the configuration from ``path``, ``$HVGUEST_CONFIG`` or the default location."""
    explicit = path is not None or CONFIG_ENV in os.environ
    chosen = path if path is not None else Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_PATH))
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{chosen}: no such configuration file") from None
        return Config()
    except OSError as error:
        raise ConfigError(f"{chosen}: cannot read: {error.strerror}") from None
    return parse_config(text, source=str(chosen))


def parse_config(text: str, *, source: str = "<config>") -> Config:
    """Parse and validate TOML text."""
    # Imported here: with no configuration file the daemons never need it, and
    # tomllib (with datetime) stays in their memory for good, about 0.7 MB.
    import tomllib  # noqa: PLC0415

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
    reader = _Reader(document, source)
    kvp = reader.section("kvp")
    vss = reader.section("vss")
    fcopy = reader.section("fcopy")
    paths = reader.section("paths")
    logging_section = reader.section("logging")
    reader.reject_unknown(document, "", {"kvp", "vss", "fcopy", "paths", "logging"})
    defaults = KvpConfig()
    vss_defaults = VssConfig()
    fcopy_defaults = FcopyConfig()
    default_paths = PathsConfig()
    config = Config(
        kvp=KvpConfig(
            device=kvp.path("device", defaults.device),
            state_dir=kvp.path("state_dir", defaults.state_dir),
            pool_file_mode=kvp.mode("pool_file_mode", defaults.pool_file_mode),
            fsync=kvp.boolean("fsync", defaults.fsync),
            exclude_nics=kvp.strings("exclude_nics", defaults.exclude_nics),
            ip_injection=kvp.boolean("ip_injection", defaults.ip_injection),
            set_ifconfig=kvp.strings("set_ifconfig", defaults.set_ifconfig),
            set_ifconfig_timeout=kvp.positive_number(
                "set_ifconfig_timeout", defaults.set_ifconfig_timeout, below=30.0
            ),
        ),
        vss=VssConfig(
            device=vss.path("device", vss_defaults.device),
            include_mounts=vss.strings("include_mounts", vss_defaults.include_mounts),
            exclude_mounts=vss.strings("exclude_mounts", vss_defaults.exclude_mounts),
            include_fstypes=vss.strings("include_fstypes", vss_defaults.include_fstypes),
            exclude_fstypes=vss.strings("exclude_fstypes", vss_defaults.exclude_fstypes),
            crash_consistent=vss.boolean("crash_consistent", vss_defaults.crash_consistent),
            hooks_dir=vss.path("hooks_dir", vss_defaults.hooks_dir),
            hook_timeout=vss.positive_number(
                "hook_timeout", vss_defaults.hook_timeout, below=900.0
            ),
            hook_failure_aborts=vss.boolean(
                "hook_failure_aborts", vss_defaults.hook_failure_aborts
            ),
            auto_thaw_after=vss.positive_number(
                "auto_thaw_after", vss_defaults.auto_thaw_after, below=900.0
            ),
        ),
        fcopy=FcopyConfig(
            device=fcopy.path("device", fcopy_defaults.device),
            flavour=fcopy.choice("flavour", fcopy_defaults.flavour, ("auto", "char", "uio")),
            file_mode=fcopy.mode("file_mode", fcopy_defaults.file_mode),
            owner=fcopy.text("owner", fcopy_defaults.owner),
            group=fcopy.text("group", fcopy_defaults.group),
            allowed_dirs=fcopy.strings("allowed_dirs", fcopy_defaults.allowed_dirs),
            denied_dirs=fcopy.strings("denied_dirs", fcopy_defaults.denied_dirs),
            fsync=fcopy.boolean("fsync", fcopy_defaults.fsync),
        ),
        paths=PathsConfig(
            sys=paths.path("sys", default_paths.sys),
            etc=paths.path("etc", default_paths.etc),
            run=paths.path("run", default_paths.run),
            state=paths.path("state", default_paths.state),
            proc=paths.path("proc", default_paths.proc),
            dev=paths.path("dev", default_paths.dev),
        ),
        log_level=logging_section.choice("level", "info", _LOG_LEVELS),
    )
    for section in (kvp, vss, fcopy, paths, logging_section):
        section.finish()
    return config


class _Reader:
    """Typed access to one TOML table that remembers which keys were used."""

    def __init__(self, table: Mapping[str, object], source: str, name: str = "") -> None:
        self._table = table
        self._source = source
        self._name = name
        self._used: set[str] = set()

    def section(self, name: str) -> _Reader:
        value = self._table.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self._source}: [{name}] must be a table")
        return _Reader(value, self._source, name)

    def reject_unknown(self, table: Mapping[str, object], where: str, known: set[str]) -> None:
        unknown = sorted(set(table) - known)
        if unknown:
            place = f"[{where}] " if where else ""
            raise ConfigError(f"{self._source}: {place}unknown key(s): {', '.join(unknown)}")

    def finish(self) -> None:
        self.reject_unknown(self._table, self._name, self._used)

    def _get(self, key: str) -> object | None:
        self._used.add(key)
        return self._table.get(key)

    def _fail(self, key: str, expected: str, value: object) -> ConfigError:
        where = f"{self._source}: [{self._name}] {key}"
        return ConfigError(f"{where}: expected {expected}, got {value!r}")

    def path(self, key: str, default: Path) -> Path:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a path string", value)
        return Path(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value

    def strings(self, key: str, default: Sequence[str]) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return tuple(default)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(key, "a list of strings", value)
        return tuple(value)

    def text(self, key: str, default: str) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._fail(key, "a string", value)
        return value

    def positive_number(self, key: str, default: float, *, below: float) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < below:
            raise self._fail(key, f"a number of seconds above 0 and below {below:g}", value)
        return float(value)

    def mode(self, key: str, default: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                mode = int(value, 8)
            except ValueError:
                raise self._fail(key, 'an octal mode such as "0644"', value) from None
        elif isinstance(value, int) and not isinstance(value, bool):
            mode = value
        else:
            raise self._fail(key, 'an octal mode such as "0644"', value)
        if not 0 <= mode <= 0o777:
            raise self._fail(key, "a mode between 0000 and 0777", value)
        return mode

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self._get(key)
        if value is None:
            return default
        if value not in choices:
            raise self._fail(key, f"one of {', '.join(choices)}", value)
        assert isinstance(value, str)
        return value
