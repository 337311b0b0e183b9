"""FcopyKernel (drivers/hv/hv_fcopy.c, Linux 6.1) byte for byte, driven by hand as the daemon.

The first part drives the state machine with in-memory stand-ins (no threads,
timers fired by the test); the last part runs the real Simulator with its
socket device and the fcopy_host helpers, a scripted daemon on the other end.
"""

from __future__ import annotations

import errno
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sim_kernel_harness import DriverHarness

from hvguest.abi.constants import CREATE_PATH, OVER_WRITE, FcopyOp, HvStatus
from hvguest.abi.structs import FCOPY_HDR_SIZE, FCOPY_START_SIZE, FCOPY_WRITE_SIZE
from hvguest.linux.device import SimulatedDevice
from hvguest.testing import fcopy_host
from hvguest.testing import fcopy_kernel as fk
from hvguest.testing.fcopy_host import (
    WRITE_DATA,
    WRITE_OFFSET,
    WRITE_SIZE,
    header_message,
    start_message,
    write_message,
)
from hvguest.testing.host import build_packet
from hvguest.testing.simulator import ControlClient, ControlServer, Simulator
from hvguest.testing.transport import (
    ICMSG_HDR,
    ICMSGTYPE_FCOPY,
    ICMSGTYPE_KVPEXCHANGE,
    ICMSGTYPE_NEGOTIATE,
    UtilState,
)

E_FAIL = HvStatus.E_FAIL
VERSION_1 = struct.pack("<i", 1)


class FcopyHarness(DriverHarness):
    """One FCOPY driver with a hand-driven daemon side and host side."""

    kernel: fk.FcopyKernel

    def __init__(self) -> None:
        super().__init__(
            "fcopy",
            ICMSGTYPE_FCOPY,
            lambda transport, channel, timers: fk.FcopyKernel(
                transport, channel, timers, reply_timeout=30.0
            ),
        )

    def reply(self, status: int) -> int:
        return self.write(struct.pack("<i", status - (1 << 32) if status >= 1 << 31 else status))

    def register(self) -> bytes:
        assert self.open() == 0
        assert self.write(VERSION_1) == 4
        return self.read()

    def status(self, request_id: int) -> int | None:
        answer = self.answer(request_id)
        return None if answer is None else answer.status


def state(h: FcopyHarness) -> UtilState:
    """The driver state, read through a call so that type narrowing does not stick."""
    return h.kernel.state


@pytest.fixture
def h() -> FcopyHarness:
    harness = FcopyHarness()
    harness.register()
    assert state(harness) == UtilState.READY
    return harness


def forward(h: FcopyHarness, message: bytes | bytearray) -> bytes:
    """Send a host message; what the daemon reads."""
    h.host_send(message)
    assert state(h) == UtilState.USERSPACE_REQ
    return h.read()


def start_names(message: bytes) -> tuple[bytes, bytes]:
    """The UTF-8 file and path names the daemon sees (NUL-terminated in the u16 arrays)."""
    file_field = message[fk.START_FILE_NAME : fk.START_PATH_NAME]
    path_field = message[fk.START_PATH_NAME : fk.START_COPY_FLAGS]
    return file_field.split(b"\0")[0], path_field.split(b"\0")[0]


def negotiate_payload(framework: tuple[int, int], service: tuple[int, int]) -> bytes:
    return struct.pack("<HHI HH HH", 1, 1, 0, *framework, *service)


# --- registration ------------------------------------------------------------


def test_registration_answer_is_a_bare_int_1_and_ready_follows_the_read() -> None:
    h = FcopyHarness()
    assert h.open() == 0
    assert h.write(VERSION_1) == 4
    assert state(h) == UtilState.DEVICE_INIT
    assert h.write(VERSION_1) == -errno.EFAULT  # answer still unread
    assert h.read() == VERSION_1
    assert state(h) == UtilState.READY
    assert h.kernel.daemon_version == 1


@pytest.mark.parametrize("size", [0, 3, 5, 8, FCOPY_HDR_SIZE])
def test_every_daemon_write_must_be_exactly_4_bytes(size: int) -> None:
    h = FcopyHarness()
    h.open()
    assert h.write(VERSION_1.ljust(size, b"\0")[:size]) == -errno.EINVAL
    assert state(h) == UtilState.DEVICE_INIT


