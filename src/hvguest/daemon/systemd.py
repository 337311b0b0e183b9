"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

Used for Type=notify units: READY=1 once the kernel answered registration,
STOPPING=1 on SIGTERM, STATUS= lines for `systemctl status`.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` (e.g. "READY=1") if systemd asked for it; True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        # Abstract socket namespace: a leading NUL instead of '@'.
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError:
        return False
    return True
