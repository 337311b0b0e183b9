"""Command-line entry points: `hvguest ...` and the drop-in `hv_kvp_daemon`.

Only this module turns outcomes into exit codes.
"""

from __future__ import annotations

import argparse
import dataclasses
import getopt
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hvguest import __version__
from hvguest.config import Config, load_config
from hvguest.daemon.logs import configure_logging
from hvguest.errors import ConfigError

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
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        options, _rest = getopt.getopt(args, "ndh", ["no-daemon", "debug-enabled", "help"])
    except getopt.GetoptError as error:
        sys.stderr.write(f"hv_kvp_daemon: {error.msg}\n{_KVP_USAGE.format(version=__version__)}")
        return 1
    flags = {name for name, _value in options}
    if flags & {"-h", "--help"}:
        sys.stderr.write(_KVP_USAGE.format(version=__version__))
        return 0
    return _run_kvp(
        config_path=None,
        foreground=bool(flags & {"-n", "--no-daemon"}),
        debug=bool(flags & {"-d", "--debug-enabled"}),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`hvguest <command>`."""
    parser = _build_parser()
    args = parser.parse_args(argv)
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
    from hvguest.daemon.demo import run_demo

    return run_demo()


def _build_parser() -> argparse.ArgumentParser:
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
    commands.add_parser("demo", help="play a host session against the simulator (no root needed)")
    return parser


def _load(config_path: Path | None, device: Path | None, state_dir: Path | None) -> Config:
    config = load_config(config_path)
    kvp = config.kvp
    kvp = dataclasses.replace(
        kvp, device=device or kvp.device, state_dir=state_dir or kvp.state_dir
    )
    return dataclasses.replace(config, kvp=kvp)


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
