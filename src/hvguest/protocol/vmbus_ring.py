"""One direction of a VMBus channel's ring buffer, over shared memory.

Replaces tools/hv/vmbus_bufring.c (``rte_vmbus_chan_recv_raw``,
``rte_vmbus_chan_send``, the ``vmbus_br_*`` helpers) and mirrors the kernel's
``struct hv_ring_buffer`` (include/linux/hyperv.h). Both ends use it: the
daemon reads the inbound (RX) ring and writes the outbound (TX) ring; the
simulated host does the opposite on the same memory.

Theory of operation
-------------------
A ring is a 4096-byte header followed by a data area of ``data_size`` bytes.
The header holds two byte offsets into the data area: the writer owns
``write_index`` and the reader owns ``read_index``; each side only ever
*publishes* its own index, last, after the bytes it covers are in place, so
the other side never sees a half-written packet. The ring is never allowed
to become completely full (a writer needs strictly more free space than its
packet), so ``write_index == read_index`` always means "empty".

A packet is a 16-byte descriptor (type, header length and total length in
8-byte units, flags, transaction id), the payload, zero padding to 8 bytes
and an 8-byte trailer whose upper half is the write index at which the
packet started. Packets may wrap around the end of the data area.

Nothing here blocks, signals or logs. Malformed input is reported as a
``RingError`` subclass, never as any other exception: the memory belongs to
the peer, so every index and length read from it is checked before use.
"""

from __future__ import annotations

import struct
from typing import Final

from hvguest.errors import HvError, WireError
from hvguest.records import record

#: Size of the ring header page (struct hv_ring_buffer is padded to a page).
RING_HEADER_SIZE: Final = 4096
#: struct vmpacket_descriptor: type u16, offset8 (hlen) u16, len8 (tlen) u16, flags u16,
#: trans_id u64.
DESCRIPTOR: Final = struct.Struct("<HHHHQ")
#: The u64 after every packet: the start write index in its upper 32 bits.
TRAILER_SIZE: Final = 8
#: Packets and their lengths are counted in 8-byte units.
ALIGNMENT: Final = 8
#: The smallest legal header length (the descriptor itself), in 8-byte units.
MIN_HEADER_UNITS: Final = DESCRIPTOR.size // ALIGNMENT

#: VM_PKT_DATA_INBAND: payload carried in the ring itself (all util traffic).
PACKET_INBAND: Final = 6
#: VM_PKT_DATA_USING_XFER_PAGES (rxbuf), VM_PKT_DATA_USING_GPA_DIRECT, VM_PKT_COMP.
PACKET_RXBUF: Final = 7
PACKET_GPA: Final = 9
PACKET_COMPLETION: Final = 11
#: VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED.
FLAG_COMPLETION_REQUESTED: Final = 1
#: The transaction id tools/hv/vmbus_bufring.c puts on every packet it sends.
NO_TRANSACTION: Final = 0xFFFF_FFFF_FFFF_FFFF

# struct hv_ring_buffer field offsets.
_WRITE_INDEX: Final = 0
_READ_INDEX: Final = 4
_INTERRUPT_MASK: Final = 8
_PENDING_SEND_SIZE: Final = 12
_FEATURE_BITS: Final = 64
_U32: Final = struct.Struct("<I")
_INDICES: Final = struct.Struct("<II")
_ZEROS: Final = bytes(ALIGNMENT)
_U64: Final = struct.Struct("<Q")
#: A data area must hold at least one minimal packet plus the one spare byte.
_MIN_DATA_SIZE: Final = DESCRIPTOR.size + TRAILER_SIZE + ALIGNMENT


class RingError(HvError):
    """A ring operation could not be done (base of the typed ring errors)."""


class RingCorrupt(RingError, WireError):
    """The peer's indices or descriptor make no sense (-EIO in vmbus_bufring.c)."""


class PacketTooLarge(RingError, WireError):
    """The next packet does not fit the caller's buffer (-ENOBUFS)."""


class RingFull(RingError):
    """Not enough free space to send the packet now (-EAGAIN on send)."""


