"""Command-line entry points: `hvguest ...` and the drop-in `hv_kvp_daemon`.

Only this module turns outcomes into exit codes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvguest import __version__
from hvguest.config import Config, load_config
from hvguest.daemon.logs import configure_logging
from hvguest.daemon.options import OptionError, parse_options, reference_flags
from hvguest.errors import ConfigError
from hvguest.records import replace

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("hvguest")

_KVP_USAGE = """\
Usage: hv_kvp_daemon [options]
Hyper-V key/value exchange daemon (hvguest {version}).
Options:
  -n, --no-daemon        run in the foreground and log to stderr
  -d, --debug-enabled    log debug messages (every pool change)
  -h, --help             show this help and exit
Configuration: /etc/hvguest/hvguest.toml (or $HVGUEST_CONFIG).
"""


def kvp_daemon_main(argv: Sequence[str] | None = None) -> int:
    """`hv_kvp_daemon [-n] [-d] [-h]`: the reference daemon's flags and exit codes."""
    flags = reference_flags(
        "hv_kvp_daemon",
        sys.argv[1:] if argv is None else argv,
        usage=_KVP_USAGE.format(version=__version__),
        letters={"n": "no-daemon", "d": "debug-enabled"},
        help_exit=0,
        error_exit=1,
    )
    if isinstance(flags, int):
        return flags
    return _run_kvp(
        config_path=None, foreground="no-daemon" in flags, debug="debug-enabled" in flags
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`hvguest <command>`."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["kvp"]:
        options = _parse_kvp_options(args_list[1:])
        if options is not None:
            return _run_kvp(**options)
    if args_list[:1] == ["vss"]:
        from hvguest.daemon.vss_cli import serve_without_argparse

        served = serve_without_argparse(args_list[1:])
        if served is not None:
            return served
    if args_list[:1] == ["fcopy"]:
        from hvguest.daemon.fcopy_cli import run_fcopy_fast

        code = run_fcopy_fast(args_list[1:])
        if code is not None:
            return code
    parser = _build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    command: str = args.command
    if command == "kvp":
        return _run_kvp(
            config_path=args.config,
            foreground=bool(args.no_daemon),
            debug=bool(args.debug),
            device=args.device,
            state_dir=args.state_dir,
        )
    if command == "pool":
        from hvguest.daemon.pool_cli import run_pool_command

        return run_pool_command(args)
    if command == "vss":
        from hvguest.daemon.vss_cli import run_vss_command

        return run_vss_command(args)
    if command == "fcopy":
        from hvguest.daemon.fcopy_cli import run_fcopy_command

        return run_fcopy_command(args)
    from hvguest.daemon.demo import run_demo

    return run_demo(vss_fs=tuple(args.vss_fs))


_KVP_SHORT = {"n": "no-daemon", "d": "debug"}
_KVP_LONG = {
    "no-daemon": "no-daemon",
    "debug": "debug",
    "debug-enabled": "debug",
    "config": "config",
    "device": "device",
    "state-dir": "state-dir",
}
_KVP_VALUED = ("config", "device", "state-dir")


def _parse_kvp_options(args: list[str]) -> dict[str, Any] | None:
    """`hvguest kvp` options without argparse, or None to let argparse answer.

    The daemon is long-lived and argparse (with gettext) costs about 0.5 MB of
    RSS for its whole life; help, errors and anything unusual still go through
    argparse so that they read the same as for every other command.
    """
    try:
        values, operands = parse_options(args, short=_KVP_SHORT, long=_KVP_LONG, valued=_KVP_VALUED)
    except OptionError:
        return None
    if operands:
        return None
    return {
        "config_path": Path(values["config"]) if "config" in values else None,
        "foreground": "no-daemon" in values,
        "debug": "debug" in values,
        "device": Path(values["device"]) if "device" in values else None,
        "state_dir": Path(values["state-dir"]) if "state-dir" in values else None,
    }


def _build_parser() -> argparse.ArgumentParser:
    import argparse

    from hvguest.daemon.pool_cli import add_pool_parser

    parser = argparse.ArgumentParser(
        prog="hvguest", description="Hyper-V guest integration services"
    )
    parser.add_argument("--version", action="version", version=f"hvguest {__version__}")
    commands = parser.add_subparsers(dest="command")
    kvp = commands.add_parser("kvp", help="run the key/value exchange daemon")
    kvp.add_argument("-n", "--no-daemon", action="store_true", help="stay in the foreground")
    kvp.add_argument("-d", "--debug", "--debug-enabled", action="store_true", help="debug logs")
    kvp.add_argument("--config", type=Path, help="configuration file (TOML)")
    kvp.add_argument("--device", type=Path, help="override [kvp] device")
    kvp.add_argument("--state-dir", type=Path, help="override [kvp] state_dir")
    add_pool_parser(commands)
    from hvguest.daemon.vss_cli import add_vss_parser

    add_vss_parser(commands)
    from hvguest.daemon.fcopy_cli import add_fcopy_parser

    add_fcopy_parser(commands)
    demo = commands.add_parser(
        "demo", help="play host sessions (KVP, VSS, FCOPY) against the simulator (no root needed)"
    )
    demo.add_argument(
        "--vss-fs",
        type=Path,
        action="append",
        default=[],
        metavar="MOUNT",
        help="freeze this test mount for real in the VSS step (root; repeatable; never /)",
    )
    return parser


def _load(config_path: Path | None, device: Path | None, state_dir: Path | None) -> Config:
    config = load_config(config_path)
    kvp = config.kvp
    kvp = replace(kvp, device=device or kvp.device, state_dir=state_dir or kvp.state_dir)
    return replace(config, kvp=kvp)


def _run_kvp(
    *,
    config_path: Path | None,
    foreground: bool,
    debug: bool,
    device: Path | None = None,
    state_dir: Path | None = None,
) -> int:
    try:
        config = _load(config_path, device, state_dir)
    except ConfigError as error:
        sys.stderr.write(f"hv_kvp_daemon: {error}\n")
        return 1
    if not foreground:
        from hvguest.linux.process import daemonize

        daemonize()
    configure_logging(
        level="debug" if debug else config.log_level,
        syslog_ident=None if foreground else "KVP",
    )
    from hvguest.daemon.kvp_main import serve_kvp

    return serve_kvp(config)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["kvp_daemon_main", "main"]
