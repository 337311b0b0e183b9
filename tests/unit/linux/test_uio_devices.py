"""hvguest.linux.uio: the open device, real (on a stand-in character device) and simulated."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from hvguest.linux import uio
from hvguest.linux.uio import FcopyUioNode, SimulatedUio, UioFile, open_uio
from hvguest.testing import uio_sim
from hvguest.testing.uio_sim import UioSimulator

RING_SIZE = 20480


def test_simulator_wire_tags_match_the_adapter_copy() -> None:
    assert (
        uio_sim.TAG_OPEN[0],
        len(uio_sim.TAG_OPEN) + 4,
        uio_sim.DRIVER,
    ) == (uio.SIM_TAG_OPEN, uio.SIM_OPEN_SIZE, uio.UIO_DRIVER)


def test_character_device_gets_the_real_adapter_with_both_rings_mapped() -> None:
    # /dev/zero stands in for /dev/uioN: a character device that can be opened
    # O_RDWR, mmap'ed MAP_SHARED, read and written 4 bytes at a time.
    node = FcopyUioNode(Path("/"), Path("/dev/zero"), Path("/dev/null"), RING_SIZE)
    channel = open_uio(node)
    try:
        assert isinstance(channel, UioFile)
        assert channel.tx.data_size == channel.rx.data_size == RING_SIZE - 4096
        channel.tx.write_packet(b"to the host")
        packet = channel.tx.read_packet(bytearray(RING_SIZE))
        assert packet is not None
        assert bytes(packet.payload[:11]) == b"to the host"
        assert channel.rx.readable() == 0  # the second half is a separate ring
        assert channel.read_interrupt_count() == 0
        channel.enable_interrupts()
    finally:
        channel.close()
    channel.close()  # a second close does nothing


def test_node_that_is_neither_device_nor_socket_is_enodev(tmp_path: Path) -> None:
    plain = tmp_path / "uio0"
    plain.write_bytes(b"")
    with pytest.raises(OSError, match="neither") as raised:
        open_uio(FcopyUioNode(tmp_path, plain, plain, RING_SIZE))
    assert raised.value.errno == errno.ENODEV


def test_missing_node_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_uio(FcopyUioNode(tmp_path, tmp_path / "uio9", tmp_path / "ring", RING_SIZE))


def simulated_node(sim: UioSimulator) -> FcopyUioNode:
    return FcopyUioNode(sim.device_dir, sim.node, sim.ring_file, sim.ring_size)


def test_socket_gets_the_simulated_adapter_sharing_the_ring_file(tmp_path: Path) -> None:
    with UioSimulator(tmp_path) as sim:
        channel = open_uio(simulated_node(sim))
        try:
            assert isinstance(channel, SimulatedUio)
            sim.wait_open(5)
            assert sim.channel_open()
            sim.host.send_unanswered(b"from the host")
            packet = channel.rx.read_packet(bytearray(RING_SIZE))
            assert packet is not None
            assert bytes(packet.payload[:13]) == b"from the host"
            # the host interrupted (and masked) the guest; the count arrives on the socket
            assert sim.rx_interrupt_mask == 1
            assert channel.read_interrupt_count() == 1
            channel.enable_interrupts()
            assert sim.rx_interrupt_mask == 0  # unmasked before write returns
            sim.wait_until(lambda: sim.host_signals() == 1, 5, "the host to be signalled")
        finally:
            channel.close()
        sim.wait_closed(5)


def test_second_open_while_the_channel_is_held_is_ebusy(tmp_path: Path) -> None:
    with UioSimulator(tmp_path) as sim:
        first = open_uio(simulated_node(sim))
        try:
            with pytest.raises(OSError, match="busy") as raised:
                open_uio(simulated_node(sim))
            assert raised.value.errno == errno.EBUSY
        finally:
            first.close()


def test_channel_dropped_by_the_simulator_reads_as_eio(tmp_path: Path) -> None:
    with UioSimulator(tmp_path) as sim:
        channel = open_uio(simulated_node(sim))
        try:
            sim.wait_open(5)
            sim.drop_connection()
            with pytest.raises(OSError, match="closed") as raised:
                channel.read_interrupt_count()
            assert raised.value.errno == errno.EIO
        finally:
            channel.close()


def test_open_resets_rings_left_over_from_a_previous_open(tmp_path: Path) -> None:
    with UioSimulator(tmp_path) as sim:
        first = open_uio(simulated_node(sim))
        sim.wait_open(5)
        sim.host.send_unanswered(b"stale request")
        first.close()
        sim.wait_closed(5)
        second = open_uio(simulated_node(sim))
        try:
            assert second.rx.readable() == 0
            assert sim.opens == 2
        finally:
            second.close()
