"""RouteNetlink's dump loop against a scripted kernel: framing, errors, retries."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest

from hvguest.errors import WireError
from hvguest.linux.netlink import (
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RouteNetlink,
)

HEADER = struct.Struct("=IHHII")


def rta(attr_type: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, attr_type) + value + bytes(-length % 4)


def nlmsg(msg_type: int, payload: bytes, seq: int, flags: int = NLM_F_MULTI) -> bytes:
    length = 16 + len(payload)
    return HEADER.pack(length, msg_type, flags, seq, 4242) + payload + bytes(-length % 4)


def done(seq: int, status: int = 0, flags: int = NLM_F_MULTI) -> bytes:
    return nlmsg(NLMSG_DONE, struct.pack("=i", status), seq, flags)


def address(seq: int, last_octet: int, flags: int = NLM_F_MULTI) -> bytes:
    payload = struct.pack("=BBBBI", socket.AF_INET, 24, 0x80, 0, 2) + rta(
        2, bytes([192, 0, 2, last_octet])
    )
    return nlmsg(RTM_NEWADDR, payload, seq, flags)


def link(seq: int, index: int, name: str, padding: int = 0) -> bytes:
    payload = struct.pack("=BxHiII", 0, 1, index, 0, 0) + rta(3, name.encode() + b"\0")
    # IFLA_AF_SPEC-sized filler makes big messages, as VF-rich NICs produce.
    payload += rta(26, bytes(padding))
    return nlmsg(RTM_NEWLINK, payload, seq)


def route(seq: int, table: int, gateway: str) -> bytes:
    payload = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, table, 3, 0, 1, 0)
    payload += rta(5, IPv4Address(gateway).packed) + rta(4, struct.pack("=I", 2))
    return nlmsg(RTM_NEWROUTE, payload, seq)


Answer = Callable[[int, int], list[bytes]]


class ScriptedKernel:
    """A netlink socket whose answers come from ``answer(seq, request_number)``."""

    def __init__(self, answer: Answer, *, sent_bytes: int | None = None) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.pending: list[bytes] = []
        self.interrupts = 0
        self.closed = False
        self.sent_bytes = sent_bytes

    def send(self, data: bytes, flags: int = 0, /) -> int:
        self.requests.append(bytes(data))
        self.pending.extend(self.answer(HEADER.unpack_from(data)[3], len(self.requests)))
        return len(data) if self.sent_bytes is None else self.sent_bytes

    def recv_into(self, buffer: bytearray, nbytes: int = 0, flags: int = 0, /) -> int:
        if self.interrupts:
            self.interrupts -= 1
            raise InterruptedError(errno.EINTR, "interrupted")
        datagram = self.pending[0] if self.pending else b""
        copied = min(len(datagram), nbytes)
        buffer[:copied] = datagram[:copied]
        if not flags & socket.MSG_PEEK and self.pending:
            self.pending.pop(0)
        return len(datagram) if flags & socket.MSG_TRUNC else copied

    def close(self) -> None:
        self.closed = True

    def sequence_numbers(self) -> list[int]:
        return [HEADER.unpack_from(request)[3] for request in self.requests]


def reader(kernel: ScriptedKernel) -> RouteNetlink:
    return RouteNetlink(lambda: kernel)


def test_request_is_a_dump_of_the_asked_type() -> None:
    kernel = ScriptedKernel(lambda seq, _n: [done(seq, flags=0)])
    assert reader(kernel).links() == []
    length, msg_type, flags, _seq, _pid = HEADER.unpack_from(kernel.requests[0])
    assert (msg_type, flags) == (RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP)
    assert length == len(kernel.requests[0])


def test_multipart_answer_spread_over_several_datagrams_is_collected_whole() -> None:
    def answer(seq: int, _n: int) -> list[bytes]:
        return [
            address(seq, 1) + address(seq, 2),
            address(seq, 3) + address(seq, 4),
            address(seq, 5) + done(seq),
        ]

    kernel = ScriptedKernel(answer)
    found = [a.address for a in reader(kernel).addresses()]
    assert found == [IPv4Address(f"192.0.2.{n}") for n in range(1, 6)]
    assert kernel.closed


def test_datagram_larger_than_the_receive_buffer_is_read_whole() -> None:
    def answer(seq: int, _n: int) -> list[bytes]:
        return [b"".join(link(seq, i, f"eth{i}", padding=4000) for i in range(1, 21)) + done(seq)]

    kernel = ScriptedKernel(answer)
    assert len(kernel.answer(1, 1)[0]) > 65536
    assert [lk.name for lk in reader(kernel).links()] == [f"eth{i}" for i in range(1, 21)]


def test_messages_of_another_sequence_number_are_ignored() -> None:
    kernel = ScriptedKernel(lambda seq, _n: [address(seq + 1000, 9) + address(seq, 1) + done(seq)])
    assert [a.address for a in reader(kernel).addresses()] == [IPv4Address("192.0.2.1")]


def test_interrupted_dump_is_restarted_with_a_new_sequence_number() -> None:
    def answer(seq: int, number: int) -> list[bytes]:
        if number == 1:
            return [address(seq, 1, NLM_F_MULTI | NLM_F_DUMP_INTR), address(seq, 2) + done(seq)]
        return [address(seq, 7) + done(seq)]

    kernel = ScriptedKernel(answer)
    assert [a.address for a in reader(kernel).addresses()] == [IPv4Address("192.0.2.7")]
    first, second = kernel.sequence_numbers()
    assert first != second


def test_interruption_flagged_only_on_done_also_restarts() -> None:
    def answer(seq: int, number: int) -> list[bytes]:
        flags = NLM_F_MULTI | (NLM_F_DUMP_INTR if number == 1 else 0)
        return [address(seq, number) + done(seq, flags=flags)]

    kernel = ScriptedKernel(answer)
    assert [a.address for a in reader(kernel).addresses()] == [IPv4Address("192.0.2.2")]


def test_dump_interrupted_every_time_gives_up_with_ebusy() -> None:
    kernel = ScriptedKernel(lambda seq, _n: [done(seq, flags=NLM_F_MULTI | NLM_F_DUMP_INTR)])
    with pytest.raises(OSError, match="interrupted 3 times") as caught:
        RouteNetlink(lambda: kernel, attempts=3).addresses()
    assert caught.value.errno == errno.EBUSY
    assert len(kernel.requests) == 3
    assert kernel.closed


def test_nlmsg_error_raises_the_kernel_errno() -> None:
    def answer(seq: int, _n: int) -> list[bytes]:
        original = HEADER.pack(24, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        return [nlmsg(NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + original, seq, 0)]

    kernel = ScriptedKernel(answer)
    with pytest.raises(OSError, match="NLMSG_ERROR") as caught:
        reader(kernel).addresses()
    assert caught.value.errno == errno.EPERM
    assert kernel.closed


def test_nlmsg_error_zero_is_an_acknowledgement() -> None:
    def answer(seq: int, _n: int) -> list[bytes]:
        ack = nlmsg(NLMSG_ERROR, struct.pack("=i", 0) + bytes(16), seq, 0)
        return [ack + address(seq, 3) + done(seq)]

    assert [a.address for a in reader(ScriptedKernel(answer)).addresses()] == [
        IPv4Address("192.0.2.3")
    ]


def test_truncated_nlmsg_error_is_a_wire_error() -> None:
    kernel = ScriptedKernel(lambda seq, _n: [nlmsg(NLMSG_ERROR, b"\1\0", seq, 0)])
    with pytest.raises(WireError):
        reader(kernel).addresses()


def test_done_carrying_a_negative_status_raises_it() -> None:
    kernel = ScriptedKernel(lambda seq, _n: [address(seq, 1) + done(seq, -errno.EMSGSIZE)])
    with pytest.raises(OSError, match="NLMSG_DONE") as caught:
        reader(kernel).addresses()
    assert caught.value.errno == errno.EMSGSIZE


def test_done_without_status_word_ends_the_dump() -> None:
    kernel = ScriptedKernel(lambda seq, _n: [address(seq, 4) + nlmsg(NLMSG_DONE, b"", seq)])
    assert len(reader(kernel).addresses()) == 1


def test_eintr_while_receiving_is_retried() -> None:
    kernel = ScriptedKernel(lambda seq, _n: [address(seq, 1), address(seq, 2) + done(seq)])
    kernel.interrupts = 3
    assert len(reader(kernel).addresses()) == 2
    assert kernel.interrupts == 0


def test_empty_datagram_before_done_is_a_wire_error() -> None:
    kernel = ScriptedKernel(lambda seq, _n: [address(seq, 1)])
    with pytest.raises(WireError):
        reader(kernel).addresses()
    assert kernel.closed


def test_short_send_is_an_os_error() -> None:
    kernel = ScriptedKernel(lambda seq, _n: [done(seq)], sent_bytes=3)
    with pytest.raises(OSError, match="sent 3"):
        reader(kernel).links()


def test_routes_keep_only_the_main_table() -> None:
    def answer(seq: int, _n: int) -> list[bytes]:
        return [route(seq, 255, "127.0.0.9") + route(seq, 254, "192.0.2.1") + done(seq)]

    routes = reader(ScriptedKernel(answer)).routes()
    assert [r.gateway for r in routes] == [IPv4Address("192.0.2.1")]


def test_snapshot_reads_all_three_tables_over_one_socket() -> None:
    opened: list[ScriptedKernel] = []

    def answer(seq: int, number: int) -> list[bytes]:
        body = {1: link(seq, 2, "eth0"), 2: address(seq, 5), 3: route(seq, 254, "192.0.2.1")}
        return [body[number] + done(seq)]

    def open_socket() -> ScriptedKernel:
        opened.append(ScriptedKernel(answer))
        return opened[-1]

    snapshot = RouteNetlink(open_socket).snapshot()
    assert len(opened) == 1
    assert [HEADER.unpack_from(r)[1] for r in opened[0].requests] == [
        RTM_GETLINK,
        RTM_GETADDR,
        RTM_GETROUTE,
    ]
    assert (len(snapshot.links), len(snapshot.addresses), len(snapshot.routes)) == (1, 1, 1)
    assert opened[0].closed


def test_each_query_uses_a_fresh_socket() -> None:
    opened: list[ScriptedKernel] = []

    def open_socket() -> ScriptedKernel:
        opened.append(ScriptedKernel(lambda seq, _n: [done(seq)]))
        return opened[-1]

    netlink = RouteNetlink(open_socket)
    netlink.links()
    netlink.addresses()
    assert len(opened) == 2
    assert all(kernel.closed for kernel in opened)
