"""FakeIpConfigurator: records SET_IP_INFO settings instead of touching the network.

Stands in for ``hvguest.linux.ifconfig.ScriptIpConfigurator`` (the system()
call of kvp_set_ip_info() in tools/hv/hv_kvp_daemon.c) in service tests.
"""

from __future__ import annotations

from hvguest.errors import OperationFailed
from hvguest.services.ports import IpSettings


class FakeIpConfigurator:
    """Records every ``apply`` in ``applied``; raises ``failure`` instead when it is set.

    A failing apply is still recorded in ``attempted``, so a test can tell
    "refused before the configurator" from "configurator failed".
    """

    def __init__(self, failure: OperationFailed | None = None) -> None:
        self.failure = failure
        self.attempted: list[IpSettings] = []
        self.applied: list[IpSettings] = []

    def apply(self, settings: IpSettings) -> None:
        """Record ``settings``; raise ``failure`` if one is set."""
        self.attempted.append(settings)
        if self.failure is not None:
            raise self.failure
        self.applied.append(settings)
