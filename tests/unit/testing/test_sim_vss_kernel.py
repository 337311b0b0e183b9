"""VssKernel (drivers/hv/hv_snapshot.c) driven by hand with raw bytes: every rule of section 2.6."""

from __future__ import annotations

import errno
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sim_kernel_harness import DriverHarness

from hvguest.abi.constants import (
    VSS_FREEZE_TIMEOUT,
    VSS_HBU_NO_AUTO_RECOVERY,
    VSS_OP_REGISTER,
    VSS_OP_REGISTER1,
    HvStatus,
    VssOp,
)
from hvguest.abi.structs import VSS_MSG_SIZE
from hvguest.linux.device import open_device
from hvguest.testing.host import HostAbortedError, HostPacketReply
from hvguest.testing.simulator import ControlClient, ControlServer, Simulator
from hvguest.testing.transport import (
    ICMSGTYPE_KVPEXCHANGE,
    ICMSGTYPE_NEGOTIATE,
    ICMSGTYPE_VSS,
    UtilState,
)
from hvguest.testing.vss_host import (
    decode_vss_reply,
    vss_freeze,
    vss_hot_backup,
    vss_message,
    vss_negotiate,
    vss_raw,
    vss_request,
    vss_thaw,
)
from hvguest.testing.vss_kernel import VssKernel

E_FAIL = HvStatus.E_FAIL
WAIT = 10.0


class VssHarness(DriverHarness):
    """One VSS driver with a hand-driven daemon side and host side (no threads, no clock)."""

    kernel: VssKernel

    def __init__(self) -> None:
        super().__init__(
            "vss",
            ICMSGTYPE_VSS,
            lambda transport, channel, timers: VssKernel(
                transport, channel, timers, reply_timeout=30.0, freeze_timeout=900.0
            ),
        )

    def register(self) -> bytes:
        assert self.open() == 0
        assert self.write(registration()) == VSS_MSG_SIZE
        return self.read()

    def reply(self, error: int) -> int:
        return self.write(struct.pack("<i", error) + bytes(VSS_MSG_SIZE - 4))

    def host_op(self, op: int, flags: int = 0) -> int:
        return self.host_send(vss_message(op, flags=flags))

    def status(self, request_id: int) -> int:
        answer = self.answer(request_id)
        assert answer is not None, f"request {request_id} not answered"
        return answer.status


def state(harness: VssHarness) -> UtilState:
    """The kernel's state, read fresh (mypy would otherwise narrow it between steps)."""
    return harness.kernel.state


def registration(op: int = VSS_OP_REGISTER1) -> bytes:
    # The reference daemon leaves the rest of the struct uninitialised: junk is fine.
    return bytes([op]) + b"\xaa" * (VSS_MSG_SIZE - 1)


@pytest.fixture
def h() -> VssHarness:
    harness = VssHarness()
    assert harness.register() == struct.pack("<I", 129)
    assert state(harness) == UtilState.READY
    return harness


# --- registration -----------------------------------------------------------


def test_register1_is_answered_with_a_bare_u32_129_and_ready_only_after_the_read() -> None:
    h = VssHarness()
    h.open()
    assert h.write(registration()) == VSS_MSG_SIZE
    assert h.transport.queued == struct.pack("<I", VSS_OP_REGISTER1)
    assert state(h) == UtilState.DEVICE_INIT
    assert h.write(registration()) == -errno.EFAULT  # answer still unread
    h.read()
    assert state(h) == UtilState.READY
    assert h.kernel.daemon_version == VSS_OP_REGISTER1


def test_legacy_register_gets_no_answer_and_never_becomes_ready() -> None:
    h = VssHarness()
    h.open()
    assert h.write(registration(VSS_OP_REGISTER)) == VSS_MSG_SIZE
    assert h.transport.queued is None
    assert state(h) == UtilState.DEVICE_INIT
    request = h.host_op(VssOp.FREEZE)
    assert h.status(request) == E_FAIL  # sharp edge S4


