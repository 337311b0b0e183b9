"""The OS capabilities the services need, as small typing.Protocol ports.

Each port has a real adapter in ``hvguest.linux`` (``Linux<Port>``) and an
in-memory fake in ``hvguest.testing.fakes`` (``Fake<Port>``). Services only
ever see these types, so they run unchanged against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Protocol

from hvguest.abi.constants import KvpPool
from hvguest.records import record

IpInterface = IPv4Interface | IPv6Interface
IpAddress = IPv4Address | IPv6Address


class PoolStore(Protocol):
    """The five KVP pool files (replaces kvp_file_info[] in hv_kvp_daemon.c).

    Keys and values are raw bytes without the NUL padding. Every call sees
    the writes other processes finished before it (the files are shared).
    Failures raise ``OperationFailed``.
    """

    def get(self, pool: KvpPool, key: bytes) -> bytes | None:
        """The value of ``key`` (last record wins), or None."""
        ...

    def set(self, pool: KvpPool, key: bytes, value: bytes) -> None:
        """Add or replace ``key``; durable when it returns."""
        ...

    def delete(self, pool: KvpPool, key: bytes) -> bool:
        """Remove every record of ``key``; False if there was none."""
        ...

    def record_at(self, pool: KvpPool, index: int) -> tuple[bytes, bytes] | None:
        """The ``index``-th live record (one per key, file order), or None past the end."""
        ...


@record
class NicAddress:
    """One address of a NIC with its prefix; ``dynamic`` if it has a finite lifetime."""

    interface: IpInterface
    dynamic: bool = False


@record
class Nic:
    """A network interface as the KVP service reports it."""

    name: str
    index: int
    #: Upper-case, colon-separated, as hv_kvp_daemon compares it ("00:15:5D:01:02:03").
    mac: str
    addresses: tuple[NicAddress, ...] = ()


class NetInfo(Protocol):
    """Read-only view of the guest's network (replaces the ip/awk/script popen calls)."""

    def nics(self) -> Sequence[Nic]:
        """Non-loopback interfaces with their addresses, in interface-index order."""
        ...

    def gateways(self, nic: Nic) -> Sequence[IpAddress]:
        """Default-route gateways through ``nic`` (IPv4 first, then IPv6)."""
        ...

    def dns_servers(self, nic: Nic) -> Sequence[str]:
        """Name servers that apply to ``nic``."""
        ...

    def dhcp_enabled(self, nic: Nic) -> bool:
        """Whether ``nic``'s IPv4 configuration comes from DHCP."""
        ...

    def nic_for_device_id(self, device_id: str) -> Nic | None:
        """The NIC whose VMBus device_id ("{guid}") matches, case-insensitively."""
        ...

    def match_mac(self, adapter_id: str) -> Sequence[Nic]:
        """Every NIC whose MAC has ``mac_key(adapter_id)``, by index (a VF may share it)."""
        ...


def mac_key(text: str) -> str:
    """A MAC address reduced for comparison: no blanks, no ':'/'-' separators, upper case.

    "00-15-5d-01-02-03", "00:15:5D:01:02:03" and "00155D010203" have the same
    key. The one rule every NetInfo adapter uses (exact match, never a prefix: S11).
    """
    return text.strip().replace(":", "").replace("-", "").upper()


@record
class OsFacts:
    """Operating-system facts for the AUTO pool (see kvp_get_os_info())."""

    os_name: str
    os_major: str
    os_minor: str
    kernel_release: str
    machine: str


class OsInfo(Protocol):
    """Host name and OS facts; cheap to call on every request."""

    def fqdn(self) -> str:
        """The fully qualified host name, resolved off the request path."""
        ...

    def facts(self) -> OsFacts:
        """Current OS facts (re-read when their sources change)."""
        ...


@record
class IpSettings:
    """Validated SET_IP_INFO request for one interface (see services.ipconfig)."""

    interface: str
    mac: str
    dhcp: bool
    addresses: tuple[IpInterface, ...]
    gateways: tuple[IpAddress, ...]
    dns: tuple[IpAddress, ...]


class IpConfigurator(Protocol):
    """Applies static IP settings injected by the host (SET_IP_INFO).

    Raises ``OperationFailed`` with the HV status for the host.
    """

    def apply(self, settings: IpSettings) -> None:
        """Make ``settings`` the interface's configuration."""
        ...


# --- VSS (freeze/thaw) ---------------------------------------------------------------


@record
class Mount:
    """One line of /proc/self/mountinfo, plus what sysfs says about its block device."""

    mountpoint: str
    #: The mount source ("/dev/sda1", "tmpfs", "server:/export").
    source: str
    fstype: str
    #: "major:minor" of the superblock: mounts sharing it are one filesystem.
    device: str
    #: Mounted read-only (per-mount or superblock "ro").
    read_only: bool = False
    #: The block device is a loop device or stacked on one (sysfs slaves/).
    on_loop: bool = False
    #: mountinfo's mount ID and parent mount ID (0: unknown), to tell which
    #: mount a path reaches when another is mounted over it or a parent.
    mount_id: int = 0
    parent_id: int = 0


