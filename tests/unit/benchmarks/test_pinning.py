"""The benchmark pins what it says it pins (a daemon once silently shared the harness CPU).

Run in a child interpreter, so that pytest's own CPU affinity is left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

_PROBE = """
import json, os, subprocess, sys
from bench import procfs
procfs.use_layout(sys.argv[1])
before = procfs.can_pin()
procfs.pin_harness()
after = procfs.can_pin()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
try:
    if after:
        procfs.pin_daemon(child.pid)
    daemon = sorted(os.sched_getaffinity(child.pid))
finally:
    child.kill()
    child.wait()
print(json.dumps({"before": before, "after": after, "harness": sorted(os.sched_getaffinity(0)),
                  "daemon": daemon, "text": procfs.pinning_text(after)}))
"""


def _probe(layout: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, layout],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(("layout", "daemon_cpu"), [("split", 1), ("shared", 0)])
def test_daemons_land_on_the_cpu_the_report_names(layout: str, daemon_cpu: int) -> None:
    result = _probe(layout)
    two_cpus = {0, 1} <= os.sched_getaffinity(0)
    # Pinning the harness must not make the benchmark forget that it can pin.
    assert result["before"] is two_cpus
    assert result["after"] is two_cpus
    if two_cpus:
        assert result["harness"] == [0]
        assert result["daemon"] == [daemon_cpu]
        assert f"CPU {daemon_cpu}" in str(result["text"])
    else:
        assert "not pinned" in str(result["text"])


def test_an_unknown_layout_is_refused() -> None:
    from bench.procfs import use_layout

    with pytest.raises(ValueError, match="unknown CPU layout"):
        use_layout("diagonal")
