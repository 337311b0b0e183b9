"""The FCOPY step of `hvguest demo`: the host copies a file with a non-ASCII name.

Plays Copy-VMFile against the simulated /dev/vmbus/hv_fcopy with the real
daemon (`python -m hvguest fcopy -n`), then shows what the reference daemons
cannot: the name arrives intact (hv_fcopy_uio_daemon garbles it, S18), a
cancelled copy leaves nothing, and an existing file is not replaced without
OVER_WRITE. No root needed; everything lives under ``root``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

from hvguest.abi.constants import DATA_FRAGMENT, HvStatus
from hvguest.testing.daemon_process import RunningDaemon, fcopy_daemon
from hvguest.testing.fcopy_host import copy_bytes, fcopy_cancel, fcopy_start, fcopy_write

#: The demo file: a name with accents, a non-ASCII dash, CJK and a non-BMP emoji.
DEMO_NAME: Final = "Grüße \u2013 報告 📄.txt"
_DEMO_SIZE: Final = 100_000


def _status(code: int) -> str:
    try:
        return HvStatus(code).name
    except ValueError:
        return f"0x{code:08X}"


def demo_fcopy(say: Callable[[str, str], None], root: Path) -> bool:
    """Play the FCOPY step under ``root`` (a scratch directory); True if every answer was right."""
    directory = root / "fcopy"
    destination = directory / "inbox"
    destination.mkdir(parents=True, exist_ok=True)
    with fcopy_daemon(directory) as daemon:
        say("sim", f"simulated /dev/vmbus/hv_fcopy at {daemon.sim.device_path('fcopy')}")
        say(
            "guest",
            f"started hv_fcopy_daemon (pid {daemon.process.pid}): python -m hvguest fcopy -n",
        )
        ok = _session(say, daemon, destination)
        code = daemon.stop()
        say("guest", f"SIGTERM -> daemon exited with status {code}")
        for line in daemon.log().splitlines():
            say("", f"  log: {line}")
    return ok and code == 0


def _session(say: Callable[[str, str], None], daemon: RunningDaemon, destination: Path) -> bool:
    host = daemon.sim.host
    data = bytes(index * 7 % 251 for index in range(_DEMO_SIZE))
    status = copy_bytes(host, data, str(destination), DEMO_NAME)
    fragments = -(-len(data) // DATA_FRAGMENT)
    say(
        "host",
        f"Copy-VMFile {DEMO_NAME!r} ({len(data)} bytes, {fragments} fragments) "
        f"-> {destination} -> {_status(status)}",
    )
    target = destination / DEMO_NAME
    arrived = target.is_file() and target.read_bytes() == data
    digest = hashlib.sha256(data).hexdigest()[:16]
    say(
        "guest",
        f"{target.name!r}: {'bytes match' if arrived else 'MISSING OR DIFFERENT'}"
        f" (sha256 {digest}...)",
    )
    ok = status == HvStatus.S_OK and arrived

    again = copy_bytes(host, b"other", str(destination), DEMO_NAME)
    say("host", f"the same copy again without OVER_WRITE -> {_status(again)}")
    kept = target.read_bytes() == data
    say("guest", f"existing file {'kept' if kept else 'REPLACED'}")
    ok = ok and again == HvStatus.ERROR_ALREADY_EXISTS and kept

    started = fcopy_start(host, str(destination), "cancelled.bin", file_size=10_000)
    wrote = fcopy_write(host, 0, b"x" * 4096)
    cancelled = fcopy_cancel(host)
    names = sorted(path.name for path in destination.iterdir())
    say("host", f"START, one WRITE, CANCEL of cancelled.bin -> {_status(cancelled)}")
    say("guest", f"{destination} now holds {names}: nothing of the cancelled copy")
    return ok and (started, wrote, cancelled) == (0, 0, 0) and names == [DEMO_NAME]
