"""EventLoop tickers: timed work (the VSS auto-thaw watchdog) runs between messages."""

from __future__ import annotations

import time

from hvguest.daemon.loop import EventLoop


class _StopAfter:
    """A ticker due ``delay`` seconds after creation that stops the loop when it fires."""

    def __init__(self, loop_ref: list[EventLoop], delay: float) -> None:
        self._loop_ref = loop_ref
        self._due: float | None = time.monotonic() + delay
        self.fired_at: list[float] = []

    def deadline(self) -> float | None:
        return self._due

    def tick(self, now: float) -> None:
        self.fired_at.append(now)
        self._due = None
        self._loop_ref[0].stop()


class _Never:
    def __init__(self) -> None:
        self.ticks = 0

    def deadline(self) -> float | None:
        return None

    def tick(self, now: float) -> None:
        self.ticks += 1


def test_a_due_ticker_fires_once_and_idle_tickers_never() -> None:
    loop_ref: list[EventLoop] = []
    due = _StopAfter(loop_ref, delay=0.05)
    idle = _Never()
    loop = EventLoop([], tickers=[idle, due])
    loop_ref.append(loop)
    loop.run()  # returns only because the ticker stopped it (pytest-timeout guards a hang)
    assert len(due.fired_at) == 1
    assert due.deadline() is None
    assert idle.ticks == 0


def test_the_select_timeout_follows_the_nearest_deadline() -> None:
    loop_ref: list[EventLoop] = []
    due = _StopAfter(loop_ref, delay=30.0)
    loop = EventLoop([], tickers=[due], clock=time.monotonic)
    loop_ref.append(loop)
    timeout = loop._timeout(time.monotonic())
    assert timeout is not None
    assert 0 < timeout <= 30.0
    assert EventLoop([])._timeout(time.monotonic()) is None
