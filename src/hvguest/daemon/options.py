"""Command-line flags for the long-running daemons, without getopt or argparse.

The counterpart of the getopt_long() loops in main() of tools/hv/hv_*_daemon.c.
``getopt`` and ``argparse`` both import ``gettext`` (and argparse much more),
which stays in a daemon's memory for its whole life (about 0.25 MB with
getopt alone); the daemons only need a handful of flags. Everything else
(``hvguest pool``, ``--help`` of the ``hvguest`` commands) keeps argparse.

The rules are getopt_long()'s: ``-nd`` bundles short flags, a long option may
be shortened to any unambiguous prefix, ``--name=value`` or ``--name value``
for options that take a value, ``--`` ends the options.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping, Sequence


class OptionError(Exception):
    """An unknown or ambiguous option, or one missing its value (the text says which)."""


def parse_options(
    args: Sequence[str],
    *,
    short: Mapping[str, str],
    long: Mapping[str, str],
    valued: Collection[str] = (),
    permute: bool = True,
) -> tuple[dict[str, str], list[str]]:
    """The options in ``args`` by canonical name (value "" for flags), and the operands.

    ``short`` maps a letter and ``long`` a long spelling to a canonical name;
    canonical names in ``valued`` take a value. With ``permute`` operands may
    come between options (GNU style); otherwise the first operand ends the
    options, as POSIX getopt does.
    """
    found: dict[str, str] = {}
    operands: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            operands.extend(args[index:])
            break
        if arg.startswith("--"):
            spelled, has_value, value = arg[2:].partition("=")
            name = _long_name(spelled, long)
            if name in valued and not has_value:
                if index >= len(args):
                    raise OptionError(f"option --{spelled} requires an argument")
                value = args[index]
                index += 1
            elif name not in valued and has_value:
                raise OptionError(f"option --{spelled} must not have an argument")
            found[name] = value
        elif arg.startswith("-") and arg != "-":
            index = _short_flags(arg[1:], args, index, short=short, valued=valued, found=found)
        elif permute:
            operands.append(arg)
        else:
            operands.extend(args[index - 1 :])
            break
    return found, operands


def _long_name(spelled: str, long: Mapping[str, str]) -> str:
    if spelled in long:
        return long[spelled]
    candidates = {long[option] for option in long if option.startswith(spelled)}
    if not spelled or not candidates:
        raise OptionError(f"option --{spelled} not recognized")
    if len(candidates) > 1:
        raise OptionError(f"option --{spelled} not a unique prefix")
    return candidates.pop()


def _short_flags(
    letters: str,
    args: Sequence[str],
    index: int,
    *,
    short: Mapping[str, str],
    valued: Collection[str],
    found: dict[str, str],
) -> int:
    """Record ``-abc``; returns the index of the next argument."""
    for position, letter in enumerate(letters):
        name = short.get(letter)
        if name is None:
            raise OptionError(f"option -{letter} not recognized")
        if name not in valued:
            found[name] = ""
            continue
        value = letters[position + 1 :]
        if not value:
            if index >= len(args):
                raise OptionError(f"option -{letter} requires an argument")
            value = args[index]
            index += 1
        found[name] = value
        break
    return index


def reference_flags(
    program: str,
    args: Sequence[str],
    *,
    usage: str,
    letters: Mapping[str, str],
    help_exit: int,
    error_exit: int,
) -> set[str] | int:
    """The flags of a drop-in ``hv_*_daemon``, or its exit status after printing ``usage``.

    ``letters`` maps each short flag to its long name (``-h``/``--help`` is
    always there); options end at the first operand, as with the reference's
    getopt_long(). ``-h`` prints the usage and gives ``help_exit``, a bad
    option prints why and the usage and gives ``error_exit``: the reference
    daemons differ in both.
    """
    names = {**letters, "h": "help"}
    try:
        flags, _operands = parse_options(
            args, short=names, long={name: name for name in names.values()}, permute=False
        )
    except OptionError as error:
        sys.stderr.write(f"{program}: {error}\n{usage}")
        return error_exit
    if "help" in flags:
        sys.stderr.write(usage)
        return help_exit
    return set(flags)
