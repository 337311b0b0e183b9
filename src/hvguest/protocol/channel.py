"""The handshake and one-request-at-a-time state machine every device shares.

Replaces the ``in_handshake`` flag and the read/dispatch/write loop of
``main()`` in tools/hv/hv_{kvp,vss,fcopy}_daemon.c.

Theory of operation
-------------------
The three character devices (/dev/vmbus/hv_kvp, hv_vss, hv_fcopy) speak the
same conversation with different framing, so one ``Channel`` drives all of them
and a device-specific ``Codec`` turns bytes into typed messages and back:

1. After opening the device the daemon writes a *registration*
   (``registration()``: UNREGISTERED -> AWAITING_VERSION).
2. The kernel answers with its version; the first datagram read is decoded as
   that answer (``receive()``: AWAITING_VERSION -> IDLE). A version that does
   not decode raises ``WireError`` and leaves the state alone: no reply is
   owed, the daemon reopens the device.
3. Every later datagram is one host request (``receive()``: IDLE ->
   REQUEST_PENDING). The kernel keeps exactly one transaction open and pairs
   whatever the daemon writes next with it (the util state machine of
   drivers/hv/hyperv_vmbus.h, used by hv_kvp.c, hv_snapshot.c, hv_fcopy.c),
   so a request that does not decode is *still* owed a reply: it comes back
   as ``Malformed`` and the state is REQUEST_PENDING all the same.
4. The daemon answers (``reply()`` / ``reply_failure()``: REQUEST_PENDING ->
   IDLE). As in the C daemons the reply is the request buffer with fields
   overwritten, so the channel keeps the last request datagram for the codec.
5. Closing the device makes the kernel fail any open transaction and forget
   the registration, so the daemon calls ``reset()`` whenever it reopens
   (any state -> UNREGISTERED).

Every rule lives in ``_TRANSITIONS``; a (state, input) pair not in the table is
a local bug and raises ``ChannelError`` without changing the state, which keeps
the channel usable (the daemon can still ``reset()``). The channel does not
know which device it serves, never touches the OS and never blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, auto
from types import MappingProxyType
from typing import Final, Generic, Protocol, TypeVar

from hvguest.abi.constants import HvStatus
from hvguest.errors import ChannelError, WireError
from hvguest.records import record

#: What a codec decodes requests into (covariant: a codec only produces them).
Req_co = TypeVar("Req_co", covariant=True)
#: What a codec encodes replies from (contravariant: a codec only consumes them).
Rep_contra = TypeVar("Rep_contra", contravariant=True)


class State(Enum):
    """Where the conversation with the kernel stands."""

    # Members are singletons compared by identity, so the identity hash is
    # enough; Enum's own __hash__ is a Python call, twice per _TRANSITIONS
    # lookup, i.e. on every request.
    __hash__ = object.__hash__

    #: Device (re)opened; nothing written yet.
    UNREGISTERED = auto()
    #: Registration written; the next datagram is the kernel's version answer.
    AWAITING_VERSION = auto()
    #: Registered; the next datagram is a host request.
    IDLE = auto()
    #: A request was received and the kernel waits for exactly one reply.
    REQUEST_PENDING = auto()


class Input(Enum):
    """What the daemon does to the channel."""

    __hash__ = object.__hash__  # as for State

    #: registration(): the daemon writes its registration.
    SEND_REGISTRATION = auto()
    #: receive() while awaiting the version: the kernel's answer arrives.
    RECV_VERSION = auto()
    #: receive() while registered: a host request arrives.
    RECV_REQUEST = auto()
    #: reply() / reply_failure(): the daemon answers the pending request.
    SEND_REPLY = auto()
    #: reset(): the device was closed and will be reopened.
    RESET = auto()


_TRANSITIONS: Final[Mapping[tuple[State, Input], State]] = MappingProxyType(
    {
        (State.UNREGISTERED, Input.SEND_REGISTRATION): State.AWAITING_VERSION,
        (State.AWAITING_VERSION, Input.RECV_VERSION): State.IDLE,
        (State.IDLE, Input.RECV_REQUEST): State.REQUEST_PENDING,
        (State.REQUEST_PENDING, Input.SEND_REPLY): State.IDLE,
        # Closing the fd resets the kernel side from wherever it was.
        **{(state, Input.RESET): State.UNREGISTERED for state in State},
    }
)


def next_state(state: State, event: Input) -> State:
    """The state ``event`` leads to from ``state``; ``ChannelError`` if it is not allowed."""
    try:
        return _TRANSITIONS[state, event]
    except KeyError:
        raise ChannelError(f"{event.name} is not allowed in state {state.name}") from None


@record
class KernelVersion:
    """The kernel's answer to the registration: "3.1" (KVP), "129" (VSS), "1" (FCOPY)."""

    text: str


