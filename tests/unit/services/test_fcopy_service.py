"""FcopyService decisions over the in-memory FakeFileSink."""

from __future__ import annotations

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.protocol.fcopy_messages import (
    CREATE_PATH,
    OVER_WRITE,
    FcopyCancel,
    FcopyComplete,
    FcopyStart,
    FcopyWrite,
)
from hvguest.services.fcopy import (
    CopyAbandoned,
    CopyFinished,
    CopyRefused,
    DestinationPolicy,
    FcopyEvent,
    FcopyService,
    LeftoverRemoved,
)
from hvguest.testing.fakes.fcopy import FakeFileSink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def events() -> list[FcopyEvent]:
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(sink: FakeFileSink, events: list[FcopyEvent], clock: Clock) -> FcopyService:
    return FcopyService(sink, clock=clock, report=events.append)


def start(
    name: str = "a.txt", path: str = "/srv/in", *, flags: int = 0, size: int = 5
) -> FcopyStart:
    return FcopyStart(name, path, flags, size)


def test_a_copy_appears_only_on_complete(service: FcopyService, sink: FakeFileSink) -> None:
    assert service.handle(start(size=10)) is HvStatus.S_OK
    assert service.handle(FcopyWrite(0, b"hello")) is HvStatus.S_OK
    assert service.handle(FcopyWrite(5, memoryview(b"world"))) is HvStatus.S_OK
    assert "/srv/in/a.txt" not in sink.files
    assert list(sink.temps.values()) == [bytearray(b"helloworld")]
    assert service.handle(FcopyComplete()) is HvStatus.S_OK
    assert sink.files["/srv/in/a.txt"] == b"helloworld"
    assert sink.temps == {}
    assert not service.copy_open


def test_finished_copy_reports_size_and_throughput(
    service: FcopyService, events: list[FcopyEvent], clock: Clock
) -> None:
    service.handle(start(size=2_000_000))
    service.handle(FcopyWrite(0, bytes(2_000_000)))
    clock.now += 2.0
    service.handle(FcopyComplete())
    assert events == [CopyFinished("/srv/in/a.txt", 2_000_000, 2.0)]
    finished = events[0]
    assert isinstance(finished, CopyFinished)
    assert finished.megabytes_per_second == pytest.approx(1.0)


def test_existing_target_without_overwrite_is_already_exists(
    service: FcopyService, sink: FakeFileSink, events: list[FcopyEvent]
) -> None:
    sink.files["/srv/in/a.txt"] = b"old"
    assert service.handle(start()) is HvStatus.ERROR_ALREADY_EXISTS
    assert sink.files["/srv/in/a.txt"] == b"old"
    assert sink.temps == {}
    assert isinstance(events[0], CopyRefused)
    assert events[0].status is HvStatus.ERROR_ALREADY_EXISTS


def test_overwrite_keeps_the_old_file_until_complete(
    service: FcopyService, sink: FakeFileSink
) -> None:
    sink.files["/srv/in/a.txt"] = b"old"
    assert service.handle(start(flags=OVER_WRITE, size=3)) is HvStatus.S_OK
    service.handle(FcopyWrite(0, b"new"))
    assert sink.files["/srv/in/a.txt"] == b"old"
    assert service.handle(FcopyComplete()) is HvStatus.S_OK
    assert sink.files["/srv/in/a.txt"] == b"new"


def test_a_file_appearing_during_a_no_overwrite_copy_is_kept(
    service: FcopyService, sink: FakeFileSink
) -> None:
    service.handle(start(size=3))
    service.handle(FcopyWrite(0, b"new"))
    sink.appear_before_commit = b"theirs"
    assert service.handle(FcopyComplete()) is HvStatus.ERROR_ALREADY_EXISTS
    assert sink.files["/srv/in/a.txt"] == b"theirs"
    assert sink.temps == {}


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_overwrite_never_replaces_a_symlink_or_a_directory(
    service: FcopyService, sink: FakeFileSink, kind: str
) -> None:
    if kind == "symlink":
        sink.symlinks["/srv/in/a.txt"] = "/etc/passwd"
    else:
        sink.add_dir("/srv/in/a.txt")
    assert service.handle(start(flags=OVER_WRITE)) is HvStatus.E_FAIL
    assert sink.temps == {}


