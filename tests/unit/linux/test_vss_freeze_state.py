"""linux.freeze: the state file journal, and FIFREEZE refusing paths before any ioctl."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvguest.errors import OperationFailed
from hvguest.linux.freeze import (
    LinuxFreezer,
    StateFileJournal,
    format_record,
    parse_record,
    state_file_path,
)
from hvguest.services.ports import FrozenRecord


def test_journal_round_trip_and_clear(tmp_path: Path) -> None:
    journal = StateFileJournal(state_file_path(tmp_path / "run"))
    assert journal.recorded() is None
    journal.record(FrozenRecord(("/a b", "/"), ("10-db",)))
    assert journal.path == tmp_path / "run" / "hvguest" / "vss-frozen"
    assert journal.recorded() == FrozenRecord(("/a b", "/"), ("10-db",))
    assert journal.path.stat().st_mode & 0o777 == 0o600
    journal.clear()
    assert journal.recorded() is None
    journal.clear()


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"mountpoints": "x"}'])
def test_a_damaged_journal_reads_as_nothing(tmp_path: Path, content: str) -> None:
    path = tmp_path / "vss-frozen"
    path.write_text(content)
    assert StateFileJournal(path).recorded() is None


def test_freeze_of_a_missing_path_fails_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(OperationFailed, match=r"cannot open .*ENOENT"):
        LinuxFreezer().freeze(str(tmp_path / "absent"))


def test_freeze_does_not_follow_a_symlinked_mount_point(tmp_path: Path) -> None:
    # Neither path is a mount point: the open is refused before any ioctl.
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(OperationFailed, match=r"cannot open .*(ELOOP|ENOTDIR)"):
        LinuxFreezer().freeze(str(link))
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(OperationFailed, match="ENOTDIR"):
        LinuxFreezer().thaw(str(regular))


def test_record_escapes_awkward_paths_like_mountinfo() -> None:
    record = FrozenRecord(("/mnt/a b", "/mnt/back\\slash", "/mnt/new\nline"), ("10 db",))
    text = format_record(record)
    assert text.splitlines()[0] == "mount /mnt/a\\040b"
    assert parse_record(text) == record


def test_close_removes_an_empty_record_but_keeps_a_live_one(tmp_path: Path) -> None:
    journal = StateFileJournal(tmp_path / "vss-frozen")
    journal.record(FrozenRecord(("/a",), ()))
    journal.clear()
    assert journal.path.read_text() == ""
    journal.close()
    assert not journal.path.exists()
    again = StateFileJournal(tmp_path / "vss-frozen")
    again.record(FrozenRecord(("/a",), ()))
    again.close()
    assert StateFileJournal(tmp_path / "vss-frozen").recorded() == FrozenRecord(("/a",), ())


def test_record_round_trips_unicode_spaces_in_paths() -> None:
    # U+00A0 and U+2028 count as whitespace to Python: escaped as \240 and
    # \20050 they would not read back as the same path.
    record = FrozenRecord(("/mnt/no\u00a0break", "/mnt/line\u2028sep", "/mnt/form\x0cfeed"), ())
    assert parse_record(format_record(record)) == record
