"""The FQDN resolver thread: never blocks callers, retries, follows host name changes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hvguest.linux.osinfo import LinuxOsInfo

Record = tuple[object, object, object, str, object]
WAIT = 10.0  # seconds; only an upper bound for a thread to make progress


def eventually(predicate: Callable[[], bool]) -> bool:
    """Poll ``predicate`` until it holds or WAIT seconds pass."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


@dataclass
class ScriptedResolver:
    """getaddrinfo() answering from ``canonical``; names not in it fail like NXDOMAIN."""

    canonical: dict[str, str | BaseException] = field(default_factory=dict)
    calls: list[tuple[object, ...]] = field(default_factory=list)
    #: While clear, calls block (up to WAIT) as a hanging DNS server would.
    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def __call__(  # noqa: PLR0917 - socket.getaddrinfo()'s signature
        self, host: str, port: None, family: int, kind: int, proto: int, flags: int, /
    ) -> list[Record]:
        self.calls.append((host, port, family, kind, proto, flags))
        self.entered.set()
        self.gate.wait(WAIT)
        answer = self.canonical.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if isinstance(answer, BaseException):
            raise answer
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, answer, ("192.0.2.1", 0)),
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.1", 0)),
        ]

    def hosts(self) -> list[object]:
        return [call[0] for call in self.calls]


@dataclass
class Hostname:
    value: str = "vm"

    def __call__(self) -> str:
        return self.value


@pytest.fixture
def resolver() -> ScriptedResolver:
    return ScriptedResolver({"vm": "vm.example.com"})


@pytest.fixture
def hostname() -> Hostname:
    return Hostname()


@pytest.fixture
def make(
    tmp_path: Path, resolver: ScriptedResolver, hostname: Hostname
) -> Iterator[Callable[..., LinuxOsInfo]]:
    made: list[LinuxOsInfo] = []

    def build(
        *,
        refresh_interval: float = 3600.0,
        retry_initial: float = 0.001,
        retry_max: float = 0.01,
        hostname_poll: float = 3600.0,
    ) -> LinuxOsInfo:
        info = LinuxOsInfo(
            etc_root=tmp_path,
            resolve=resolver,
            hostname=hostname,
            refresh_interval=refresh_interval,
            retry_initial=retry_initial,
            retry_max=retry_max,
            hostname_poll=hostname_poll,
        )
        made.append(info)
        return info

    yield build
    resolver.gate.set()
    for info in made:
        info.close()


def test_fqdn_becomes_the_canonical_name(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver
) -> None:
    info = make()
    assert eventually(lambda: info.fqdn() == "vm.example.com")
    assert resolver.calls[0] == (
        "vm",
        None,
        socket.AF_INET,
        socket.SOCK_STREAM,
        0,
        socket.AI_CANONNAME,
    )


def test_fqdn_returns_the_host_name_while_resolution_hangs(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver
) -> None:
    resolver.gate.clear()
    info = make()
    assert resolver.entered.wait(WAIT)
    assert info.fqdn() == "vm"  # returns although getaddrinfo() is stuck
    resolver.gate.set()
    assert eventually(lambda: info.fqdn() == "vm.example.com")


def test_failures_give_the_plain_host_name_and_are_retried(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver
) -> None:
    resolver.canonical.clear()
    info = make()
    assert eventually(lambda: len(resolver.calls) >= 3)
    assert info.fqdn() == "vm"
    resolver.canonical["vm"] = "vm.corp.example"
    assert eventually(lambda: info.fqdn() == "vm.corp.example")
    assert set(resolver.hosts()) == {"vm"}


def test_backoff_doubles_up_to_the_maximum(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver
) -> None:
    # With a 1-hour ceiling and a first retry after 1 hour, a failing name is
    # tried exactly once: retries wait, they do not spin.
    resolver.canonical.clear()
    info = make(retry_initial=3600.0, retry_max=3600.0)
    assert resolver.entered.wait(WAIT)
    assert eventually(lambda: info.fqdn() == "vm")
    assert resolver.hosts() == ["vm"]


def test_host_name_change_is_returned_at_once_then_resolved(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver, hostname: Hostname
) -> None:
    resolver.canonical["db"] = "db.example.com"
    info = make()
    assert eventually(lambda: info.fqdn() == "vm.example.com")
    hostname.value = "db"
    # The resolver sleeps for an hour; fqdn() must not hand out the old name.
    assert info.fqdn() == "db"
    assert eventually(lambda: info.fqdn() == "db.example.com")
    assert resolver.hosts()[-1] == "db"


def test_host_name_change_is_noticed_by_the_thread_itself(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver, hostname: Hostname
) -> None:
    resolver.canonical["db"] = "db.example.com"
    make(hostname_poll=0.001)
    assert eventually(lambda: resolver.hosts() == ["vm"])
    hostname.value = "db"
    assert eventually(lambda: resolver.hosts() == ["vm", "db"])


def test_failure_after_success_keeps_the_last_good_answer(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver
) -> None:
    info = make(refresh_interval=0.001)
    assert eventually(lambda: info.fqdn() == "vm.example.com")
    resolver.canonical["vm"] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure")
    calls = len(resolver.calls)
    assert eventually(lambda: len(resolver.calls) >= calls + 3)
    assert info.fqdn() == "vm.example.com"


def test_periodic_refresh_picks_up_a_new_canonical_name(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver
) -> None:
    info = make(refresh_interval=0.001)
    assert eventually(lambda: info.fqdn() == "vm.example.com")
    resolver.canonical["vm"] = "vm.moved.example"
    assert eventually(lambda: info.fqdn() == "vm.moved.example")


def test_unexpected_resolver_exception_does_not_kill_the_thread(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver
) -> None:
    resolver.canonical["vm"] = ValueError("resolver bug")
    info = make()
    assert eventually(lambda: len(resolver.calls) >= 2)
    resolver.canonical["vm"] = "vm.example.com"
    assert eventually(lambda: info.fqdn() == "vm.example.com")


def test_empty_canonical_name_counts_as_failure(
    make: Callable[..., LinuxOsInfo], resolver: ScriptedResolver
) -> None:
    resolver.canonical["vm"] = ""
    info = make()
    assert eventually(lambda: len(resolver.calls) >= 2)
    assert info.fqdn() == "vm"


def test_close_stops_the_daemon_thread(make: Callable[..., LinuxOsInfo]) -> None:
    before = set(threading.enumerate())
    info = make()
    started = [t for t in set(threading.enumerate()) - before if t.name == "hvguest-fqdn"]
    assert len(started) == 1
    assert started[0].daemon
    info.close()
    assert not started[0].is_alive()


def test_real_resolver_canonicalises_localhost(tmp_path: Path) -> None:
    info = LinuxOsInfo(etc_root=tmp_path, hostname=lambda: "localhost")
    try:
        assert eventually(lambda: info.fqdn() == "localhost")
    finally:
        info.close()