@pytest.mark.parametrize("size", [0, 4, 11, 13, 7432])
def test_writes_that_are_not_exactly_12_bytes_are_einval(size: int) -> None:
    h = VssHarness()
    h.open()
    data = bytearray(size)
    if size:
        data[0] = VSS_OP_REGISTER1
    assert h.write(bytes(data)) == -errno.EINVAL
    assert h.transport.queued is None


def test_registration_again_while_ready_is_answered_again(h: VssHarness) -> None:
    assert h.write(registration()) == VSS_MSG_SIZE
    assert h.read() == struct.pack("<I", 129)
    assert state(h) == UtilState.READY


def test_registration_inside_a_transaction_is_einval(h: VssHarness) -> None:
    h.host_op(VssOp.THAW)
    h.read()
    assert h.write(registration()) == -errno.EINVAL
    # A reply whose error's low byte is 129 looks like a registration, too.
    assert h.reply(129) == -errno.EINVAL
    assert state(h) == UtilState.USERSPACE_REQ


def test_a_reply_when_nothing_was_asked_is_spurious(h: VssHarness) -> None:
    assert h.reply(0) == -errno.EINVAL
    assert state(h) == UtilState.READY


# --- kernel-answered operations -----------------------------------------------


@pytest.mark.parametrize(
    "op", [VssOp.CREATE, VssOp.DELETE, VssOp.BU_COMPLETE, VssOp.AUTO_RECOVER, 8, 200]
)
def test_ops_answered_by_the_kernel_never_reach_the_daemon(h: VssHarness, op: int) -> None:
    request = h.host_op(op, flags=0x1234)
    answer = h.answer(request)
    assert answer is not None
    assert answer.status == HvStatus.S_OK
    assert answer.payload[:VSS_MSG_SIZE] == bytes(vss_message(op, flags=0x1234))  # unchanged
    assert h.transport.queued is None
    assert state(h) == UtilState.READY


def test_get_dm_info_is_answered_with_flags_zero_even_without_a_daemon() -> None:
    h = VssHarness()
    request = h.host_op(VssOp.GET_DM_INFO, flags=0xFFFF)
    reply = decode_vss_reply(h.answer(request) or HostPacketReply(-1, b""))
    assert (reply.status, reply.operation, reply.flags) == (0, VssOp.GET_DM_INFO, 0)


def test_icmsg_response_flags_are_set_on_answers(h: VssHarness) -> None:
    request = h.host_op(VssOp.CREATE)
    packet = h.channel.answers[request]
    assert packet[8 + 17] == 1 | 4  # ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE


def test_negotiation_picks_framework_3_0_and_vss_5_0() -> None:
    h = VssHarness()  # answered without any daemon
    payload = bytearray(24)
    struct.pack_into("<HH", payload, 0, 2, 2)
    struct.pack_into("<HHHHHHHH", payload, 8, 1, 0, 3, 0, 4, 0, 5, 0)
    answer = h.answer(h.host_send(payload, ICMSGTYPE_NEGOTIATE))
    assert answer is not None
    assert struct.unpack_from("<HHxxxxHHHH", answer.payload, 0) == (1, 1, 3, 0, 5, 0)


def test_short_and_foreign_packets_are_dropped_without_an_answer(h: VssHarness) -> None:
    short = h.host_send(bytes(VSS_MSG_SIZE - 1))
    foreign = h.host_send(vss_message(VssOp.CREATE), ICMSGTYPE_KVPEXCHANGE)
    h._next_request += 1
    h.channel.ring.append((bytes(20), h._next_request))
    h.kernel.on_channel_callback()
    assert h.answer(short) is None
    assert h.answer(foreign) is None
    assert h.answer(h._next_request) is None
    assert state(h) == UtilState.READY


