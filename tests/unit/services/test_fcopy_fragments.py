"""Repeated, overlapping and out-of-order WRITEs: COMPLETE succeeds only when every byte came."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvguest.abi.constants import HvStatus
from hvguest.protocol.fcopy_messages import FcopyComplete, FcopyStart, FcopyWrite
from hvguest.services.fcopy import MAX_SCATTERED_RANGES, FcopyService
from hvguest.testing.fakes.fcopy import FakeFileSink

TARGET = "/srv/in/a.bin"


@pytest.fixture
def service(sink: FakeFileSink) -> FcopyService:
    return FcopyService(sink, clock=lambda: 0.0)


def copy(service: FcopyService, size: int, fragments: list[tuple[int, bytes]]) -> HvStatus:
    assert service.handle(FcopyStart("a.bin", "/srv/in", 0, size)) is HvStatus.S_OK
    for offset, data in fragments:
        assert service.handle(FcopyWrite(offset, data)) is HvStatus.S_OK
    return service.handle(FcopyComplete())


@pytest.mark.parametrize(
    "fragments",
    [
        [(0, b"x" * 6), (0, b"y" * 6)],  # a repeat: 12 bytes sent, 6 written
        [(6, b"y" * 6), (6, b"y" * 6)],  # a hole at the start
        [(0, b"abcd"), (2, b"cdef"), (4, b"efgh")],  # overlaps, still short of 12
        [(0, b"abc"), (9, b"jkl"), (9, b"jkl")],  # a hole in the middle
    ],
)
def test_bytes_sent_twice_do_not_make_a_short_copy_complete(
    service: FcopyService, sink: FakeFileSink, fragments: list[tuple[int, bytes]]
) -> None:
    assert copy(service, 12, fragments) is HvStatus.E_FAIL
    assert TARGET not in sink.files
    assert sink.temps == {}


@pytest.mark.parametrize(
    "fragments",
    [
        [(6, b"ghijkl"), (0, b"abcdef")],  # reversed
        [(0, b"abcdef"), (0, b"abcdef"), (6, b"ghijkl")],  # a resent fragment
        [(8, b"ijkl"), (2, b"cdefgh"), (0, b"ab")],  # scattered, then joined
        [(0, b"abcdefgh"), (4, b"efghijkl")],  # overlapping
    ],
)
def test_out_of_order_and_overlapping_fragments_that_cover_everything_complete(
    service: FcopyService, sink: FakeFileSink, fragments: list[tuple[int, bytes]]
) -> None:
    assert copy(service, 12, fragments) is HvStatus.S_OK
    assert sink.files[TARGET] == b"abcdefghijkl"


def test_too_many_scattered_fragments_drop_the_copy(
    service: FcopyService, sink: FakeFileSink
) -> None:
    size = 2 * (MAX_SCATTERED_RANGES + 2)
    assert service.handle(FcopyStart("a.bin", "/srv/in", 0, size)) is HvStatus.S_OK
    statuses = [service.handle(FcopyWrite(offset, b"x")) for offset in range(2, size, 2)]
    assert statuses[-1] is HvStatus.E_FAIL
    assert not service.copy_open
    assert sink.temps == {}


@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 6)), max_size=12))
def test_complete_succeeds_exactly_when_every_byte_was_written(
    fragments: list[tuple[int, int]],
) -> None:
    size = 12
    sink = FakeFileSink()
    sink.add_dir("/srv/in")
    service = FcopyService(sink, clock=lambda: 0.0)
    assert service.handle(FcopyStart("a.bin", "/srv/in", 0, size)) is HvStatus.S_OK
    content = b"abcdefghijkl"
    written: set[int] = set()
    for offset, wanted in fragments:
        end = min(offset + wanted, size)
        assert service.handle(FcopyWrite(offset, content[offset:end])) is HvStatus.S_OK
        written.update(range(offset, end))
    status = service.handle(FcopyComplete())
    if written == set(range(size)):
        assert status is HvStatus.S_OK
        assert sink.files[TARGET] == content
    else:
        assert status is HvStatus.E_FAIL
        assert TARGET not in sink.files