def test_missing_directory_without_create_path_fails(
    service: FcopyService, sink: FakeFileSink
) -> None:
    assert service.handle(start(path="/srv/in/new/deeper")) is HvStatus.E_FAIL
    assert "/srv/in/new" not in sink.dirs


def test_create_path_creates_every_missing_directory_including_the_last(
    service: FcopyService, sink: FakeFileSink
) -> None:
    assert service.handle(start(path="/srv/in/new/deeper", flags=CREATE_PATH)) is HvStatus.S_OK
    assert {"/srv/in/new", "/srv/in/new/deeper"} <= sink.dirs


def test_a_symlink_in_the_directory_chain_is_refused(
    service: FcopyService, sink: FakeFileSink
) -> None:
    sink.add_dir("/srv/real")
    sink.symlinks["/srv/in/link"] = "/srv/real"
    assert service.handle(start(path="/srv/in/link")) is HvStatus.E_FAIL
    assert sink.temps == {}


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("", "/srv/in"),
        (".", "/srv/in"),
        ("..", "/srv/in"),
        ("a/b", "/srv/in"),
        ("x" * 256, "/srv/in"),
        ("a", "relative/dir"),
        ("a", "/srv/in/../../etc"),
    ],
)
def test_names_and_paths_that_could_escape_are_refused(
    service: FcopyService, sink: FakeFileSink, name: str, path: str
) -> None:
    assert service.handle(start(name, path)) is HvStatus.E_FAIL
    assert sink.temps == {}
    assert not any(call.startswith("open_directory") for call in sink.calls)


def test_a_255_byte_name_is_accepted(service: FcopyService) -> None:
    assert service.handle(start("é" * 127 + "x")) is HvStatus.S_OK


def test_not_enough_free_space_at_start_is_disk_full(
    service: FcopyService, sink: FakeFileSink
) -> None:
    sink.free = 4
    assert service.handle(start(size=5)) is HvStatus.ERROR_DISK_FULL
    assert sink.temps == {}


def test_disk_full_during_a_write_leaves_nothing(service: FcopyService, sink: FakeFileSink) -> None:
    service.handle(start(size=10))
    sink.free = 3
    assert service.handle(FcopyWrite(0, b"hello")) is HvStatus.ERROR_DISK_FULL
    assert sink.temps == {}
    assert not service.copy_open
    # The copy is gone: the rest fails and the host's CANCEL is harmless.
    assert service.handle(FcopyWrite(5, b"world")) is HvStatus.E_FAIL
    assert service.handle(FcopyCancel()) is HvStatus.S_OK
    assert "/srv/in/a.txt" not in sink.files


def test_write_without_start_fails(service: FcopyService, events: list[FcopyEvent]) -> None:
    assert service.handle(FcopyWrite(0, b"x")) is HvStatus.E_FAIL
    assert isinstance(events[0], CopyRefused)


def test_write_past_the_announced_size_fails_and_drops_the_copy(
    service: FcopyService, sink: FakeFileSink
) -> None:
    service.handle(start(size=4))
    assert service.handle(FcopyWrite(0, b"hello")) is HvStatus.E_FAIL
    assert sink.temps == {}
    assert service.handle(FcopyComplete()) is HvStatus.E_FAIL
    assert "/srv/in/a.txt" not in sink.files


@pytest.mark.parametrize("sent", [b"", b"abc"])
def test_complete_with_a_short_byte_count_fails_and_keeps_nothing(
    service: FcopyService, sink: FakeFileSink, sent: bytes
) -> None:
    service.handle(start(size=5))
    service.handle(FcopyWrite(0, sent))
    assert service.handle(FcopyComplete()) is HvStatus.E_FAIL
    assert sink.temps == {}
    assert "/srv/in/a.txt" not in sink.files


def test_an_empty_file_is_a_valid_copy(service: FcopyService, sink: FakeFileSink) -> None:
    service.handle(start(size=0))
    assert service.handle(FcopyComplete()) is HvStatus.S_OK
    assert sink.files["/srv/in/a.txt"] == b""


def test_complete_without_start_fails(service: FcopyService) -> None:
    assert service.handle(FcopyComplete()) is HvStatus.E_FAIL


def test_cancel_removes_the_partial_copy(
    service: FcopyService, sink: FakeFileSink, events: list[FcopyEvent]
) -> None:
    service.handle(start())
    service.handle(FcopyWrite(0, b"he"))
    assert service.handle(FcopyCancel()) is HvStatus.S_OK
    assert sink.temps == {}
    assert "/srv/in/a.txt" not in sink.files
    assert events == [CopyAbandoned("/srv/in/a.txt", "the host cancelled the copy", 2)]


