"""The FCOPY demo step runs the real daemon and reports success truthfully."""

from __future__ import annotations

from pathlib import Path

from hvguest.daemon.demo_fcopy import DEMO_NAME, demo_fcopy


def test_demo_fcopy_copies_the_non_ascii_file(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    assert demo_fcopy(lambda actor, text: lines.append((actor, text)), tmp_path)
    text = "\n".join(line for _actor, line in lines)
    assert "bytes match" in text
    assert "ERROR_ALREADY_EXISTS" in text
    assert (tmp_path / "fcopy" / "inbox" / DEMO_NAME).stat().st_size == 100_000
    assert sorted(path.name for path in (tmp_path / "fcopy" / "inbox").iterdir()) == [DEMO_NAME]