@pytest.mark.parametrize("version", [2, -1, 0x100])
def test_unknown_versions_are_einval(version: int) -> None:
    h = FcopyHarness()
    h.open()
    assert h.write(struct.pack("<i", version)) == -errno.EINVAL
    assert h.transport.queued is None


def test_legacy_version_0_is_accepted_but_never_becomes_ready() -> None:
    h = FcopyHarness()
    h.open()
    assert h.write(struct.pack("<i", 0)) == 4
    assert h.transport.queued is None  # no answer: the on-read callback never runs
    assert state(h) == UtilState.DEVICE_INIT
    request = h.host_send(start_message("/tmp", "f", file_size=1))
    assert h.status(request) == E_FAIL  # S4: every request fails
    # ...and the next 4-byte write is taken as another registration.
    assert h.write(VERSION_1) == 4
    assert h.read() == VERSION_1
    assert state(h) == UtilState.READY


def test_a_reply_when_nothing_was_asked_is_einval(h: FcopyHarness) -> None:
    assert h.reply(0) == -errno.EINVAL


# --- the channel ---------------------------------------------------------------


def test_without_a_daemon_fcopy_packets_fail_at_once_and_negotiation_works() -> None:
    h = FcopyHarness()
    negotiation = h.host_send(negotiate_payload((3, 0), (1, 1)), ICMSGTYPE_NEGOTIATE)
    answer = h.answer(negotiation)
    assert answer is not None
    assert struct.unpack_from("<HH", answer.payload, 0) == (1, 1)
    assert struct.unpack_from("<HHHH", answer.payload, 8) == (3, 0, 1, 1)
    request = h.host_send(header_message(FcopyOp.COMPLETE_FCOPY))
    assert h.status(request) == E_FAIL
    assert state(h) == UtilState.DEVICE_INIT
    assert not h.channel.ring


def test_negotiation_offering_only_fcopy_1_0_fails() -> None:
    h = FcopyHarness()
    answer = h.answer(h.host_send(negotiate_payload((3, 0), (1, 0)), ICMSGTYPE_NEGOTIATE))
    assert answer is not None
    assert struct.unpack_from("<HH", answer.payload, 0) == (0, 0)


@pytest.mark.parametrize(
    "packet",
    [
        build_packet(ICMSGTYPE_FCOPY, b"")[: ICMSG_HDR - 1],  # shorter than the IC header
        build_packet(ICMSGTYPE_FCOPY, bytes(FCOPY_HDR_SIZE - 1)),  # no room for hv_fcopy_hdr
        build_packet(ICMSGTYPE_KVPEXCHANGE, header_message(FcopyOp.COMPLETE_FCOPY)),  # wrong type
        build_packet(ICMSGTYPE_FCOPY, bytes(fk.FCOPY_RECV_LIMIT)),  # over the two-page read
    ],
    ids=["short-ic", "short-fcopy", "wrong-type", "too-big"],
)
def test_malformed_packets_are_dropped_unanswered(h: FcopyHarness, packet: bytes) -> None:
    request = h.host_send_packet(packet)
    assert h.answer(request) is None
    assert state(h) == UtilState.READY
    assert h.transport.queued is None
    # The channel keeps working.
    follow_up = h.host_send(header_message(FcopyOp.COMPLETE_FCOPY))
    h.read()
    assert h.reply(0) == 4
    assert h.status(follow_up) == 0


def test_packets_wait_while_busy_and_are_picked_up_when_the_reply_comes(h: FcopyHarness) -> None:
    first = h.host_send(header_message(FcopyOp.COMPLETE_FCOPY))
    second = h.host_send(header_message(FcopyOp.CANCEL_FCOPY))
    assert len(h.channel.ring) == 1  # not read while USERSPACE_REQ
    assert h.read()[0] == FcopyOp.COMPLETE_FCOPY
    assert h.reply(0) == 4
    assert h.status(first) == 0
    assert state(h) == UtilState.USERSPACE_REQ  # the second one is being served
    assert h.read()[0] == FcopyOp.CANCEL_FCOPY
    assert h.reply(7) == 4
    assert h.status(second) == 7


