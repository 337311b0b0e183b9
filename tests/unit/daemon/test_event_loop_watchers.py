"""EventLoop poll watchers: told after every poll whether their descriptor was readable."""

from __future__ import annotations

import socket

from hvguest.daemon.loop import EventLoop


class _Watcher:
    """A socket the loop polls; records what the loop told it, in order."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.calls: list[str] = []

    def fileno(self) -> int:
        return self.reader.fileno()

    def after_poll(self, readable: bool) -> None:
        self.calls.append(f"poll:{readable}")
        if readable:
            self.reader.recv(64)  # drained, as the pool store drains its inotify queue

    def after_serving(self) -> None:
        self.calls.append("served")

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def test_each_poll_tells_the_watchers_whether_they_were_readable() -> None:
    data, quiet = _Watcher(), _Watcher()
    loop = EventLoop([], watchers=[data, quiet])
    try:
        data.writer.send(b"event")
        loop._run_once()  # returns: the watcher's socket is readable
        assert data.calls == ["poll:True", "served"]
        assert quiet.calls == ["poll:False", "served"]
        loop.stop()  # the wake-up socket ends the next poll
        loop._run_once()
        assert data.calls[2:] == ["poll:False", "served"]  # drained last time
    finally:
        loop.run()  # already stopping: closes the loop's own descriptors at once
        data.close()
        quiet.close()
