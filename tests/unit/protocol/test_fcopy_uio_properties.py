"""hvguest.protocol.fcopy_uio under hypothesis: the parser invariant, and negotiation
compared with the kernel's vmbus_prep_negotiate_resp() as the simulator reimplements it."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from hvguest.protocol.fcopy_uio import (
    FCOPY_VERSIONS,
    FRAMEWORK_VERSIONS,
    CopyRequest,
    Negotiation,
    Rejected,
    Unanswerable,
    decode_packet,
)
from hvguest.testing.transport import prep_negotiate_resp
from hvguest.testing.uio_sim import negotiate_message, util_packet

versions = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2)), max_size=6)


@settings(max_examples=500, deadline=None)
@given(
    icmsgtype=st.sampled_from([0, 7, 1, 0xFFFF]),
    body=st.binary(max_size=1200),
    operation=st.integers(0, 5),
)
def test_any_packet_decodes_to_an_event_and_never_raises(
    icmsgtype: int, body: bytes, operation: int
) -> None:
    packet = bytearray(util_packet(icmsgtype, struct.pack("<I", operation) + body))
    event = decode_packet(packet)
    assert isinstance(event, Negotiation | CopyRequest | Rejected)
    assert packet[25] == 5


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=100))
def test_arbitrary_bytes_decode_without_raising(raw: bytes) -> None:
    event = decode_packet(bytearray(raw))
    assert isinstance(event, Negotiation | CopyRequest | Rejected | Unanswerable)
    assert isinstance(event, Unanswerable) == (len(raw) < 28)


@settings(max_examples=300, deadline=None)
@given(
    frameworks=versions,
    services=versions,
    cut=st.integers(0, 16),
    framework_count_override=st.none() | st.integers(0, 120),
)
def test_negotiation_matches_the_kernel_algorithm_byte_for_byte(
    frameworks: list[tuple[int, int]],
    services: list[tuple[int, int]],
    cut: int,
    framework_count_override: int | None,
) -> None:
    packet = bytearray(util_packet(0, negotiate_message(tuple(frameworks), tuple(services))))
    if framework_count_override is not None:
        struct.pack_into("<H", packet, 28, framework_count_override)
    # Keep the two answer slots inside the packet (the kernel writes them regardless).
    length = max(44, len(packet) - cut)
    packet = packet[:length].ljust(44, b"\0")
    kernel = bytearray(packet)
    found = prep_negotiate_resp(kernel, len(kernel), FRAMEWORK_VERSIONS, FCOPY_VERSIONS)
    ours = bytearray(packet)
    event = decode_packet(ours)
    assert isinstance(event, Negotiation)
    assert event.ok == found
    # Same bytes except the fields the UIO daemon adds: status and icflags.
    assert ours[28:] == kernel[28:]
    assert ours[:20] == kernel[:20]
    assert struct.unpack_from("<I", ours, 20)[0] == (0 if found else 0x80004005)
