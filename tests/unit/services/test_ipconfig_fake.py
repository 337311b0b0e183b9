"""FakeIpConfigurator records what the service asked for, and fails on demand."""

from __future__ import annotations

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.services.ipconfig import parse_ip_settings
from hvguest.services.ports import IpConfigurator, IpSettings
from hvguest.testing.fakes.ipconfig import FakeIpConfigurator


def settings() -> IpSettings:
    return parse_ip_settings(
        "eth0",
        "00:15:5D:01:02:03",
        dhcp_enabled=False,
        ip_addr="10.0.0.5",
        sub_net="24",
        gate_way="",
        dns_addr="",
    )


def test_records_applied_settings() -> None:
    fake = FakeIpConfigurator()
    port: IpConfigurator = fake
    port.apply(settings())
    assert fake.applied == fake.attempted == [settings()]


def test_configured_failure_is_raised_and_attempt_recorded() -> None:
    fake = FakeIpConfigurator(OperationFailed(HvStatus.E_FAIL, "script exited 3"))
    with pytest.raises(OperationFailed) as caught:
        fake.apply(settings())
    assert caught.value.status is HvStatus.E_FAIL
    assert fake.attempted == [settings()]
    assert fake.applied == []