# --- START_FILE_COPY -------------------------------------------------------------


def test_start_becomes_a_fresh_1088_byte_message_with_utf8_names(h: FcopyHarness) -> None:
    host = start_message("C:\\tmp", "a.txt", flags=OVER_WRITE | CREATE_PATH, file_size=1 << 40)
    host[4:36] = b"\xaa" * 32  # service ids are not forwarded
    message = forward(h, host)
    assert len(message) == FCOPY_START_SIZE
    assert struct.unpack_from("<I", message, 0)[0] == FcopyOp.START_FILE_COPY
    assert message[4:36] == bytes(32)
    assert start_names(message) == (b"a.txt", b"C:\\tmp")
    assert struct.unpack_from("<IQ", message, fk.START_COPY_FLAGS) == (3, 1 << 40)
    expected = bytearray(FCOPY_START_SIZE)
    expected[0] = 0
    expected[fk.START_FILE_NAME : fk.START_FILE_NAME + 5] = b"a.txt"
    expected[fk.START_PATH_NAME : fk.START_PATH_NAME + 6] = b"C:\\tmp"
    expected[fk.START_COPY_FLAGS :] = struct.pack("<IQ", 3, 1 << 40)
    assert message == bytes(expected)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("café-naïve.txt", "café-naïve.txt".encode()),
        ("日本語のファイル", "日本語のファイル".encode()),
        ("emoji-\U0001f600.bin", "emoji-\U0001f600.bin".encode()),
        ("lone-\ud800-high", b"lone--high"),
        ("lone-\udc00-low", b"lone--low"),
        ("reversed-\udc00\ud800-pair", b"reversed--pair"),
        ("end-high-\ud83d", b"end-high-"),
    ],
    ids=["accents", "cjk", "non-bmp", "lone-high", "lone-low", "reversed", "trailing-high"],
)
def test_start_names_follow_the_kernel_nls_rules(
    h: FcopyHarness, name: str, expected: bytes
) -> None:
    message = forward(h, start_message("/srv/" + name, name, file_size=0))
    assert start_names(message) == (expected, b"/srv/" + expected)


def test_names_are_cut_at_259_bytes_never_inside_a_character(h: FcopyHarness) -> None:
    accents = "é" * 130  # 260 bytes of UTF-8 in 130 units
    ascii_full = "x" * 260  # all 260 units, no terminator
    message = forward(h, start_message(accents, ascii_full, file_size=0))
    file_name, path_name = start_names(message)
    assert file_name == b"x" * 259
    assert path_name == ("é" * 129).encode()  # 258 bytes: the 130th does not fit
    # The terminator is the zeroed 260th byte, so the fields never run on.
    assert message[fk.START_FILE_NAME + 259] == 0


def test_a_name_without_terminator_stops_at_260_units(h: FcopyHarness) -> None:
    # path_name follows file_name: an unterminated 260-unit file name must not
    # swallow it (the kernel reads W_MAX_PATH units at most).
    message = forward(h, start_message("P", "日" * 260, file_size=0))
    file_name, path_name = start_names(message)
    assert file_name == ("日" * 86).encode()  # 258 bytes; one more would be 261
    assert path_name == b"P"


# --- WRITE_TO_FILE, COMPLETE, CANCEL ------------------------------------------------


def test_write_is_forwarded_raw_as_6196_bytes(h: FcopyHarness) -> None:
    data = bytes(range(256)) * 24
    host = write_message(12288, data)
    host[4:36] = b"\x11" * 32
    message = forward(h, host)
    assert len(message) == FCOPY_WRITE_SIZE
    assert message == bytes(host)
    assert struct.unpack_from("<Q", message, WRITE_OFFSET)[0] == 12288
    assert struct.unpack_from("<I", message, WRITE_SIZE)[0] == 6144


