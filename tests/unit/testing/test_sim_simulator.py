"""The whole simulator through its socket: a scripted daemon on one side, the host on the other."""

from __future__ import annotations

import errno
import select
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sim_scripted_daemon import KNOWN_IP, KNOWN_MAC, ScriptedDaemon, build_reply, nul, registration

from hvguest.abi.constants import REG_U32, HvStatus, KvpOp, KvpPool
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.linux.device import SimulatedDevice, open_device
from hvguest.testing import kvp_kernel as kvp
from hvguest.testing.host import HostAbortedError, HostKvpReply, HostTimeoutError
from hvguest.testing.simulator import Simulator
from hvguest.testing.transport import TransportMode, UtilState

STEP = 10.0


@contextmanager
def simulator(tmp_path: Path, reply_timeout: float = STEP) -> Iterator[Simulator]:
    with Simulator(tmp_path / "dev", reply_timeout=reply_timeout, host_timeout=STEP) as sim:
        yield sim


@contextmanager
def host_calls() -> Iterator[ThreadPoolExecutor]:
    """Host helpers block, so tests that play the daemon run them in a thread."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def registered(sim: Simulator) -> ScriptedDaemon:
    daemon = ScriptedDaemon(sim.kvp_device_path)
    daemon.register()
    sim.wait_registered(STEP)
    return daemon


def oserror(call: object) -> int:
    assert callable(call)
    with pytest.raises(OSError, match=r"\[Errno \d+\]") as raised:
        call()
    assert raised.value.errno is not None
    return raised.value.errno


def test_a_second_opener_gets_ebusy(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        first = SimulatedDevice(sim.kvp_device_path)
        assert oserror(lambda: SimulatedDevice(sim.kvp_device_path)) == errno.EBUSY
        first.close()
        sim.wait_until(lambda: sim.transport_mode() == TransportMode.INIT, STEP)
        SimulatedDevice(sim.kvp_device_path).close()


def test_registration_answer_and_ready_after_it_is_read(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        dev = open_device(sim.kvp_device_path)
        assert dev.write(registration()) == KVP_MSG_SIZE
        sim.wait_until(sim.message_queued, STEP)
        assert sim.state("kvp") == UtilState.DEVICE_INIT
        answer = dev.read(KVP_MSG_SIZE)
        assert (answer[0], answer[4:8]) == (100, b"3.1\0")
        sim.wait_registered(STEP)
        assert sim.kvp_state == UtilState.READY
        dev.close()


def test_a_second_registration_while_the_answer_is_unread_is_efault(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        dev = open_device(sim.kvp_device_path)
        dev.write(registration())
        assert oserror(lambda: dev.write(registration())) == errno.EFAULT
        dev.close()


def test_short_writes_are_einval_and_a_spurious_reply_too(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        dev = open_device(sim.kvp_device_path)
        assert oserror(lambda: dev.write(registration(size=KVP_MSG_SIZE - 2))) == errno.EINVAL
        assert dev.write(registration(size=KVP_MSG_SIZE + 8)) == KVP_MSG_SIZE + 8
        dev.read(KVP_MSG_SIZE)
        sim.wait_registered(STEP)
        assert oserror(lambda: dev.write(bytes(KVP_MSG_SIZE))) == errno.EINVAL
        dev.close()


def test_a_short_read_keeps_the_message_for_the_next_read(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim, host_calls() as calls:
        daemon = registered(sim)
        reply = calls.submit(sim.host.kvp_enumerate, KvpPool.GUEST, 4)
        assert oserror(lambda: daemon.device.read(KVP_MSG_SIZE - 1)) == errno.EINVAL
        request = daemon.read_request()
        assert request.u32(kvp.ENUM_INDEX) == 4
        daemon.answer(request, status=HvStatus.S_CONT)
        assert reply.result(STEP).status == HvStatus.S_CONT
        daemon.close()


def test_host_packets_wait_for_a_daemon_and_are_delivered_after_registration(
    tmp_path: Path,
) -> None:
    with simulator(tmp_path) as sim, host_calls() as calls:
        reply = calls.submit(sim.host.kvp_get, KvpPool.EXTERNAL, "early")
        sim.wait_until(lambda: sim.pending_host_packets() == 1, STEP)
        daemon = registered(sim)
        request = daemon.read_request()
        assert (request.operation, request.key) == (KvpOp.GET, "early")
        daemon.answer(request, fields={kvp.ENUM_VALUE: nul("bird")})
        assert reply.result(STEP).value == "bird"
        daemon.close()


def test_reply_timeout_fails_the_host_and_the_late_reply_is_einval(tmp_path: Path) -> None:
    with simulator(tmp_path, reply_timeout=0.2) as sim, host_calls() as calls:
        daemon = registered(sim)
        reply = calls.submit(sim.host.kvp_enumerate, KvpPool.GUEST, 0)
        request = daemon.read_request()
        assert reply.result(STEP).status == HvStatus.E_FAIL
        assert sim.kvp_state == UtilState.READY
        assert oserror(lambda: daemon.answer(request)) == errno.EINVAL
        daemon.close()


def test_after_a_timeout_a_stale_reply_answers_the_next_request_s2(tmp_path: Path) -> None:
    with simulator(tmp_path, reply_timeout=0.2) as sim, host_calls() as calls:
        daemon = registered(sim)
        first = calls.submit(sim.host.kvp_enumerate, KvpPool.GUEST, 0)
        stale = daemon.read_request()
        sim.wait_until(lambda: not sim.message_queued(), STEP, "the read to reach the kernel")
        assert first.result(STEP).status == HvStatus.E_FAIL
        second = calls.submit(sim.host.kvp_get, KvpPool.GUEST, "wanted")
        sim.wait_until(lambda: sim.kvp_state == UtilState.USERSPACE_REQ, STEP)
        daemon.answer(stale, fields={kvp.ENUM_KEY: nul("k0"), kvp.ENUM_VALUE: nul("stale")})
        mispaired = second.result(STEP)
        assert (mispaired.status, mispaired.key, mispaired.value) == (0, "wanted", "stale")
        daemon.close()


def test_close_with_a_request_pending_fails_the_host(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim, host_calls() as calls:
        daemon = registered(sim)
        reply = calls.submit(sim.host.kvp_set, KvpPool.GUEST, "k", "v")
        daemon.read_request()
        daemon.close()
        assert reply.result(STEP).status == HvStatus.E_FAIL
        sim.wait_until(lambda: sim.kvp_state == UtilState.DEVICE_INIT, STEP)


def test_an_injected_write_error_fails_one_write(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim, host_calls() as calls:
        daemon = registered(sim)
        reply = calls.submit(sim.host.kvp_set, KvpPool.GUEST, "k", "v")
        request = daemon.read_request()
        sim.inject_write_error("kvp", errno.EIO)
        assert oserror(lambda: daemon.answer(request)) == errno.EIO
        assert not reply.done()  # the kernel never saw that write
        daemon.answer(request)
        assert reply.result(STEP).status == HvStatus.S_OK
        daemon.close()


def test_destroy_hangs_up_the_opener_and_reoffers_after_its_close(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        daemon = registered(sim)
        sim.destroy("kvp")
        assert sim.transport_mode() == TransportMode.DESTROY
        fd = daemon.device.fileno()
        readable, _, _ = select.select([fd], [], [], STEP)
        assert readable == [fd]
        assert oserror(lambda: daemon.device.read(KVP_MSG_SIZE)) == errno.EBADF
        assert oserror(lambda: daemon.device.write(registration())) == errno.EBADF
        assert daemon.device.pending()
        assert oserror(lambda: SimulatedDevice(sim.kvp_device_path)) == errno.EBADF
        daemon.close()
        sim.wait_until(lambda: sim.transport_mode() == TransportMode.INIT, STEP, "the re-offer")
        again = registered(sim)
        again.serve_in_thread({})
        assert sim.host.kvp_set(KvpPool.GUEST, "after", "rescind").ok
        again.close()


def test_destroy_aborts_the_host_request_in_flight(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim, host_calls() as calls:
        daemon = registered(sim)
        reply = calls.submit(sim.host.kvp_enumerate, KvpPool.GUEST, 0)
        daemon.read_request()
        sim.destroy("kvp")
        daemon.close()
        with pytest.raises(HostAbortedError):
            reply.result(STEP)


def test_destroy_without_reoffer_removes_the_node(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        sim.destroy("kvp", reoffer=False)
        assert not sim.kvp_device_path.exists()
        with pytest.raises(FileNotFoundError):
            open_device(sim.kvp_device_path)
        with pytest.raises(HostAbortedError):
            sim.host.kvp_enumerate(KvpPool.GUEST, 0)


def test_suspend_loses_the_host_request_and_the_daemon_reply_is_einval(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim, host_calls() as calls:
        daemon = registered(sim)
        reply: Future[HostKvpReply] = calls.submit(sim.host.kvp_enumerate, KvpPool.GUEST, 0)
        request = daemon.read_request()
        sim.wait_until(lambda: not sim.message_queued(), STEP, "the read to reach the kernel")
        sim.suspend("kvp")
        with pytest.raises(HostAbortedError):
            reply.result(STEP)
        assert sim.kvp_state == UtilState.READY
        assert oserror(lambda: daemon.answer(request)) == errno.EINVAL
        daemon.serve_in_thread({(KvpPool.GUEST, "k"): "v"})
        assert sim.host.kvp_enumerate(KvpPool.GUEST, 0).key == "k"
        daemon.close()


def test_wait_registered_gives_up_with_timeout_error(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim, pytest.raises(TimeoutError):
        sim.wait_registered(0.05)


def test_a_host_call_nobody_answers_raises_host_timeout(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim, pytest.raises(HostTimeoutError, match="no answer"):
        sim.host.kvp_get(KvpPool.GUEST, "k", timeout=0.05)


def test_a_full_session_through_every_host_helper(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        daemon = registered(sim)
        store: dict[tuple[int, str], str] = {}
        daemon.serve_in_thread(store)
        host = sim.host
        assert host.kvp_set(KvpPool.EXTERNAL, "Grüße", "wert ✓").ok
        assert host.kvp_set_u32(KvpPool.EXTERNAL, "n32", 7).ok
        assert host.kvp_set_u64(KvpPool.EXTERNAL, "n64", 2**40).ok
        assert host.kvp_set(KvpPool.EXTERNAL, "typed", 9, REG_U32).ok
        assert store == {
            (0, "Grüße"): "wert ✓",
            (0, "n32"): "7",
            (0, "n64"): str(2**40),
            (0, "typed"): "9",
        }
        listing = [(r.key, r.value) for r in host.kvp_enumerate_all(KvpPool.EXTERNAL)]
        assert listing == [("Grüße", "wert ✓"), ("n32", "7"), ("n64", str(2**40)), ("typed", "9")]
        got = host.kvp_get(KvpPool.EXTERNAL, "Grüße")
        assert (got.status, got.value, got.value_size) == (0, "wert ✓", 14)
        assert host.kvp_delete(KvpPool.EXTERNAL, "n32").ok
        assert host.kvp_delete(KvpPool.EXTERNAL, "n32").status == HvStatus.S_CONT
        info = host.kvp_get_ip_info(KNOWN_MAC)
        assert (info.status, info.ip_addr, info.dns_addr) == (
            0,
            KNOWN_IP["ip_addr"],
            KNOWN_IP["dns_addr"],
        )
        assert info.dhcp_enabled == 1
        assert host.kvp_get_ip_info("00:00:00:00:00:00").status == HvStatus.E_FAIL
        assert host.kvp_set_ip_info("{guid}", ip_addr="192.0.2.9").status == HvStatus.S_OK
        daemon.close()


def test_negotiation_waits_for_the_daemon_then_succeeds_s3(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim, host_calls() as calls:
        negotiation = calls.submit(sim.host.kvp_negotiate)
        sim.wait_until(lambda: sim.pending_host_packets() == 1, STEP)
        daemon = registered(sim)
        answer = negotiation.result(STEP)
        assert (answer.framework_count, answer.service_count) == (1, 1)
        assert (answer.framework, answer.service) == ((3, 0), (4, 0))
        daemon.close()


def test_a_reply_built_from_the_request_without_fields_is_an_empty_enumerate(
    tmp_path: Path,
) -> None:
    with simulator(tmp_path) as sim, host_calls() as calls:
        daemon = registered(sim)
        reply = calls.submit(sim.host.kvp_enumerate, KvpPool.AUTO, 0)
        request = daemon.read_request()
        daemon.reply(build_reply(request.raw))
        answer = reply.result(STEP)
        assert (answer.status, answer.key, answer.value) == (0, "", "")
        assert (answer.key_size, answer.value_size) == (2, 2)
        daemon.close()


def test_a_service_without_a_simulated_driver_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no simulated kernel service"):
        Simulator(tmp_path, services=("kvp", "balloon"))