def test_packets_beyond_the_8192_byte_buffer_are_not_answered(h: VssHarness) -> None:
    big = h.host_send(vss_message(VssOp.AUTO_RECOVER, size=12_500))
    fits = h.host_send(vss_message(VssOp.FREEZE, size=6260))  # FREEZE with LUN data
    assert h.answer(big) is None
    assert h.read() == bytes([VssOp.FREEZE]) + bytes(11)
    assert h.reply(0) == VSS_MSG_SIZE
    assert h.status(fits) == 0


# --- forwarded operations -------------------------------------------------------


@pytest.mark.parametrize("op", [VssOp.FREEZE, VssOp.THAW, VssOp.HOT_BACKUP])
def test_daemon_ops_carry_only_the_operation_byte(h: VssHarness, op: int) -> None:
    request = h.host_op(op, flags=0xFFFFFFFF)
    assert state(h) == UtilState.USERSPACE_REQ
    assert h.read() == bytes([op]) + bytes(11)
    assert h.answer(request) is None
    assert h.reply(0) == VSS_MSG_SIZE
    assert h.status(request) == 0
    assert state(h) == UtilState.READY


def test_host_status_is_the_daemon_error_int(h: VssHarness) -> None:
    request = h.host_op(VssOp.FREEZE)
    h.read()
    assert h.reply(E_FAIL - (1 << 32)) == VSS_MSG_SIZE  # HV_E_FAIL as a C int
    assert h.status(request) == E_FAIL


@pytest.mark.parametrize("op", [VssOp.FREEZE, VssOp.THAW, VssOp.HOT_BACKUP])
def test_without_a_daemon_daemon_ops_fail_at_once(op: int) -> None:
    h = VssHarness()
    request = h.host_op(op)
    assert h.status(request) == E_FAIL
    assert h.timers.armed == []
    # ... and the next packet is still read.
    assert h.status(h.host_op(VssOp.CREATE)) == 0


def test_registered_but_answer_unread_still_fails(h: VssHarness) -> None:
    h.transport.release()
    h.open()
    h.write(registration())
    assert h.status(h.host_op(VssOp.THAW)) == E_FAIL


def test_hot_backup_success_never_sets_the_no_auto_recovery_flag(h: VssHarness) -> None:
    request = h.host_op(VssOp.HOT_BACKUP)
    h.read()
    h.reply(0)
    answer = h.answer(request)
    assert answer is not None
    assert decode_vss_reply(answer).flags == 0  # sharp edge S5


def test_a_reply_whose_first_byte_is_2_sets_the_flag_on_any_op(h: VssHarness) -> None:
    request = h.host_op(VssOp.THAW)
    h.read()
    assert h.reply(2) == VSS_MSG_SIZE
    answer = h.answer(request)
    assert answer is not None
    reply = decode_vss_reply(answer)
    assert (reply.status, reply.flags) == (2, VSS_HBU_NO_AUTO_RECOVERY)


def test_packets_wait_in_the_ring_during_a_transaction(h: VssHarness) -> None:
    first = h.host_op(VssOp.FREEZE)
    second = h.host_op(VssOp.CREATE)
    assert h.answer(second) is None
    assert h.read()[0] == VssOp.FREEZE
    h.reply(0)
    assert h.status(first) == 0
    assert h.status(second) == 0  # picked up by the re-poll


def test_a_full_queue_fails_the_request_and_returns_to_ready(h: VssHarness) -> None:
    h.transport.send(b"stale")  # the daemon has not read it
    request = h.host_op(VssOp.THAW)
    assert h.status(request) == E_FAIL
    assert state(h) == UtilState.READY
    assert h.timers.armed[0].pending is False


# --- timeouts -----------------------------------------------------------------


def test_freeze_waits_900_s_and_the_others_30_s(h: VssHarness) -> None:
    for op in (VssOp.FREEZE, VssOp.THAW, VssOp.HOT_BACKUP):
        h.host_op(op)
        h.read()
        h.reply(0)
    assert h.timers.delays == [VSS_FREEZE_TIMEOUT, 30.0, 30.0]