def test_a_short_write_packet_is_still_forwarded_as_6196_bytes_of_buffer(
    h: FcopyHarness,
) -> None:
    forward(h, write_message(0, b"\x77" * 6144))
    h.reply(0)
    short = write_message(0, b"new")[: WRITE_DATA + 3]  # the host sent only 3 data bytes
    message = forward(h, short)
    assert len(message) == FCOPY_WRITE_SIZE
    assert message[WRITE_DATA : WRITE_DATA + 3] == b"new"
    assert message[WRITE_DATA + 3 :] == b"\x77" * 6141  # stale receive buffer contents


@pytest.mark.parametrize("operation", [FcopyOp.COMPLETE_FCOPY, FcopyOp.CANCEL_FCOPY, 9])
def test_other_operations_are_forwarded_with_the_whole_packet_length(
    h: FcopyHarness, operation: int
) -> None:
    forward(h, write_message(0, b"\x55" * 100))
    h.reply(0)
    message = forward(h, header_message(operation))
    # recv_len = 28 + 36 bytes, read from the FCOPY header: 28 bytes beyond it.
    assert len(message) == ICMSG_HDR + FCOPY_HDR_SIZE
    assert struct.unpack_from("<I", message, 0)[0] == operation
    assert message[FCOPY_HDR_SIZE:] == write_message(0, b"\x55" * 100)[36:64]


@pytest.mark.parametrize(
    "status", [0, E_FAIL, HvStatus.ERROR_ALREADY_EXISTS, HvStatus.ERROR_DISK_FULL, 12345]
)
def test_the_daemon_status_goes_to_the_host_verbatim(h: FcopyHarness, status: int) -> None:
    request = h.host_send(start_message("/tmp", "x", file_size=3))
    h.read()
    assert h.reply(status) == 4
    answer = h.answer(request)
    assert answer is not None
    assert answer.status == status
    assert answer.payload == bytes(start_message("/tmp", "x", file_size=3))  # echoed in place
    assert state(h) == UtilState.READY


# --- timeouts ----------------------------------------------------------------------


def test_timeout_fails_the_host_and_a_late_reply_is_einval(h: FcopyHarness) -> None:
    request = h.host_send(header_message(FcopyOp.COMPLETE_FCOPY))
    h.read()
    assert h.timers.delays == [30.0]
    assert h.timers.fire() == 1
    assert h.status(request) == E_FAIL
    assert state(h) == UtilState.READY
    assert h.reply(0) == -errno.EINVAL


def test_timeout_counts_from_receipt_even_if_the_daemon_never_reads(h: FcopyHarness) -> None:
    request = h.host_send(header_message(FcopyOp.COMPLETE_FCOPY))
    h.timers.fire()
    assert h.status(request) == E_FAIL
    # The unread message stays queued, so the next request cannot be sent:
    # the one-deep queue is full and the host is failed at once.
    second = h.host_send(header_message(FcopyOp.CANCEL_FCOPY))
    assert h.status(second) == E_FAIL
    assert state(h) == UtilState.READY


def test_a_late_reply_pairs_with_the_next_request_s2(h: FcopyHarness) -> None:
    first = h.host_send(start_message("/tmp", "a", file_size=1))
    h.read()
    h.timers.fire()
    second = h.host_send(header_message(FcopyOp.CANCEL_FCOPY))
    assert state(h) == UtilState.USERSPACE_REQ
    assert h.reply(HvStatus.ERROR_ALREADY_EXISTS) == 4  # meant for the START
    assert h.status(first) == E_FAIL
    assert h.status(second) == HvStatus.ERROR_ALREADY_EXISTS


# --- close, hibernation, rescind -----------------------------------------------------


def test_close_fails_the_pending_request_and_a_new_daemon_starts_clean(h: FcopyHarness) -> None:
    request = h.host_send(write_message(0, b"abc"))
    h.read()
    h.transport.release()
    assert h.status(request) == E_FAIL
    assert state(h) == UtilState.DEVICE_INIT
    assert h.register() == VERSION_1
    follow_up = h.host_send(header_message(FcopyOp.CANCEL_FCOPY))
    h.read()
    h.reply(0)
    assert h.status(follow_up) == 0