@record
class Malformed:
    """A request that did not decode; reply with ``error.status`` all the same."""

    error: WireError


class Codec(Protocol[Req_co, Rep_contra]):
    """One device's framing: the only part of the conversation that differs per device."""

    def registration(self) -> bytes:
        """The datagram the daemon writes right after opening the device."""
        ...

    def decode_version(self, datagram: bytes) -> KernelVersion:
        """The kernel's registration answer; raises ``WireError`` only."""
        ...

    def decode_request(self, datagram: bytes) -> Req_co:
        """One host request; raises ``WireError`` (carrying the reply status) only."""
        ...

    def encode_reply(self, request: bytes, reply: Rep_contra) -> bytes:
        """The reply datagram: ``request`` with the reply's fields laid over it."""
        ...

    def encode_failure(self, request: bytes, status: HvStatus) -> bytes:
        """A reply carrying only ``status``, for a request that failed or did not decode."""
        ...


class Channel(Generic[Req_co, Rep_contra]):
    """The sans-IO conversation with one character device (see the module docstring)."""

    __slots__ = ("_codec", "_request", "_state")

    def __init__(self, codec: Codec[Req_co, Rep_contra]) -> None:
        self._codec = codec
        self._state = State.UNREGISTERED
        #: The pending request datagram; replies are laid over it.
        self._request = b""

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    def registration(self) -> bytes:
        """The registration datagram to write after opening the device."""
        after = next_state(self._state, Input.SEND_REGISTRATION)
        datagram = self._codec.registration()
        self._state = after
        return datagram

    def receive(self, datagram: bytes) -> KernelVersion | Req_co | Malformed:
        """Decode one datagram read from the device.

        While awaiting the version this is the kernel's answer (a ``WireError``
        propagates and the state stays); afterwards it is a request, and one
        that does not decode comes back as ``Malformed`` because the kernel
        still waits for a reply to it.
        """
        if self._state is State.AWAITING_VERSION:
            after = next_state(self._state, Input.RECV_VERSION)
            version = self._codec.decode_version(datagram)
            self._state = after
            return version
        after = next_state(self._state, Input.RECV_REQUEST)
        try:
            request: Req_co | Malformed = self._codec.decode_request(datagram)
        except WireError as error:
            request = Malformed(error)
        self._request = datagram
        self._state = after
        return request

    def reply(self, reply: Rep_contra) -> bytes:
        """The datagram answering the pending request with ``reply``.

        If the codec refuses the reply (``ChannelError``: the service built a
        reply that does not fit), the request stays pending so that the
        daemon can still send ``reply_failure()``.
        """
        after = next_state(self._state, Input.SEND_REPLY)
        datagram = self._codec.encode_reply(self._request, reply)
        self._finish(after)
        return datagram

    def reply_failure(self, status: HvStatus) -> bytes:
        """The datagram answering the pending request with only ``status``."""
        after = next_state(self._state, Input.SEND_REPLY)
        datagram = self._codec.encode_failure(self._request, status)
        self._finish(after)
        return datagram

    def reset(self) -> None:
        """Forget everything: the device was closed (the kernel failed any open request)."""
        self._finish(next_state(self._state, Input.RESET))

    def _finish(self, after: State) -> None:
        self._request = b""
        self._state = after
