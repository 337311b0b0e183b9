"""Wires the KVP service to its Linux adapters and the event loop.

The process equivalent of main() in tools/hv/hv_kvp_daemon.c.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hvguest.config import Config
from hvguest.daemon.kvp_runner import KvpRunner
from hvguest.daemon.loop import PollWatcher
from hvguest.linux.netinfo import LinuxNetInfo
from hvguest.linux.netlink import ChangeMonitor
from hvguest.linux.osinfo import LinuxOsInfo
from hvguest.linux.pools import LinuxPoolStore
from hvguest.protocol.channel import KernelVersion
from hvguest.services.kvp import KvpService
from hvguest.services.ports import IpConfigurator, IpSettings

log = logging.getLogger("hvguest.kvp")


class _PoolChanges:
    """The pool store's inotify queue as the event loop's ``PollWatcher``."""

    def __init__(self, pools: LinuxPoolStore, fd: int) -> None:
        self._fd = fd
        self.after_poll = pools.after_poll
        self.after_serving = pools.after_serving

    def fileno(self) -> int:
        return self._fd


def build_kvp_service(
    config: Config,
) -> tuple[KvpService, Callable[[], None], list[PollWatcher]]:
    """The service with its real adapters, what releases them, and what the loop must poll.

    The OS info owns a resolver thread; the network info a change monitor;
    the pool store an inotify queue, polled with the device.
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

    change_fd = pools.change_fd()
    watchers: list[PollWatcher] = [] if change_fd is None else [_PoolChanges(pools, change_fd)]
    return service, close, watchers


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


def kvp_runner(config: Config, service: KvpService) -> KvpRunner:
    """The channel runner serving ``service`` on the configured device."""

    def on_version(version: KernelVersion) -> None:
        service.kernel_version = version.text

    return KvpRunner(config.kvp.device, service.handle, log=log, on_version=on_version)
