"""hvguest.protocol.vmbus_ring: the ring layout of protocol.md section 6.2, byte by byte."""

from __future__ import annotations

import struct

import pytest

from hvguest.protocol.vmbus_ring import (
    NO_TRANSACTION,
    PACKET_INBAND,
    RING_HEADER_SIZE,
    PacketTooLarge,
    Ring,
    RingCorrupt,
    RingFull,
    padded,
)

DATA_SIZE = 512


def make_ring(data_size: int = DATA_SIZE, *, start: int = 0) -> tuple[Ring, bytearray]:
    memory = bytearray(RING_HEADER_SIZE + data_size)
    struct.pack_into("<II", memory, 0, start, start)
    return Ring(memoryview(memory)), memory


def test_empty_ring_has_nothing_to_read_and_all_space_to_write() -> None:
    ring, _memory = make_ring()
    assert ring.readable() == 0
    assert ring.writable() == DATA_SIZE
    assert ring.read_packet(bytearray(DATA_SIZE)) is None


def test_written_packet_has_descriptor_padding_and_trailer_in_place() -> None:
    ring, memory = make_ring(start=8)
    ring.write_packet(b"abcde", transaction_id=0x1122334455667788)
    data = RING_HEADER_SIZE + 8
    # descriptor: type 6, hlen 2, tlen (16 + 8) / 8 = 3, flags 0, transaction id
    assert struct.unpack_from("<HHHHQ", memory, data) == (6, 2, 3, 0, 0x1122334455667788)
    assert memory[data + 16 : data + 24] == b"abcde\0\0\0"
    # trailer: the write index the packet started at, in the upper 32 bits
    assert struct.unpack_from("<Q", memory, data + 24) == (8 << 32,)
    assert ring.write_index == 8 + 32
    assert ring.read_index == 8


def test_default_transaction_id_is_all_ones_like_vmbus_bufring() -> None:
    ring, _memory = make_ring()
    ring.write_packet(b"x" * 8)
    packet = ring.read_packet(bytearray(DATA_SIZE))
    assert packet is not None
    assert packet.transaction_id == NO_TRANSACTION
    assert packet.packet_type == PACKET_INBAND


def test_round_trip_returns_payload_with_padding_and_frees_the_space() -> None:
    ring, _memory = make_ring()
    ring.write_packet(b"hello", packet_type=7, flags=1, transaction_id=42)
    assert ring.readable() == 16 + 8 + 8
    packet = ring.read_packet(bytearray(DATA_SIZE))
    assert packet is not None
    assert (packet.packet_type, packet.flags, packet.transaction_id) == (7, 1, 42)
    assert bytes(packet.payload) == b"hello\0\0\0"
    assert ring.readable() == 0
    assert ring.read_index == ring.write_index


def test_packet_wrapping_around_the_end_reads_back_whole() -> None:
    ring, _memory = make_ring(start=DATA_SIZE - 20)
    payload = bytes(range(100))
    ring.write_packet(payload)
    assert ring.write_index == (DATA_SIZE - 20 + 16 + 104 + 8) % DATA_SIZE
    packet = ring.read_packet(bytearray(DATA_SIZE))
    assert packet is not None
    assert bytes(packet.payload[:100]) == payload
    assert ring.read_index == ring.write_index


def test_descriptor_split_by_the_wrap_is_read_correctly() -> None:
    ring, _memory = make_ring(start=DATA_SIZE - 8)
    ring.write_packet(b"split!!!")
    packet = ring.read_packet(bytearray(DATA_SIZE))
    assert packet is not None
    assert bytes(packet.payload) == b"split!!!"


def test_send_needs_strictly_more_free_space_than_the_packet() -> None:
    ring, _memory = make_ring(64)
    # 16 + 32 + 8 = 56 bytes: 64 free is enough (64 > 56)
    ring.write_packet(bytes(32))
    ring.read_packet(bytearray(64))
    # 16 + 40 + 8 = 64 bytes: 64 free is not (a full ring would look empty)
    with pytest.raises(RingFull):
        ring.write_packet(bytes(40))
    assert ring.readable() == 0


