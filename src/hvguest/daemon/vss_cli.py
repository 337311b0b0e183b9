"""`hvguest vss [plan|thaw]` and the drop-in `hv_vss_daemon [-n] [-h]`.

- `hvguest vss [-n]` serves /dev/vmbus/hv_vss (the daemon);
- `hvguest vss plan [--json]` prints what a FREEZE would freeze, in which
  order, and why every other mount is left alone (the diagnostics users asked
  for instead of "report it with /etc/fstab and /proc/mounts");
- `hvguest vss thaw` thaws what a killed daemon recorded plus everything the
  plan names, for a unit's ExecStopPost= (FITHAW on a thawed fs is harmless).

Kept light: no argparse, getopt or dataclasses at import (each would stay in
the daemon's memory for good), the daemon modules load on use.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvguest import __version__
from hvguest.config import Config, load_config
from hvguest.daemon.options import OptionError, parse_options, reference_flags
from hvguest.errors import ConfigError
from hvguest.records import replace

if TYPE_CHECKING:
    import argparse

_VSS_USAGE = """\
Usage: hv_vss_daemon [options]
Hyper-V VSS (freeze/thaw for host backups) daemon (hvguest {version}).
Options:
  -n, --no-daemon        run in the foreground and log to stderr
  -h, --help             show this help and exit
Configuration: /etc/hvguest/hvguest.toml (or $HVGUEST_CONFIG), section [vss].
"""


def add_vss_parser(commands: Any) -> None:
    """Add `vss` (with `plan` and `thaw`) to the `hvguest` subcommands."""
    vss = commands.add_parser("vss", help="run the VSS freeze/thaw daemon; `plan`, `thaw`")
    vss.add_argument("-n", "--no-daemon", action="store_true", help="stay in the foreground")
    vss.add_argument("--config", type=Path, help="configuration file (TOML)")
    vss.add_argument("--device", type=Path, help="override [vss] device")
    actions = vss.add_subparsers(dest="vss_command")
    plan = actions.add_parser("plan", help="show what a FREEZE would freeze, and why not the rest")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument(
        "--config", dest="sub_config", metavar="CONFIG", type=Path, help="configuration file"
    )
    thaw = actions.add_parser("thaw", help="thaw everything a VSS daemon may have left frozen")
    thaw.add_argument(
        "--config", dest="sub_config", metavar="CONFIG", type=Path, help="configuration file"
    )


def run_vss_command(args: argparse.Namespace) -> int:
    """Dispatch `hvguest vss ...`; returns the exit code."""
    config_path: Path | None = getattr(args, "sub_config", None) or args.config
    try:
        config = load_config(config_path)
    except ConfigError as error:
        sys.stderr.write(f"hvguest vss: {error}\n")
        return 1
    if args.device is not None:
        config = replace(config, vss=replace(config.vss, device=args.device))
    command: str | None = args.vss_command
    if command == "plan":
        return print_plan(config, as_json=bool(args.json))
    if command == "thaw":
        return thaw_all(config)
    return _serve(config, foreground=bool(args.no_daemon))


def vss_daemon_main(argv: Sequence[str] | None = None) -> int:
    """`hv_vss_daemon [-n] [-h]`: the reference daemon's flags and exit codes."""
    flags = reference_flags(
        "hv_vss_daemon",
        sys.argv[1:] if argv is None else argv,
        usage=_VSS_USAGE.format(version=__version__),
        letters={"n": "no-daemon"},
        help_exit=0,
        error_exit=1,
    )
    if isinstance(flags, int):
        return flags
    try:
        config = load_config(None)
    except ConfigError as error:
        sys.stderr.write(f"hv_vss_daemon: {error}\n")
        return 1
    return _serve(config, foreground="no-daemon" in flags)


def serve_without_argparse(args: Sequence[str]) -> int | None:
    """`hvguest vss [-n] [--config F] [--device D]` parsed without argparse, or None.

    The daemon lives long and argparse costs it about 0.5 MB of RSS; `plan`,
    `thaw`, help and errors return None and go through argparse.
    """
    try:
        values, rest = parse_options(
            args,
            short={"n": "no-daemon"},
            long={name: name for name in ("no-daemon", "config", "device")},
            valued=("config", "device"),
        )
    except OptionError:
        return None
    if rest:
        return None
    try:
        config = load_config(Path(values["config"]) if "config" in values else None)
    except ConfigError as error:
        sys.stderr.write(f"hvguest vss: {error}\n")
        return 1
    if "device" in values:
        config = replace(config, vss=replace(config.vss, device=Path(values["device"])))
    return _serve(config, foreground="no-daemon" in values)


