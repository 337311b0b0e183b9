"""A network namespace with several NICs, for GET_IP_INFO and the AUTO pool's address lists.

Built with iproute2 (``ip -n <ns> ...``) inside a namespace this module creates
and always deletes; the machine's own network is never touched. The dummy
module is not available here, so every NIC is one end of a veth pair.

The plan covers what the reference gets wrong on purpose-built cases: eth1 and
eth10 (name-prefix matching, S11), a ``docker0`` NIC (container addresses in
the AUTO pool), and ``eth2`` with many IPv6 addresses (S10's subnet
bookkeeping and the kernel's 1022-character cut of the AUTO pool value).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: Seconds to wait for link-local addresses and command runs.
WAIT_TIMEOUT: Final = 10.0
NETNS_DIR: Final = Path("/run/netns")


@dataclass(frozen=True, slots=True)
class Nic:
    name: str
    mac: str
    addresses: tuple[str, ...] = ()  #: address/prefix


#: Many addresses on one NIC: enough for S10 and to fill the AUTO pool's IPv6 value.
MANY_V6: Final = tuple(f"2001:db8:0:3::{n:x}/64" for n in range(1, 65))

#: (NIC, its veth peer) pairs.
PAIRS: Final = (
    (
        Nic(
            "eth0",
            "00:15:5d:c0:00:01",
            ("192.0.2.10/24", "198.51.100.7/25", "2001:db8:0:1::10/64"),
        ),
        Nic("peer0", "00:15:5d:c0:00:f1"),
    ),
    (
        Nic("eth1", "00:15:5d:c0:00:02", ("203.0.113.10/25", "2001:db8:0:2::10/64")),
        Nic("eth10", "00:15:5d:c0:00:03", ("203.0.113.130/25",)),
    ),
    (
        Nic("docker0", "02:42:ac:11:00:01", ("172.17.0.1/16",)),
        Nic("peer1", "00:15:5d:c0:00:f2"),
    ),
    (
        Nic("eth2", "00:15:5d:c0:00:04", ("10.3.0.2/24", *MANY_V6)),
        Nic("peer2", "00:15:5d:c0:00:f3"),
    ),
)
NICS: Final = tuple(nic for pair in PAIRS for nic in pair)
#: Default routes: (family option, gateway, device, metric).
DEFAULT_ROUTES: Final = (
    ("-4", "192.0.2.1", "eth0", "100"),
    ("-6", "2001:db8:0:1::1", "eth0", "100"),
    ("-4", "203.0.113.1", "eth1", "200"),
)


@dataclass(frozen=True, slots=True)
class Lab:
    """A built namespace: its name, the nsfs file to join, and every NIC's addresses."""

    name: str
    #: name -> every address the kernel reports (the plan's plus link-local), no prefix
    addresses: dict[str, tuple[str, ...]]

    @property
    def netns(self) -> Path:
        return NETNS_DIR / self.name

    def nic(self, name: str) -> Nic:
        return next(nic for nic in NICS if nic.name == name)


def _ip(*args: str) -> str:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=WAIT_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _addresses(name: str) -> dict[str, tuple[str, ...]]:
    """Per NIC, the addresses as ``ip -o addr`` lists them (tentative ones included)."""
    found: dict[str, list[str]] = {nic.name: [] for nic in NICS}
    for line in _ip("-n", name, "-o", "addr", "show").splitlines():
        fields = line.split()
        device = fields[1].split("@")[0]
        if device in found:
            found[device].append(fields[3].split("/")[0])
    return {device: tuple(addresses) for device, addresses in found.items()}


def _settled(name: str) -> bool:
    """Every NIC has its link-local address and none is still tentative."""
    text = _ip("-n", name, "-o", "addr", "show")
    if "tentative" in text:
        return False
    with_link_local = {
        line.split()[1].split("@")[0] for line in text.splitlines() if " fe80:" in line
    }
    return {nic.name for nic in NICS} <= with_link_local


@contextmanager
def network_lab() -> Iterator[Lab]:
    """Build the namespace; delete it (and with it every veth) on exit."""
    name = f"hvguest-compat-{os.getpid()}-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        # No duplicate address detection: addresses are usable (and stable) at once.
        for key in ("all", "default"):
            subprocess.run(
                ["ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0"],
                capture_output=True,
                timeout=WAIT_TIMEOUT,
                check=True,
            )
        for nic, peer in PAIRS:
            _ip("-n", name, "link", "add", nic.name, "type", "veth", "peer", "name", peer.name)
        for nic in NICS:
            _ip("-n", name, "link", "set", nic.name, "address", nic.mac, "up")
            for address in nic.addresses:
                _ip("-n", name, "addr", "add", address, "dev", nic.name, "nodad")
        for family, gateway, device, metric in DEFAULT_ROUTES:
            _ip(
                "-n",
                name,
                family,
                "route",
                "add",
                "default",
                "via",
                gateway,
                "dev",
                device,
                "metric",
                metric,
            )
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not _settled(name):
            if time.monotonic() > deadline:
                raise RuntimeError("link-local addresses did not settle")
            time.sleep(0.05)
        yield Lab(name, _addresses(name))
    finally:
        subprocess.run(
            ["ip", "netns", "del", name], capture_output=True, timeout=WAIT_TIMEOUT, check=False
        )
