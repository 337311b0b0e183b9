"""demo_vss in crash-consistent mode (no root), and its refusal to freeze its own disk."""

from __future__ import annotations

from pathlib import Path

from hvguest.daemon.demo_vss import demo_vss


def test_crash_consistent_demo_succeeds(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    assert demo_vss(lambda actor, text: lines.append((actor, text)), tmp_path, [])
    said = [text for _actor, text in lines]
    assert "HOT_BACKUP: can the guest take part in a live backup? -> S_OK" in said
    assert "FREEZE -> S_OK" in said
    assert "THAW -> S_OK" in said
    assert "SIGTERM -> daemon exited with status 0" in said


def test_demo_refuses_the_filesystem_it_runs_on(tmp_path: Path) -> None:
    lines: list[str] = []
    assert not demo_vss(lambda _actor, text: lines.append(text), tmp_path, [tmp_path])
    assert lines == [f"refusing to freeze {tmp_path.resolve()}: the demo itself lives on it"]
