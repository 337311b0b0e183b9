"""A simulated FCOPY VMBus device under uio_hv_generic, and the host behind it.

Plays drivers/uio/uio_hv_generic.c, drivers/uio/uio.c and the Windows side
of Guest Services (Copy-VMFile) for hv_fcopy_uio_daemon replacements, so
that the daemon's production code path runs without Hyper-V and without root:

* a fake sysfs tree under ``<root>/sys``: ``bus/vmbus/devices/<instance>/``
  with ``class_id``, ``channels/<relid>/ring`` (the ring memory itself, a
  file of 2 x ring_size bytes both sides mmap: TX first, RX second),
  ``uio/uio0`` and the ``driver`` link once bound; and
  ``bus/vmbus/drivers/uio_hv_generic/{new_id,bind}``, which are FIFOs read by
  the simulator, so that writing the FCOPY class GUID really binds the device;
* ``<root>/dev/uio0``: a SOCK_SEQPACKET Unix socket standing in for the UIO
  fd (``hvguest.linux.uio.SimulatedUio`` speaks it);
* :class:`UioHost`: negotiates and sends START/WRITE/COMPLETE/CANCEL (or raw
  packets) into the RX ring and returns each reply's icmsg status.

The socket protocol (tags repeated in ``hvguest.linux.uio``):

* on connect the simulator answers ``b"O"`` + s32 errno (0, or EBUSY while
  another open holds the channel); an accepted open is the VMBus channel
  open, so both rings start empty (hv_uio_open() connects the ring);
* each host interrupt arrives as one s32 datagram: the event counter. As
  hv_uio_channel_cb() does, the simulator masks the RX interrupt before
  raising it, and a host only interrupts while the mask is clear;
* the daemon sends one s32: non-zero unmasks (the daemon's adapter clears the
  mask itself, as the kernel does inside write) and signals the host; zero
  masks;
* closing the socket closes the channel: an outstanding host request fails
  with :class:`HostAbortedError`.

One serve thread owns the sockets and FIFOs; host helpers run in the
caller's thread. Both hold one lock around ring and channel state.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import selectors
import shutil
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hvguest.abi.constants import (
    DATA_FRAGMENT,
    FCOPY_CLASS_GUID,
    FCOPY_INSTANCE_GUID,
    W_MAX_PATH,
    FcopyOp,
)
from hvguest.protocol.fcopy_uio import (
    FCOPY_VERSIONS,
    FRAMEWORK_VERSIONS,
    IC_HEADER,
    ICMSG_HDR,
    ICMSGHDRFLAG_REQUEST,
    ICMSGHDRFLAG_TRANSACTION,
    ICMSGTYPE_FCOPY,
    ICMSGTYPE_NEGOTIATE,
    Version,
)
from hvguest.protocol.vmbus_ring import (
    FLAG_COMPLETION_REQUESTED,
    PACKET_INBAND,
    RING_HEADER_SIZE,
    Packet,
    Ring,
    RingError,
)
from hvguest.testing.host import HostAbortedError, HostError, HostTimeoutError

#: The ring size the kernel gives FCOPY: 0x4000 of data plus the 4096-byte header.
DEFAULT_RING_SIZE: Final = 0x4000 + RING_HEADER_SIZE
#: A relid as Hyper-V hands them out (any number works).
DEFAULT_RELID: Final = 14
DRIVER: Final = "uio_hv_generic"
#: Wire tags shared with hvguest.linux.uio.
TAG_OPEN: Final = b"O"
_INT32: Final = struct.Struct("<i")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_U16: Final = struct.Struct("<H")
#: hv_fcopy_hdr: operation, service_id0[16], service_id1[16].
_FCOPY_HDR: Final = struct.Struct("<I16s16s")
#: hv_do_fcopy after its header: pad, offset, size.
_WRITE_FIELDS: Final = struct.Struct("<IQI")
#: What a host offers in NEGOTIATE: older framework and FCOPY versions first.
HOST_FRAMEWORK_VERSIONS: Final[tuple[Version, ...]] = ((1, 0), (3, 0))
HOST_FCOPY_VERSIONS: Final[tuple[Version, ...]] = ((1, 0), (1, 1))
#: How often wait_until re-checks a predicate nobody notifies about.
_POLL: Final = 0.02
#: Seconds a host helper waits for the daemon by default.
DEFAULT_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class UioReply:
    """A reply packet from the daemon: icmsg status and the whole payload."""

    status: int
    icflags: int
    transaction_id: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class UioNegotiation:
    """The daemon's answer to NEGOTIATE: counts 1/1 and the chosen versions on success."""

    status: int
    framework_count: int
    service_count: int
    framework: Version
    service: Version


