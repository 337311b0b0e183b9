"""The FCOPY writer on real files where something goes wrong: review findings, each pinned."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.linux.fcopy_files import (
    JOURNAL_READ_LIMIT,
    TEMP_PREFIX,
    LinuxFileSink,
    TempJournal,
)
from hvguest.protocol.fcopy_messages import FcopyCancel, FcopyComplete, FcopyStart, FcopyWrite
from hvguest.services.fcopy import DestinationPolicy, FcopyService


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "state" / "fcopy-open"


def temps_in(directory: Path) -> list[Path]:
    return [entry for entry in directory.iterdir() if entry.name.startswith(TEMP_PREFIX)]


def test_a_resent_fragment_does_not_publish_a_short_file(dest: Path, journal: Path) -> None:
    service = FcopyService(LinuxFileSink(journal, fsync=False), clock=lambda: 0.0)
    assert service.handle(FcopyStart("a", str(dest), 0, 12)) is HvStatus.S_OK
    assert service.handle(FcopyWrite(0, b"x" * 6)) is HvStatus.S_OK
    assert service.handle(FcopyWrite(0, b"y" * 6)) is HvStatus.S_OK
    assert service.handle(FcopyComplete()) is HvStatus.E_FAIL
    assert list(dest.iterdir()) == []


@pytest.fixture
def pinned_temp(dest: Path) -> Iterator[list[Path]]:
    """Bind-mounts over a temporary file once the test names it: unlink then fails (EBUSY)."""
    mounted: list[Path] = []
    yield mounted
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False, timeout=30)


@pytest.mark.root
def test_a_temp_file_that_cannot_be_unlinked_stays_journalled_and_nothing_raises(
    tmp_path: Path, dest: Path, journal: Path, pinned_temp: list[Path]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    service = FcopyService(LinuxFileSink(journal, fsync=False), clock=lambda: 0.0)
    assert service.handle(FcopyStart("a", str(dest), 0, 4)) is HvStatus.S_OK
    assert service.handle(FcopyWrite(0, b"ab")) is HvStatus.S_OK
    (temp,) = temps_in(dest)
    source = tmp_path / "pin"
    source.write_bytes(b"")
    subprocess.run(["mount", "--bind", str(source), str(temp)], check=True, timeout=30)
    pinned_temp.append(temp)
    # The unlink fails with EBUSY: the CANCEL is still answered, the copy is gone.
    assert service.handle(FcopyCancel()) is HvStatus.S_OK
    assert not service.copy_open
    assert TempJournal(journal).recorded() == [str(temp)]
    subprocess.run(["umount", str(temp)], check=True, timeout=30)
    pinned_temp.clear()
    # The next start-up removes what could not be removed then.
    assert LinuxFileSink(journal).cleanup_leftovers() == [str(temp)]
    assert list(dest.iterdir()) == []


def test_an_unreadable_journal_does_not_stop_the_start_up(dest: Path, journal: Path) -> None:
    journal.mkdir(parents=True)  # a directory where the file should be
    assert LinuxFileSink(journal).cleanup_leftovers() == []


def test_only_the_head_of_a_huge_journal_is_read(dest: Path, journal: Path) -> None:
    journal.parent.mkdir(parents=True)
    head = dest / ".hvguest-fcopy.a.00000000.tmp"
    tail = dest / ".hvguest-fcopy.b.00000000.tmp"
    head.write_bytes(b"partial")
    tail.write_bytes(b"partial")
    filler = b"\0" * JOURNAL_READ_LIMIT
    journal.write_bytes(f"{head}\0".encode() + filler + f"{tail}\0".encode())
    assert TempJournal(journal).recorded() == [str(head)]
    # A name cut by the limit is not a name.
    journal.write_bytes(b"\0" * (JOURNAL_READ_LIMIT - 10) + f"{tail}\0".encode())
    assert TempJournal(journal).recorded() == []


class _SwapAfterResolve(LinuxFileSink):
    """resolve() sees a link into the allowed tree; right after, a directory replaces it."""

    def __init__(self, journal: Path, link: Path) -> None:
        super().__init__(journal, fsync=False)
        self.link = link

    def resolve(self, path: str) -> str:
        resolved = super().resolve(path)
        self.link.unlink()
        self.link.mkdir()
        return resolved


def test_a_link_swapped_for_a_directory_after_the_policy_check_is_refused(
    tmp_path: Path, journal: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    link = outside / "in"
    link.symlink_to(allowed)
    service = FcopyService(
        _SwapAfterResolve(journal, link),
        policy=DestinationPolicy.from_prefixes((str(allowed),), ()),
        clock=lambda: 0.0,
    )
    assert service.handle(FcopyStart("a", str(link), 0, 1)) is HvStatus.E_FAIL
    assert not service.copy_open
    assert list(link.iterdir()) == []
