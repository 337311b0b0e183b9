"""set_process_name: what pgrep -x and ps -o comm see, in a process of its own."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from hvguest.linux.process import set_process_name
ok = set_process_name(sys.argv[1])
with open("/proc/self/comm") as comm:
    print(ok, comm.read().strip(), "ctypes.util" in sys.modules)
"""


def run(name: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, name], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.strip()


def test_the_process_takes_the_c_daemons_name() -> None:
    assert run("hv_kvp_daemon") == "True hv_kvp_daemon False"


def test_names_are_cut_to_the_kernels_15_bytes() -> None:
    assert run("a-very-long-daemon-name") == "True a-very-long-dae False"