@record
class Packet:
    """One received packet: its descriptor fields and a view of its payload.

    ``payload`` points into the buffer given to :meth:`Ring.read_packet`
    (padding included, as vmbus_bufring.c hands it over) and is valid until
    that buffer is reused.
    """

    packet_type: int
    flags: int
    transaction_id: int
    payload: memoryview


def padded(length: int) -> int:
    """``length`` rounded UP to a multiple of 8 (the C helper rounds down; see module doc)."""
    return (length + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


class Ring:
    """One ring (header page + data area) inside a writable memory region."""

    def __init__(self, memory: memoryview) -> None:
        if memory.readonly:
            raise ValueError("a ring needs writable memory")
        if len(memory) < RING_HEADER_SIZE + _MIN_DATA_SIZE:
            raise ValueError(f"{len(memory)} bytes cannot hold a ring")
        self._memory = memory.cast("B")
        self._data = self._memory[RING_HEADER_SIZE:]
        self.data_size: Final = len(self._data)

    def release(self) -> None:
        """Drop the views into the memory (needed before an mmap can close)."""
        self._data.release()
        self._memory.release()

    # -- header fields ------------------------------------------------------------

    @property
    def write_index(self) -> int:
        """Byte offset in the data area where the next packet will be written."""
        return int(_U32.unpack_from(self._memory, _WRITE_INDEX)[0])

    @property
    def read_index(self) -> int:
        """Byte offset in the data area of the next unread packet."""
        return int(_U32.unpack_from(self._memory, _READ_INDEX)[0])

    @property
    def interrupt_mask(self) -> int:
        """Non-zero: the reader asks the writer not to signal it."""
        return int(_U32.unpack_from(self._memory, _INTERRUPT_MASK)[0])

    @interrupt_mask.setter
    def interrupt_mask(self, value: int) -> None:
        _U32.pack_into(self._memory, _INTERRUPT_MASK, value)

    @property
    def pending_send_size(self) -> int:
        """Bytes the writer is waiting for (only meaningful with feature bit 0)."""
        return int(_U32.unpack_from(self._memory, _PENDING_SEND_SIZE)[0])

    @property
    def feature_bits(self) -> int:
        """Bit 0: the writer uses pending_send_size."""
        return int(_U32.unpack_from(self._memory, _FEATURE_BITS)[0])

    def reset(self) -> None:
        """Zero the header's indices and mask: an empty ring (channel open, host side)."""
        for offset in (_WRITE_INDEX, _READ_INDEX, _INTERRUPT_MASK, _PENDING_SEND_SIZE):
            _U32.pack_into(self._memory, offset, 0)

    # -- space accounting ---------------------------------------------------------

    def _indices(self) -> tuple[int, int]:
        """(write, read), checked: an index outside the data area is corruption."""
        write, read = _INDICES.unpack_from(self._memory, _WRITE_INDEX)
        if write >= self.data_size or read >= self.data_size:
            raise RingCorrupt(
                f"ring index out of range (write {write}, read {read}, size {self.data_size})"
            )
        return write, read

    def writable(self) -> int:
        """Free bytes (the writer may use all but one of them)."""
        write, read = self._indices()
        return self.data_size - (write - read) if write >= read else read - write

    def readable(self) -> int:
        """Bytes written and not yet read."""
        return self.data_size - self.writable()

    # -- receive ------------------------------------------------------------------

    def read_packet(self, into: bytearray | memoryview) -> Packet | None:
        """Take the next packet out of the ring into ``into``; None if none is complete.

        Raises :class:`RingCorrupt` for a descriptor with a header shorter than
        itself, longer than the packet, or a packet that could never fit the
        ring; :class:`PacketTooLarge` when the packet is longer than ``into``
        (the packet stays in the ring).
        """
        size = self.data_size
        write, read = self._indices()
        available = write - read if write >= read else size - (read - write)
        if available < DESCRIPTOR.size + TRAILER_SIZE:
            return None
        if read + DESCRIPTOR.size <= size:
            fields = DESCRIPTOR.unpack_from(self._data, read)
        else:
            fields = DESCRIPTOR.unpack(self._copy_out(read, DESCRIPTOR.size))
        packet_type, header_units, total_units, flags, transaction_id = fields
        if header_units < MIN_HEADER_UNITS or header_units > total_units:
            raise RingCorrupt(
                f"bad packet descriptor (header {header_units} units, total {total_units})"
            )
        length = total_units * ALIGNMENT
        if length + TRAILER_SIZE >= size:
            raise RingCorrupt(f"{length}-byte packet cannot fit a {size}-byte ring")
        if length > len(into):
            raise PacketTooLarge(f"{length}-byte packet, {len(into)}-byte buffer")
        if available < length + TRAILER_SIZE:
            return None
        target = memoryview(into)
        if target.format != "B":
            target = target.cast("B")
        if read + length <= size:
            target[:length] = self._data[read : read + length]
        else:
            self._copy_into(read, target[:length])
        _U32.pack_into(self._memory, _READ_INDEX, (read + length + TRAILER_SIZE) % size)
        return Packet(
            packet_type=packet_type,
            flags=flags,
            transaction_id=transaction_id,
            payload=target[header_units * ALIGNMENT : length],
        )

    def _copy_out(self, offset: int, length: int) -> bytes:
        """``length`` bytes from the data area at ``offset``, wrapping around."""
        first = min(length, self.data_size - offset)
        head = bytes(self._data[offset : offset + first])
        return head + bytes(self._data[: length - first]) if first < length else head

    def _copy_into(self, offset: int, target: memoryview) -> None:
        length = len(target)
        first = min(length, self.data_size - offset)
        target[:first] = self._data[offset : offset + first]
        if first < length:
            target[first:] = self._data[: length - first]

    # -- send ---------------------------------------------------------------------

    def write_packet(
        self,
        payload: bytes | bytearray | memoryview,
        *,
        packet_type: int = PACKET_INBAND,
        flags: int = 0,
        transaction_id: int = NO_TRANSACTION,
    ) -> None:
        """Append one packet and publish it; :class:`RingFull` if it does not fit now.

        The payload is padded UP to 8 bytes; the ring needs strictly more free
        space than the packet, so that a full ring never looks empty.
        """
        body = DESCRIPTOR.size + padded(len(payload))
        total = body + TRAILER_SIZE
        if body // ALIGNMENT > 0xFFFF:
            raise RingFull(f"a {len(payload)}-byte payload exceeds the descriptor's length field")
        size = self.data_size
        write, read = self._indices()
        free = size - (write - read) if write >= read else read - write
        if free <= total:
            raise RingFull(f"{total}-byte packet, {free} bytes free")
        if isinstance(payload, memoryview) and payload.format != "B":
            payload = payload.cast("B")
        length = len(payload)
        padding = body - DESCRIPTOR.size - length
        data = self._data
        if write + total <= size:
            # No wrap (the usual case): write the pieces in place.
            DESCRIPTOR.pack_into(
                data, write, packet_type, MIN_HEADER_UNITS, body // ALIGNMENT, flags, transaction_id
            )
            start = write + DESCRIPTOR.size
            data[start : start + length] = payload
            data[start + length : start + length + padding] = _ZEROS[:padding]
            _U64.pack_into(data, write + body, write << 32)
            offset = (write + total) % size
        else:
            descriptor = DESCRIPTOR.pack(
                packet_type, MIN_HEADER_UNITS, body // ALIGNMENT, flags, transaction_id
            )
            offset = self._copy_in(write, descriptor)
            offset = self._copy_in(offset, payload)
            offset = self._copy_in(offset, _ZEROS[:padding])
            offset = self._copy_in(offset, _U64.pack(write << 32))
        # Publish last: the reader must never see the index before the bytes.
        _U32.pack_into(self._memory, _WRITE_INDEX, offset)

    def _copy_in(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Copy ``data`` into the data area at ``offset`` (wrapping); the offset after it."""
        source = memoryview(data).cast("B")
        length = len(source)
        first = min(length, self.data_size - offset)
        self._data[offset : offset + first] = source[:first]
        if first < length:
            self._data[: length - first] = source[first:]
        return (offset + length) % self.data_size
