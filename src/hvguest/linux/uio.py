"""The FCOPY VMBus device under uio_hv_generic: discovery, binding, rings, interrupts.

Replaces the sysfs walk, ``get_ring_buffer_size()``, the ``/dev/uioN`` open
and mmap, and the ``pread``/``write`` of the interrupt counter in
tools/hv/hv_fcopy_uio_daemon.c, plus the bind step distributions forget
(``modprobe uio_hv_generic`` and the class GUID written to its ``new_id``,
protocol.md section 6.1; ecosystem.md section 3.1).

Every path is below injectable roots (``sys_root`` for /sys, ``dev_root`` for
/dev), so tests run on a fake tree. :func:`open_uio` picks the adapter by what
the node is, as :func:`hvguest.linux.device.open_device` does: a character
device is the real UIO device (:class:`UioFile`); a Unix socket is the
simulator of ``hvguest.testing.uio_sim`` (:class:`SimulatedUio`), whose wire
tags are repeated here because ``hvguest.linux`` may not import
``hvguest.testing`` (a unit test checks both copies agree).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol

from hvguest.abi.constants import FCOPY_CLASS_GUID, FCOPY_INSTANCE_GUID
from hvguest.errors import HvError
from hvguest.protocol.vmbus_ring import Ring
from hvguest.records import record

#: The generic VMBus UIO driver FCOPY needs since Linux 6.10.
UIO_DRIVER: Final = "uio_hv_generic"
#: How the driver is loaded when it is missing (argv, never a shell).
MODPROBE_ARGV: Final = ("modprobe", UIO_DRIVER)
#: Seconds modprobe may take.
_MODPROBE_TIMEOUT: Final = 30.0
#: The reference waits 100 ms once before giving up on the channels directory,
#: and once more before giving up on finding a ring in it.
RING_RETRY_DELAY: Final = 0.1
#: After a bind request, how long the device may take to show up bound with its
#: uio node (the kernel binds synchronously; udev and simulators may lag).
BIND_WAIT: Final = 2.0
_BIND_POLL: Final = 0.02
_INT32: Final = struct.Struct("<i")

# The simulated-UIO protocol, as documented in hvguest.testing.uio_sim.
SIM_TAG_OPEN: Final = ord("O")
SIM_OPEN_SIZE: Final = 1 + _INT32.size
#: Seconds the simulator may take to answer an open (a real open never blocks).
_SIM_OPEN_TIMEOUT: Final = 10.0


class UioError(HvError):
    """The FCOPY device cannot be bound, sized or opened; the message says why."""


# --- discovery and binding ---------------------------------------------------------


def _devices_dir(sys_root: Path) -> Path:
    return sys_root / "bus" / "vmbus" / "devices"


def _driver_dir(sys_root: Path) -> Path:
    return sys_root / "bus" / "vmbus" / "drivers" / UIO_DRIVER


def _normalise_guid(text: str) -> str:
    """sysfs prints class_id as ``{34d14be3-...}``; compare without braces and case."""
    return text.strip().strip("{}").lower()


def find_fcopy_device(sys_root: Path) -> Path | None:
    """The FCOPY VMBus device directory (bound or not), or None if the host offers none.

    The instance GUID the reference hard-codes comes first; any device whose
    class_id is the Guest Services class is accepted too, should a host use
    another instance.
    """
    devices = _devices_dir(sys_root)
    instance = devices / FCOPY_INSTANCE_GUID
    if instance.is_dir():
        return instance
    try:
        entries = sorted(devices.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            class_id = (entry / "class_id").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        if _normalise_guid(class_id) == FCOPY_CLASS_GUID:
            return entry
    return None


def bound_driver(device_dir: Path) -> str | None:
    """Name of the driver the device is bound to, or None."""
    link = device_dir / "driver"
    try:
        return link.readlink().name
    except OSError:
        return None


def uio_node_name(device_dir: Path) -> str | None:
    """The first entry of ``<device>/uio/`` (``uio0``), or None while there is none."""
    try:
        names = sorted(entry.name for entry in (device_dir / "uio").iterdir())
    except OSError:
        return None
    return names[0] if names else None


def bind_to_uio(
    sys_root: Path,
    device_dir: Path,
    *,
    modprobe: Sequence[str] = MODPROBE_ARGV,
    bind_wait: float = BIND_WAIT,
) -> bool:
    """Make sure the device is bound to uio_hv_generic; True if this call bound it.

    Loads the module if its driver directory is missing, then writes the
    FCOPY class GUID to ``new_id`` (the driver binds every matching unbound
    device); if the kernel already knows the id (EEXIST) the device name is
    written to ``bind`` instead. Raises :class:`UioError` when the device is
    bound to another driver, or when it still is not bound after ``bind_wait``.
    """
    current = bound_driver(device_dir)
    if current == UIO_DRIVER:
        return False
    if current is not None:
        raise UioError(f"{device_dir.name} is bound to {current}, not {UIO_DRIVER}")
    driver_dir = _driver_dir(sys_root)
    if not driver_dir.is_dir():
        _run_modprobe(modprobe)
        if not driver_dir.is_dir():
            raise UioError(f"{UIO_DRIVER} is not available after {' '.join(modprobe)}")
    try:
        _write_attribute(driver_dir / "new_id", FCOPY_CLASS_GUID)
    except FileExistsError:
        try:
            _write_attribute(driver_dir / "bind", device_dir.name)
        except FileExistsError:
            raise UioError(f"{device_dir.name} is already bound (bind says EEXIST)") from None
    deadline = time.monotonic() + bind_wait
    while bound_driver(device_dir) != UIO_DRIVER or uio_node_name(device_dir) is None:
        if time.monotonic() >= deadline:
            raise UioError(f"{device_dir.name} did not bind to {UIO_DRIVER}")
        time.sleep(_BIND_POLL)
    return True


def _run_modprobe(argv: Sequence[str]) -> None:
    # Imported here: most machines have uio_hv_generic loaded already, and the
    # module would otherwise stay in the daemon's memory for its whole life.
    import subprocess  # noqa: PLC0415

    try:
        result = subprocess.run(
            list(argv), capture_output=True, timeout=_MODPROBE_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise UioError(f"cannot run {' '.join(argv)}: {error}") from None
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()
        raise UioError(f"{' '.join(argv)} failed ({result.returncode}): {detail}")


def _write_attribute(path: Path, value: str) -> None:
    """One write(2) to a sysfs attribute, which is how sysfs wants it.

    O_NONBLOCK: on a real attribute it changes nothing, and it keeps a
    simulator's FIFO (with nobody reading) from blocking the daemon.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileExistsError:
        raise
    except OSError as error:
        raise UioError(f"cannot open {path}: {error.strerror}") from None
    try:
        os.write(fd, value.encode("ascii") + b"\n")
    except FileExistsError:
        raise
    except OSError as error:
        raise UioError(f"cannot write {path}: {error.strerror}") from None
    finally:
        os.close(fd)