def test_timeout_fails_the_host_and_the_late_reply_is_einval(h: VssHarness) -> None:
    request = h.host_op(VssOp.FREEZE)
    h.read()
    assert h.timers.fire() == 1
    assert h.status(request) == E_FAIL
    assert state(h) == UtilState.READY
    assert h.reply(0) == -errno.EINVAL


def test_a_late_reply_pairs_with_the_next_request(h: VssHarness) -> None:
    first = h.host_op(VssOp.FREEZE)
    h.read()
    h.timers.fire()
    second = h.host_op(VssOp.THAW)
    assert h.reply(E_FAIL - (1 << 32)) == VSS_MSG_SIZE  # meant for the FREEZE (S2)
    assert h.status(first) == E_FAIL
    assert h.status(second) == E_FAIL


# --- close, hibernation, rescind ------------------------------------------------


def test_close_fails_the_waiting_request_and_drops_the_queued_message(h: VssHarness) -> None:
    request = h.host_op(VssOp.FREEZE)
    h.transport.release()
    assert h.status(request) == E_FAIL
    assert state(h) == UtilState.DEVICE_INIT
    assert h.transport.queued is None
    assert h.status(h.host_op(VssOp.THAW)) == E_FAIL  # no daemon now


def test_pre_suspend_queues_a_fake_thaw_and_the_reply_gets_einval(h: VssHarness) -> None:
    request = h.host_op(VssOp.FREEZE)
    h.read()
    h.kernel.pre_suspend()
    assert state(h) == UtilState.READY
    assert h.timers.armed[0].pending is False
    assert h.answer(request) is None  # the host learns from the channel closing
    assert h.read() == bytes([VssOp.THAW]) + bytes(11)
    assert h.reply(0) == -errno.EINVAL


def test_pre_suspend_fake_thaw_is_dropped_when_the_queue_is_full(h: VssHarness) -> None:
    h.host_op(VssOp.FREEZE)  # queued, unread
    h.kernel.pre_suspend()
    assert h.read() == bytes([VssOp.FREEZE]) + bytes(11)
    assert h.transport.queued is None


def test_pre_suspend_without_a_daemon_makes_the_state_ready() -> None:
    h = VssHarness()
    h.kernel.pre_suspend()
    assert state(h) == UtilState.READY
    assert h.status(h.host_op(VssOp.FREEZE)) == E_FAIL  # nobody to send it to


def test_deinit_makes_the_service_dying_and_stops_reading(h: VssHarness) -> None:
    h.kernel.deinit()
    assert state(h) == UtilState.DEVICE_DYING
    request = h.host_op(VssOp.CREATE)
    assert h.answer(request) is None


# --- through the Simulator (threads, sockets, real timers) ------------------------


def test_simulator_serves_vss_end_to_end(tmp_path: Path) -> None:
    with Simulator(tmp_path, services=("vss",), reply_timeout=5.0) as sim:
        assert vss_freeze(sim.host, timeout=WAIT).status == E_FAIL  # nobody registered
        device = open_device(sim.device_path("vss"))
        try:
            device.write(registration())
            assert device.read(12) == struct.pack("<I", 129)
            sim.wait_registered(WAIT, "vss")
            results: dict[str, object] = {}

            def host() -> None:
                results["freeze"] = vss_freeze(sim.host, timeout=WAIT)
                results["hot"] = vss_hot_backup(sim.host, timeout=WAIT)
                results["thaw"] = vss_thaw(sim.host, timeout=WAIT)

            thread = threading.Thread(target=host)
            thread.start()
            for op in (VssOp.FREEZE, VssOp.HOT_BACKUP, VssOp.THAW):
                assert device.read(12) == bytes([op]) + bytes(11)
                device.write(bytes(12))
            thread.join(WAIT)
            assert not thread.is_alive()
            assert all(getattr(r, "status", None) == 0 for r in results.values())
            assert vss_request(sim.host, VssOp.GET_DM_INFO, flags=7, timeout=WAIT).flags == 0
            assert vss_raw(sim.host, vss_message(VssOp.CREATE, size=100), timeout=WAIT) == 0
            negotiation = vss_negotiate(sim.host, timeout=WAIT)
            assert (negotiation.framework, negotiation.service) == ((3, 0), (5, 0))
        finally:
            device.close()


