"""The KVP daemon's start-up path stays lean: modules it must not keep in memory.

Each module named here cost measurable RSS for the daemon's whole life
(argparse/getopt pull gettext; ctypes.util pulls shutil, bz2, lzma and
subprocess; a str host name for getaddrinfo loads the idna codec with
unicodedata). A fresh interpreter builds the real service, answers a request
through the real runner, resolves a name, and reports what it imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Never on the daemon path; each is loaded only by the command or the rare
#: operation that needs it.
FORBIDDEN = (
    "argparse",
    "gettext",
    "getopt",
    "ctypes.util",
    "shutil",
    "subprocess",
    "tempfile",
    "encodings.idna",
    "unicodedata",
    "json",
    "hvguest.daemon.pool_cli",
    "pyroute2",
)

SCRIPT = """
import socket, sys
from pathlib import Path
from hvguest.config import Config, KvpConfig
from hvguest.daemon import cli
from hvguest.daemon.kvp import build_kvp_service
from hvguest.linux.osinfo import getaddrinfo_ascii
from hvguest.protocol.kvp import KvpEnumerate
from hvguest.abi.constants import KvpPool

options = cli._parse_kvp_options(["-n", "--device", "/nonexistent", "--state-dir", sys.argv[1]])
assert options is not None
config = Config(kvp=KvpConfig(state_dir=Path(sys.argv[1]), ip_injection=True))
service, release = build_kvp_service(config)
service.handle(KvpEnumerate(KvpPool.AUTO, 0))
service.handle(KvpEnumerate(KvpPool.GUEST, 0))
getaddrinfo_ascii("localhost", None, socket.AF_INET, socket.SOCK_STREAM, 0, 0)
release()
print(" ".join(sorted(sys.modules)))
"""


def test_the_daemon_path_imports_none_of_the_heavy_modules(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    imported = set(result.stdout.splitlines()[-1].split())
    assert sorted(imported & set(FORBIDDEN)) == []
    assert "hvguest.services.kvp" in imported  # the script did build the service
