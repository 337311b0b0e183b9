"""OS facts: os-release parsing per kvp_get_os_info(), fallbacks, reload on change."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hvguest.linux.osinfo import (
    LinuxOsInfo,
    ReleaseInfo,
    fgets_lines,
    parse_legacy_release,
    parse_os_release,
)


@dataclass(frozen=True)
class FakeUname:
    sysname: str = "Linux"
    release: str = "6.1.0-13-amd64"
    machine: str = "x86_64"


def no_resolver(*_args: object) -> list[tuple[object, object, object, str, object]]:
    raise OSError("no DNS in this test")


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    return tmp_path


def offline_os_info(etc: Path, **options: Any) -> LinuxOsInfo:
    """No DNS, host name "vm", a fake uname unless ``options`` say otherwise."""
    return LinuxOsInfo(
        etc_root=etc, resolve=no_resolver, hostname=lambda: "vm", **{"uname": FakeUname, **options}
    )


@pytest.fixture
def os_info(etc: Path) -> Iterator[LinuxOsInfo]:
    # release_recheck=0: every call looks at the files, for the reload tests below.
    info = offline_os_info(etc, retry_max=60, release_recheck=0.0)
    yield info
    info.close()


# -- parse_os_release() ---------------------------------------------------------------------


def test_debian_os_release() -> None:
    text = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
    text += b'VERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n'
    assert parse_os_release(text) == ReleaseInfo("Debian GNU/Linux", "12")


@pytest.mark.parametrize(
    ("line", "name"),
    [
        (b"NAME='Single Quoted'\n", "Single Quoted"),
        (b'NAME=mid"dle"quotes\n', "middlequotes"),
        (b'NAME="esc\\"aped\\\\ back\\slash"\n', 'esc"aped\\ backslash'),
        (b"NAME=trailing backslash\\", "trailing backslash"),
        (b"NAME=a=b=c\n", "a=b=c"),
        (b"NAME=  spaces kept  \n", "  spaces kept  "),
        (b"NAME=\n", ""),
        (b"NAME=no newline at end", "no newline at end"),
        (b"NAME=caf\xc3\xa9\n", "caf\u00e9"),
        # fgets() ends the line at the newline the backslash keeps.
        (b"NAME=line\\\nbreak\n", "line\n"),
        (b"NAME=cut\x00after nul\n", "cut"),
    ],
)
def test_value_unquoting(line: bytes, name: str) -> None:
    assert parse_os_release(line).name == name


@pytest.mark.parametrize(
    "text",
    [
        b"#NAME=commented\n",
        b" NAME=leading space in key\n",
        b"NAME =space before equals\n",
        b"name=lower case key\n",
        b"NAME\n",
        b"PRETTY_NAME=other key\n",
    ],
)
def test_lines_that_do_not_set_name(text: bytes) -> None:
    assert parse_os_release(text).name is None


def test_last_assignment_wins_and_only_name_and_version_id_count() -> None:
    text = b"NAME=first\nVERSION_ID=1\nNAME=second\nVERSION=9\nVERSION_ID=2.5\n"
    assert parse_os_release(text) == ReleaseInfo("second", "2.5")


def test_line_longer_than_511_bytes_is_read_in_pieces() -> None:
    # fgets(buf, 512) hands the tail of a long line over as a line of its own.
    text = b"PRETTY_NAME=" + b"x" * 499 + b"NAME=tail\n"
    assert len(b"PRETTY_NAME=" + b"x" * 499) == 511
    assert parse_os_release(text).name == "tail"
    comment_tail = b"#" + b"y" * 510 + b"NAME=not a comment any more\n"
    assert parse_os_release(comment_tail).name == "not a comment any more"


def test_fgets_lines_cuts_at_newline_and_511_bytes() -> None:
    assert fgets_lines(b"a\nbc\n\nd") == [b"a\n", b"bc\n", b"\n", b"d"]
    assert [len(p) for p in fgets_lines(b"z" * 1100 + b"\n")] == [511, 511, 79]
    assert fgets_lines(b"a\rb\n") == [b"a\rb\n"]


def test_legacy_release_lines() -> None:
    assert parse_legacy_release(b"SUSE Linux Enterprise Server 11\n11\n4\nextra\n") == ReleaseInfo(
        "SUSE Linux Enterprise Server 11", "11", "4"
    )
    assert parse_legacy_release(b"Red Hat Enterprise Linux release 6.10 (Santiago)\n") == (
        ReleaseInfo("Red Hat Enterprise Linux release 6.10 (Santiago)", "", "")
    )
    assert parse_legacy_release(b"") == ReleaseInfo(None)


# -- facts() ------------------------------------------------------------------------------


def test_facts_combine_os_release_and_uname(etc: Path, os_info: LinuxOsInfo) -> None:
    (etc / "os-release").write_bytes(b'NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    facts = os_info.facts()
    assert (facts.os_name, facts.os_major, facts.os_minor) == ("Debian GNU/Linux", "12", "")
    assert (facts.kernel_release, facts.machine) == ("6.1.0-13-amd64", "x86_64")


def test_os_release_without_name_uses_the_kernel_name(etc: Path, os_info: LinuxOsInfo) -> None:
    (etc / "os-release").write_bytes(b"ID=custom\nVERSION_ID=3\n")
    (etc / "SuSE-release").write_bytes(b"ignored when os-release exists\n")
    assert (os_info.facts().os_name, os_info.facts().os_major) == ("Linux", "3")


def test_suse_release_comes_before_redhat_release(etc: Path, os_info: LinuxOsInfo) -> None:
    (etc / "SuSE-release").write_bytes(b"SUSE Linux Enterprise Server 11 (x86_64)\n11\n4\n")
    (etc / "redhat-release").write_bytes(b"Red Hat\n6\n")
    facts = os_info.facts()
    assert (facts.os_name, facts.os_major, facts.os_minor) == (
        "SUSE Linux Enterprise Server 11 (x86_64)",
        "11",
        "4",
    )


def test_redhat_release_when_it_is_the_only_file(etc: Path, os_info: LinuxOsInfo) -> None:
    (etc / "redhat-release").write_bytes(b"CentOS release 6.10 (Final)\n")
    facts = os_info.facts()
    assert (facts.os_name, facts.os_major, facts.os_minor) == (
        "CentOS release 6.10 (Final)",
        "",
        "",
    )


def test_no_release_file_at_all_means_linux(os_info: LinuxOsInfo) -> None:
    facts = os_info.facts()
    assert (facts.os_name, facts.os_major, facts.os_minor) == ("Linux", "", "")


def test_real_uname_is_the_default(etc: Path) -> None:
    info = LinuxOsInfo(etc_root=etc, resolve=no_resolver, hostname=lambda: "vm")
    try:
        facts = info.facts()
    finally:
        info.close()
    assert facts.os_name == os.uname().sysname == "Linux"
    assert (facts.kernel_release, facts.machine) == (os.uname().release, os.uname().machine)


# -- reload on change ------------------------------------------------------------------------


def test_rewritten_os_release_is_read_again(etc: Path, os_info: LinuxOsInfo) -> None:
    path = etc / "os-release"
    path.write_bytes(b"NAME=Before\nVERSION_ID=11\n")
    assert os_info.facts().os_name == "Before"
    path.write_bytes(b"NAME=After the upgrade\nVERSION_ID=12\n")
    assert (os_info.facts().os_name, os_info.facts().os_major) == ("After the upgrade", "12")


def test_same_size_rewrite_is_seen_through_mtime(etc: Path, os_info: LinuxOsInfo) -> None:
    path = etc / "os-release"
    path.write_bytes(b"NAME=aaaa\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert os_info.facts().os_name == "aaaa"
    path.write_bytes(b"NAME=bbbb\n")
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert os_info.facts().os_name == "bbbb"


def test_replaced_file_is_seen_through_its_inode(etc: Path, os_info: LinuxOsInfo) -> None:
    path = etc / "os-release"
    path.write_bytes(b"NAME=aaaa\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert os_info.facts().os_name == "aaaa"
    replacement = etc / "os-release.new"
    replacement.write_bytes(b"NAME=cccc\n")
    os.utime(replacement, ns=(1_000_000_000, 1_000_000_000))
    replacement.replace(path)
    assert os_info.facts().os_name == "cccc"


def test_unchanged_file_is_not_parsed_again(etc: Path, os_info: LinuxOsInfo) -> None:
    # Change the bytes but restore size and mtime on the same inode: the cached
    # facts stay, which proves facts() did not read the file again.
    path = etc / "os-release"
    path.write_bytes(b"NAME=aaaa\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert os_info.facts().os_name == "aaaa"
    with path.open("r+b") as handle:
        handle.write(b"NAME=zzzz\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert os_info.facts().os_name == "aaaa"


def test_os_release_appearing_replaces_the_fallback(etc: Path, os_info: LinuxOsInfo) -> None:
    (etc / "redhat-release").write_bytes(b"Old\n5\n")
    assert os_info.facts().os_name == "Old"
    (etc / "os-release").write_bytes(b"NAME=New\n")
    assert (os_info.facts().os_name, os_info.facts().os_major) == ("New", "")
    (etc / "os-release").unlink()
    assert os_info.facts().os_name == "Old"


def test_symlinked_os_release_follows_its_target(etc: Path, os_info: LinuxOsInfo) -> None:
    (etc / "usr-lib-os-release").write_bytes(b"NAME=Linked\n")
    (etc / "os-release").symlink_to(etc / "usr-lib-os-release")
    assert os_info.facts().os_name == "Linked"


# -- how often the files are looked at -------------------------------------------------------


def test_a_burst_of_requests_looks_at_the_release_file_once(etc: Path) -> None:
    now = [100.0]
    unames: list[FakeUname] = []

    def counting_uname() -> FakeUname:
        unames.append(FakeUname())
        return unames[-1]

    path = etc / "os-release"
    path.write_bytes(b"NAME=Before\n")
    info = offline_os_info(etc, uname=counting_uname, release_recheck=1.0, clock=lambda: now[0])
    try:
        assert info.facts().os_name == "Before"
        path.write_bytes(b"NAME=After the upgrade\n")
        now[0] += 0.5  # within the same host sweep: the last look still holds
        assert info.facts().os_name == "Before"
        now[0] += 0.6  # a second after the last look: the file is looked at again
        assert info.facts().os_name == "After the upgrade"
        path.unlink()
        now[0] += 1.0
        assert info.facts().os_name == "Linux"  # gone: the kernel's name, as with no file
    finally:
        info.close()
    assert len(unames) == 1  # the kernel's name, release and machine are read once