def test_cancel_after_complete_keeps_the_file(service: FcopyService, sink: FakeFileSink) -> None:
    # The kernel fakes a CANCEL on hibernation; a finished copy must survive it.
    service.handle(start(size=1))
    service.handle(FcopyWrite(0, b"x"))
    service.handle(FcopyComplete())
    assert service.handle(FcopyCancel()) is HvStatus.S_OK
    assert sink.files["/srv/in/a.txt"] == b"x"


def test_reset_abandons_the_open_copy(service: FcopyService, sink: FakeFileSink) -> None:
    service.handle(start())
    service.handle(FcopyWrite(0, b"he"))
    service.reset()
    assert sink.temps == {}
    assert not service.copy_open
    service.reset()  # idempotent


def test_a_new_start_abandons_the_open_copy(
    service: FcopyService, sink: FakeFileSink, events: list[FcopyEvent]
) -> None:
    service.handle(start("first.txt"))
    service.handle(FcopyWrite(0, b"he"))
    assert service.handle(start("second.txt", size=2)) is HvStatus.S_OK
    assert isinstance(events[0], CopyAbandoned)
    assert events[0].reason == "a new START arrived"
    service.handle(FcopyWrite(0, b"ok"))
    service.handle(FcopyComplete())
    assert sink.files == {"/srv/in/second.txt": b"ok"}
    assert sink.temps == {}


def test_a_failed_start_leaves_no_copy_open(service: FcopyService, sink: FakeFileSink) -> None:
    sink.files["/srv/in/a.txt"] = b"old"
    service.handle(start())
    assert not service.copy_open
    assert service.handle(FcopyWrite(0, b"x")) is HvStatus.E_FAIL


@pytest.mark.parametrize(
    ("allowed", "denied", "directory", "refused"),
    [
        ((), (), "/proc/self", True),
        ((), (), "/sys/kernel", True),
        ((), (), "/dev", True),
        ((), (), "/devices", False),
        ((), ("/srv/in",), "/srv/in/x", True),
        ((), ("/srv/in/",), "/srv/inbox", False),
        (("/srv",), (), "/srv/in", False),
        (("/srv",), (), "/srvx", True),
        (("/srv",), (), "/tmp", True),
        (("/",), (), "/tmp", False),
        (("/",), (), "/proc", True),
    ],
)
def test_destination_policy(
    allowed: tuple[str, ...], denied: tuple[str, ...], directory: str, refused: bool
) -> None:
    policy = DestinationPolicy.from_prefixes(allowed, denied)
    assert (policy.refusal(directory) is not None) is refused


def test_policy_is_applied_to_the_resolved_directory(
    sink: FakeFileSink, events: list[FcopyEvent], clock: Clock
) -> None:
    service = FcopyService(
        sink,
        policy=DestinationPolicy.from_prefixes(("/srv",), ()),
        clock=clock,
        report=events.append,
    )
    sink.add_dir("/etc")
    sink.symlinks["/srv/in/etc"] = "/etc"
    assert service.handle(start(path="/srv/in/etc")) is HvStatus.E_FAIL
    refused = events[0]
    assert isinstance(refused, CopyRefused)
    assert "outside the allowed" in refused.reason
    assert not any(call.startswith("open_directory") for call in sink.calls)


def test_proc_is_refused_before_anything_is_opened(
    service: FcopyService, sink: FakeFileSink, events: list[FcopyEvent]
) -> None:
    assert service.handle(start(path="/proc/sys/kernel")) is HvStatus.E_FAIL
    refused = events[0]
    assert isinstance(refused, CopyRefused)
    assert "denied directory /proc" in refused.reason
    assert not any(call.startswith("open_directory") for call in sink.calls)


def test_cleanup_leftovers_reports_each_removed_file(
    service: FcopyService, sink: FakeFileSink, events: list[FcopyEvent]
) -> None:
    sink.temps["/srv/in/.tmp9.a"] = bytearray(b"partial")
    sink.journal.append("/srv/in/.tmp9.a")
    service.cleanup_leftovers()
    assert sink.temps == {}
    assert events == [LeftoverRemoved("/srv/in/.tmp9.a")]
