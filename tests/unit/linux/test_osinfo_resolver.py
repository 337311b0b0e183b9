"""getaddrinfo_ascii answers exactly what socket.getaddrinfo answers."""

from __future__ import annotations

import socket

import pytest

from hvguest.linux.osinfo import getaddrinfo_ascii

FLAGS = (socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_ascii_names_resolve_as_with_a_str(host: str) -> None:
    assert getaddrinfo_ascii(host, None, *FLAGS) == socket.getaddrinfo(host, None, *FLAGS)


def test_only_ascii_names_go_as_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def record(host: object, *_rest: object) -> list[object]:
        seen.append(host)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", record)
    getaddrinfo_ascii("vm-1.example", None, *FLAGS)
    getaddrinfo_ascii("bücher.example", None, *FLAGS)
    assert seen == [b"vm-1.example", "bücher.example"]  # the second keeps idna encoding