class MountSource(Protocol):
    """The guest's current mounts, in mount order (replaces the getmntent() walk)."""

    def mounts(self) -> Sequence[Mount]:
        """Every mount, as the kernel lists them."""
        ...


class FreezeOutcome(Enum):
    """What one FIFREEZE / FITHAW did; failures raise ``OperationFailed`` instead."""

    #: The filesystem was frozen (FIFREEZE) or thawed (FITHAW) by this call.
    DONE = "done"
    #: FIFREEZE: EBUSY, it was frozen already; FITHAW: EINVAL, it was not frozen.
    ALREADY = "already"


class Freezer(Protocol):
    """FIFREEZE / FITHAW on a mount point; ``OperationFailed`` says which and why."""

    def freeze(self, mountpoint: str) -> FreezeOutcome:
        """Freeze the filesystem mounted at ``mountpoint``."""
        ...

    def thaw(self, mountpoint: str) -> FreezeOutcome:
        """Thaw the filesystem mounted at ``mountpoint``."""
        ...


@record
class FrozenRecord:
    """What a freeze may have left behind: mounts to thaw and hooks owed a "thaw"."""

    mountpoints: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()


class FrozenJournal(Protocol):
    """A record, kept off the frozen filesystems, of what may be frozen right now.

    Written before the first hook or FIFREEZE so that a daemon killed while
    frozen leaves behind exactly what `hvguest vss thaw` has to undo.
    """

    def record(self, record: FrozenRecord) -> None:
        """Remember ``record`` (replacing any earlier one), durably, before returning."""
        ...

    def recorded(self) -> FrozenRecord | None:
        """What the last ``record`` remembered, or None."""
        ...

    def clear(self) -> None:
        """Forget the record (everything is thawed)."""
        ...


@record
class HookSet:
    """The hooks found, in name order, and the ones refused with their reason."""

    hooks: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()


@record
class HookResult:
    """How one hook run ended: ``ok`` if it exited 0 in time; ``detail`` says why not."""

    hook: str
    ok: bool
    detail: str = ""


class HookRunner(Protocol):
    """The VSS hook directory: discovery and one run of one hook."""

    def discover(self) -> HookSet:
        """The usable hooks, sorted by name, and the refused ones."""
        ...

    def run(self, hook: str, phase: str) -> HookResult:
        """Run ``hook`` with the single argument ``phase`` under the hook timeout."""
        ...


# --- FCOPY (host-to-guest file copy) ---------------------------------------------------


class EntryKind(Enum):
    """What a name in a destination directory is (lstat, never following a link)."""

    MISSING = "missing"
    FILE = "regular file"
    SYMLINK = "symbolic link"
    #: A directory, device, FIFO or socket: never replaced by a copy.
    OTHER = "not a regular file"


class CopyTarget(Protocol):
    """A copy in progress: a temporary file next to its final name.

    Failures raise ``OperationFailed`` (ENOSPC/EDQUOT -> HV_ERROR_DISK_FULL).
    After ``commit`` or ``discard`` the target is finished and must not be used.
    """

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of ``data`` at ``offset`` (one pwrite in the normal case)."""
        ...

    def commit(self, *, replace: bool) -> None:
        """Make the file durable and give it its final name.

        Without ``replace`` a file that appeared under the final name
        meanwhile is kept and ``OperationFailed(HV_ERROR_ALREADY_EXISTS)``
        is raised; the temporary file is removed in every failure case.
        """
        ...

    def discard(self) -> None:
        """Remove the temporary file; never fails (the copy is being abandoned)."""
        ...


class DestinationDir(Protocol):
    """A destination directory opened without following symbolic links."""

    def entry_kind(self, name: str) -> EntryKind:
        """What ``name`` is in this directory right now."""
        ...

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer could still use on this filesystem."""
        ...

    def create_temp(self, final_name: str) -> CopyTarget:
        """A new, empty temporary file that will become ``final_name``."""
        ...

    def close(self) -> None:
        """Release the directory (targets created from it stay usable)."""
        ...


class FileSink(Protocol):
    """Where FCOPY writes files (replaces the open/pwrite/close of hv_fcopy_daemon.c)."""

    def resolve(self, path: str) -> str:
        """``path`` with every symbolic link of its existing part resolved (realpath)."""
        ...

    def open_directory(self, path: str, *, create_missing: bool) -> DestinationDir:
        """Open the absolute ``path`` component by component, never through a symlink.

        Missing components are created (mode 0755) if ``create_missing``;
        otherwise, or for a symlink or non-directory on the way,
        ``OperationFailed(HV_E_FAIL)`` names the component.
        """
        ...

    def cleanup_leftovers(self) -> Sequence[str]:
        """Remove temporary files a crashed daemon left; the paths removed."""
        ...
