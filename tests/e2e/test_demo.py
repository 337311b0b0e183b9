"""`hvguest demo` (the README's first command) plays all three services and says so."""

from __future__ import annotations

import subprocess
import sys


def test_the_demo_plays_kvp_vss_and_fcopy_and_succeeds() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hvguest", "demo"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    transcript = result.stdout
    assert "daemon registered (REGISTER1 answered with version 3.1)" in transcript
    assert "--- VSS: freeze and thaw for a host backup ---" in transcript
    assert "crash-consistent mode" in transcript
    assert "--- FCOPY: host-to-guest file copy (Copy-VMFile) ---" in transcript
    assert "bytes match" in transcript
    assert transcript.rstrip().endswith("every service answered as expected")