def utf16_name(text: str | bytes) -> bytes:
    """A name as Windows sends it: UTF-16LE; ``bytes`` are raw units, lone surrogates allowed."""
    if isinstance(text, bytes):
        return text
    return text.encode("utf-16-le", "surrogatepass")


def start_message(
    path_name: str | bytes, file_name: str | bytes, *, flags: int = 0, file_size: int = 0
) -> bytes:
    """struct hv_start_fcopy (1088 bytes) with UTF-16LE names."""
    names = []
    for what, text in (("file_name", file_name), ("path_name", path_name)):
        raw = utf16_name(text)
        if len(raw) > 2 * W_MAX_PATH:
            raise ValueError(f"{what} is {len(raw)} bytes; the field holds {2 * W_MAX_PATH}")
        names.append(raw.ljust(2 * W_MAX_PATH, b"\0"))
    return (
        _FCOPY_HDR.pack(FcopyOp.START_FILE_COPY, b"", b"")
        + names[0]
        + names[1]
        + _U32.pack(flags)
        + _U64.pack(file_size)
    )


def write_message(offset: int, data: bytes, *, size: int | None = None) -> bytes:
    """struct hv_do_fcopy (6196 bytes); ``size`` overrides the length field."""
    if len(data) > DATA_FRAGMENT:
        raise ValueError(f"{len(data)} bytes do not fit one {DATA_FRAGMENT}-byte fragment")
    return (
        _FCOPY_HDR.pack(FcopyOp.WRITE_TO_FILE, b"", b"")
        + _WRITE_FIELDS.pack(0, offset, len(data) if size is None else size)
        + data.ljust(DATA_FRAGMENT, b"\0")
    )


def header_message(operation: int) -> bytes:
    """A bare struct hv_fcopy_hdr (COMPLETE, CANCEL, or any operation number)."""
    return _FCOPY_HDR.pack(operation, b"", b"")


def negotiate_message(
    framework_versions: tuple[Version, ...], service_versions: tuple[Version, ...]
) -> bytes:
    """struct icmsg_negotiate listing the host's versions."""
    body = bytearray(_U16.pack(len(framework_versions)) + _U16.pack(len(service_versions)))
    body += bytes(4)
    for major, minor in (*framework_versions, *service_versions):
        body += _U16.pack(major) + _U16.pack(minor)
    return bytes(body)


def util_packet(icmsgtype: int, message: bytes, transaction: int = 0) -> bytes:
    """vmbuspipe_hdr + icmsg_hdr (a request) + ``message``."""
    service_version = FCOPY_VERSIONS[0] if icmsgtype == ICMSGTYPE_FCOPY else (0, 0)
    return (
        IC_HEADER.pack(
            0,
            len(message) + ICMSG_HDR - 8,
            *FRAMEWORK_VERSIONS[0],
            icmsgtype,
            *service_version,
            len(message),
            0,
            transaction & 0xFF,
            ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST,
        )
        + message
    )


