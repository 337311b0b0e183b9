"""Inotify.read_events on a real directory: one cheap check when idle, all events when not."""

from __future__ import annotations

from pathlib import Path

from hvguest.linux.inotify import Inotify, InotifyMask


def test_nothing_queued_is_an_empty_list(tmp_path: Path) -> None:
    inotify = Inotify()
    try:
        inotify.add_watch(tmp_path, InotifyMask.MODIFY | InotifyMask.CREATE)
        assert inotify.read_events() == []
        assert inotify.read_events() == []
    finally:
        inotify.close()


def test_events_carry_plain_int_masks_and_names(tmp_path: Path) -> None:
    inotify = Inotify()
    try:
        wd = inotify.add_watch(tmp_path, InotifyMask.MODIFY | InotifyMask.CREATE)
        (tmp_path / ".kvp_pool_1").write_bytes(b"x")
        events = inotify.read_events()
        assert [(e.wd, e.name) for e in events] == [(wd, ".kvp_pool_1")] * len(events)
        assert events[0].mask & InotifyMask.CREATE
        assert any(e.mask & InotifyMask.MODIFY for e in events)
        assert all(type(e.mask) is int for e in events)
        assert inotify.read_events() == []  # drained
    finally:
        inotify.close()


def test_more_events_than_one_default_read_holds_come_in_one_call(tmp_path: Path) -> None:
    inotify = Inotify()
    try:
        inotify.add_watch(tmp_path, InotifyMask.CREATE)
        # 3000 events of 16 + 16 bytes (name padded) = 96 KB, more than the 64 KB buffer.
        names = [f"file-{i:06d}" for i in range(3000)]
        for name in names:
            (tmp_path / name).touch()
        events = inotify.read_events()
        assert [e.name for e in events] == names
        assert inotify.read_events() == []
    finally:
        inotify.close()


def test_expected_events_are_read_without_asking_first(tmp_path: Path) -> None:
    inotify = Inotify()
    try:
        wd = inotify.add_watch(tmp_path, InotifyMask.MODIFY)
        pool = tmp_path / ".kvp_pool_1"
        pool.touch()
        pool.write_bytes(b"x")
        events = inotify.read_events(expected=True)
        assert events
        assert all((e.wd, e.name) == (wd, ".kvp_pool_1") for e in events)
        # Expected but absent (a write that changed nothing): an empty list, no error.
        assert inotify.read_events(expected=True) == []
    finally:
        inotify.close()
