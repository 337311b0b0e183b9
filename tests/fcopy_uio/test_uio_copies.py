"""Copy-VMFile end to end over the UIO flavour: host -> ring -> daemon -> real files."""

from __future__ import annotations

import os
import stat

import pytest

from fcopy_uio.conftest import StartUioDaemon, names
from hvguest.abi.constants import CREATE_PATH, OVER_WRITE, HvStatus

OK = int(HvStatus.S_OK)


def test_negotiation_agrees_on_framework_3_0_and_fcopy_1_1(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon(wait=False) as daemon:
        daemon.sim.wait_open(10)
        answer = daemon.host.negotiate()
        assert (answer.status, answer.framework, answer.service) == (0, (3, 0), (1, 1))
        assert (answer.framework_count, answer.service_count) == (1, 1)


def test_negotiation_without_a_common_version_fails_and_the_daemon_keeps_serving(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon(wait=False) as daemon:
        daemon.sim.wait_open(10)
        answer = daemon.host.negotiate(service_versions=((2, 0),))
        assert answer.status == HvStatus.E_FAIL
        assert (answer.framework_count, answer.service_count) == (0, 0)
        assert daemon.host.negotiate().status == OK


def test_small_file_is_copied_with_mode_0644(start_uio_daemon: StartUioDaemon) -> None:
    with start_uio_daemon() as daemon:
        status = daemon.host.copy_bytes(b"hello, guest\n", str(daemon.target), "hello.txt")
        assert status == OK
        copied = daemon.target / "hello.txt"
        assert copied.read_bytes() == b"hello, guest\n"
        assert stat.S_IMODE(copied.stat().st_mode) == 0o644
        assert daemon.leftovers() == []


@pytest.mark.parametrize(
    "name",
    [
        "résumé-café-naïve.txt",  # accents
        "报告-データ-보고서.bin",  # CJK
        "smile-\U0001f600-clef-\U0001d11e.dat",  # outside the BMP: surrogate pairs on the wire
    ],
)
def test_unicode_names_arrive_exactly(start_uio_daemon: StartUioDaemon, name: str) -> None:
    with start_uio_daemon() as daemon:
        assert daemon.host.copy_bytes(name.encode(), str(daemon.target), name) == OK
        assert names(daemon.target) == [name]
        assert (daemon.target / name).read_bytes() == name.encode()


def test_multi_fragment_file_arrives_byte_for_byte(start_uio_daemon: StartUioDaemon) -> None:
    data = os.urandom(6144 * 40 + 1234)
    with start_uio_daemon() as daemon:
        assert daemon.host.copy_bytes(data, str(daemon.target), "big.bin") == OK
        assert (daemon.target / "big.bin").read_bytes() == data


def test_existing_file_is_kept_without_overwrite_and_replaced_with_it(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon() as daemon:
        existing = daemon.target / "config.ini"
        existing.write_bytes(b"old")
        status = daemon.host.copy_bytes(b"new", str(daemon.target), "config.ini")
        assert status == HvStatus.ERROR_ALREADY_EXISTS
        assert existing.read_bytes() == b"old"
        status = daemon.host.copy_bytes(b"new", str(daemon.target), "config.ini", flags=OVER_WRITE)
        assert status == OK
        assert existing.read_bytes() == b"new"
        assert daemon.leftovers() == []


def test_create_path_makes_every_missing_directory(start_uio_daemon: StartUioDaemon) -> None:
    with start_uio_daemon() as daemon:
        deep = daemon.target / "a" / "b" / "c"
        status = daemon.host.copy_bytes(b"x", str(deep), "f", flags=CREATE_PATH)
        assert status == OK
        assert (deep / "f").read_bytes() == b"x"


def test_missing_directory_without_create_path_fails(start_uio_daemon: StartUioDaemon) -> None:
    with start_uio_daemon() as daemon:
        status = daemon.host.copy_bytes(b"x", str(daemon.target / "nope"), "f")
        assert status == HvStatus.E_FAIL
        assert not (daemon.target / "nope").exists()


def test_cancel_removes_the_partial_file(start_uio_daemon: StartUioDaemon) -> None:
    with start_uio_daemon() as daemon:
        host = daemon.host
        assert host.fcopy_start(str(daemon.target), "partial.bin", file_size=20000) == OK
        assert host.fcopy_write(0, b"a" * 6144) == OK
        assert daemon.leftovers() != []  # the copy is really in progress
        assert host.fcopy_cancel() == OK
        assert names(daemon.target) == []
        # and the next copy goes through
        assert host.copy_bytes(b"after", str(daemon.target), "after.txt") == OK
        assert names(daemon.target) == ["after.txt"]


def test_write_past_file_size_and_short_complete_fail_and_leave_nothing(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon() as daemon:
        host = daemon.host
        assert host.fcopy_start(str(daemon.target), "short.bin", file_size=10) == OK
        assert host.fcopy_write(0, b"12345") == OK
        assert host.fcopy_complete() == HvStatus.E_FAIL
        assert names(daemon.target) == []