class UioSimulator:
    """The fake sysfs tree, the fake /dev/uio0 and the host, under one root directory."""

    def __init__(
        self,
        root: Path,
        *,
        ring_size: int = DEFAULT_RING_SIZE,
        bound: bool = True,
        driver_loaded: bool = True,
        offered: bool = True,
        relid: int = DEFAULT_RELID,
        instance: str = FCOPY_INSTANCE_GUID,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.root = root
        self.sys_root = root / "sys"
        self.dev_root = root / "dev"
        self.instance = instance
        self.ring_size = ring_size
        self.relid = relid
        self._want_bound = bound
        self._driver_loaded = driver_loaded
        self._offered = offered
        self._sim_dir = root / "sim"
        self._cond = threading.Condition(threading.RLock())
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._fifos: list[tuple[int, int]] = []
        self._memory: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._guest_tx: Ring | None = None
        self._guest_rx: Ring | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._interrupts = 0
        self._host_signals = 0
        self._generation = 0
        self.opens = 0
        self.bind_requests: list[str] = []
        self.host = UioHost(self, default_timeout)

    # -- paths -----------------------------------------------------------------------

    @property
    def device_dir(self) -> Path:
        """``<sys>/bus/vmbus/devices/<instance>``."""
        return self.sys_root / "bus" / "vmbus" / "devices" / self.instance

    @property
    def driver_dir(self) -> Path:
        """``<sys>/bus/vmbus/drivers/uio_hv_generic``."""
        return self.sys_root / "bus" / "vmbus" / "drivers" / DRIVER

    @property
    def ring_file(self) -> Path:
        """``channels/<relid>/ring``: the shared ring memory."""
        return self.device_dir / "channels" / str(self.relid) / "ring"

    @property
    def node(self) -> Path:
        """``<dev>/uio0``: the socket standing in for the UIO device."""
        return self.dev_root / "uio0"

    @property
    def modprobe_argv(self) -> list[str]:
        """A real process that "loads" uio_hv_generic: creates its driver directory."""
        script = (
            "import os, sys\n"
            "driver, sim = sys.argv[1], sys.argv[2]\n"
            "os.makedirs(driver)\n"
            "for name in ('new_id', 'bind'):\n"
            "    os.symlink(os.path.join(sim, name), os.path.join(driver, name))\n"
        )
        return [sys.executable, "-c", script, str(self.driver_dir), str(self._sim_dir)]

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> UioSimulator:
        """Build the tree and start serving."""
        self._sim_dir.mkdir(parents=True)
        self.dev_root.mkdir(parents=True)
        (self.sys_root / "bus" / "vmbus" / "devices").mkdir(parents=True)
        (self.sys_root / "bus" / "vmbus" / "drivers").mkdir(parents=True)
        for name in ("new_id", "bind"):
            fifo = self._sim_dir / name
            os.mkfifo(fifo)
            reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            # Our own writer keeps the FIFO from reporting EOF after each daemon write.
            keeper = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._fifos.append((reader, keeper))
            self._selector.register(reader, selectors.EVENT_READ, name)
        if self._driver_loaded:
            self._load_driver()
        if self._offered:
            self._offer()
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name="uio-sim", daemon=True)
        self._thread.start()
        if self._want_bound and self._offered:
            self._call(self._bind)
        return self

    def close(self) -> None:
        """Stop serving, close the channel and the memory (the tree stays for inspection)."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._cond:
            self._drop_client()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for reader, keeper in self._fifos:
                os.close(reader)
                os.close(keeper)
            self._fifos.clear()
            self._unmap()
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    def __enter__(self) -> UioSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state for tests -------------------------------------------------------------

    def is_bound(self) -> bool:
        """The device is bound to uio_hv_generic (driver link present)."""
        return (self.device_dir / "driver").is_symlink()

    def channel_open(self) -> bool:
        """A daemon holds the UIO device open."""
        with self._cond:
            return self._client is not None

    @property
    def rx_interrupt_mask(self) -> int:
        """The guest's inbound interrupt mask as the host sees it."""
        with self._cond:
            return self._rings()[1].interrupt_mask

    def host_signals(self) -> int:
        """How many times the daemon unmasked and signalled the host (its writes of 1)."""
        with self._cond:
            return self._host_signals

    def rx_readable(self) -> int:
        """Bytes of host requests the daemon has not taken yet."""
        with self._cond:
            return self._rings()[1].readable()

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str = "") -> None:
        """Block until ``predicate()`` holds; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out waiting for {what or predicate}")
                # Re-check now and then too: not every change (a log line, a file)
                # notifies the condition.
                self._cond.wait(min(remaining, _POLL))

    def wait_open(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until a daemon opened the channel."""
        self.wait_until(lambda: self._client is not None, timeout, "the daemon to open uio0")

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until no daemon holds the channel."""
        self.wait_until(lambda: self._client is None, timeout, "the daemon to close uio0")

    def drop_connection(self) -> None:
        """Fault injection: the channel goes away under the daemon (its next read fails)."""
        self._call(self._drop_client)

    def rescind(self) -> None:
        """The host withdraws the device (Guest Services disabled): channel, node and
        sysfs directory go away until :meth:`offer`."""
        self._call(self._rescind)

    def offer(self) -> None:
        """The host offers the device now (it was started with ``offered=False``)."""
        self._call(self._offer_and_maybe_bind)

    # -- tree building ----------------------------------------------------------------

    def _load_driver(self) -> None:
        self.driver_dir.mkdir()
        for name in ("new_id", "bind"):
            (self.driver_dir / name).symlink_to(self._sim_dir / name)

    def _offer(self) -> None:
        device = self.device_dir
        device.mkdir()
        (device / "class_id").write_text(f"{{{FCOPY_CLASS_GUID}}}\n", encoding="ascii")
        (device / "device_id").write_text(f"{{{self.instance}}}\n", encoding="ascii")
        self.ring_file.parent.mkdir(parents=True)
        with self.ring_file.open("wb") as ring:
            ring.truncate(2 * self.ring_size)
        with self.ring_file.open("r+b") as ring:
            self._memory = mmap.mmap(ring.fileno(), 2 * self.ring_size)
        self._view = memoryview(self._memory)
        self._guest_tx = Ring(self._view[: self.ring_size])
        self._guest_rx = Ring(self._view[self.ring_size :])
        self._offered = True

    def _offer_and_maybe_bind(self) -> None:
        if not self._offered:
            self._offer()
        if self._want_bound:
            self._bind()

    def _bind(self) -> None:
        """uio_hv_generic probes the device: driver link, uio/uio0, /dev/uio0."""
        if self.is_bound() or not self._offered:
            return
        (self.device_dir / "uio" / "uio0").mkdir(parents=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        listener.bind(str(self.node))
        listener.listen(4)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        (self.device_dir / "driver").symlink_to(self.driver_dir)
        self._cond.notify_all()

    def _rescind(self) -> None:
        self._drop_client()
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
            self.node.unlink()
        self._unmap()
        shutil.rmtree(self.device_dir)
        self._offered = False

    def _unmap(self) -> None:
        for ring in (self._guest_tx, self._guest_rx):
            if ring is not None:
                ring.release()
        self._guest_tx = self._guest_rx = None
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    def _rings(self) -> tuple[Ring, Ring]:
        """(guest TX, guest RX)."""
        if self._guest_tx is None or self._guest_rx is None:
            raise HostError("the FCOPY device is not offered")
        return self._guest_tx, self._guest_rx

    # -- serve thread -------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping.is_set():
            for key, _mask in self._selector.select():
                with self._cond:
                    if self._stopping.is_set():
                        return
                    self._dispatch(key.data, key.fileobj)

    def _dispatch(self, what: object, fileobj: object) -> None:
        if what == "wake":
            with contextlib.suppress(BlockingIOError):
                while self._wake_read.recv(512):
                    pass
        elif what == "accept":
            self._accept()
        elif what == "client":
            self._client_datagram()
        elif what in ("new_id", "bind"):
            assert isinstance(fileobj, int)
            self._sysfs_write(str(what), fileobj)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _address = self._listener.accept()
        except BlockingIOError:
            return
        if self._client is not None:
            with contextlib.suppress(OSError):
                sock.send(TAG_OPEN + _INT32.pack(errno.EBUSY))
            sock.close()
            return
        # hv_uio_open() -> vmbus_connect_ring(): a fresh channel with empty rings.
        tx, rx = self._rings()
        tx.reset()
        rx.reset()
        self._generation += 1
        self._client = sock
        self.opens += 1
        self._selector.register(sock, selectors.EVENT_READ, "client")
        sock.send(TAG_OPEN + _INT32.pack(0))
        self._cond.notify_all()

    def _client_datagram(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            data = client.recv(64)
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        if len(data) != _INT32.size:
            return  # uio_write() refuses any other size with EINVAL
        (value,) = _INT32.unpack(data)
        if value:
            self._host_signals += 1
        else:
            self._rings()[1].interrupt_mask = 1
        self._cond.notify_all()

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(client)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
            self._generation += 1
        self._cond.notify_all()

    def _sysfs_write(self, name: str, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        for line in data.decode("ascii", errors="replace").split():
            self.bind_requests.append(f"{name} {line}")
            text = line.strip().strip("{}").lower()
            if (name == "new_id" and text == FCOPY_CLASS_GUID) or (
                name == "bind" and text == self.instance
            ):
                self._want_bound = True
                self._bind()

    def _call(self, command: Callable[[], None]) -> None:
        """Run ``command`` under the lock (from any thread)."""
        with self._cond:
            command()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")

    # -- host side (called by UioHost under the lock) ------------------------------

    def _host_send(self, payload: bytes, transaction_id: int, *, interrupt: bool = True) -> int:
        """Queue a packet in the guest's RX ring, interrupt the guest; the channel generation."""
        if self._client is None:
            raise HostAbortedError("the FCOPY channel is not open")
        _tx, rx = self._rings()
        try:
            rx.write_packet(
                payload,
                packet_type=PACKET_INBAND,
                flags=FLAG_COMPLETION_REQUESTED,
                transaction_id=transaction_id,
            )
        except RingError as error:
            raise HostError(f"cannot queue the request: {error}") from error
        if interrupt:
            self._interrupt_guest()
        return self._generation

    def _host_inject(self, raw: bytes) -> None:
        """Put raw bytes in the RX data area and publish them (a corrupt ring)."""
        _tx, rx = self._rings()
        assert self._view is not None
        base = self.ring_size + RING_HEADER_SIZE
        start = rx.write_index
        for i, byte in enumerate(raw):
            self._view[base + (start + i) % rx.data_size] = byte
        _U32.pack_into(self._view, self.ring_size, (start + len(raw)) % rx.data_size)
        self._interrupt_guest()

    def _interrupt_guest(self) -> None:
        """The host signals only an unmasked guest; hv_uio_channel_cb() masks, then notifies."""
        _tx, rx = self._rings()
        client = self._client
        if client is None or rx.interrupt_mask:
            return
        rx.interrupt_mask = 1
        self._interrupts += 1
        with contextlib.suppress(OSError):
            client.send(_INT32.pack(self._interrupts))

    def _host_receive(self, buffer: bytearray) -> Packet | None:
        tx, _rx = self._rings()
        return tx.read_packet(buffer)