# --- ring size -----------------------------------------------------------------------


def find_ring_file(device_dir: Path, *, sleep: Callable[[float], None] = time.sleep) -> Path:
    """``<device>/channels/<relid>/ring`` of the first channel that has one.

    As get_ring_buffer_size() does: a missing ``channels`` directory gets one
    more look after 100 ms, and so does a directory without a ring (the
    kernel creates them just after the device appears).
    """
    channels = device_dir / "channels"
    if not channels.is_dir():
        sleep(RING_RETRY_DELAY)
        if not channels.is_dir():
            raise UioError(f"Could not determine ring size: no {channels}")
    for attempt in range(2):
        with contextlib.suppress(OSError):
            for relid in sorted(channels.iterdir()):
                ring = relid / "ring"
                if ring.is_file():
                    return ring
        if attempt == 0:
            sleep(RING_RETRY_DELAY)
    raise UioError(f"Could not determine ring size: no ring under {channels}")


def ring_size_of(ring_file: Path) -> int:
    """One direction's ring size: the ``ring`` file holds TX and RX back to back."""
    try:
        size = ring_file.stat().st_size
    except OSError as error:
        raise UioError(f"cannot stat {ring_file}: {error.strerror}") from None
    if size == 0 or size % (2 * mmap.PAGESIZE):
        raise UioError(f"{ring_file} is {size} bytes, not two page-aligned rings")
    return size // 2


@record
class FcopyUioNode:
    """Everything needed to open the FCOPY channel through UIO."""

    device_dir: Path
    node: Path
    ring_file: Path
    ring_size: int


def prepare_fcopy_uio(
    sys_root: Path,
    dev_root: Path,
    *,
    modprobe: Sequence[str] = MODPROBE_ARGV,
    bind_wait: float = BIND_WAIT,
    sleep: Callable[[float], None] = time.sleep,
) -> FcopyUioNode | None:
    """Find, bind and size the FCOPY device; None when the host offers none (yet)."""
    device_dir = find_fcopy_device(sys_root)
    if device_dir is None:
        return None
    bind_to_uio(sys_root, device_dir, modprobe=modprobe, bind_wait=bind_wait)
    ring_file = find_ring_file(device_dir, sleep=sleep)
    name = uio_node_name(device_dir)
    if name is None:
        raise UioError(f"{device_dir.name} is bound but has no uio node")
    return FcopyUioNode(device_dir, dev_root / name, ring_file, ring_size_of(ring_file))


# --- the open device -------------------------------------------------------------------


