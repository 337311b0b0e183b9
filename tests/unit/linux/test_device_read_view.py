"""Device.read_view: the copy-free read of the FCOPY fast path, with read()'s semantics.

A message that arrives while a write waits for its result is held in the
buffer it was received into (the buffers swap); read_view hands it out
without a copy, read() as bytes, in arrival order with anything stashed
behind it, and a too-small read leaves it queued (EINVAL) as the kernel does.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hvguest.linux.device import CharDevice, SimulatedDevice
from hvguest.testing import wire

STEP = 10.0


@contextmanager
def _connected(tmp_path: Path) -> Iterator[tuple[SimulatedDevice, socket.socket]]:
    """A SimulatedDevice and the server end of its connection, both closed on exit."""
    path = tmp_path / "hv_fcopy"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(str(path))
        listener.listen(1)
        accepted: list[socket.socket] = []

        def accept() -> None:
            conn, _ = listener.accept()
            conn.send(wire.encode_open(0))
            accepted.append(conn)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        dev = SimulatedDevice(path)
        thread.join(STEP)
        conn = accepted[0]
        conn.settimeout(STEP)
        try:
            yield dev, conn
        finally:
            dev.close()
            conn.close()


def _write_meeting(
    dev: SimulatedDevice, conn: socket.socket, *messages: bytes, result: int = 1
) -> None:
    """dev.write(b"r") while the server queues ``messages`` before the write's result."""
    for message in messages:
        conn.send(wire.TAG_MESSAGE + message)
    conn.send(wire.encode_result(result))
    assert dev.write(b"r") == result
    assert conn.recv(16) == wire.TAG_WRITE + b"r"


def test_a_message_met_during_a_write_is_read_without_a_copy(tmp_path: Path) -> None:
    with _connected(tmp_path) as (dev, conn):
        _write_meeting(dev, conn, b"WRITE 1")
        assert dev.pending()
        view = dev.read_view(100)
        assert isinstance(view, memoryview)
        assert bytes(view) == b"WRITE 1"
        assert conn.recv(16) == wire.TAG_CONSUMED
        assert not dev.pending()


def test_held_then_stashed_messages_come_in_arrival_order(tmp_path: Path) -> None:
    with _connected(tmp_path) as (dev, conn):
        _write_meeting(dev, conn, b"first", b"second")
        assert bytes(dev.read_view(100)) == b"first"
        assert dev.read(100) == b"second"
        assert [conn.recv(16), conn.recv(16)] == [wire.TAG_CONSUMED] * 2
        _write_meeting(dev, conn, b"third")
        assert dev.read(100) == b"third"  # read() copies a held message
        assert conn.recv(16) == wire.TAG_CONSUMED
        assert not dev.pending()
        # Then straight from the socket: a view too, and the next write still works.
        conn.send(wire.TAG_MESSAGE + b"fourth")
        assert bytes(dev.read_view(100)) == b"fourth"
        assert conn.recv(16) == wire.TAG_CONSUMED
        _write_meeting(dev, conn)


def test_a_too_small_read_view_keeps_the_message(tmp_path: Path) -> None:
    with _connected(tmp_path) as (dev, conn):
        _write_meeting(dev, conn, b"0123456789")
        with pytest.raises(OSError, match=r"\[Errno \d+\]") as raised:
            dev.read_view(4)
        assert raised.value.errno == errno.EINVAL
        assert dev.pending()
        assert bytes(dev.read_view(10)) == b"0123456789"
        # Only the successful read told the kernel.
        assert conn.recv(16) == wire.TAG_CONSUMED
        conn.send(wire.TAG_MESSAGE + b"abcdef")
        with pytest.raises(OSError, match=r"\[Errno \d+\]"):
            dev.read_view(3)
        assert dev.read(6) == b"abcdef"


def test_a_hangup_is_ebadf_for_read_view_too(tmp_path: Path) -> None:
    with _connected(tmp_path) as (dev, conn):
        _write_meeting(dev, conn, b"held")
        conn.send(wire.TAG_HANGUP)
        assert bytes(dev.read_view(100)) == b"held"
        with pytest.raises(OSError, match=r"\[Errno \d+\]") as raised:
            dev.read_view(100)
        assert raised.value.errno == errno.EBADF


def test_char_device_read_view_reads_into_its_own_buffer() -> None:
    dev = CharDevice(Path("/dev/zero"))
    try:
        first = dev.read_view(8)
        assert bytes(first) == bytes(8)
        assert len(dev.read_view(16384)) == 16384
        assert len(dev.read_view(3)) == 3
    finally:
        dev.close()
