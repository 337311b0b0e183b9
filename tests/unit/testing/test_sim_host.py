"""The fake host's framing and helpers, and the control interface of the simulator."""

from __future__ import annotations

import errno
import struct
import threading
from pathlib import Path

import pytest
from sim_scripted_daemon import ScriptedDaemon

from hvguest.abi.constants import HvStatus, KvpOp, KvpPool
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.testing import kvp_kernel as kvp
from hvguest.testing.host import (
    HostAbortedError,
    HostPacketReply,
    VmbusChannel,
    build_packet,
    decode_kvp_reply,
    kvp_enumerate_message,
    kvp_get_message,
    kvp_set_message,
)
from hvguest.testing.simulator import ControlClient, ControlError, ControlServer, Simulator
from hvguest.testing.transport import (
    ICMSG_HDR,
    ICMSGTYPE_KVPEXCHANGE,
    KVP_RECV_BUFFER_SIZE,
)

STEP = 10.0


def test_a_packet_is_pipe_header_icmsg_header_then_the_message() -> None:
    message = kvp_enumerate_message(KvpPool.AUTO, 3)
    packet = build_packet(ICMSGTYPE_KVPEXCHANGE, message, transaction=0x1FF)
    assert len(packet) == ICMSG_HDR + KVP_MSG_SIZE
    header = struct.unpack_from("<IIHHHHHHIBB", packet)
    flags, msgsize, frame_major, frame_minor, msgtype, msg_major, msg_minor = header[:7]
    icmsgsize, status, transaction, icflags = header[7:]
    assert (frame_major, frame_minor, msgtype, msg_major, msg_minor) == (3, 0, 2, 4, 0)
    assert (icmsgsize, status, transaction, icflags) == (KVP_MSG_SIZE, 0, 0xFF, 3)
    assert (flags, msgsize) == (0, KVP_MSG_SIZE + 20)
    assert packet[ICMSG_HDR:] == message


def test_strings_go_out_as_utf16le_with_sizes_counting_the_terminator() -> None:
    message = kvp_set_message(KvpPool.GUEST, "Grüße", "\U0001f600")
    assert message[kvp.SET_KEY : kvp.SET_KEY + 12] == "Grüße\0".encode("utf-16-le")
    assert struct.unpack_from("<III", message, kvp.SET_VALUE_TYPE) == (1, 12, 6)
    raw = kvp_get_message(KvpPool.GUEST, b"\x00\xd8", key_size=99)  # raw units as given
    assert raw[kvp.GET_KEY : kvp.GET_KEY + 2] == b"\x00\xd8"
    assert struct.unpack_from("<I", raw, kvp.GET_KEY_SIZE) == (99,)


def test_fields_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="key is 514 bytes"):
        kvp_get_message(KvpPool.GUEST, "k" * 257)


def test_replies_decode_by_the_layout_of_their_operation() -> None:
    message = kvp_enumerate_message(KvpPool.GUEST, 5)
    key = "schlüssel".encode("utf-16-le")
    message[kvp.ENUM_KEY : kvp.ENUM_KEY + len(key)] = key
    reply = decode_kvp_reply(HostPacketReply(HvStatus.S_OK, bytes(message)))
    assert (reply.operation, reply.pool, reply.index, reply.key) == (
        KvpOp.ENUMERATE,
        1,
        5,
        "schlüssel",
    )
    assert reply.ok


def test_a_closed_channel_refuses_requests() -> None:
    channel = VmbusChannel("kvp", threading.RLock())
    channel.close()
    with pytest.raises(HostAbortedError):
        channel.transact(b"x" * 40, STEP)


def test_packets_larger_than_the_receive_buffer_are_refused() -> None:
    channel = VmbusChannel("kvp", threading.RLock())
    with pytest.raises(ValueError, match="receive buffer"):
        channel.transact(bytes(KVP_RECV_BUFFER_SIZE + 1), STEP)


def test_the_control_socket_drives_the_host_and_the_simulator(tmp_path: Path) -> None:
    with (
        Simulator(tmp_path / "dev", host_timeout=STEP) as sim,
        ControlServer(sim, tmp_path / "control") as server,
        ControlClient(server.path) as control,
    ):
        assert control.call("state") == "DEVICE_INIT"
        daemon = ScriptedDaemon(sim.kvp_device_path)
        daemon.register()
        control.call("wait_registered", timeout=STEP)
        daemon.serve_in_thread({})
        reply = control.call("kvp_set", pool=1, key="k", value="v")
        assert reply["status"] == 0
        assert "payload" not in reply
        listing = control.call("kvp_enumerate_all", pool=1)
        assert [(r["key"], r["value"]) for r in listing] == [("k", "v")]
        with pytest.raises(ControlError) as unknown:
            control.call("reboot")
        assert unknown.value.kind == "ValueError"
        with pytest.raises(ControlError) as bad_args:
            control.call("kvp_get", pool=1)
        assert bad_args.value.kind == "TypeError"
        control.call("inject_write_error", name="kvp", errno_value=errno.EIO)
        with pytest.raises(ControlError) as lost:
            control.call("kvp_get", pool=1, key="k", timeout=0.2)
        assert lost.value.kind == "HostTimeoutError"  # the failed reply never reached the kernel
        assert control.call("state") == "USERSPACE_REQ"
        daemon.close()
        assert isinstance(daemon.error, OSError)
        assert daemon.error.errno == errno.EIO