class UioChannel(Protocol):
    """One open of the FCOPY UIO device: its two rings and its interrupt."""

    #: Guest -> host ring (first half of the mapping).
    tx: Ring
    #: Host -> guest ring (second half).
    rx: Ring

    def fileno(self) -> int:
        """For selectors: readable when the host raised an interrupt."""

    def read_interrupt_count(self) -> int:
        """read(fd, 4): the interrupt counter; blocks until it changes."""

    def enable_interrupts(self) -> None:
        """write(fd, 1): unmask the RX interrupt and signal the host."""

    def close(self) -> None:
        """Unmap and close: the last close disconnects the VMBus channel."""


class _MappedRings:
    """The 2 x ring_size mapping and the two Ring views over it."""

    def __init__(self, memory: mmap.mmap, ring_size: int) -> None:
        self._memory = memory
        self._view = memoryview(memory)
        self.tx = Ring(self._view[:ring_size])
        self.rx = Ring(self._view[ring_size : 2 * ring_size])

    def close(self) -> None:
        self.tx.release()
        self.rx.release()
        self._view.release()
        self._memory.close()


class UioFile:
    """The real ``/dev/uioN``: map 0 is "txrx_rings", read/write the interrupt counter."""

    def __init__(self, node: Path, ring_size: int) -> None:
        self.node = node
        self._fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
        try:
            memory = mmap.mmap(
                self._fd, 2 * ring_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except BaseException:
            os.close(self._fd)
            raise
        self._rings = _MappedRings(memory, ring_size)
        self.tx = self._rings.tx
        self.rx = self._rings.rx

    def fileno(self) -> int:
        """The UIO fd (poll()able)."""
        return self._fd

    def read_interrupt_count(self) -> int:
        """The s32 event counter (uio_read())."""
        data = os.read(self._fd, _INT32.size)
        if len(data) != _INT32.size:
            raise OSError(errno.EIO, f"short read of the interrupt counter ({len(data)} bytes)")
        return int(_INT32.unpack(data)[0])

    def enable_interrupts(self) -> None:
        """hv_uio_irqcontrol(1): inbound interrupt_mask = 0, then signal the host."""
        if os.write(self._fd, _INT32.pack(1)) != _INT32.size:
            raise OSError(errno.EIO, "short write of the interrupt control word")

    def close(self) -> None:
        """Unmap, then close (the order the kernel needs to drop the channel)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            self._rings.close()
            os.close(fd)


class SimulatedUio:
    """The UIO simulator: the ring file shared by mmap, the counter over a Unix socket.

    What the kernel does inside write(2) (setting the inbound interrupt mask)
    happens here, before the signal goes out, so that the mask is in place by
    the time write returns, as with the real driver.
    """

    def __init__(self, node: Path, ring_file: Path, ring_size: int) -> None:
        self.node = node
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self._sock.settimeout(_SIM_OPEN_TIMEOUT)
            self._sock.connect(str(node))
            answer = self._sock.recv(SIM_OPEN_SIZE)
            if len(answer) != SIM_OPEN_SIZE or answer[0] != SIM_TAG_OPEN:
                raise OSError(errno.EPROTO, "simulated UIO did not answer the open", str(node))
            (open_errno,) = _INT32.unpack_from(answer, 1)
            if open_errno:
                raise OSError(open_errno, os.strerror(open_errno), str(node))
            self._sock.settimeout(None)
            with ring_file.open("r+b") as ring:
                memory = mmap.mmap(ring.fileno(), 2 * ring_size)
        except BaseException:
            self._sock.close()
            raise
        self._rings = _MappedRings(memory, ring_size)
        self.tx = self._rings.tx
        self.rx = self._rings.rx

    def fileno(self) -> int:
        """The socket: readable when the simulated host raised an interrupt."""
        return self._sock.fileno()

    def read_interrupt_count(self) -> int:
        """One 4-byte datagram; EIO once the simulator is gone (like a rescind)."""
        data = self._sock.recv(_INT32.size)
        if len(data) != _INT32.size:
            raise OSError(errno.EIO, "simulated UIO channel closed")
        return int(_INT32.unpack(data)[0])

    def enable_interrupts(self) -> None:
        """Unmask here (as the kernel would), then tell the simulator to signal the host."""
        self.rx.interrupt_mask = 0
        self._sock.send(_INT32.pack(1))

    def close(self) -> None:
        """Unmap and disconnect: the simulator closes the channel."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._rings.close()


def open_uio(node: FcopyUioNode) -> UioChannel:
    """Open the UIO node: the real device, or a simulator socket."""
    mode = node.node.stat().st_mode
    if stat.S_ISCHR(mode):
        return UioFile(node.node, node.ring_size)
    if stat.S_ISSOCK(mode):
        return SimulatedUio(node.node, node.ring_file, node.ring_size)
    raise OSError(errno.ENODEV, "neither a character device nor a simulator socket", str(node.node))
