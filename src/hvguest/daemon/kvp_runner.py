"""The KVP channel runner: ``ChannelRunner`` with the hot path hv_kvp_daemon has.

hv_kvp_daemon.c reads each request into one buffer, overwrites the fields of
its answer in that same buffer and writes it back. :class:`KvpRunner` does the
same for every request of a registered channel: the request is decoded
straight from the device's buffer (``read_view``), answered by the service,
and the reply laid over the request in place (``KvpCodec.encode_reply_into``),
so no 7432-byte copy is made and the channel's transition checks are not
walked twice per request: one request is read and answered within the call,
as the channel demands, and the channel stays IDLE. Registration, and any
message that is not a whole ``hv_kvp_msg``, take the generic path of
``ChannelRunner``. Statuses, log lines and reopen rules are the same either way
(tests/unit/daemon/test_kvp_runner.py runs both runners on the same messages).

Measured in process on a scripted device (so without the socket work),
best of five runs of 50,000 requests on 2026-11-27: GET 5.4 -> 4.6 µs,
ENUMERATE 6.5 -> 5.4 µs against the generic runner (the pool store's poll
hint in place for both); SET, dominated by its system calls, 23 -> 22 µs,
within the noise. What it saves in the benchmark is within the run-to-run
spread there; docs/benchmarks.md has the numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from hvguest.abi.constants import HvStatus
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.daemon.loop import ChannelRunner, HandlerFailed
from hvguest.errors import ChannelError, WireError
from hvguest.protocol.channel import KernelVersion, State
from hvguest.protocol.kvp import KvpCodec, KvpReply, KvpRequest

#: Read buffer: larger than any KVP message, so an oversized one is read whole
#: and answered HV_E_FAIL instead of failing every read with EINVAL.
KVP_READ_SIZE: Final = 16384


class KvpRunner(ChannelRunner[KvpRequest, KvpReply]):
    """``ChannelRunner`` for /dev/vmbus/hv_kvp that answers in the request's buffer."""

    def __init__(
        self,
        device_path: Path,
        handle: Callable[[KvpRequest], KvpReply],
        *,
        log: logging.Logger,
        on_version: Callable[[KernelVersion], None],
    ) -> None:
        codec = KvpCodec()
        super().__init__(
            name="kvp",
            device_path=device_path,
            codec=codec,
            handle=handle,
            read_size=KVP_READ_SIZE,
            log=log,
            on_version=on_version,
        )
        #: ``codec`` as the KvpCodec it is: the in-place encoders are not in ``Codec``.
        self._kvp_codec = codec

    def service_one(self, now: float) -> None:
        """Read one message and answer it (see the module docstring)."""
        device = self.device
        if device is None or self.channel.state is not State.IDLE:
            super().service_one(now)
            return
        read = self.read_in_place(device, now)
        if read is None:
            return
        if len(read) != KVP_MSG_SIZE:
            self.serve_datagram(bytes(read), now)
            return
        # A plain read() (or a message read earlier) is copied once, to be written over.
        message = read if isinstance(read, memoryview) and not read.readonly else bytearray(read)
        self._answer_in_place(message)
        self._write(message, now)

    def _answer_in_place(self, message: bytearray | memoryview) -> None:
        """Decode, handle, and lay the reply (or the failure status) over ``message``."""
        codec = self._kvp_codec
        try:
            request = codec.decode_request(message)
        except WireError as error:
            self.log.warning(
                "%s: malformed message (%d bytes): %s; answering 0x%08X",
                self.name,
                len(message),
                error,
                error.status,
            )
            codec.encode_failure_into(message, error.status)
            return
        reply = self.handled(request)
        if isinstance(reply, HandlerFailed):
            codec.encode_failure_into(message, reply.status)
            return
        try:
            codec.encode_reply_into(message, reply)
        except ChannelError as error:
            self.log_unencodable(reply, error)
            codec.encode_failure_into(message, HvStatus.E_FAIL)
