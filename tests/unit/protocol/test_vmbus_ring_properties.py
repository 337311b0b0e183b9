"""hvguest.protocol.vmbus_ring under hypothesis: round trips with wrap-around, and the
parser invariant (any ring contents read as a packet, None or a RingError, nothing else)."""

from __future__ import annotations

import struct
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from hvguest.protocol.vmbus_ring import RING_HEADER_SIZE, Packet, Ring, RingError, RingFull

DATA_SIZE = 1024

#: One step: write a payload of this many bytes, or (None) read one packet.
steps = st.lists(st.one_of(st.integers(0, 400), st.none()), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, DATA_SIZE // 8 - 1), script=steps, seed=st.integers(0, 255))
def test_random_packet_sequences_round_trip_in_order(
    start: int, script: list[int | None], seed: int
) -> None:
    memory = bytearray(RING_HEADER_SIZE + DATA_SIZE)
    struct.pack_into("<II", memory, 0, start * 8, start * 8)
    writer = Ring(memoryview(memory))
    reader = Ring(memoryview(memory))  # a second view, like the other side of the mmap
    expected: deque[tuple[bytes, int]] = deque()
    buffer = bytearray(DATA_SIZE)
    for number, step in enumerate(script):
        if step is None:
            packet = reader.read_packet(buffer)
            if not expected:
                assert packet is None
                continue
            assert packet is not None
            payload, transaction = expected.popleft()
            assert bytes(packet.payload[: len(payload)]) == payload
            assert not any(packet.payload[len(payload) :])
            assert packet.transaction_id == transaction
            continue
        payload = bytes((seed + number + i) & 0xFF for i in range(step))
        try:
            writer.write_packet(payload, transaction_id=number)
        except RingFull:
            assert writer.writable() <= 16 + ((step + 7) & ~7) + 8
            continue
        expected.append((payload, number))
        assert reader.readable() + reader.writable() == DATA_SIZE
    while expected:
        packet = reader.read_packet(buffer)
        assert packet is not None
        assert bytes(packet.payload[: len(expected[0][0])]) == expected.popleft()[0]
    assert reader.read_packet(buffer) is None
    assert reader.readable() == 0


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(min_size=DATA_SIZE, max_size=DATA_SIZE),
    write=st.integers(0, 2**32 - 1) | st.integers(0, DATA_SIZE - 1),
    read=st.integers(0, 2**32 - 1) | st.integers(0, DATA_SIZE - 1),
    buffer_size=st.sampled_from([64, DATA_SIZE]),
)
def test_any_ring_contents_give_a_packet_none_or_a_ring_error(
    data: bytes, write: int, read: int, buffer_size: int
) -> None:
    memory = bytearray(RING_HEADER_SIZE) + bytearray(data)
    struct.pack_into("<II", memory, 0, write, read)
    ring = Ring(memoryview(memory))
    try:
        packet = ring.read_packet(bytearray(buffer_size))
    except RingError:
        return
    assert packet is None or isinstance(packet, Packet)
    if packet is not None:
        assert len(packet.payload) <= buffer_size
