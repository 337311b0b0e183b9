"""Wires the KVP service to its Linux adapters and the event loop.

The process equivalent of main() in tools/hv/hv_kvp_daemon.c.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from hvguest.config import Config
from hvguest.daemon.loop import ChannelRunner
from hvguest.linux.netinfo import LinuxNetInfo
from hvguest.linux.netlink import ChangeMonitor
from hvguest.linux.osinfo import LinuxOsInfo
from hvguest.linux.pools import LinuxPoolStore
from hvguest.protocol.channel import KernelVersion
from hvguest.protocol.kvp import KvpCodec, KvpReply, KvpRequest
from hvguest.services.kvp import KvpService
from hvguest.services.ports import IpConfigurator, IpSettings

#: Read buffer: larger than any KVP message, so an oversized one is read whole
#: and answered HV_E_FAIL instead of failing every read with EINVAL.
KVP_READ_SIZE: Final = 16384

log = logging.getLogger("hvguest.kvp")


def build_kvp_service(config: Config) -> tuple[KvpService, Callable[[], None]]:
    """The service with its real adapters, and what releases them.

    The OS info owns a resolver thread; the network info a change monitor.
    """
    kvp = config.kvp
    pools = LinuxPoolStore(kvp.state_dir, file_mode=kvp.pool_file_mode, fsync=kvp.fsync)
    net = LinuxNetInfo(
        sys_root=config.paths.sys,
        etc_root=config.paths.etc,
        run_root=config.paths.run,
        changes=_change_monitor(),
    )
    os_info = LinuxOsInfo(etc_root=config.paths.etc)
    configurator = _IpConfiguratorOnFirstUse(config) if kvp.ip_injection else None
    service = KvpService(
        pools,
        net,
        os_info,
        configurator,
        exclude_nics=kvp.exclude_nics,
        warn=log.warning,
    )

    def close() -> None:
        os_info.close()
        net.close()

    return service, close


class _IpConfiguratorOnFirstUse:
    """The ScriptIpConfigurator, imported and built at the first SET_IP_INFO.

    linux.ifconfig and services.ipconfig would cost about 0.2 MB of RSS for
    the daemon's whole life, and hosts rarely send SET_IP_INFO. Nothing that
    could fail at start-up is put off: the config loader already range-checks
    ``[kvp] set_ifconfig_timeout``.
    """

    def __init__(self, config: Config) -> None:
        self._config = config.kvp
        self._inner: IpConfigurator | None = None

    def apply(self, settings: IpSettings) -> None:
        if self._inner is None:
            from hvguest.linux.ifconfig import ScriptIpConfigurator

            kvp = self._config
            self._inner = ScriptIpConfigurator(
                kvp.state_dir, kvp.set_ifconfig or None, timeout=kvp.set_ifconfig_timeout
            )
        self._inner.apply(settings)


def _change_monitor() -> ChangeMonitor | None:
    """Link/address notifications, or None (then every AUTO address query dumps)."""
    try:
        return ChangeMonitor()
    except OSError as error:
        log.warning("no rtnetlink notifications (%s): NIC lists are read per request", error)
        return None


def kvp_runner(config: Config, service: KvpService) -> ChannelRunner[KvpRequest, KvpReply]:
    """The channel runner serving ``service`` on the configured device."""

    def on_version(version: KernelVersion) -> None:
        service.kernel_version = version.text

    return ChannelRunner(
        name="kvp",
        device_path=config.kvp.device,
        codec=KvpCodec(),
        handle=service.handle,
        read_size=KVP_READ_SIZE,
        log=log,
        on_version=on_version,
    )
