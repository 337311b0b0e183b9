"""The WRITE_TO_FILE fast path of FcopyCharRunner answers exactly like the generic runner.

Both runners serve the same request sequences on a real simulator, in
process, into real files; the statuses the host sees must be identical, and
so must what is left on disk. Then the cases only the fast path decides
(bounds, a missing START) and the ones it must hand to the generic path
(malformed WRITEs), and a failed reply write (the device is reopened and the
copy abandoned).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvguest.abi.constants import DATA_FRAGMENT, HvStatus
from hvguest.abi.structs import FCOPY_WRITE_SIZE
from hvguest.config import Config, parse_config
from hvguest.daemon.fcopy import build_fcopy_service
from hvguest.daemon.fcopy_char import FAST_PATH_BURST, FCOPY_READ_SIZE, FcopyCharRunner
from hvguest.daemon.loop import ChannelRunner, EventLoop
from hvguest.protocol.fcopy import FcopyCodec, decode_write_fragment
from hvguest.protocol.fcopy_messages import FcopyComplete, FcopyRequest, FcopyStart, FcopyWrite
from hvguest.services.fcopy import FcopyService
from hvguest.testing.fcopy_host import (
    fcopy_cancel,
    fcopy_complete,
    fcopy_raw,
    fcopy_start,
    fcopy_write,
    header_message,
    stream_writes,
    write_message,
)
from hvguest.testing.host import FakeHost
from hvguest.testing.simulator import Simulator

from .helpers import entries

STEP: float = 10.0

FcopyRunner = ChannelRunner[FcopyRequest, HvStatus]
RunnerFactory = Callable[[Config, FcopyService], FcopyRunner]


def _generic_runner(config: Config, service: FcopyService) -> FcopyRunner:
    """The plain ChannelRunner the fast path must agree with."""
    return ChannelRunner(
        name="fcopy",
        device_path=config.fcopy.device,
        codec=FcopyCodec(),
        handle=service.handle,
        read_size=FCOPY_READ_SIZE,
        log=logging.getLogger("hvguest.fcopy"),
        on_reset=service.reset,
    )


class _Served:
    """A simulator and an in-process event loop serving one runner in a thread."""

    def __init__(self, sim: Simulator, runner: FcopyRunner, loop: EventLoop) -> None:
        self.sim = sim
        self.host: FakeHost = sim.host
        self.runner = runner
        self.loop = loop


def _serve(tmp_path: Path, factory: RunnerFactory) -> Iterator[_Served]:
    (tmp_path / "run").mkdir(exist_ok=True)
    with Simulator(tmp_path / "dev", services=("fcopy",)) as sim:
        config = parse_config(
            f'[paths]\nrun = "{tmp_path / "run"}"\nstate = "{tmp_path / "state"}"\n'
            f'[fcopy]\ndevice = "{sim.device_path("fcopy")}"\nflavour = "char"\n'
        )
        service = build_fcopy_service(config)
        runner = factory(config, service)
        loop = EventLoop([runner])
        thread = threading.Thread(target=loop.run, name="fcopy-loop", daemon=True)
        thread.start()
        try:
            sim.wait_registered(STEP, "fcopy")
            yield _Served(sim, runner, loop)
        finally:
            loop.stop()
            thread.join(STEP)
        assert not thread.is_alive()


@pytest.fixture(params=["fast", "generic"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Served]:
    factory: RunnerFactory = FcopyCharRunner if request.param == "fast" else _generic_runner
    yield from _serve(tmp_path, factory)


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[_Served]:
    yield from _serve(tmp_path, FcopyCharRunner)


def _scenario(host: FakeHost, dest: Path) -> list[int]:
    """Every status the host sees over a mix of good and bad requests."""
    payload = bytes(range(256)) * 48  # two fragments
    first, second = payload[:DATA_FRAGMENT], payload[DATA_FRAGMENT:]
    oversized = write_message(0, first, size=DATA_FRAGMENT + 1)
    return [
        fcopy_write(host, 0, first, timeout=STEP),  # no copy open
        fcopy_start(host, str(dest), "a.bin", file_size=len(payload), timeout=STEP),
        fcopy_write(host, 0, first, timeout=STEP),
        fcopy_raw(host, bytes(oversized), timeout=STEP),  # size > 6144: malformed
        fcopy_raw(host, bytes(header_message(9)), timeout=STEP),  # unknown operation
        fcopy_write(host, DATA_FRAGMENT, second, timeout=STEP),
        fcopy_complete(host, timeout=STEP),
        fcopy_start(host, str(dest), "b.bin", file_size=10, timeout=STEP),
        fcopy_write(host, 8, b"past the end", timeout=STEP),  # drops the copy
        fcopy_write(host, 0, b"0123456789", timeout=STEP),  # nothing open any more
        fcopy_complete(host, timeout=STEP),
        fcopy_cancel(host, timeout=STEP),
    ]


def test_fast_and_generic_runners_answer_identically(served: _Served, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    statuses = _scenario(served.host, dest)
    ok, fail = HvStatus.S_OK, HvStatus.E_FAIL
    assert statuses == [fail, ok, ok, fail, fail, ok, ok, ok, fail, fail, fail, ok]
    assert entries(dest) == ["a.bin"]
    assert (dest / "a.bin").read_bytes() == bytes(range(256)) * 48


def test_a_stream_of_fragments_arrives_byte_exact(fast: _Served, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    pattern = bytes((i * 13) & 0xFF for i in range(4 * DATA_FRAGMENT))
    size = 40 * DATA_FRAGMENT - 100  # a short last fragment too
    host = fast.host
    generic = fast.runner.handle
    handled: list[str] = []

    def recording(request: FcopyRequest) -> HvStatus:
        handled.append(type(request).__name__)
        status: HvStatus = generic(request)
        return status

    fast.runner.handle = recording
    assert fcopy_start(host, str(dest), "s.bin", file_size=size, timeout=STEP) == 0
    assert stream_writes(host, pattern, total=size, timeout=STEP) == 0
    assert fcopy_complete(host, timeout=STEP) == 0
    expected = (pattern * 10)[:size]
    assert (dest / "s.bin").read_bytes() == expected
    # Every WRITE took the fast path; only START and COMPLETE went the generic way.
    assert handled == ["FcopyStart", "FcopyComplete"]


def test_malformed_writes_take_the_generic_path_and_are_logged(
    fast: _Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    oversized = write_message(0, b"x", size=DATA_FRAGMENT + 1)
    with caplog.at_level(logging.WARNING, logger="hvguest.fcopy"):
        assert fcopy_raw(fast.host, bytes(oversized), timeout=STEP) == HvStatus.E_FAIL
    assert "malformed message (6196 bytes)" in caplog.text
    assert "exceeds 6144" in caplog.text


def test_a_failed_reply_write_reopens_and_abandons_the_copy(
    served: _Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    host, sim = served.host, served.sim
    assert fcopy_start(host, str(dest), "f.bin", file_size=2 * DATA_FRAGMENT, timeout=STEP) == 0
    assert entries(dest) != []  # the temporary file
    sim.inject_write_error("fcopy", errno.EINVAL)
    with caplog.at_level(logging.WARNING, logger="hvguest.fcopy"):
        # The kernel never sees the reply; the daemon's close fails the transaction.
        assert fcopy_write(host, 0, b"\x01" * DATA_FRAGMENT, timeout=STEP) == HvStatus.E_FAIL
        deadline = time.monotonic() + STEP
        while not (sim.is_registered("fcopy") and entries(dest) == []):
            assert time.monotonic() < deadline, "no reopen, or the temp file stayed"
            time.sleep(0.01)
    assert "write failed: EINVAL" in caplog.text
    # The daemon serves the next copy from a clean state.
    assert fcopy_write(host, 0, b"late", timeout=STEP) == HvStatus.E_FAIL


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (bytes(write_message(5, b"abc")), (5, b"abc")),
        (bytes(write_message(0, b"")), (0, b"")),
        (bytes(write_message(0, b"a"))[:-1], None),  # short
        (bytes(write_message(0, b"a")) + b"\0", None),  # long
        (b"\x00" + bytes(write_message(0, b"a"))[1:], None),  # START's operation number
    ],
)
def test_decode_write_fragment(message: bytes, expected: tuple[int, bytes] | None) -> None:
    assert len(bytes(write_message(0, b""))) == FCOPY_WRITE_SIZE
    decoded = decode_write_fragment(message)
    if expected is None:
        assert decoded is None
    else:
        assert decoded is not None
        assert (decoded[0], bytes(decoded[1])) == expected


class _ScriptedDevice:
    """A device with ``messages`` already queued: what the burst loop sees mid-copy."""

    def __init__(self, messages: list[bytes]) -> None:
        self.queued = list(messages)
        self.replies: list[int] = []

    def fileno(self) -> int:
        return -1

    def pending(self) -> bool:
        return bool(self.queued)

    def read(self, size: int) -> bytes:
        return self.queued.pop(0)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.replies.append(int.from_bytes(data, "little"))
        return len(data)

    def close(self) -> None:
        self.queued.clear()


def _registered_runner(tmp_path: Path) -> tuple[FcopyCharRunner, FcopyService]:
    (tmp_path / "run").mkdir(exist_ok=True)
    config = parse_config(
        f'[paths]\nrun = "{tmp_path / "run"}"\nstate = "{tmp_path / "state"}"\n'
        f'[fcopy]\ndevice = "{tmp_path / "hv_fcopy"}"\nflavour = "char"\n'
    )
    service = build_fcopy_service(config)
    runner = FcopyCharRunner(config, service)
    runner.channel.registration()
    runner.channel.receive((1).to_bytes(4, "little"))
    return runner, service


def test_a_burst_of_queued_writes_stops_at_the_first_other_message(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    runner, service = _registered_runner(tmp_path)
    assert service.handle(FcopyStart("f.bin", str(dest), 0, 3)) == HvStatus.S_OK
    device = _ScriptedDevice(
        [
            bytes(write_message(0, b"a")),
            bytes(write_message(1, b"b")),
            bytes(header_message(2)),  # COMPLETE: too early, one byte missing
            bytes(write_message(2, b"c")),
        ]
    )
    runner.device = device
    runner.service_one(0.0)
    # Two WRITEs, then COMPLETE answered by the generic path; the last WRITE waits.
    assert device.replies == [0, 0, HvStatus.E_FAIL]
    assert len(device.queued) == 1
    assert entries(dest) == []  # the failed COMPLETE dropped the copy


def test_a_burst_is_bounded_so_the_event_loop_sees_signals(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    runner, service = _registered_runner(tmp_path)
    total = FAST_PATH_BURST + 10
    assert service.handle(FcopyStart("g.bin", str(dest), 0, total)) == HvStatus.S_OK
    device = _ScriptedDevice([bytes(write_message(i, b"x")) for i in range(total)])
    runner.device = device
    runner.service_one(0.0)
    assert device.replies == [0] * FAST_PATH_BURST
    runner.service_one(0.0)
    assert device.replies == [0] * total
    assert service.handle(FcopyComplete()) == HvStatus.S_OK
    assert (dest / "g.bin").read_bytes() == b"x" * total


def test_an_unexpected_error_in_a_write_is_answered_like_the_generic_path(
    served: _Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(offset: int, data: bytes | memoryview) -> HvStatus:
        raise RuntimeError(f"a bug in the writer ({len(data)} bytes at {offset})")

    runner = served.runner
    generic = runner.handle

    def broken_writes(request: FcopyRequest) -> HvStatus:
        if isinstance(request, FcopyWrite):
            return broken(request.offset, request.data)
        status: HvStatus = generic(request)
        return status

    if isinstance(runner, FcopyCharRunner):
        runner._write_fragment = broken  # the fast path's own hook
    else:
        runner.handle = broken_writes
    with caplog.at_level(logging.ERROR, logger="hvguest.fcopy"):
        assert fcopy_write(served.host, 0, b"x", timeout=STEP) == HvStatus.E_FAIL
    assert "a bug in the writer" in caplog.text
    # The daemon lives on and still answers.
    assert fcopy_cancel(served.host, timeout=STEP) == HvStatus.S_OK
