"""Hypothesis properties of the channel FSM (h2's test_state_machines, for our table).

Random sequences of public calls on a ``Channel`` driving the real KVP codec
either follow the transition table (written out again here) or raise
``ChannelError`` and leave the state as it was.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from hvguest.abi.constants import HvStatus
from hvguest.errors import ChannelError, WireError
from hvguest.protocol.channel import Channel, Input, KernelVersion, Malformed, State, next_state
from hvguest.protocol.kvp import KvpCodec, KvpReply, KvpRequest, KvpStatus

TABLE = {
    (State.UNREGISTERED, Input.SEND_REGISTRATION): State.AWAITING_VERSION,
    (State.AWAITING_VERSION, Input.RECV_VERSION): State.IDLE,
    (State.IDLE, Input.RECV_REQUEST): State.REQUEST_PENDING,
    (State.REQUEST_PENDING, Input.SEND_REPLY): State.IDLE,
    **{(state, Input.RESET): State.UNREGISTERED for state in State},
}

VERSION = bytes([100, 0, 0, 0]) + b"3.1".ljust(7428, b"\0")
ENUMERATE = bytes([3, 1]) + bytes(7430)
DATAGRAMS = {
    "version": VERSION,
    "request": ENUMERATE,
    "short": b"\x03\x01",
    "bad op": b"\x07" * 7432,
}

KvpChannel = Channel[KvpRequest, KvpReply]


def receiving(datagram: bytes) -> Callable[[KvpChannel], object]:
    return lambda channel: channel.receive(datagram)


CALLS: dict[str, tuple[Input | None, Callable[[KvpChannel], object]]] = {
    "registration": (Input.SEND_REGISTRATION, KvpChannel.registration),
    "reply": (Input.SEND_REPLY, lambda channel: channel.reply(KvpStatus(HvStatus.S_OK))),
    "reply_failure": (Input.SEND_REPLY, lambda channel: channel.reply_failure(HvStatus.E_FAIL)),
    "reset": (Input.RESET, KvpChannel.reset),
    # receive() is RECV_VERSION or RECV_REQUEST depending on the state (None: decided below).
    **{f"receive {name}": (None, receiving(datagram)) for name, datagram in DATAGRAMS.items()},
}


def input_of(call: str, state: State) -> Input:
    event = CALLS[call][0]
    if event is not None:
        return event
    return Input.RECV_VERSION if state is State.AWAITING_VERSION else Input.RECV_REQUEST


@given(st.sampled_from(State), st.sampled_from(Input))
def test_next_state_is_the_table_or_channel_error(state: State, event: Input) -> None:
    try:
        after = next_state(state, event)
    except ChannelError:
        assert (state, event) not in TABLE
    else:
        assert after is TABLE[state, event]


@given(st.lists(st.sampled_from(sorted(CALLS)), max_size=40))
def test_random_call_sequences_follow_the_table(calls: list[str]) -> None:
    channel: KvpChannel = Channel(KvpCodec())
    for call in calls:
        before = channel.state
        expected = TABLE.get((before, input_of(call, before)))
        try:
            result = CALLS[call][1](channel)
        except ChannelError:
            assert expected is None
            assert channel.state is before
            continue
        except WireError:
            # Only a version answer that does not decode may raise; nothing owed, nothing moves.
            assert before is State.AWAITING_VERSION
            assert call != "receive version"
            assert channel.state is before
            continue
        assert expected is not None, f"{call} succeeded in {before.name}"
        assert channel.state is expected
        if call.startswith("receive") and before is State.IDLE:
            assert isinstance(result, Malformed) == (call != "receive request")
        if call == "receive version" and before is State.AWAITING_VERSION:
            assert result == KernelVersion("3.1")
        if call in {"registration", "reply", "reply_failure"}:
            assert isinstance(result, bytes)
            assert len(result) == 7432
