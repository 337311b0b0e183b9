"""hvguest.linux.fcopy_files on real files and directories under tmp_path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.errors import ConfigError, OperationFailed
from hvguest.linux.fcopy_files import (
    TEMP_PREFIX,
    WRITEBACK_EVERY,
    LinuxFileSink,
    TempJournal,
    is_temp_name,
    open_directory_chain,
    rename_noreplace,
    resolve_owner,
    temp_name,
)
from hvguest.services.ports import EntryKind


@pytest.fixture
def sink(tmp_path: Path) -> LinuxFileSink:
    return LinuxFileSink(tmp_path / "state" / "fcopy-open")


def temps_in(directory: Path) -> list[str]:
    return [entry.name for entry in directory.iterdir() if entry.name.startswith(TEMP_PREFIX)]


def test_commit_renames_the_temp_file_with_the_configured_mode(
    sink: LinuxFileSink, dest: Path
) -> None:
    directory = sink.open_directory(str(dest), create_missing=False)
    target = directory.create_temp("Grüße 報告 📄.txt")
    directory.close()
    assert len(temps_in(dest)) == 1
    assert stat.S_IMODE((dest / temps_in(dest)[0]).stat().st_mode) == 0o600
    target.write_at(0, b"hello ")
    target.write_at(6, memoryview(b"world"))
    assert not (dest / "Grüße 報告 📄.txt").exists()
    target.commit(replace=False)
    final = dest / "Grüße 報告 📄.txt"
    assert final.read_bytes() == b"hello world"
    assert stat.S_IMODE(final.stat().st_mode) == 0o644
    assert temps_in(dest) == []
    assert sink.journal.recorded() == []


def test_configured_mode_is_applied_exactly(tmp_path: Path, dest: Path) -> None:
    sink = LinuxFileSink(tmp_path / "journal", file_mode=0o640, fsync=False)
    directory = sink.open_directory(str(dest), create_missing=False)
    target = directory.create_temp("f")
    directory.close()
    target.commit(replace=False)
    assert stat.S_IMODE((dest / "f").stat().st_mode) == 0o640


def test_commit_without_replace_keeps_a_file_that_appeared(sink: LinuxFileSink, dest: Path) -> None:
    directory = sink.open_directory(str(dest), create_missing=False)
    target = directory.create_temp("f")
    directory.close()
    target.write_at(0, b"ours")
    (dest / "f").write_bytes(b"theirs")
    with pytest.raises(OperationFailed) as caught:
        target.commit(replace=False)
    assert caught.value.status is HvStatus.ERROR_ALREADY_EXISTS
    assert (dest / "f").read_bytes() == b"theirs"
    assert temps_in(dest) == []
    assert sink.journal.recorded() == []


def test_commit_with_replace_swaps_the_old_file_atomically(sink: LinuxFileSink, dest: Path) -> None:
    (dest / "f").write_bytes(b"old")
    old_inode = (dest / "f").stat().st_ino
    directory = sink.open_directory(str(dest), create_missing=False)
    target = directory.create_temp("f")
    directory.close()
    target.write_at(0, b"new!")
    assert (dest / "f").read_bytes() == b"old"
    target.commit(replace=True)
    assert (dest / "f").read_bytes() == b"new!"
    assert (dest / "f").stat().st_ino != old_inode


def test_discard_removes_the_temp_file_and_the_journal_entry(
    sink: LinuxFileSink, dest: Path
) -> None:
    directory = sink.open_directory(str(dest), create_missing=False)
    target = directory.create_temp("f")
    directory.close()
    assert len(sink.journal.recorded()) == 1
    target.write_at(0, b"partial")
    target.discard()
    target.discard()
    assert list(dest.iterdir()) == []
    assert sink.journal.recorded() == []


@pytest.mark.parametrize("renameat2", ["kernel", "link-fallback"])
def test_rename_noreplace_never_replaces(dest: Path, renameat2: str) -> None:
    (dest / "src").write_bytes(b"new")
    (dest / "dst").write_bytes(b"old")
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        kwargs = {} if renameat2 == "kernel" else {"renameat2": None}
        with pytest.raises(FileExistsError):
            rename_noreplace(fd, "src", "dst", **kwargs)
        assert (dest / "dst").read_bytes() == b"old"
        (dest / "dst").unlink()
        rename_noreplace(fd, "src", "dst", **kwargs)
    finally:
        os.close(fd)
    assert (dest / "dst").read_bytes() == b"new"
    assert not (dest / "src").exists()


def test_open_directory_refuses_a_missing_directory_without_create(
    sink: LinuxFileSink, dest: Path
) -> None:
    with pytest.raises(OperationFailed, match="does not exist") as caught:
        sink.open_directory(str(dest / "a" / "b"), create_missing=False)
    assert caught.value.status is HvStatus.E_FAIL
    assert not (dest / "a").exists()


def test_open_directory_creates_every_missing_component_0755(
    sink: LinuxFileSink, dest: Path
) -> None:
    old_umask = os.umask(0o077)
    try:
        directory = sink.open_directory(str(dest / "a" / "b" / "c"), create_missing=True)
    finally:
        os.umask(old_umask)
    directory.close()
    for created in (dest / "a", dest / "a" / "b", dest / "a" / "b" / "c"):
        assert created.is_dir()
        assert stat.S_IMODE(created.stat().st_mode) == 0o755


def test_open_directory_refuses_a_symlinked_component(sink: LinuxFileSink, dest: Path) -> None:
    (dest / "real").mkdir()
    (dest / "link").symlink_to(dest / "real")
    with pytest.raises(OperationFailed, match="link is a symbolic link"):
        sink.open_directory(str(dest / "link"), create_missing=True)
    with pytest.raises(OperationFailed, match="symbolic link"):
        sink.open_directory(str(dest / "link" / "sub"), create_missing=True)
    assert list((dest / "real").iterdir()) == []


def test_open_directory_refuses_a_file_as_a_component(sink: LinuxFileSink, dest: Path) -> None:
    (dest / "file").write_bytes(b"")
    with pytest.raises(OperationFailed, match="is not a directory"):
        sink.open_directory(str(dest / "file" / "sub"), create_missing=True)


def test_open_directory_chain_refuses_dotdot(dest: Path) -> None:
    with pytest.raises(OperationFailed, match=r"'\.\.'"):
        open_directory_chain(f"{dest}/../dest", create_missing=False)


def test_entry_kinds(sink: LinuxFileSink, dest: Path) -> None:
    (dest / "file").write_bytes(b"")
    (dest / "dir").mkdir()
    (dest / "link").symlink_to(dest / "file")
    os.mkfifo(dest / "fifo")
    directory = sink.open_directory(str(dest), create_missing=False)
    try:
        assert directory.entry_kind("file") is EntryKind.FILE
        assert directory.entry_kind("dir") is EntryKind.OTHER
        assert directory.entry_kind("link") is EntryKind.SYMLINK
        assert directory.entry_kind("fifo") is EntryKind.OTHER
        assert directory.entry_kind("missing") is EntryKind.MISSING
        statvfs = os.statvfs(dest)
        assert 0 < directory.free_bytes() <= statvfs.f_blocks * statvfs.f_frsize
    finally:
        directory.close()


def test_resolve_follows_links_of_the_existing_part(sink: LinuxFileSink, dest: Path) -> None:
    (dest / "real").mkdir()
    (dest / "link").symlink_to(dest / "real")
    assert sink.resolve(f"{dest}/link/not/yet") == f"{dest}/real/not/yet"


def test_temp_names_fit_name_max_and_are_recognisable() -> None:
    name = temp_name("é" * 127 + "x")
    assert len(name.encode()) <= 255
    assert is_temp_name(name)
    assert temp_name("a") != temp_name("a")
    assert not is_temp_name("a.tmp")
    assert not is_temp_name(".hvguest-fcopy.a")


def test_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path: Path, dest: Path) -> None:
    journal = tmp_path / "state" / "fcopy-open"
    crashed = LinuxFileSink(journal)
    directory = crashed.open_directory(str(dest), create_missing=False)
    target = directory.create_temp("big.iso")
    directory.close()
    target.write_at(0, b"partial")
    (leftover,) = temps_in(dest)
    # No commit, no discard: the process "died". A new run cleans up.
    restarted = LinuxFileSink(journal)
    assert restarted.cleanup_leftovers() == [f"{dest}/{leftover}"]
    assert list(dest.iterdir()) == []
    assert not journal.exists()
    assert restarted.cleanup_leftovers() == []


def test_cleanup_never_removes_names_that_are_not_ours(tmp_path: Path, dest: Path) -> None:
    (dest / "precious").write_bytes(b"keep")
    (dest / ".hvguest-fcopy.x.1234.tmp").mkdir()
    journal = tmp_path / "fcopy-open"
    journal.write_bytes(f"{dest}/precious\0{dest}/.hvguest-fcopy.x.1234.tmp\0".encode())
    assert LinuxFileSink(journal).cleanup_leftovers() == []
    assert (dest / "precious").read_bytes() == b"keep"
    assert (dest / ".hvguest-fcopy.x.1234.tmp").is_dir()


def test_journal_survives_names_with_newlines(tmp_path: Path) -> None:
    journal = TempJournal(tmp_path / "j")
    journal.add("/a/b\nc")
    journal.add("/d")
    assert TempJournal(tmp_path / "j").recorded() == ["/a/b\nc", "/d"]
    journal.remove("/a/b\nc")
    assert TempJournal(tmp_path / "j").recorded() == ["/d"]


def test_a_durable_journal_is_on_disk_before_add_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A power cut right after add() must find the temporary file listed: the new
    # list is fsynced before the rename, and the directory after it.
    synced: list[tuple[str, bytes | None]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        path = Path(f"/proc/self/fd/{fd}").readlink()
        synced.append((str(path), path.read_bytes() if path.is_file() else None))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    state = tmp_path / "state"
    TempJournal(state / "fcopy-open").add("/dest/.hvguest-fcopy.a.0000.tmp")
    assert synced == [
        (str(state / "fcopy-open.new"), b"/dest/.hvguest-fcopy.a.0000.tmp\0"),
        (str(state), None),
    ]
    assert (state / "fcopy-open").read_bytes() == b"/dest/.hvguest-fcopy.a.0000.tmp\0"
    synced.clear()
    TempJournal(tmp_path / "fast" / "j", durable=False).add("/x")  # [fcopy] fsync = false
    assert synced == []
    assert TempJournal(tmp_path / "fast" / "j").recorded() == ["/x"]


def test_resolve_owner_accepts_names_and_numbers() -> None:
    assert resolve_owner("", "") == (-1, -1)
    assert resolve_owner("root", "root") == (0, 0)
    assert resolve_owner("65534", "65534") == (65534, 65534)
    with pytest.raises(ConfigError, match="no such owner"):
        resolve_owner("no-such-user-hvguest", "")
    with pytest.raises(ConfigError, match="no such group"):
        resolve_owner("", "no-such-group-hvguest")


@pytest.mark.root
def test_owner_and_group_are_applied(tmp_path: Path, dest: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    sink = LinuxFileSink(tmp_path / "journal", uid=65534, gid=65534)
    directory = sink.open_directory(str(dest), create_missing=False)
    target = directory.create_temp("owned")
    directory.close()
    target.commit(replace=False)
    info = (dest / "owned").stat()
    assert (info.st_uid, info.st_gid) == (65534, 65534)


def test_a_copy_past_the_writeback_threshold_arrives_intact(
    sink: LinuxFileSink, dest: Path
) -> None:
    data = os.urandom(WRITEBACK_EVERY + 3 * 6144 + 17)
    directory = sink.open_directory(str(dest), create_missing=False)
    target = directory.create_temp("big")
    directory.close()
    view = memoryview(data)
    for offset in range(0, len(data), 6144):
        target.write_at(offset, view[offset : offset + 6144])
    target.commit(replace=False)
    assert (dest / "big").read_bytes() == data
