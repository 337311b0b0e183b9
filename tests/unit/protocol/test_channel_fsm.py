"""hvguest.protocol.channel: every legal path, and every illegal (state, input) refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hvguest.abi.constants import HvStatus, KvpPool
from hvguest.errors import ChannelError, WireError
from hvguest.protocol.channel import (
    Channel,
    Input,
    KernelVersion,
    Malformed,
    State,
    next_state,
)
from hvguest.protocol.kvp import KvpCodec, KvpEnumerate, KvpReply, KvpRequest, KvpStatus

# The table as the module docstring describes it, written out independently.
LEGAL = {
    (State.UNREGISTERED, Input.SEND_REGISTRATION): State.AWAITING_VERSION,
    (State.AWAITING_VERSION, Input.RECV_VERSION): State.IDLE,
    (State.IDLE, Input.RECV_REQUEST): State.REQUEST_PENDING,
    (State.REQUEST_PENDING, Input.SEND_REPLY): State.IDLE,
    (State.UNREGISTERED, Input.RESET): State.UNREGISTERED,
    (State.AWAITING_VERSION, Input.RESET): State.UNREGISTERED,
    (State.IDLE, Input.RESET): State.UNREGISTERED,
    (State.REQUEST_PENDING, Input.RESET): State.UNREGISTERED,
}
ALL_PAIRS = [(state, event) for state in State for event in Input]
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in LEGAL]


class TextCodec:
    """A tiny Codec[str, str]: requests are ASCII, replies are appended; it records calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def registration(self) -> bytes:
        self.calls.append("registration")
        return b"REGISTER"

    def decode_version(self, datagram: bytes) -> KernelVersion:
        self.calls.append("decode_version")
        if not datagram.startswith(b"v"):
            raise WireError("not a version")
        return KernelVersion(datagram[1:].decode())

    def decode_request(self, datagram: bytes) -> str:
        self.calls.append("decode_request")
        if datagram == b"bad":
            raise WireError("undecodable", HvStatus.ERROR_NOT_SUPPORTED)
        return datagram.decode()

    def encode_reply(self, request: bytes, reply: str) -> bytes:
        self.calls.append("encode_reply")
        if reply == "too long":
            raise ChannelError("does not fit")
        return request + b"|" + reply.encode()

    def encode_failure(self, request: bytes, status: HvStatus) -> bytes:
        self.calls.append("encode_failure")
        return request + b"|" + status.name.encode()


def state_of(channel: Channel[str, str]) -> State:
    # A call, not the property: mypy would keep a narrowed property across calls.
    return channel.state


def channel_in(state: State) -> tuple[Channel[str, str], TextCodec]:
    """A channel driven through the public API into ``state``."""
    codec = TextCodec()
    channel: Channel[str, str] = Channel(codec)
    steps: list[Callable[[], object]] = [
        channel.registration,
        lambda: channel.receive(b"v3.1"),
        lambda: channel.receive(b"request"),
    ]
    order = [State.UNREGISTERED, State.AWAITING_VERSION, State.IDLE, State.REQUEST_PENDING]
    for step in steps[: order.index(state)]:
        step()
    assert state_of(channel) is state
    codec.calls.clear()
    return channel, codec


@pytest.mark.parametrize(("pair", "after"), LEGAL.items())
def test_next_state_follows_the_table(pair: tuple[State, Input], after: State) -> None:
    assert next_state(*pair) is after


@pytest.mark.parametrize("pair", ILLEGAL)
def test_next_state_refuses_every_pair_not_in_the_table(pair: tuple[State, Input]) -> None:
    with pytest.raises(
        ChannelError, match=f"{pair[1].name} is not allowed in state {pair[0].name}"
    ):
        next_state(*pair)


def test_a_new_channel_is_unregistered() -> None:
    assert Channel(TextCodec()).state is State.UNREGISTERED


def test_full_conversation() -> None:
    codec = TextCodec()
    channel: Channel[str, str] = Channel(codec)
    assert channel.registration() == b"REGISTER"
    assert state_of(channel) is State.AWAITING_VERSION
    assert channel.receive(b"v3.1") == KernelVersion("3.1")
    assert state_of(channel) is State.IDLE
    assert channel.receive(b"first") == "first"
    assert state_of(channel) is State.REQUEST_PENDING
    assert channel.reply("ok") == b"first|ok"
    assert state_of(channel) is State.IDLE
    assert channel.receive(b"second") == "second"
    assert channel.reply_failure(HvStatus.S_CONT) == b"second|S_CONT"
    assert state_of(channel) is State.IDLE
    assert codec.calls == [
        "registration",
        "decode_version",
        "decode_request",
        "encode_reply",
        "decode_request",
        "encode_failure",
    ]


