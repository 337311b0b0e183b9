"""Run inside a test namespace: edit links and addresses, report what LinuxNetInfo saw.

LinuxNetInfo keeps its NIC list until rtnetlink reports a change; every edit
below is followed at once by a read, so a missed notification shows as a
stale answer. Prints JSON.
"""

from __future__ import annotations

import json
import sys

from pyroute2 import IPRoute

from hvguest.linux.netinfo import LinuxNetInfo
from hvguest.linux.netlink import ChangeMonitor


def main() -> dict[str, object]:
    raw = ChangeMonitor()
    info = LinuxNetInfo(changes=ChangeMonitor())

    def eth0_addresses() -> list[str]:
        return [str(a.interface) for n in info.nics() if n.name == "eth0" for a in n.addresses]

    def names() -> list[str]:
        return [n.name for n in info.nics()]

    report: dict[str, object] = {"before": eth0_addresses()}
    with IPRoute() as ipr:
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        raw.changed()
        ipr.addr("add", index=eth0, address="192.0.2.77", prefixlen=24)
        report["raw_saw_add"] = raw.changed()
        report["raw_quiet_after_drain"] = raw.changed()
        report["after_add"] = eth0_addresses()
        ipr.addr("del", index=eth0, address="192.0.2.77", prefixlen=24)
        report["after_del"] = eth0_addresses()
        ipr.link("add", ifname="cache0", kind="veth", peer="cache1")
        report["after_link_add"] = names()
        ipr.link("set", index=ipr.link_lookup(ifname="cache0")[0], ifname="cache9")
        report["after_rename"] = names()
        ipr.link("del", index=ipr.link_lookup(ifname="cache9")[0])
        report["after_link_del"] = names()
    info.close()
    raw.close()
    return report


if __name__ == "__main__":
    del sys.argv[1:]  # the lab passes a JSON argument this probe does not need
    json.dump(main(), sys.stdout)
