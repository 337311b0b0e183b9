"""`hvguest fcopy` and the drop-ins `hv_fcopy_daemon` / `hv_fcopy_uio_daemon`.

Both drop-ins serve whichever flavour the kernel offers (``[fcopy] flavour``,
"auto" by default), so a distribution unit that starts the "wrong" one for
its kernel still works. They keep the reference daemons' options and exit
codes: ``-n``/``--no-daemon``; ``-h`` or an unknown option prints the usage
and exits 1 for hv_fcopy_daemon.c and 234 (``-EINVAL & 0xff``) for
hv_fcopy_uio_daemon.c (protocol.md 5.1, 6.3).

Kept light: no argparse, getopt or dataclasses at import (each would stay in
the daemon's memory for good), the daemon modules load on use.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hvguest import __version__
from hvguest.config import Config, load_config
from hvguest.daemon.options import OptionError, parse_options, reference_flags
from hvguest.errors import ConfigError
from hvguest.records import replace

if TYPE_CHECKING:
    import argparse

#: Exit status of `hv_fcopy_daemon -h` and of an unknown option.
CHAR_USAGE_EXIT: Final = 1
#: Exit status of `hv_fcopy_uio_daemon -h`: the reference exits with -EINVAL.
UIO_USAGE_EXIT: Final = -errno.EINVAL & 0xFF

_USAGE = """\
Usage: {program} [options]
Hyper-V host-to-guest file copy daemon (hvguest {version}); serves
/dev/vmbus/hv_fcopy (Linux <= 6.9) or the FCOPY VMBus device through
uio_hv_generic (Linux >= 6.10), whichever the kernel offers.
Options:
  -n, --no-daemon        run in the foreground and log to stderr
  -h, --help             show this help and exit
Configuration: /etc/hvguest/hvguest.toml (or $HVGUEST_CONFIG), section [fcopy].
"""


def add_fcopy_parser(commands: Any) -> None:
    """Add `fcopy` to the `hvguest` subcommands."""
    fcopy = commands.add_parser("fcopy", help="run the host-to-guest file copy daemon")
    fcopy.add_argument("-n", "--no-daemon", action="store_true", help="stay in the foreground")
    fcopy.add_argument("--config", type=Path, help="configuration file (TOML)")
    fcopy.add_argument("--device", type=Path, help="override [fcopy] device")
    fcopy.add_argument(
        "--flavour", choices=("auto", "char", "uio"), help="override [fcopy] flavour"
    )


def run_fcopy_command(args: argparse.Namespace) -> int:
    """`hvguest fcopy [-n] [--config FILE] [--device PATH] [--flavour F]`."""
    return _run(
        config_path=args.config,
        foreground=bool(args.no_daemon),
        device=args.device,
        flavour=args.flavour,
    )


_LONG_OPTIONS: Final = {name: name for name in ("no-daemon", "config", "device", "flavour")}


def run_fcopy_fast(args: Sequence[str]) -> int | None:
    """`hvguest fcopy ...` without argparse, or None to let argparse answer.

    The daemon lives long and argparse (with gettext) stays in its memory for
    good; help, errors and anything unusual still go through argparse.
    """
    try:
        values, rest = parse_options(
            args,
            short={"n": "no-daemon"},
            long=_LONG_OPTIONS,
            valued=("config", "device", "flavour"),
        )
    except OptionError:
        return None
    if rest or values.get("flavour", "auto") not in ("auto", "char", "uio"):
        return None
    return _run(
        config_path=Path(values["config"]) if "config" in values else None,
        foreground="no-daemon" in values,
        device=Path(values["device"]) if "device" in values else None,
        flavour=values.get("flavour"),
    )


def _run(
    *, config_path: Path | None, foreground: bool, device: Path | None, flavour: str | None
) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as error:
        sys.stderr.write(f"hvguest fcopy: {error}\n")
        return 1
    fcopy = config.fcopy
    if device is not None:
        fcopy = replace(fcopy, device=device)
    if flavour is not None:
        fcopy = replace(fcopy, flavour=flavour)
    config = replace(config, fcopy=fcopy)
    return _serve(config, foreground=foreground, ident="HV_FCOPY", program="hvguest")


def fcopy_daemon_main(argv: Sequence[str] | None = None) -> int:
    """`hv_fcopy_daemon [-n] [-h]`."""
    return _drop_in("hv_fcopy_daemon", argv, usage_exit=CHAR_USAGE_EXIT, ident="HV_FCOPY")


def fcopy_uio_daemon_main(argv: Sequence[str] | None = None) -> int:
    """`hv_fcopy_uio_daemon [-n] [-h]`."""
    return _drop_in("hv_fcopy_uio_daemon", argv, usage_exit=UIO_USAGE_EXIT, ident="HV_UIO_FCOPY")


def _drop_in(program: str, argv: Sequence[str] | None, *, usage_exit: int, ident: str) -> int:
    flags = reference_flags(
        program,
        sys.argv[1:] if argv is None else argv,
        usage=_USAGE.format(program=program, version=__version__),
        letters={"n": "no-daemon"},
        help_exit=usage_exit,
        error_exit=usage_exit,
    )
    if isinstance(flags, int):
        return flags
    try:
        config = load_config(None)
    except ConfigError as error:
        sys.stderr.write(f"{program}: {error}\n")
        return 1
    return _serve(config, foreground="no-daemon" in flags, ident=ident, program=program)


def _serve(config: Config, *, foreground: bool, ident: str, program: str) -> int:
    from hvguest.daemon.logs import configure_logging

    # Refuse a bad owner/group before daemonizing, while stderr still reaches someone.
    from hvguest.linux.fcopy_files import resolve_owner

    try:
        resolve_owner(config.fcopy.owner, config.fcopy.group)
    except ConfigError as error:
        sys.stderr.write(f"{program}: {error}\n")
        return 1
    if not foreground:
        from hvguest.linux.process import daemonize

        daemonize()
    configure_logging(level=config.log_level, syslog_ident=None if foreground else ident)
    from hvguest.daemon.fcopy_main import serve_fcopy

    return serve_fcopy(config)