def _serve(config: Config, *, foreground: bool) -> int:
    from hvguest.daemon.logs import configure_logging

    if not foreground:
        from hvguest.linux.process import daemonize

        daemonize()
    configure_logging(level=config.log_level, syslog_ident=None if foreground else "Hyper-V VSS")
    from hvguest.daemon.vss_main import serve_vss

    return serve_vss(config)


def plan_document(config: Config) -> dict[str, Any]:
    """The plan, the mode and the hooks as one JSON-ready dict."""
    from hvguest.daemon.vss import build_vss_service
    from hvguest.linux.hooks import LinuxHookRunner

    plan = build_vss_service(config).plan()
    hooks = LinuxHookRunner(config.vss.hooks_dir, config.vss.hook_timeout).discover()
    return {
        "crash_consistent": config.vss.crash_consistent,
        "freeze": [
            {
                "order": order,
                "mountpoint": mount.mountpoint,
                "fstype": mount.fstype,
                "source": mount.source,
                "device": mount.device,
            }
            for order, mount in enumerate(plan.freeze, start=1)
        ],
        "skipped": [
            {
                "mountpoint": skip.mount.mountpoint,
                "fstype": skip.mount.fstype,
                "source": skip.mount.source,
                "reason": skip.reason,
            }
            for skip in plan.skipped
        ],
        "hooks_dir": str(config.vss.hooks_dir),
        "hooks": list(hooks.hooks),
        "refused_hooks": [{"hook": name, "reason": why} for name, why in hooks.refused],
    }


def print_plan(config: Config, *, as_json: bool) -> int:
    """`hvguest vss plan`: exit 0 (the plan is information, even if empty)."""
    document = plan_document(config)
    if as_json:
        import json

        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    lines: list[str] = []
    if document["crash_consistent"]:
        lines.append("Mode: crash-consistent: FREEZE and THAW succeed without freezing anything.")
    freeze = document["freeze"]
    lines.append("Would freeze, in this order:" if freeze else "Would freeze nothing.")
    width = max((len(item["mountpoint"]) for item in freeze), default=0)
    lines += [
        f"  {item['order']}. {item['mountpoint']:<{width}}  {item['fstype']} on {item['source']}"
        for item in freeze
    ]
    skipped = document["skipped"]
    if skipped:
        lines.append("Not frozen:")
        width = max(len(item["mountpoint"]) for item in skipped)
        lines += [f"  {item['mountpoint']:<{width}}  {item['reason']}" for item in skipped]
    hooks = ", ".join(document["hooks"]) or "none"
    lines.append(f"Hooks in {document['hooks_dir']}: {hooks}")
    lines += [f"  refused {item['hook']}: {item['reason']}" for item in document["refused_hooks"]]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def thaw_all(config: Config) -> int:
    """`hvguest vss thaw`: exit 0 if nothing is left frozen, 1 otherwise."""
    # Run while filesystems may be frozen: a .pyc written for the late imports
    # below would block on a frozen disk before anything is thawed.
    sys.dont_write_bytecode = True
    from hvguest.daemon.vss import build_vss_service

    report = build_vss_service(config).thaw_everything()
    for mountpoint in report.thawed:
        sys.stdout.write(f"thawed {mountpoint}\n")
    for mountpoint, why in report.failed:
        sys.stderr.write(f"hvguest vss thaw: {mountpoint}: {why}\n")
    for mountpoint in report.gone:
        # Nothing at that path can be thawed any more; the record is cleared.
        sys.stderr.write(
            f"hvguest vss thaw: {mountpoint}: recorded as frozen, no longer mounted: skipped\n"
        )
    if not report.thawed and not report.failed and not report.gone:
        sys.stdout.write(f"nothing was frozen ({len(report.not_frozen)} filesystem(s) checked)\n")
    return 1 if report.failed else 0
