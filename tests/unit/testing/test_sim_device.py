"""hvguest.linux.device: the real char-device adapter and the simulated-device client."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hvguest.linux import device
from hvguest.linux.device import CharDevice, SimulatedDevice, open_device
from hvguest.testing import wire

STEP = 10.0


def test_the_client_copy_of_the_wire_protocol_matches_the_documented_one() -> None:
    assert bytes([device._TAG_OPEN]) == wire.TAG_OPEN
    assert bytes([device._TAG_MESSAGE]) == wire.TAG_MESSAGE
    assert device._TAG_CONSUMED == wire.TAG_CONSUMED
    assert device._TAG_WRITE == wire.TAG_WRITE
    assert bytes([device._TAG_RESULT]) == wire.TAG_RESULT
    assert bytes([device._TAG_HANGUP]) == wire.TAG_HANGUP
    assert device._MAX_PAYLOAD == wire.MAX_PAYLOAD
    assert device._INT32.format == wire.INT32.format


def test_a_character_device_opens_read_write_and_close_on_exec() -> None:
    dev = open_device(Path("/dev/null"))
    assert isinstance(dev, CharDevice)
    try:
        assert fcntl.fcntl(dev.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert fcntl.fcntl(dev.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        assert not dev.pending()
        assert dev.write(b"message") == 7
        assert dev.read(7432) == b""
    finally:
        dev.close()
    dev.close()  # a second close is harmless
    assert dev.fileno() == -1


def test_neither_device_nor_socket_is_enodev(tmp_path: Path) -> None:
    regular = tmp_path / "hv_kvp"
    regular.write_bytes(b"")
    with pytest.raises(OSError, match="neither") as raised:
        open_device(regular)
    assert raised.value.errno == errno.ENODEV


def test_a_missing_node_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_device(tmp_path / "hv_kvp")


@contextmanager
def fake_kernel(
    tmp_path: Path, open_errno: int = 0
) -> Iterator[tuple[Path, Callable[[], socket.socket]]]:
    """A hand-driven server end: yields the path and a function returning the accepted socket."""
    path = tmp_path / "hv_kvp"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    listener.listen(1)
    accepted: list[socket.socket] = []

    def accept() -> None:
        conn, _ = listener.accept()
        conn.send(wire.encode_open(open_errno))
        accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def server() -> socket.socket:
        thread.join(STEP)
        return accepted[0]

    try:
        yield path, server
    finally:
        thread.join(STEP)
        for conn in accepted:
            conn.close()
        listener.close()


def test_open_fails_with_the_errno_the_simulator_sends(tmp_path: Path) -> None:
    with (
        fake_kernel(tmp_path, errno.EBUSY) as (path, _),
        pytest.raises(OSError, match=r"\[Errno \d+\]") as raised,
    ):
        SimulatedDevice(path)
    assert raised.value.errno == errno.EBUSY


def test_open_device_picks_the_simulated_device_for_a_socket(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, _):
        dev = open_device(path)
        assert isinstance(dev, SimulatedDevice)
        dev.close()


def test_a_short_read_is_einval_and_keeps_the_message(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, server):
        dev = SimulatedDevice(path)
        conn = server()
        conn.send(wire.TAG_MESSAGE + b"0123456789")
        with pytest.raises(OSError, match=r"\[Errno \d+\]") as raised:
            dev.read(4)
        assert raised.value.errno == errno.EINVAL
        assert dev.pending()
        assert dev.read(10) == b"0123456789"
        assert conn.recv(16) == wire.TAG_CONSUMED  # only the full read counts as read
        assert not dev.pending()
        dev.close()


def test_messages_arriving_during_a_write_are_stashed(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, server):
        dev = SimulatedDevice(path)
        conn = server()

        def answer_write() -> None:
            assert conn.recv(100) == wire.TAG_WRITE + b"reply"
            conn.send(wire.TAG_MESSAGE + b"fake THAW")
            conn.send(wire.encode_result(5))

        helper = threading.Thread(target=answer_write, daemon=True)
        helper.start()
        assert dev.write(b"reply") == 5
        helper.join(STEP)
        assert dev.pending()
        assert dev.read(100) == b"fake THAW"
        dev.close()


def test_a_negative_write_result_is_the_errno(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, server):
        dev = SimulatedDevice(path)
        conn = server()
        conn.send(wire.encode_result(-errno.EFAULT))  # queued before the write asks
        with pytest.raises(OSError, match=r"\[Errno \d+\]") as raised:
            dev.write(b"x")
        assert raised.value.errno == errno.EFAULT
        dev.close()


def test_a_hangup_makes_the_fd_readable_and_everything_ebadf(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, server):
        dev = SimulatedDevice(path)
        server().send(wire.TAG_HANGUP)
        readable, _, _ = select.select([dev.fileno()], [], [], STEP)
        assert readable == [dev.fileno()]
        for operation in (lambda: dev.read(7432), lambda: dev.write(b"x")):
            with pytest.raises(OSError, match=r"\[Errno \d+\]") as raised:
                operation()
            assert raised.value.errno == errno.EBADF
        assert dev.pending()  # so a loop that checks pending() reads and sees EBADF
        dev.close()


def test_the_simulator_going_away_reads_as_ebadf(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, server):
        dev = SimulatedDevice(path)
        server().close()
        with pytest.raises(OSError, match=r"\[Errno \d+\]") as raised:
            dev.read(7432)
        assert raised.value.errno == errno.EBADF
        dev.close()


def test_a_write_larger_than_the_protocol_allows_is_enomem(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, _):
        dev = SimulatedDevice(path)
        with pytest.raises(OSError, match=r"\[Errno \d+\]") as raised:
            dev.write(bytes(wire.MAX_PAYLOAD + 1))
        assert raised.value.errno == errno.ENOMEM
        dev.close()


def test_a_result_where_a_message_belongs_is_a_protocol_error(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, server):
        dev = SimulatedDevice(path)
        server().send(wire.encode_result(0))
        with pytest.raises(OSError, match="unexpected datagram tag 0x52") as raised:
            dev.read(100)
        assert raised.value.errno == errno.EPROTO
        dev.close()


def test_an_open_answer_during_a_write_is_a_protocol_error(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, server):
        dev = SimulatedDevice(path)
        server().send(wire.encode_open(0))  # queued before the write waits for its result
        with pytest.raises(OSError, match="unexpected datagram tag 0x4f") as raised:
            dev.write(b"x")
        assert raised.value.errno == errno.EPROTO
        dev.close()


def test_a_hangup_while_a_write_waits_is_ebadf_from_then_on(tmp_path: Path) -> None:
    with fake_kernel(tmp_path) as (path, server):
        dev = SimulatedDevice(path)
        server().send(wire.TAG_HANGUP)
        with pytest.raises(OSError, match=r"\[Errno \d+\]") as raised:
            dev.write(b"x")
        assert raised.value.errno == errno.EBADF
        assert dev.pending()
        with pytest.raises(OSError, match=r"\[Errno \d+\]") as again:
            dev.read(100)
        assert again.value.errno == errno.EBADF
        dev.close()
