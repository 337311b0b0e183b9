"""A trivial FCOPY "daemon" that answers every request with status 0: the harness's ceiling.

It speaks the simulator's socket protocol (hvguest.testing.wire) directly,
registers like tools/hv/hv_fcopy_daemon.c (a bare 4-byte 1) and then, for
every message, acknowledges the read and writes a 4-byte 0 without touching
any file. Whatever rate the harness reaches with it is the most any FCOPY
daemon can show.

Two builds of the same loop: :data:`ECHO_C_SOURCE`, compiled at run time by
:func:`build_echo` (the ceiling the benchmark reports: a Python echo costs
about as much CPU per message as the C daemon does real work, which would
understate the ceiling), and :func:`serve` in Python, the fallback without
gcc. Run as ``python -m bench.fcopy_echo SOCKET``.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Final

from hvguest.abi.constants import FCOPY_VERSION_1
from hvguest.testing.wire import (
    MAX_DATAGRAM,
    TAG_CONSUMED,
    TAG_HANGUP,
    TAG_MESSAGE,
    TAG_OPEN,
    TAG_WRITE,
    decode_int32,
)

#: The C echo: same protocol, no Python in the loop. Argument: the device socket.
ECHO_C_SOURCE: Final = r"""
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    static char buf[65537];
    const char version[5] = {'W', 1, 0, 0, 0}, success[5] = {'W', 0, 0, 0, 0};
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int registered = 0, fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);

    if (argc != 2 || fd < 0 || strlen(argv[1]) >= sizeof(addr.sun_path))
        return 1;
    strcpy(addr.sun_path, argv[1]);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        return 1;
    if (recv(fd, buf, sizeof(buf), 0) < 5 || buf[0] != 'O' || memcmp(buf + 1, "\0\0\0", 4))
        return 1;
    send(fd, version, sizeof(version), 0);
    for (;;) {
        ssize_t size = recv(fd, buf, sizeof(buf), 0);

        if (size <= 0 || buf[0] == 'H')
            return 0;
        if (buf[0] != 'M')
            continue; /* an R: the echo never needs a write's result */
        send(fd, "A", 1, 0);
        if (!registered) { /* the kernel's answer to the registration */
            registered = 1;
            continue;
        }
        send(fd, success, sizeof(success), 0);
    }
}
"""


def build_echo(out_dir: Path, *, compiler: str = "gcc") -> Path | None:
    """Compile :data:`ECHO_C_SOURCE` into ``out_dir``; None without a compiler."""
    gcc = shutil.which(compiler)
    if gcc is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    source, binary = out_dir / "fcopy_echo.c", out_dir / "fcopy_echo"
    source.write_text(ECHO_C_SOURCE, encoding="ascii")
    command = [gcc, "-O2", "-Wall", "-Werror", "-o", str(binary), str(source)]
    subprocess.run(command, check=True, capture_output=True)
    return binary


def serve(path: str) -> int:
    """Register on the device at ``path`` and answer until it goes away."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    buffer = bytearray(MAX_DATAGRAM)
    sock.recv_into(buffer)
    if buffer[:1] != TAG_OPEN or decode_int32(buffer) != 0:
        return 1
    sock.send(TAG_WRITE + struct.pack("<i", FCOPY_VERSION_1))
    message, hangup = TAG_MESSAGE[0], TAG_HANGUP[0]
    # One datagram: the read acknowledgement is sent separately (the kernel
    # frees the message first), then the status.
    success = TAG_WRITE + bytes(4)
    registered = False
    while True:
        size = sock.recv_into(buffer)
        if size == 0 or buffer[0] == hangup:
            return 0
        if buffer[0] != message:
            continue  # an R: the echo never needs a write's result
        sock.send(TAG_CONSUMED)
        if not registered:  # the kernel's answer to the registration
            registered = True
            continue
        sock.send(success)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
