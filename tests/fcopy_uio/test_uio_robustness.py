"""The UIO daemon under bad input and faults: it answers, recovers and keeps serving.

The reference hv_fcopy_uio_daemon exits on a short FCOPY packet, a full ring
or any I/O error, handles one packet per interrupt and ignores CANCEL (S19).
"""

from __future__ import annotations

import logging
import struct

import pytest

from fcopy_uio.conftest import RunningUioDaemon, StartUioDaemon, names
from hvguest.abi.constants import FCOPY_CLASS_GUID, HvStatus
from hvguest.testing.uio_sim import (
    header_message,
    negotiate_message,
    start_message,
    util_packet,
    write_message,
)

OK = int(HvStatus.S_OK)
E_FAIL = int(HvStatus.E_FAIL)

MALFORMED = {
    "fcopy header cut short": util_packet(7, header_message(2)[:12]),
    "unknown operation": util_packet(7, header_message(77)),
    "heartbeat message type": util_packet(1, bytes(64)),
    "shutdown message type": util_packet(3, bytes(64)),
    "start cut short": util_packet(7, start_message("/tmp", "f", file_size=1)[:600]),
    "write over 6144 bytes": util_packet(7, write_message(0, b"x", size=6145)),
    "write size beyond the packet": util_packet(7, write_message(0, b"x", size=6000)[:200]),
    "write header cut short": util_packet(7, write_message(0, b"x")[:44]),
    "lone surrogate in the name": util_packet(
        7, start_message("/tmp", "a\ud800b".encode("utf-16-le", "surrogatepass"), file_size=1)
    ),
    "negotiate without counts": util_packet(0, b"\x01"),
    "negotiate listing too many versions": util_packet(
        0, struct.pack("<HHI", 101, 1, 0) + bytes(408)
    ),
}


def copy_works(daemon: RunningUioDaemon, name: str = "proof.txt") -> bool:
    status = daemon.host.copy_bytes(b"still serving", str(daemon.target), name)
    return status == OK and (daemon.target / name).read_bytes() == b"still serving"