def test_simulator_freeze_timeout_is_configurable(tmp_path: Path) -> None:
    with Simulator(tmp_path, services=("vss",), reply_timeout=30.0, vss_freeze_timeout=0.2) as sim:
        device = open_device(sim.device_path("vss"))
        try:
            device.write(registration())
            device.read(12)
            sim.wait_registered(WAIT, "vss")
            assert vss_freeze(sim.host, timeout=WAIT).status == E_FAIL  # timed out in 0.2 s
            assert device.read(12)[0] == VssOp.FREEZE
            with pytest.raises(OSError, match="Invalid argument") as late:
                device.write(bytes(12))
            assert late.value.errno == errno.EINVAL
        finally:
            device.close()


def test_simulator_suspend_aborts_the_host_and_sends_the_daemon_a_fake_thaw(
    tmp_path: Path,
) -> None:
    with Simulator(tmp_path, services=("vss",), reply_timeout=5.0) as sim:
        device = open_device(sim.device_path("vss"))
        try:
            device.write(registration())
            device.read(12)
            sim.wait_registered(WAIT, "vss")
            errors: list[BaseException] = []

            def host() -> None:
                try:
                    vss_freeze(sim.host, timeout=WAIT)
                except HostAbortedError as error:
                    errors.append(error)

            thread = threading.Thread(target=host)
            thread.start()
            assert device.read(12)[0] == VssOp.FREEZE
            # The read's "consumed" notice reaches the simulator asynchronously.
            sim.wait_until(lambda: not sim.message_queued("vss"), WAIT, "FREEZE consumed")
            sim.suspend("vss")
            thread.join(WAIT)
            assert len(errors) == 1
            assert device.read(12)[0] == VssOp.THAW
            with pytest.raises(OSError, match="Invalid argument") as rejected:
                device.write(bytes(12))
            assert rejected.value.errno == errno.EINVAL
        finally:
            device.close()


def test_control_client_drives_vss_ops(tmp_path: Path) -> None:
    with (
        Simulator(tmp_path, services=("vss",), reply_timeout=5.0) as sim,
        ControlServer(sim, tmp_path / "control") as control,
        ControlClient(control.path, timeout=WAIT) as client,
    ):
        for op in ("vss_freeze", "vss_thaw", "vss_hot_backup"):
            assert client.call(op, timeout=WAIT)["status"] == E_FAIL  # no daemon
        reply = client.call("vss_request", operation=int(VssOp.GET_DM_INFO), flags=3, timeout=WAIT)
        assert reply == {"status": 0, "operation": VssOp.GET_DM_INFO, "flags": 0}


def test_simulator_process_offers_vss_and_takes_vss_control_ops(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "hvguest.testing.simulator", "--dir", str(tmp_path)]
    command += ["--services", "vss", "--vss-freeze-timeout", "0.3"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        announced = dict(line.split(" ", 1) for line in iter(process.stdout.readline, "ready\n"))
        assert announced["vss"].strip() == str(tmp_path / "hv_vss")
        device = open_device(Path(announced["vss"].strip()))
        try:
            device.write(registration())
            device.read(12)
            with ControlClient(Path(announced["control"].strip()), timeout=WAIT) as client:
                client.call("wait_registered", timeout=WAIT, name="vss")
                # Nobody answers the FREEZE: the 0.3 s freeze timeout fails it.
                assert client.call("vss_freeze", timeout=WAIT)["status"] == E_FAIL
        finally:
            device.close()
    finally:
        process.terminate()
        process.wait(WAIT)
