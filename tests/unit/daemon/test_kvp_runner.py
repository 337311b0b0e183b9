"""KvpRunner answers in the request's buffer exactly as the generic ChannelRunner answers.

Both runners serve the same host session on a real simulator, in process,
over real pool files: every reply the host sees, the pool files and the log
lines must be identical. The session mixes good requests, malformed ones, a
handler that fails (OperationFailed, a bug) and a reply that cannot be
encoded. Then what only the fast path decides: a message that is not a whole
``hv_kvp_msg``, and a device without ``read_view``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hvguest.abi.constants import KVP_OP_REGISTER1, HvStatus, KvpOp, KvpPool
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.config import parse_config
from hvguest.daemon.kvp import build_kvp_service
from hvguest.daemon.kvp_runner import KVP_READ_SIZE, KvpRunner
from hvguest.daemon.loop import ChannelRunner, EventLoop
from hvguest.errors import OperationFailed
from hvguest.protocol.channel import KernelVersion, State
from hvguest.protocol.kvp import KvpCodec, KvpGet, KvpReply, KvpRequest, KvpValue
from hvguest.testing import kvp_kernel as kernel
from hvguest.testing.host import FakeHost
from hvguest.testing.simulator import Simulator

STEP = 10.0
KvpChannelRunner = ChannelRunner[KvpRequest, KvpReply]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _failing(handle: Callable[[KvpRequest], KvpReply]) -> Callable[[KvpRequest], KvpReply]:
    """The service, but three keys fail: refused, a bug, and a reply the codec refuses."""

    def wrapped(request: KvpRequest) -> KvpReply:
        if isinstance(request, KvpGet):
            if request.key == b"refused":
                raise OperationFailed(HvStatus.INVALIDARG, "refused on purpose")
            if request.key == b"bug":
                raise RuntimeError("a bug on purpose")
            if request.key == b"unencodable":
                return KvpValue(b"a\0b")  # a NUL: the codec refuses it
        return handle(request)

    return wrapped


def _runner(kind: str, device: Path, handle: Callable[[KvpRequest], KvpReply]) -> KvpChannelRunner:
    log = logging.getLogger(f"test.kvp_runner.{kind}")
    if kind == "fast":
        return KvpRunner(device, handle, log=log, on_version=lambda _v: None)
    return ChannelRunner(
        name="kvp",
        device_path=device,
        codec=KvpCodec(),
        handle=handle,
        read_size=KVP_READ_SIZE,
        log=log,
    )


def _session(host: FakeHost) -> list[tuple[int, str, str]]:
    """What the host sees for a mix of good, malformed and failing requests."""
    guest, external = KvpPool.GUEST, KvpPool.EXTERNAL
    unknown = bytearray(KVP_MSG_SIZE)
    unknown[0], unknown[1] = 9, guest
    replies = [
        host.kvp_set(external, "Grüße", "wert ✓"),
        host.kvp_set(external, "plain", "x" * 1000),
        host.kvp_get(external, "Grüße"),
        host.kvp_get(external, "plain"),
        host.kvp_get(external, "absent"),
        host.kvp_enumerate(external, 0),
        host.kvp_enumerate(external, 1),
        host.kvp_enumerate(external, 2),
        host.kvp_enumerate(KvpPool.AUTO, 1),
        host.kvp_get(9, "k"),
        host.kvp_enumerate(7, 0),
        host.kvp_enumerate(guest, 2**31 + 5),
        host.kvp_get(guest, "k", key_size=0),
        host.kvp_get(guest, "refused"),
        host.kvp_get(guest, "bug"),
        host.kvp_get(guest, "unencodable"),
        host.kvp_delete(external, "plain"),
        host.kvp_delete(external, "plain"),
        host.kvp_set(guest, "still", "serving"),
    ]
    raw = host.kvp_transact(unknown)
    return [(r.status, r.key, r.value) for r in replies] + [(raw.status, "", "")]


def _serve(
    tmp_path: Path, kind: str
) -> tuple[list[tuple[int, str, str]], dict[str, bytes], list[str]]:
    state = tmp_path / kind / "state"
    with Simulator(tmp_path / kind / "dev") as sim:
        config = parse_config(
            f'[kvp]\nip_injection = false\nstate_dir = "{state}"\ndevice = "{sim.device_path()}"\n'
        )
        service, release, watchers = build_kvp_service(config)
        runner = _runner(kind, config.kvp.device, _failing(service.handle))
        lines = _Lines()
        runner.log.addHandler(lines)
        runner.log.propagate = False
        loop = EventLoop([runner], watchers=watchers)
        thread = threading.Thread(target=loop.run, name=f"kvp-{kind}", daemon=True)
        thread.start()
        try:
            sim.wait_registered(STEP)
            sim.host.kvp_negotiate(timeout=STEP)
            seen = _session(sim.host)
        finally:
            loop.stop()
            thread.join(STEP)
            release()
        assert not thread.is_alive()
    pools = {path.name: path.read_bytes() for path in sorted(state.iterdir())}
    return seen, pools, [line for line in lines.lines if "registered" not in line]


def test_both_runners_answer_alike(tmp_path: Path) -> None:
    fast = _serve(tmp_path, "fast")
    generic = _serve(tmp_path, "generic")
    assert fast[0] == generic[0]
    assert fast[1] == generic[1]
    assert fast[2] == generic[2]
    statuses = [status for status, _key, _value in fast[0]]
    assert statuses == [
        HvStatus.S_OK,  # SET Grüße
        HvStatus.S_OK,  # SET plain
        HvStatus.S_OK,  # GET Grüße
        HvStatus.S_OK,  # GET plain
        HvStatus.S_CONT,  # GET absent
        HvStatus.S_OK,  # ENUMERATE 0
        HvStatus.S_OK,  # ENUMERATE 1
        HvStatus.S_CONT,  # ENUMERATE past the end
        HvStatus.S_OK,  # AUTO pool
        HvStatus.E_FAIL,  # pool 9
        HvStatus.E_FAIL,  # pool 7
        HvStatus.S_CONT,  # index negative as a C int
        HvStatus.S_CONT,  # key_size 0: the kernel hands over an empty key, not found
        HvStatus.INVALIDARG,  # OperationFailed
        HvStatus.E_FAIL,  # a bug in the handler
        HvStatus.E_FAIL,  # a reply the codec refuses
        HvStatus.S_OK,  # DELETE
        HvStatus.S_CONT,  # DELETE again
        HvStatus.S_OK,  # still serving
        HvStatus.ERROR_NOT_SUPPORTED,  # unknown operation
    ]
    assert fast[0][2][2] == "wert ✓"
    assert fast[0][5][1:] == ("Grüße", "wert ✓")
    assert any("cannot encode the reply" in line for line in fast[2])
    assert any("a bug on purpose" in line or "unexpected error" in line for line in fast[2])


# -- what only the fast path decides, on a scripted device ------------------------


class _ScriptedDevice:
    """Messages to read, replies written; ``with_view`` decides whether read_view exists."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = list(messages)
        self.written: list[bytes] = []

    def fileno(self) -> int:
        return -1

    def pending(self) -> bool:
        return bool(self.messages)

    def read(self, size: int) -> bytes:
        message = self.messages.pop(0)
        assert len(message) <= size
        return message

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.written.append(bytes(data))
        return len(data)

    def close(self) -> None:
        pass