@pytest.mark.parametrize("packet", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_packet_is_answered_with_failure_and_serving_goes_on(
    start_uio_daemon: StartUioDaemon, packet: bytes
) -> None:
    with start_uio_daemon() as daemon:
        reply = daemon.host.transact_raw(packet)
        assert reply.status == E_FAIL
        assert reply.icflags == 5
        assert len(reply.payload) == (len(packet) + 7) // 8 * 8  # echoed, same length
        assert copy_works(daemon)
        assert daemon.sim.opens == 1  # no reconnect was needed


def test_malformed_packet_logs_one_line(
    start_uio_daemon: StartUioDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    with start_uio_daemon() as daemon:
        caplog.set_level(logging.WARNING, logger="hvguest.fcopy")
        daemon.host.transact_raw(MALFORMED["unknown operation"])
        lines = [r.getMessage() for r in caplog.records if r.name == "hvguest.fcopy"]
        assert len(lines) == 1
        assert "unknown FCOPY operation 77" in lines[0]


def test_reply_echoes_the_host_transaction_id(start_uio_daemon: StartUioDaemon) -> None:
    with start_uio_daemon() as daemon:
        reply = daemon.host.transact(7, header_message(2))
        assert reply.transaction_id != 0xFFFF_FFFF_FFFF_FFFF
        assert reply.status == E_FAIL  # COMPLETE without START


def test_packet_too_short_for_an_ic_header_gets_no_reply_and_serving_goes_on(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon() as daemon:
        daemon.host.send_unanswered(b"\x07" * 20)
        assert copy_works(daemon)


def test_every_queued_packet_is_answered_after_one_interrupt(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon() as daemon:
        negotiate = util_packet(0, negotiate_message(((3, 0),), ((1, 1),)))
        daemon.host.send_unanswered(negotiate, negotiate, negotiate)
        replies = daemon.host.collect_replies(3)
        assert [reply.status for reply in replies] == [OK, OK, OK]


def test_corrupt_ring_reopens_the_channel_and_abandons_the_open_copy(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon() as daemon:
        host = daemon.host
        assert host.fcopy_start(str(daemon.target), "torn.bin", file_size=10000) == OK
        assert host.fcopy_write(0, b"z" * 5000) == OK
        # descriptor with header length 0: the ring cannot be trusted any more
        host.inject_ring_bytes(struct.pack("<HHHHQ", 6, 0, 3, 0, 0) + bytes(16))
        daemon.sim.wait_until(lambda: daemon.sim.opens == 2, 10, "the daemon to reopen")
        daemon.ready()
        assert names(daemon.target) == []
        assert copy_works(daemon)


def test_channel_lost_mid_copy_is_reopened_and_the_partial_file_removed(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon() as daemon:
        host = daemon.host
        assert host.fcopy_start(str(daemon.target), "lost.bin", file_size=10000) == OK
        assert host.fcopy_write(0, b"q" * 6144) == OK
        daemon.sim.drop_connection()
        daemon.sim.wait_until(lambda: daemon.sim.opens == 2, 10, "the daemon to reopen")
        daemon.ready()
        assert names(daemon.target) == []
        assert copy_works(daemon)


def test_daemon_restart_mid_copy_leaves_nothing_and_the_new_one_serves(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon() as daemon:
        host = daemon.host
        assert host.fcopy_start(str(daemon.target), "restart.bin", file_size=10000) == OK
        assert host.fcopy_write(0, b"r" * 6144) == OK
        daemon.stop()
        daemon.sim.wait_closed(10)
        assert names(daemon.target) == []
        daemon.start()
        daemon.ready()
        assert copy_works(daemon)
        assert daemon.sim.opens == 2


def test_unbound_device_is_bound_by_the_daemon(start_uio_daemon: StartUioDaemon) -> None:
    with start_uio_daemon(bound=False) as daemon:
        assert daemon.sim.bind_requests == [f"new_id {FCOPY_CLASS_GUID}"]
        assert copy_works(daemon)


def test_missing_driver_is_loaded_then_bound_by_the_daemon(
    start_uio_daemon: StartUioDaemon,
) -> None:
    with start_uio_daemon(bound=False, driver_loaded=False) as daemon:
        assert daemon.sim.driver_dir.is_dir()
        assert copy_works(daemon)


def test_device_offered_after_start_is_picked_up(start_uio_daemon: StartUioDaemon) -> None:
    with start_uio_daemon(offered=False, wait=False) as daemon:
        assert not daemon.sim.channel_open()
        daemon.sim.offer()
        daemon.ready()
        assert copy_works(daemon)


def test_rescinded_device_is_waited_for_with_one_log_line_and_served_again(
    start_uio_daemon: StartUioDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hvguest.fcopy")
    with start_uio_daemon() as daemon:
        daemon.sim.rescind()

        def waits() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "waiting for the FCOPY" in r.getMessage()]

        daemon.sim.wait_until(lambda: len(waits()) >= 3, 30, "three reconnect attempts")
        assert [r.levelno for r in waits()].count(logging.WARNING) == 1
        daemon.sim.offer()
        daemon.ready()
        assert copy_works(daemon)


def test_full_reply_ring_reopens_the_channel_instead_of_exiting(
    start_uio_daemon: StartUioDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hvguest.fcopy")
    with start_uio_daemon() as daemon:
        heartbeat = util_packet(1, bytes(36))  # answered E_FAIL, reply as long as the request
        # 150 replies of 88 bytes fit the 16 KiB reply ring; another 150 do not, as
        # long as the host reads none of them.
        daemon.host.send_unanswered(*[heartbeat] * 150)
        daemon.sim.wait_until(lambda: daemon.sim.rx_readable() == 0, 10, "the first batch")
        daemon.host.send_unanswered(*[heartbeat] * 150)
        daemon.sim.wait_until(lambda: daemon.sim.opens == 2, 10, "the daemon to reopen")
        assert any("bytes free; reopening" in r.getMessage() for r in caplog.records)
        daemon.ready()
        assert copy_works(daemon)
