"""parse_options: the getopt_long() rules the daemons' flags follow."""

from __future__ import annotations

import pytest

from hvguest.daemon.options import OptionError, parse_options, reference_flags

SHORT = {"n": "no-daemon", "d": "debug", "c": "config"}
LONG = {"no-daemon": "no-daemon", "debug": "debug", "debug-enabled": "debug", "config": "config"}
VALUED = ("config",)


def parse(*args: str, permute: bool = True) -> tuple[dict[str, str], list[str]]:
    return parse_options(args, short=SHORT, long=LONG, valued=VALUED, permute=permute)


def test_flags_and_values_by_canonical_name() -> None:
    assert parse("-n", "--debug-enabled", "--config", "a.toml") == (
        {"no-daemon": "", "debug": "", "config": "a.toml"},
        [],
    )


@pytest.mark.parametrize(
    "args", [("--config=a.toml",), ("--config", "a.toml"), ("-ca.toml",), ("-c", "a.toml")]
)
def test_every_way_of_giving_a_value(args: tuple[str, ...]) -> None:
    assert parse(*args)[0] == {"config": "a.toml"}


def test_short_flags_bundle() -> None:
    assert parse("-nd")[0] == {"no-daemon": "", "debug": ""}


def test_an_unambiguous_prefix_is_enough() -> None:
    assert parse("--no", "--conf=x")[0] == {"no-daemon": "", "config": "x"}


def test_an_exact_spelling_wins_over_longer_ones() -> None:
    assert parse("--debug")[0] == {"debug": ""}


def test_a_prefix_of_spellings_with_one_meaning_is_not_ambiguous() -> None:
    assert parse("--deb")[0] == {"debug": ""}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-x",), "option -x not recognized"),
        (("--bogus",), "option --bogus not recognized"),
        (("--config",), "option --config requires an argument"),
        (("-c",), "option -c requires an argument"),
        (("--debug=1",), "option --debug must not have an argument"),
    ],
)
def test_errors_say_what_is_wrong(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        parse(*args)


def test_ambiguous_prefix_is_an_error() -> None:
    with pytest.raises(OptionError, match="not a unique prefix"):
        parse_options(["--d"], short={}, long={"debug": "debug", "device": "device"})


def test_operands_permute_in_gnu_style() -> None:
    assert parse("x", "-n", "y") == ({"no-daemon": ""}, ["x", "y"])


def test_operands_end_the_options_in_posix_style() -> None:
    assert parse("x", "-n", permute=False) == ({}, ["x", "-n"])


def test_double_dash_ends_the_options() -> None:
    assert parse("-n", "--", "-d") == ({"no-daemon": ""}, ["-d"])


def test_a_lone_dash_is_an_operand() -> None:
    assert parse("-") == ({}, ["-"])


def test_reference_flags_give_the_flags_or_the_daemon_specific_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    usage = "Usage: hv_x_daemon [options]\n"
    letters = {"n": "no-daemon", "d": "debug-enabled"}

    def flags(*args: str) -> set[str] | int:
        return reference_flags(
            "hv_x_daemon", args, usage=usage, letters=letters, help_exit=7, error_exit=9
        )

    assert flags("-nd") == {"no-daemon", "debug-enabled"}
    assert flags("--no-daemon", "operand", "-d") == {"no-daemon"}  # options end at an operand
    assert flags("-h") == 7
    assert capsys.readouterr().err == usage
    assert flags("--bogus") == 9
    assert capsys.readouterr().err == f"hv_x_daemon: option --bogus not recognized\n{usage}"