def test_hibernation_queues_a_fake_36_byte_cancel_and_forces_ready(h: FcopyHarness) -> None:
    request = h.host_send(write_message(0, b"abc"))
    h.read()
    h.kernel.pre_suspend()
    assert state(h) == UtilState.READY
    assert h.timers.fire() == 0  # the timeout was cancelled...
    assert h.answer(request) is None  # ...and the host is not answered by the driver
    fake = h.read()
    assert fake == struct.pack("<I", FcopyOp.CANCEL_FCOPY) + bytes(32)
    assert h.reply(0) == -errno.EINVAL  # the daemon then reopens the device


def test_hibernation_with_a_message_unread_keeps_it_and_drops_the_fake(h: FcopyHarness) -> None:
    h.host_send(write_message(0, b"abc"))
    h.kernel.pre_suspend()
    assert h.read()[0] == FcopyOp.WRITE_TO_FILE
    assert h.transport.queued is None
    assert state(h) == UtilState.READY


def test_hibernation_without_a_daemon_sends_nothing() -> None:
    h = FcopyHarness()
    h.kernel.pre_suspend()
    assert h.transport.queued is None
    assert state(h) == UtilState.READY


def test_deinit_stops_reading_the_channel(h: FcopyHarness) -> None:
    h.kernel.deinit()
    request = h.host_send(header_message(FcopyOp.COMPLETE_FCOPY))
    assert h.answer(request) is None
    assert state(h) == UtilState.DEVICE_DYING
    assert len(h.channel.ring) == 1


# --- through the simulator's socket device ----------------------------------------


class ScriptedDaemon:
    """A minimal FCOPY daemon on the simulated device: records requests, answers a status."""

    def __init__(self, path: Path, status: int = 0) -> None:
        self.device = SimulatedDevice(path)
        self.status = status
        self.requests: list[bytes] = []
        self.device.write(VERSION_1)
        assert self.device.read(4) == VERSION_1
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while True:
                self.requests.append(self.device.read(FCOPY_WRITE_SIZE))
                self.device.write(struct.pack("<I", self.status & 0xFFFFFFFF))
        except OSError:
            return  # closed or destroyed

    def close(self) -> None:
        self.device.close()
        self._thread.join(timeout=10)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    with Simulator(tmp_path / "sim", services=("fcopy",), reply_timeout=10.0) as simulator:
        yield simulator


def test_host_helpers_drive_a_copy_through_the_socket_device(sim: Simulator) -> None:
    daemon = ScriptedDaemon(sim.device_path("fcopy"))
    try:
        sim.wait_registered(5, "fcopy")
        data = bytes(range(256)) * 50  # 12800 bytes: three fragments, the last short
        status = fcopy_host.copy_bytes(sim.host, data, "/tmp/dir", "ü.bin", flags=CREATE_PATH)
        assert status == 0
    finally:
        daemon.close()
    operations = [struct.unpack_from("<I", r)[0] for r in daemon.requests]
    assert operations == [0, 1, 1, 1, 2]
    assert start_names(daemon.requests[0]) == ("ü.bin".encode(), b"/tmp/dir")
    assert struct.unpack_from("<IQ", daemon.requests[0], fk.START_COPY_FLAGS) == (2, 12800)
    fragments = [
        (struct.unpack_from("<QI", r, WRITE_OFFSET), r[WRITE_DATA:]) for r in daemon.requests[1:4]
    ]
    assert [meta for meta, _ in fragments] == [(0, 6144), (6144, 6144), (12288, 512)]
    assert b"".join(body[:size] for (_, size), body in fragments) == data


def test_copy_bytes_stops_at_a_failed_write_and_cancels(sim: Simulator) -> None:
    daemon = ScriptedDaemon(sim.device_path("fcopy"))
    try:
        sim.wait_registered(5, "fcopy")
        assert fcopy_host.fcopy_start(sim.host, "/tmp", "f", file_size=10) == 0
        daemon.status = HvStatus.ERROR_DISK_FULL
        assert fcopy_host.fcopy_write(sim.host, 0, b"0123456789") == HvStatus.ERROR_DISK_FULL
        daemon.status = 0
        assert fcopy_host.fcopy_cancel(sim.host) == 0
        assert fcopy_host.fcopy_raw(sim.host, header_message(FcopyOp.COMPLETE_FCOPY)) == 0
    finally:
        daemon.close()
    assert [struct.unpack_from("<I", r)[0] for r in daemon.requests] == [0, 1, 3, 2]