def test_a_request_that_does_not_decode_is_still_owed_a_reply() -> None:
    channel, _ = channel_in(State.IDLE)
    received = channel.receive(b"bad")
    assert isinstance(received, Malformed)
    assert received.error.status is HvStatus.ERROR_NOT_SUPPORTED
    assert state_of(channel) is State.REQUEST_PENDING
    assert channel.reply_failure(received.error.status) == b"bad|ERROR_NOT_SUPPORTED"
    assert state_of(channel) is State.IDLE


def test_a_version_that_does_not_decode_propagates_and_keeps_the_state() -> None:
    channel, _ = channel_in(State.AWAITING_VERSION)
    with pytest.raises(WireError, match="not a version"):
        channel.receive(b"garbage")
    assert state_of(channel) is State.AWAITING_VERSION
    assert channel.receive(b"v1") == KernelVersion("1")


def test_a_refused_reply_leaves_the_request_pending_for_a_failure_reply() -> None:
    channel, _ = channel_in(State.REQUEST_PENDING)
    with pytest.raises(ChannelError, match="does not fit"):
        channel.reply("too long")
    assert state_of(channel) is State.REQUEST_PENDING
    assert channel.reply_failure(HvStatus.E_FAIL) == b"request|E_FAIL"


@pytest.mark.parametrize("state", list(State))
def test_reset_returns_to_unregistered_from_every_state(state: State) -> None:
    channel, codec = channel_in(state)
    channel.reset()
    assert state_of(channel) is State.UNREGISTERED
    assert codec.calls == []
    assert channel.registration() == b"REGISTER"


def test_reset_forgets_the_pending_request() -> None:
    channel, _ = channel_in(State.REQUEST_PENDING)
    channel.reset()
    channel.registration()
    channel.receive(b"v3.1")
    channel.receive(b"fresh")
    assert channel.reply("ok") == b"fresh|ok"


ACTIONS: dict[str, Callable[[Channel[str, str]], object]] = {
    "registration": Channel.registration,
    "receive": lambda channel: channel.receive(b"v9"),
    "reply": lambda channel: channel.reply("ok"),
    "reply_failure": lambda channel: channel.reply_failure(HvStatus.E_FAIL),
    "reset": Channel.reset,
}
# Which public call is legal in which state (the table, seen through the API).
LEGAL_CALLS = {
    State.UNREGISTERED: {"registration", "reset"},
    State.AWAITING_VERSION: {"receive", "reset"},
    State.IDLE: {"receive", "reset"},
    State.REQUEST_PENDING: {"reply", "reply_failure", "reset"},
}
ILLEGAL_CALLS = [
    (state, action) for state in State for action in ACTIONS if action not in LEGAL_CALLS[state]
]


@pytest.mark.parametrize(("state", "action"), ILLEGAL_CALLS)
def test_illegal_call_raises_without_touching_state_or_codec(state: State, action: str) -> None:
    channel, codec = channel_in(state)
    with pytest.raises(ChannelError, match=f"not allowed in state {state.name}"):
        ACTIONS[action](channel)
    assert state_of(channel) is state
    assert codec.calls == []


def test_kvp_codec_drives_a_channel() -> None:
    channel: Channel[KvpRequest, KvpReply] = Channel(KvpCodec())
    registration = channel.registration()
    assert registration[0] == 100
    version = bytearray(7432)
    version[0] = 100
    version[4:7] = b"3.1"
    assert channel.receive(bytes(version)) == KernelVersion("3.1")
    request = bytearray(7432)
    request[0:2] = b"\x03\x01"
    request[4] = 7
    assert channel.receive(bytes(request)) == KvpEnumerate(KvpPool.GUEST, 7)
    reply = channel.reply(KvpStatus(HvStatus.S_CONT))
    assert reply == (0x80070103).to_bytes(4, "little") + bytes(request[4:])
    malformed = channel.receive(b"short")
    assert isinstance(malformed, Malformed)
    assert malformed.error.status is HvStatus.E_FAIL
    failure = channel.reply_failure(malformed.error.status)
    assert failure == (0x80004005).to_bytes(4, "little") + bytes(7428)