class UioHost:
    """The Windows side of Guest Services: one request at a time, blocking helpers."""

    def __init__(self, sim: UioSimulator, default_timeout: float) -> None:
        self._sim = sim
        self.default_timeout = default_timeout
        self._transaction = 0
        self._buffer = bytearray(sim.ring_size)

    def transact(self, icmsgtype: int, message: bytes, timeout: float | None = None) -> UioReply:
        """Send one util packet and wait for the daemon's reply packet."""
        self._transaction += 1
        packet = util_packet(icmsgtype, message, self._transaction)
        return self.transact_raw(packet, timeout)

    def transact_raw(self, packet: bytes, timeout: float | None = None) -> UioReply:
        """Send ``packet`` as the ring payload as is and wait for the reply."""
        sim = self._sim
        wait = self.default_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        transaction_id = self._transaction
        with sim._cond:
            generation = sim._host_send(packet, transaction_id)
            while True:
                reply = sim._host_receive(self._buffer)
                if reply is not None:
                    return self._decode(reply)
                if sim._generation != generation:
                    raise HostAbortedError("the FCOPY channel closed before the reply")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HostTimeoutError(f"no FCOPY reply within {wait} s")
                sim._cond.wait(remaining)

    def send_unanswered(self, *packets: bytes) -> None:
        """Queue whole ring payloads without waiting for replies, then interrupt once."""
        with self._sim._cond:
            for packet in packets:
                self._transaction += 1
                self._sim._host_send(packet, self._transaction, interrupt=False)
            self._sim._interrupt_guest()

    def collect_replies(self, count: int, timeout: float | None = None) -> list[UioReply]:
        """Wait for ``count`` reply packets (after several ``send_unanswered``)."""
        sim = self._sim
        wait = self.default_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        replies: list[UioReply] = []
        with sim._cond:
            while len(replies) < count:
                reply = sim._host_receive(self._buffer)
                if reply is not None:
                    replies.append(self._decode(reply))
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HostTimeoutError(f"{len(replies)} of {count} FCOPY replies in {wait} s")
                sim._cond.wait(remaining)
        return replies

    def inject_ring_bytes(self, raw: bytes) -> None:
        """Write raw bytes into the RX ring and publish them (descriptor corruption)."""
        self._sim._call(lambda: self._sim._host_inject(raw))

    @staticmethod
    def _decode(reply: Packet) -> UioReply:
        payload = bytes(reply.payload)
        if len(payload) < ICMSG_HDR:
            raise HostError(f"reply of {len(payload)} bytes has no icmsg_hdr")
        fields = IC_HEADER.unpack_from(payload)
        return UioReply(
            status=fields[8],
            icflags=fields[10],
            transaction_id=reply.transaction_id,
            payload=payload,
        )

    # -- negotiation ------------------------------------------------------------------

    def negotiate(
        self,
        framework_versions: tuple[Version, ...] = HOST_FRAMEWORK_VERSIONS,
        service_versions: tuple[Version, ...] = HOST_FCOPY_VERSIONS,
        timeout: float | None = None,
    ) -> UioNegotiation:
        """ICMSGTYPE_NEGOTIATE with the host's version lists."""
        message = negotiate_message(framework_versions, service_versions)
        reply = self.transact(ICMSGTYPE_NEGOTIATE, message, timeout)
        body = reply.payload[ICMSG_HDR:]
        framework_count, service_count = struct.unpack_from("<HH", body)
        framework = struct.unpack_from("<HH", body, 8)
        service = struct.unpack_from("<HH", body, 12)
        return UioNegotiation(
            status=reply.status,
            framework_count=framework_count,
            service_count=service_count,
            framework=(framework[0], framework[1]),
            service=(service[0], service[1]),
        )

    # -- FCOPY ------------------------------------------------------------------------

    def fcopy_start(
        self,
        path_name: str | bytes,
        file_name: str | bytes,
        *,
        flags: int = 0,
        file_size: int,
        timeout: float | None = None,
    ) -> int:
        """START_FILE_COPY; the reply's status."""
        message = start_message(path_name, file_name, flags=flags, file_size=file_size)
        return self.transact(ICMSGTYPE_FCOPY, message, timeout).status

    def fcopy_write(self, offset: int, data: bytes, timeout: float | None = None) -> int:
        """WRITE_TO_FILE of up to 6144 bytes at ``offset``."""
        return self.transact(ICMSGTYPE_FCOPY, write_message(offset, data), timeout).status

    def fcopy_complete(self, timeout: float | None = None) -> int:
        """COMPLETE_FCOPY."""
        message = header_message(FcopyOp.COMPLETE_FCOPY)
        return self.transact(ICMSGTYPE_FCOPY, message, timeout).status

    def fcopy_cancel(self, timeout: float | None = None) -> int:
        """CANCEL_FCOPY."""
        message = header_message(FcopyOp.CANCEL_FCOPY)
        return self.transact(ICMSGTYPE_FCOPY, message, timeout).status

    def fcopy_raw(self, message: bytes, timeout: float | None = None) -> int:
        """Any bytes as an FCOPY service message (ICMSGTYPE_FCOPY framing added)."""
        return self.transact(ICMSGTYPE_FCOPY, message, timeout).status

    def copy_bytes(
        self,
        data: bytes,
        path_name: str | bytes,
        file_name: str | bytes,
        *,
        flags: int = 0,
        fragment: int = DATA_FRAGMENT,
        timeout: float | None = None,
    ) -> int:
        """A whole Copy-VMFile: START, WRITEs of ``fragment`` bytes, COMPLETE.

        Stops at the first failure, cancels (as the host does) and returns its status.
        """
        status = self.fcopy_start(
            path_name, file_name, flags=flags, file_size=len(data), timeout=timeout
        )
        if status:
            return status
        for offset in range(0, len(data), fragment):
            status = self.fcopy_write(offset, data[offset : offset + fragment], timeout)
            if status:
                self.fcopy_cancel(timeout)
                return status
        return self.fcopy_complete(timeout)
