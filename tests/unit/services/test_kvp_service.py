"""KvpService over fakes: each operation's reply, the AUTO pool, IP get/set."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface

import pytest

from hvguest.abi.constants import AddrFamily, HvStatus, KvpPool
from hvguest.errors import OperationFailed
from hvguest.protocol.kvp import (
    KvpDelete,
    KvpEnumerate,
    KvpGet,
    KvpGetIpInfo,
    KvpIpInfo,
    KvpRecord,
    KvpSet,
    KvpSetIpInfo,
    KvpStatus,
    KvpValue,
)
from hvguest.services.kvp import AUTO_POOL_KEYS, UNKNOWN_VERSION, KvpService
from hvguest.services.ports import Nic, NicAddress, mac_key
from hvguest.testing.fakes.ipconfig import FakeIpConfigurator
from hvguest.testing.fakes.net import FakeNetInfo, FakeOsInfo
from hvguest.testing.fakes.pools import FakePoolStore

ETH0 = Nic(
    name="eth0",
    index=2,
    mac="00:15:5D:01:02:03",
    addresses=(
        NicAddress(ip_interface("192.0.2.10/24")),
        NicAddress(ip_interface("2001:db8::10/64")),
        NicAddress(ip_interface("fe80::215:5dff:fe01:203/64")),
    ),
)
DOCKER0 = Nic(
    name="docker0",
    index=3,
    mac="02:42:AC:11:00:01",
    addresses=(NicAddress(ip_interface("172.17.0.1/16")),),
)
ETH10 = Nic(
    name="eth10",
    index=4,
    mac="00:15:5D:0A:0A:0A",
    addresses=(NicAddress(ip_interface("198.51.100.7/25")),),
)


def make_service(
    *, configurator: FakeIpConfigurator | None = None, warnings: list[str] | None = None
) -> tuple[KvpService, FakePoolStore, FakeNetInfo]:
    pools = FakePoolStore()
    net = FakeNetInfo(
        [ETH0, DOCKER0, ETH10],
        gateways={"eth0": [ip_address("192.0.2.1"), ip_address("2001:db8::1")]},
        dns={"eth0": ["192.0.2.53", "2001:db8::53"]},
        dhcp={"eth0": True},
        device_ids={"eth0": "{f8615163-df3e-46c5-913f-f2d2f965ed0e}"},
    )
    sink = warnings if warnings is not None else []
    service = KvpService(
        pools,
        net,
        FakeOsInfo(fqdn_value="vm.example.test"),
        configurator,
        exclude_nics=("docker*", "veth*"),
        warn=sink.append,
    )
    return service, pools, net


def test_set_then_get_returns_the_stored_value() -> None:
    service, _pools, _net = make_service()
    assert service.handle(KvpSet(KvpPool.EXTERNAL, b"k", b"v1")) == KvpStatus(HvStatus.S_OK)
    assert service.handle(KvpGet(KvpPool.EXTERNAL, b"k")) == KvpValue(b"v1")


def test_get_of_a_missing_key_answers_s_cont() -> None:
    service, _pools, _net = make_service()
    assert service.handle(KvpGet(KvpPool.GUEST, b"absent")) == KvpStatus(HvStatus.S_CONT)


def test_delete_answers_ok_then_s_cont() -> None:
    service, _pools, _net = make_service()
    service.handle(KvpSet(KvpPool.GUEST, b"k", b"v"))
    assert service.handle(KvpDelete(KvpPool.GUEST, b"k")) == KvpStatus(HvStatus.S_OK)
    assert service.handle(KvpDelete(KvpPool.GUEST, b"k")) == KvpStatus(HvStatus.S_CONT)


def test_enumerate_walks_the_pool_and_ends_with_s_cont() -> None:
    service, _pools, _net = make_service()
    for key in (b"a", b"b", b"c"):
        service.handle(KvpSet(KvpPool.GUEST, key, key.upper()))
    replies = [service.handle(KvpEnumerate(KvpPool.GUEST, i)) for i in range(4)]
    assert replies == [
        KvpRecord(b"a", b"A"),
        KvpRecord(b"b", b"B"),
        KvpRecord(b"c", b"C"),
        KvpStatus(HvStatus.S_CONT),
    ]


def test_invalid_utf8_reaches_the_host_replaced_and_is_reported() -> None:
    warnings: list[str] = []
    service, pools, _net = make_service(warnings=warnings)
    pools.set(KvpPool.GUEST, b"k", b"caf\xe9")
    assert service.handle(KvpEnumerate(KvpPool.GUEST, 0)) == KvpRecord(b"k", "caf\ufffd".encode())
    assert any("not UTF-8" in line for line in warnings)


def test_auto_pool_has_the_ten_reference_keys_in_order() -> None:
    service, _pools, _net = make_service()
    service.kernel_version = "3.1"
    records = [service.handle(KvpEnumerate(KvpPool.AUTO, i)) for i in range(10)]
    assert [r.key.decode() for r in records if isinstance(r, KvpRecord)] == list(AUTO_POOL_KEYS)
    values = {r.key.decode(): r.value.decode() for r in records if isinstance(r, KvpRecord)}
    assert values == {
        "FullyQualifiedDomainName": "vm.example.test",
        "IntegrationServicesVersion": "3.1",
        # docker0 is excluded; eth10 is not.
        "NetworkAddressIPv4": "192.0.2.10;198.51.100.7",
        "NetworkAddressIPv6": "2001:db8::10;fe80::215:5dff:fe01:203",
        "OSBuildNumber": "6.18.44-fc-v669",
        "OSName": "Debian GNU/Linux",
        "OSMajorVersion": "12",
        "OSMinorVersion": "",
        "OSVersion": "6.18.44",
        "ProcessorArchitecture": "x86_64",
    }
    assert service.handle(KvpEnumerate(KvpPool.AUTO, 10)) == KvpStatus(HvStatus.S_CONT)


def test_auto_pool_never_reads_the_pool_file() -> None:
    service, pools, _net = make_service()
    pools.set(KvpPool.AUTO, b"stale", b"value")
    first = service.handle(KvpEnumerate(KvpPool.AUTO, 0))
    assert first == KvpRecord(b"FullyQualifiedDomainName", b"vm.example.test")


def test_auto_pool_version_is_unknown_before_registration() -> None:
    service, _pools, _net = make_service()
    reply = service.handle(KvpEnumerate(KvpPool.AUTO, 1))
    assert reply == KvpRecord(b"IntegrationServicesVersion", UNKNOWN_VERSION.encode())


def test_address_list_stops_at_a_whole_address_within_the_host_limit() -> None:
    many = Nic(
        name="eth0",
        index=2,
        mac="00:15:5D:00:00:01",
        addresses=tuple(
            NicAddress(ip_interface(f"10.0.{i // 250}.{i % 250 + 1}/16")) for i in range(200)
        ),
    )
    service = KvpService(FakePoolStore(), FakeNetInfo([many]), FakeOsInfo(), None)
    reply = service.handle(KvpEnumerate(KvpPool.AUTO, 2))
    assert isinstance(reply, KvpRecord)
    text = reply.value.decode()
    assert len(text) <= 1022
    assert all(part.count(".") == 3 for part in text.split(";"))


def test_get_ip_info_matches_the_exact_mac_only() -> None:
    service, _pools, _net = make_service()
    reply = service.handle(KvpGetIpInfo("00:15:5d:01:02:03", 0))
    assert reply == KvpIpInfo(
        adapter_id="00:15:5d:01:02:03",
        addr_family=AddrFamily.IPV4 | AddrFamily.IPV6,
        dhcp_enabled=True,
        ip_addr="192.0.2.10;2001:db8::10;fe80::215:5dff:fe01:203",
        sub_net="255.255.255.0;/64;/64",
        gate_way="192.0.2.1;2001:db8::1;",
        dns_addr="192.0.2.53;2001:db8::53;",
    )


def test_get_ip_info_of_eth10_does_not_mix_in_eth1_style_prefix_matches() -> None:
    service, _pools, _net = make_service()
    reply = service.handle(KvpGetIpInfo("00-15-5D-0A-0A-0A", 0))
    assert isinstance(reply, KvpIpInfo)
    assert reply.ip_addr == "198.51.100.7"
    assert reply.sub_net == "255.255.255.128"
    assert reply.gate_way == ""
    assert reply.addr_family == AddrFamily.IPV4


def test_get_ip_info_for_an_unknown_mac_fails() -> None:
    service, _pools, _net = make_service()
    with pytest.raises(OperationFailed) as failure:
        service.handle(KvpGetIpInfo("00:00:00:00:00:99", 0))
    assert failure.value.status == HvStatus.E_FAIL


def test_set_ip_info_applies_validated_settings() -> None:
    configurator = FakeIpConfigurator()
    service, _pools, _net = make_service(configurator=configurator)
    request = KvpSetIpInfo(
        adapter_id="{F8615163-DF3E-46C5-913F-F2D2F965ED0E}",
        addr_family=AddrFamily.IPV4,
        dhcp_enabled=False,
        ip_addr="192.0.2.20",
        sub_net="255.255.255.0",
        gate_way="192.0.2.1",
        dns_addr="192.0.2.53",
    )
    assert service.handle(request) == KvpStatus(HvStatus.S_OK)
    (settings,) = configurator.applied
    assert settings.interface == "eth0"
    assert settings.addresses == (ip_interface("192.0.2.20/24"),)


def test_set_ip_info_for_an_unknown_adapter_is_guid_not_found() -> None:
    service, _pools, _net = make_service(configurator=FakeIpConfigurator())
    request = KvpSetIpInfo("{00000000-0000-0000-0000-000000000000}", 1, False, "", "", "", "")
    with pytest.raises(OperationFailed) as failure:
        service.handle(request)
    assert failure.value.status == HvStatus.GUID_NOTFOUND


def test_set_ip_info_with_a_bad_address_is_invalidarg_and_applies_nothing() -> None:
    configurator = FakeIpConfigurator()
    service, _pools, _net = make_service(configurator=configurator)
    request = KvpSetIpInfo(
        "{f8615163-df3e-46c5-913f-f2d2f965ed0e}", 1, False, "192.0.2.300", "255.255.255.0", "", ""
    )
    with pytest.raises(OperationFailed) as failure:
        service.handle(request)
    assert failure.value.status == HvStatus.INVALIDARG
    assert configurator.attempted == []


def test_set_ip_info_is_refused_when_injection_is_off() -> None:
    service, _pools, _net = make_service(configurator=None)
    request = KvpSetIpInfo("{f8615163-df3e-46c5-913f-f2d2f965ed0e}", 1, True, "", "", "", "")
    with pytest.raises(OperationFailed, match="ip_injection is off") as failure:
        service.handle(request)
    assert failure.value.status == HvStatus.E_FAIL


@pytest.mark.parametrize("spelling", [" 00-15-5d-01-02-0a ", "00:15:5D:01:02:0A", "00155d01020a"])
def test_mac_key_ignores_case_blanks_and_separators(spelling: str) -> None:
    assert mac_key(spelling) == "00155D01020A"


def test_mac_key_keeps_every_digit_so_a_prefix_never_matches() -> None:
    assert mac_key("00:15:5D:01:02") != mac_key("00:15:5D:01:02:0A")


def _auto_addresses(service: KvpService) -> tuple[bytes, bytes]:
    ipv4, ipv6 = (service.handle(KvpEnumerate(KvpPool.AUTO, index)) for index in (2, 3))
    assert isinstance(ipv4, KvpRecord)
    assert isinstance(ipv6, KvpRecord)
    return ipv4.value, ipv6.value


def test_auto_address_lists_follow_every_change_of_the_nics() -> None:
    service, _pools, net = make_service()
    assert _auto_addresses(service) == (
        b"192.0.2.10;198.51.100.7",
        b"2001:db8::10;fe80::215:5dff:fe01:203",
    )
    # The adapter hands back the same Nic objects while nothing changed.
    first = service.handle(KvpEnumerate(KvpPool.AUTO, 2))
    again = service.handle(KvpEnumerate(KvpPool.AUTO, 2))
    assert isinstance(first, KvpRecord)
    assert isinstance(again, KvpRecord)
    assert first.value == again.value
    # A new address is a new Nic object: seen at once.
    net.nic_list[2] = Nic(
        name="eth10",
        index=4,
        mac=ETH10.mac,
        addresses=(NicAddress(ip_interface("203.0.113.9/24")),),
    )
    assert _auto_addresses(service)[0] == b"192.0.2.10;203.0.113.9"
    # A NIC going away (same objects, one fewer) is seen too.
    del net.nic_list[0]
    assert _auto_addresses(service) == (b"203.0.113.9", b"")
