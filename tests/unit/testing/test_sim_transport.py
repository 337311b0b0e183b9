"""UtilsTransport (hv_utils_transport.c) and the IC negotiation helper, in isolation."""

from __future__ import annotations

import errno
import struct

from hvguest.testing.transport import (
    ICMSG_HDR,
    ICMSG_SIZE_OFFSET,
    TransportMode,
    UtilsTransport,
    prep_negotiate_resp,
)


class RecordingEndpoint:
    def __init__(self) -> None:
        self.delivered: list[bytes] = []
        self.hangups = 0

    def deliver(self, message: bytes | bytearray) -> None:
        self.delivered.append(bytes(message))

    def hang_up(self) -> None:
        self.hangups += 1


class RecordingService:
    def __init__(self, result: int = 0) -> None:
        self.result = result
        self.writes: list[bytes] = []
        self.resets = 0

    def on_msg(self, data: bytes) -> int:
        self.writes.append(data)
        return self.result

    def on_reset(self) -> None:
        self.resets += 1


def opened(service: RecordingService | None = None) -> tuple[UtilsTransport, RecordingEndpoint]:
    transport = UtilsTransport("kvp")
    transport.service = service or RecordingService()
    endpoint = RecordingEndpoint()
    assert transport.open(endpoint) == 0
    return transport, endpoint


def test_a_second_opener_gets_ebusy_until_the_first_closes() -> None:
    transport, _ = opened()
    assert transport.open(RecordingEndpoint()) == errno.EBUSY
    transport.release()
    assert transport.mode == TransportMode.INIT
    assert transport.open(RecordingEndpoint()) == 0


def test_send_without_an_opener_is_einval() -> None:
    transport = UtilsTransport("kvp")
    assert transport.send(b"x") == -errno.EINVAL


def test_the_queue_is_one_deep_until_the_daemon_reads() -> None:
    transport, endpoint = opened()
    assert transport.send(b"first") == 0
    assert transport.send(b"second") == -errno.EFAULT
    assert endpoint.delivered == [b"first"]
    transport.read_done()
    assert transport.send(b"second") == 0
    assert endpoint.delivered == [b"first", b"second"]


def test_the_on_read_callback_runs_once_after_the_slot_is_free() -> None:
    transport, endpoint = opened()
    calls: list[int] = []

    def on_read() -> None:
        calls.append(transport.send(b"next"))  # the slot is already free

    transport.send(b"answer", on_read)
    transport.read_done()
    transport.read_done()  # nothing queued any more: no second call
    assert calls == [0]
    assert endpoint.delivered == [b"answer", b"next"]


def test_write_returns_the_count_or_the_services_errno() -> None:
    service = RecordingService()
    transport, _ = opened(service)
    assert transport.write(b"abc") == 3
    service.result = -errno.EINVAL
    assert transport.write(b"abc") == -errno.EINVAL
    assert service.writes == [b"abc", b"abc"]


def test_an_injected_write_error_fails_one_write_unseen_by_the_service() -> None:
    service = RecordingService()
    transport, _ = opened(service)
    transport.fail_next_write(errno.EIO)
    assert transport.write(b"lost") == -errno.EIO
    assert transport.write(b"seen") == 4
    assert service.writes == [b"seen"]


def test_release_drops_the_unread_message_and_resets_the_service() -> None:
    service = RecordingService()
    transport, _ = opened(service)
    transport.send(b"unread")
    transport.release()
    assert transport.queued is None
    assert service.resets == 1
    transport.open(RecordingEndpoint())
    assert transport.send(b"fresh") == 0  # no EFAULT from the dropped message


def test_destroy_hangs_up_and_completes_on_close() -> None:
    service = RecordingService()
    transport, endpoint = opened(service)
    done: list[str] = []
    transport.destroy(lambda: done.append("gone"))
    assert endpoint.hangups == 1
    assert done == []  # the kernel waits for the daemon's close
    assert transport.write(b"x") == -errno.EBADF
    assert transport.open(RecordingEndpoint()) == errno.EBADF
    assert transport.send(b"x") == -errno.EINVAL
    transport.release()
    assert done == ["gone"]
    assert transport.mode == TransportMode.DESTROY
    assert service.resets == 1


def test_destroy_without_an_opener_completes_at_once() -> None:
    transport = UtilsTransport("kvp")
    done: list[str] = []
    transport.destroy(lambda: done.append("gone"))
    assert done == ["gone"]


def negotiate_packet(framework: list[tuple[int, int]], service: list[tuple[int, int]]) -> bytearray:
    packet = bytearray(ICMSG_HDR + 8 + 4 * max(len(framework) + len(service), 2))
    struct.pack_into("<HH", packet, ICMSG_HDR, len(framework), len(service))
    for i, version in enumerate(framework + service):
        struct.pack_into("<HH", packet, ICMSG_HDR + 8 + 4 * i, *version)
    return packet


def answer(packet: bytearray) -> tuple[int, ...]:
    return struct.unpack_from("<HH4xHHHH", packet, ICMSG_HDR)


def test_negotiation_picks_our_first_version_the_host_offers() -> None:
    packet = negotiate_packet([(1, 0), (3, 0)], [(3, 0), (4, 0), (5, 0)])
    assert prep_negotiate_resp(packet, len(packet), ((3, 0), (1, 0)), ((4, 0), (3, 0)))
    assert answer(packet) == (1, 1, 3, 0, 4, 0)
    assert struct.unpack_from("<H", packet, ICMSG_SIZE_OFFSET) == (0x10,)


def test_negotiation_failure_reports_zero_counts_and_the_host_counts_as_versions() -> None:
    packet = negotiate_packet([(2, 0)], [(4, 0), (5, 0)])
    assert not prep_negotiate_resp(packet, len(packet), ((3, 0),), ((4, 0),))
    assert answer(packet) == (0, 0, 1, 0, 2, 0)


def test_negotiation_with_counts_beyond_the_packet_fails() -> None:
    packet = negotiate_packet([(3, 0)], [(4, 0)])
    struct.pack_into("<H", packet, ICMSG_HDR, 50)
    assert not prep_negotiate_resp(packet, len(packet), ((3, 0),), ((4, 0),))
    assert answer(packet)[:2] == (0, 0)


def test_negotiation_of_a_too_short_packet_touches_nothing() -> None:
    packet = bytearray(ICMSG_HDR + 3)
    before = bytes(packet)
    assert not prep_negotiate_resp(packet, len(packet), ((3, 0),), ((4, 0),))
    assert bytes(packet) == before