class _ViewDevice(_ScriptedDevice):
    def read_view(self, size: int) -> memoryview:
        return memoryview(bytearray(self.read(size)))


def _registered(runner: KvpChannelRunner, device: _ScriptedDevice) -> None:
    runner.device = device
    runner.channel.registration()
    version = bytearray(KVP_MSG_SIZE)
    version[kernel.OPERATION] = KVP_OP_REGISTER1
    version[kernel.REGISTER_VERSION : kernel.REGISTER_VERSION + 3] = b"3.1"
    device.messages.insert(0, bytes(version))
    runner.service_one(0.0)
    assert runner.channel.state is State.IDLE


@pytest.fixture
def fast_runner() -> KvpRunner:
    values = {b"key": b"value"}

    def handle(request: KvpRequest) -> KvpReply:
        assert isinstance(request, KvpGet)
        return KvpValue(values[request.key])

    versions: list[KernelVersion] = []
    return KvpRunner(
        Path("/nonexistent"), handle, log=logging.getLogger("test"), on_version=versions.append
    )


@pytest.mark.parametrize("device_class", [_ScriptedDevice, _ViewDevice], ids=["read", "read_view"])
def test_a_get_is_answered_in_place_with_either_read(
    fast_runner: KvpRunner, device_class: type[_ScriptedDevice]
) -> None:
    # A GET as the kernel hands it to the daemon: the key already UTF-8.
    message = bytearray(KVP_MSG_SIZE)
    message[kernel.OPERATION], message[kernel.POOL] = KvpOp.GET, KvpPool.GUEST
    message[kernel.GET_KEY_SIZE : kernel.GET_KEY_SIZE + 4] = (4).to_bytes(4, "little")
    message[kernel.GET_KEY : kernel.GET_KEY + 3] = b"key"
    device = device_class([bytes(message)])
    _registered(fast_runner, device)
    fast_runner.service_one(0.0)
    (reply,) = device.written
    assert reply == KvpCodec().encode_reply(bytes(message), KvpValue(b"value"))
    assert fast_runner.channel.state is State.IDLE


def test_a_message_that_is_not_a_whole_kvp_msg_takes_the_generic_path(
    fast_runner: KvpRunner,
) -> None:
    device = _ViewDevice([bytes(100)])
    _registered(fast_runner, device)
    fast_runner.service_one(0.0)
    (reply,) = device.written
    # The generic codec answers with a zeroed whole message carrying E_FAIL.
    expected = bytearray(KVP_MSG_SIZE)
    expected[kernel.ERROR : kernel.ERROR + 4] = int(HvStatus.E_FAIL).to_bytes(4, "little")
    assert reply == bytes(expected)
    assert fast_runner.channel.state is State.IDLE
