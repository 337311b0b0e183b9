"""An in-memory ``FileSink`` for FcopyService tests (the fake of linux/fcopy_files.py).

A tiny tree of directories, regular files and symbolic links held in dicts,
with the same refusals as the real adapter: symlinks in the directory chain,
missing directories without CREATE_PATH, ENOSPC when ``free`` runs out.
Temporary files live in ``temps`` until committed, so a test can check that
nothing is left behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.services.ports import EntryKind


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


@dataclass
class FakeFileSink:
    """The filesystem as dicts; ``free`` bytes shrink as temporary files grow."""

    dirs: set[str] = field(default_factory=lambda: {"/"})
    files: dict[str, bytes] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    #: Temporary path -> its content so far.
    temps: dict[str, bytearray] = field(default_factory=dict)
    free: int = 1 << 40
    #: Leftovers "recorded by an earlier run" that cleanup_leftovers removes.
    journal: list[str] = field(default_factory=list)
    #: The next commit finds this file appeared meanwhile (no-replace race).
    appear_before_commit: bytes | None = None
    calls: list[str] = field(default_factory=list)
    _counter: int = 0

    def add_dir(self, path: str) -> None:
        """Create ``path`` and its parents."""
        parts = [part for part in path.split("/") if part]
        for end in range(len(parts) + 1):
            self.dirs.add("/" + "/".join(parts[:end]))

    def resolve(self, path: str) -> str:
        """Follow symlinks of the existing prefix, like realpath."""
        self.calls.append(f"resolve {path}")
        resolved = "/"
        for part in [part for part in path.split("/") if part]:
            candidate = _join(resolved, part)
            resolved = self.symlinks.get(candidate, candidate)
        return resolved

    def open_directory(self, path: str, *, create_missing: bool) -> FakeDestinationDir:
        """Walk ``path`` refusing symlinks; create missing parts if asked."""
        self.calls.append(f"open_directory {path} create={create_missing}")
        walked = "/"
        for part in [part for part in path.split("/") if part]:
            walked = _join(walked, part)
            if walked in self.symlinks:
                raise OperationFailed(HvStatus.E_FAIL, f"{walked} is a symbolic link")
            if walked in self.files:
                raise OperationFailed(HvStatus.E_FAIL, f"{walked} is not a directory")
            if walked not in self.dirs:
                if not create_missing:
                    raise OperationFailed(HvStatus.E_FAIL, f"directory {walked} does not exist")
                self.dirs.add(walked)
        return FakeDestinationDir(self, walked)

    def cleanup_leftovers(self) -> Sequence[str]:
        """Remove the journal's temporary files."""
        removed = [path for path in self.journal if self.temps.pop(path, None) is not None]
        self.journal.clear()
        return removed

    def next_temp(self, directory: str, final_name: str) -> str:
        """The next temporary path (predictable, unlike the real one)."""
        self._counter += 1
        return _join(directory, f".tmp{self._counter}.{final_name}")


@dataclass
class FakeDestinationDir:
    """One directory of the fake tree."""

    sink: FakeFileSink
    path: str
    closed: bool = False

    def entry_kind(self, name: str) -> EntryKind:
        """What the fake tree holds under ``name``."""
        full = _join(self.path, name)
        if full in self.sink.symlinks:
            return EntryKind.SYMLINK
        if full in self.sink.files:
            return EntryKind.FILE
        if full in self.sink.dirs:
            return EntryKind.OTHER
        return EntryKind.MISSING

    def free_bytes(self) -> int:
        """The sink's remaining space."""
        return self.sink.free

    def create_temp(self, final_name: str) -> FakeCopyTarget:
        """A new temporary entry."""
        temp = self.sink.next_temp(self.path, final_name)
        self.sink.temps[temp] = bytearray()
        self.sink.journal.append(temp)
        return FakeCopyTarget(self.sink, temp, _join(self.path, final_name))

    def close(self) -> None:
        """Mark closed (tests check nothing stays open)."""
        self.closed = True


@dataclass
class FakeCopyTarget:
    """A temporary file in the fake tree."""

    sink: FakeFileSink
    temp: str
    path: str
    writes: int = 0

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        """Grow the temp content; DISK_FULL when ``free`` is exhausted."""
        content = self.sink.temps[self.temp]
        grow = max(0, offset + len(data) - len(content))
        if grow > self.sink.free:
            raise OperationFailed(HvStatus.ERROR_DISK_FULL, f"writing {self.path}: ENOSPC")
        self.sink.free -= grow
        if offset > len(content):
            content.extend(bytes(offset - len(content)))
        content[offset : offset + len(data)] = data
        self.writes += 1

    def commit(self, *, replace: bool) -> None:
        """Move the temp content to the final name (refusing to replace unless asked)."""
        if self.sink.appear_before_commit is not None:
            self.sink.files[self.path] = self.sink.appear_before_commit
            self.sink.appear_before_commit = None
        if not replace and self.path in self.sink.files:
            self.discard()
            raise OperationFailed(HvStatus.ERROR_ALREADY_EXISTS, f"{self.path} appeared")
        self.sink.files[self.path] = bytes(self.sink.temps.pop(self.temp))
        self._forget()

    def discard(self) -> None:
        """Drop the temp content and give its space back."""
        content = self.sink.temps.pop(self.temp, None)
        if content is not None:
            self.sink.free += len(content)
        self._forget()

    def _forget(self) -> None:
        if self.temp in self.sink.journal:
            self.sink.journal.remove(self.temp)