def test_filling_the_ring_raises_ring_full_and_keeps_earlier_packets() -> None:
    ring, _memory = make_ring(256)
    for index in range(3):
        ring.write_packet(bytes([index]) * 40)
    # 3 x 64 = 192 bytes used; a 4th 64-byte packet needs more than the 64 left
    with pytest.raises(RingFull):
        ring.write_packet(bytes([3]) * 40)
    buffer = bytearray(256)
    received = []
    while (packet := ring.read_packet(buffer)) is not None:
        received.append(bytes(packet.payload))
    assert received == [bytes([index]) * 40 for index in range(3)]


def test_half_published_packet_is_not_read_yet() -> None:
    ring, memory = make_ring()
    ring.write_packet(bytes(24))
    full_index = ring.write_index
    struct.pack_into("<I", memory, 0, full_index - 8)  # trailer not published yet
    assert ring.read_packet(bytearray(DATA_SIZE)) is None
    assert ring.read_index == 0
    struct.pack_into("<I", memory, 0, full_index)
    assert ring.read_packet(bytearray(DATA_SIZE)) is not None


def put_descriptor(memory: bytearray, hlen: int, tlen: int, *, write_index: int = 256) -> None:
    struct.pack_into("<HHHHQ", memory, RING_HEADER_SIZE, 6, hlen, tlen, 0, 0)
    struct.pack_into("<I", memory, 0, write_index)


@pytest.mark.parametrize(("hlen", "tlen"), [(0, 4), (1, 4), (5, 4)])
def test_header_shorter_than_descriptor_or_longer_than_packet_is_corrupt(
    hlen: int, tlen: int
) -> None:
    ring, memory = make_ring()
    put_descriptor(memory, hlen, tlen)
    with pytest.raises(RingCorrupt):
        ring.read_packet(bytearray(DATA_SIZE))


def test_packet_longer_than_the_ring_is_corrupt_not_awaited() -> None:
    ring, memory = make_ring()
    put_descriptor(memory, 2, DATA_SIZE // 8)
    with pytest.raises(RingCorrupt):
        ring.read_packet(bytearray(DATA_SIZE))


def test_packet_longer_than_the_buffer_stays_in_the_ring() -> None:
    ring, _memory = make_ring()
    ring.write_packet(bytes(100))
    with pytest.raises(PacketTooLarge):
        ring.read_packet(bytearray(64))
    assert ring.read_index == 0
    assert ring.read_packet(bytearray(DATA_SIZE)) is not None


@pytest.mark.parametrize(("write", "read"), [(DATA_SIZE, 0), (0, DATA_SIZE + 4), (2**32 - 1, 0)])
def test_index_outside_the_data_area_is_corrupt(write: int, read: int) -> None:
    ring, memory = make_ring()
    struct.pack_into("<II", memory, 0, write, read)
    with pytest.raises(RingCorrupt):
        ring.read_packet(bytearray(DATA_SIZE))
    with pytest.raises(RingCorrupt):
        ring.write_packet(b"x")


def test_interrupt_mask_and_header_fields_live_at_their_offsets() -> None:
    ring, memory = make_ring()
    ring.interrupt_mask = 1
    assert struct.unpack_from("<I", memory, 8) == (1,)
    struct.pack_into("<I", memory, 12, 300)
    struct.pack_into("<I", memory, 64, 1)
    assert (ring.interrupt_mask, ring.pending_send_size, ring.feature_bits) == (1, 300, 1)
    ring.interrupt_mask = 0
    assert memory[8:12] == bytes(4)


def test_reset_empties_the_ring_and_clears_the_mask() -> None:
    ring, _memory = make_ring()
    ring.write_packet(b"abc")
    ring.interrupt_mask = 1
    ring.reset()
    assert (ring.write_index, ring.read_index, ring.interrupt_mask) == (0, 0, 0)


def test_padding_rounds_up_to_eight() -> None:
    assert [padded(n) for n in (0, 1, 7, 8, 9, 6196 + 28)] == [0, 8, 8, 8, 16, 6224]


def test_read_only_or_tiny_memory_is_refused() -> None:
    with pytest.raises(ValueError, match="writable"):
        Ring(memoryview(bytes(RING_HEADER_SIZE + 64)))
    with pytest.raises(ValueError, match="cannot hold"):
        Ring(memoryview(bytearray(RING_HEADER_SIZE + 8)))