def test_no_daemon_means_e_fail_through_the_simulator(sim: Simulator) -> None:
    assert fcopy_host.fcopy_start(sim.host, "/tmp", "f", file_size=1, timeout=5) == E_FAIL
    assert sim.state("fcopy") == UtilState.DEVICE_INIT


def test_control_ops_carry_bytes_as_hex(sim: Simulator, tmp_path: Path) -> None:
    daemon = ScriptedDaemon(sim.device_path("fcopy"))
    try:
        sim.wait_registered(5, "fcopy")
        with (
            ControlServer(sim, tmp_path / "control") as server,
            ControlClient(server.path, timeout=30) as client,
        ):
            assert client.call("fcopy_start", path_name="/t", file_name="é", file_size=4) == 0
            assert client.call("fcopy_write", offset=0, data=b"abcd".hex()) == 0
            assert client.call("fcopy_complete") == 0
            assert client.call("fcopy_raw", payload=header_message(9).hex()) == 0
            assert client.call("copy_bytes", data=b"xy".hex(), path_name="/t", file_name="b") == 0
            assert client.call("fcopy_cancel") == 0
    finally:
        daemon.close()
    assert [struct.unpack_from("<I", r)[0] for r in daemon.requests] == [0, 1, 2, 9, 0, 1, 2, 3]
    assert daemon.requests[1][WRITE_DATA : WRITE_DATA + 4] == b"abcd"


def test_suspend_through_the_simulator_delivers_the_fake_cancel(sim: Simulator) -> None:
    device = SimulatedDevice(sim.device_path("fcopy"))
    try:
        device.write(VERSION_1)
        device.read(4)
        sim.wait_registered(5, "fcopy")
        sim.suspend("fcopy")
        fake = device.read(FCOPY_WRITE_SIZE)
        assert fake == struct.pack("<I", FcopyOp.CANCEL_FCOPY) + bytes(32)
        with pytest.raises(OSError, match="Invalid argument") as raised:
            device.write(struct.pack("<i", 0))
        assert raised.value.errno == errno.EINVAL
    finally:
        device.close()


def test_stream_writes_sends_a_repeated_pattern_one_fragment_at_a_time(sim: Simulator) -> None:
    daemon = ScriptedDaemon(sim.device_path("fcopy"))
    pattern = bytes(range(256)) * 48  # two fragments' worth
    try:
        sim.wait_registered(5, "fcopy")
        total = 5 * 6144 + 100
        assert fcopy_host.stream_writes(sim.host, pattern, total=total, start=4096) == 0
    finally:
        daemon.close()
    offsets = [struct.unpack_from("<QI", r, WRITE_OFFSET) for r in daemon.requests]
    assert offsets == [(4096 + i * 6144, 6144) for i in range(5)] + [(4096 + 5 * 6144, 100)]
    sent = b"".join(
        r[WRITE_DATA : WRITE_DATA + size]
        for r, (_, size) in zip(daemon.requests, offsets, strict=True)
    )
    assert sent == (pattern * 3)[:total]


def test_stream_writes_stops_at_the_first_failure(sim: Simulator) -> None:
    daemon = ScriptedDaemon(sim.device_path("fcopy"), status=HvStatus.ERROR_DISK_FULL)
    try:
        sim.wait_registered(5, "fcopy")
        status = fcopy_host.stream_writes(sim.host, bytes(6144), total=10 * 6144, timeout=5)
        assert status == HvStatus.ERROR_DISK_FULL
    finally:
        daemon.close()
    assert len(daemon.requests) == 1


def test_stream_writes_without_a_daemon_fails_at_once(sim: Simulator) -> None:
    assert fcopy_host.stream_writes(sim.host, b"abc", timeout=5) == E_FAIL


def test_stream_writes_refuses_a_pattern_that_is_not_whole_fragments(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="whole number of fragments"):
        fcopy_host.stream_writes(sim.host, b"abc", total=10_000)
