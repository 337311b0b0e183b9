"""The codec between /dev/vmbus/hv_fcopy datagrams and typed FCOPY requests.

Replaces the message handling of ``main()`` in tools/hv/hv_fcopy_daemon.c
(Linux <= 6.9): the 4-byte version handshake, the dispatch on
``hv_fcopy_hdr.operation`` and the bare 4-byte status written back. What the
kernel sends is fixed by ``fcopy_send_data()`` in drivers/hv/hv_fcopy.c:

* START_FILE_COPY: exactly 1088 bytes (``struct hv_start_fcopy``), the names
  already converted to UTF-8 and written *byte-wise* into the ``__u16``
  arrays, at most 259 bytes plus a NUL;
* WRITE_TO_FILE: exactly 6196 bytes (``struct hv_do_fcopy``);
* COMPLETE_FCOPY / CANCEL_FCOPY: the whole host packet length from the FCOPY
  header on (at least 36 bytes; the fake CANCEL of hibernation is exactly 36).

Unlike the C daemon, nothing is trusted: a size above DATA_FRAGMENT, a name
without its NUL or not valid UTF-8, a short datagram or an unknown operation is
a ``WireError`` answered HV_E_FAIL. WRITE data is a ``memoryview`` into the
datagram, so a fragment is never copied before it reaches ``pwrite``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from hvguest.abi.constants import DATA_FRAGMENT, FCOPY_VERSION_1, HvStatus
from hvguest.abi.structs import (
    FCOPY_HDR_SIZE,
    FCOPY_START_SIZE,
    FCOPY_WRITE_SIZE,
    hv_do_fcopy,
    hv_fcopy_hdr,
    hv_start_fcopy,
)
from hvguest.abi.text import terminated_c_string
from hvguest.errors import WireError
from hvguest.protocol.channel import KernelVersion
from hvguest.protocol.fcopy_messages import (
    FcopyCancel,
    FcopyComplete,
    FcopyRequest,
    FcopyStart,
    FcopyWrite,
)

_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")

_OPERATION: Final = hv_fcopy_hdr.operation.offset
_FILE_NAME: Final = slice(
    hv_start_fcopy.file_name.offset,
    hv_start_fcopy.file_name.offset + hv_start_fcopy.file_name.size,
)
_PATH_NAME: Final = slice(
    hv_start_fcopy.path_name.offset,
    hv_start_fcopy.path_name.offset + hv_start_fcopy.path_name.size,
)
_COPY_FLAGS: Final = hv_start_fcopy.copy_flags.offset
_FILE_SIZE: Final = hv_start_fcopy.file_size.offset
_WRITE_OFFSET: Final = hv_do_fcopy.offset.offset
_WRITE_SIZE: Final = hv_do_fcopy.size.offset
_WRITE_DATA: Final = hv_do_fcopy.data.offset
# offset (u64) and size (u32) are adjacent in the packed struct hv_do_fcopy,
# so the hot path reads both with one unpack; fail at import if that changes.
if _WRITE_OFFSET + _U64.size != _WRITE_SIZE:
    raise ImportError("hv_do_fcopy.offset and .size are no longer adjacent")
_OFFSET_SIZE: Final = struct.Struct("<QI")
# The transport's fast path reads operation, offset and size with one unpack.
if _OPERATION != 0:
    raise ImportError("hv_fcopy_hdr.operation no longer starts the message")
_WRITE_FIELDS: Final = struct.Struct(f"<I{_WRITE_OFFSET - _U32.size}xQI")

#: The operation numbers of enum hv_fcopy_op (FcopyOp), as plain ints for dispatch.
_START: Final = 0
_WRITE: Final = 1
_COMPLETE: Final = 2
_CANCEL: Final = 3

_REGISTRATION: Final = _U32.pack(FCOPY_VERSION_1)
#: Every reply is one of a handful of statuses: encode each once, not per fragment.
_REPLIES: Final[dict[int, bytes]] = {status: _U32.pack(status) for status in HvStatus}
_COMPLETE_REQUEST: Final = FcopyComplete()
_CANCEL_REQUEST: Final = FcopyCancel()


def _wire(what: str) -> WireError:
    return WireError(f"FCOPY {what}", HvStatus.E_FAIL)


def _name(datagram: bytes, field: slice, what: str) -> str:
    try:
        raw = terminated_c_string(datagram[field])
    except ValueError:
        raise _wire(f"{what} has no NUL in its {field.stop - field.start} bytes") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _wire(f"{what} is not UTF-8 at byte {error.start}") from None


def _decode_start(datagram: bytes) -> FcopyStart:
    if len(datagram) != FCOPY_START_SIZE:
        raise _wire(f"START is {len(datagram)} bytes, not {FCOPY_START_SIZE}")
    return FcopyStart(
        file_name=_name(datagram, _FILE_NAME, "file_name"),
        path_name=_name(datagram, _PATH_NAME, "path_name"),
        copy_flags=_U32.unpack_from(datagram, _COPY_FLAGS)[0],
        file_size=_U64.unpack_from(datagram, _FILE_SIZE)[0],
    )


def _decode_write(datagram: bytes) -> FcopyWrite:
    # The hot path (one call per 6 KiB fragment): one unpack for both fields.
    if len(datagram) != FCOPY_WRITE_SIZE:
        raise _wire(f"WRITE_TO_FILE is {len(datagram)} bytes, not {FCOPY_WRITE_SIZE}")
    offset, size = _OFFSET_SIZE.unpack_from(datagram, _WRITE_OFFSET)
    if size > DATA_FRAGMENT:
        # hv_fcopy_daemon.c would pwrite() past the end of its buffer here (S17).
        raise _wire(f"WRITE_TO_FILE size {size} exceeds {DATA_FRAGMENT}")
    return FcopyWrite(offset, memoryview(datagram)[_WRITE_DATA : _WRITE_DATA + size])


def _decode_complete(datagram: bytes) -> FcopyComplete:
    if len(datagram) < FCOPY_HDR_SIZE:
        raise _wire(f"COMPLETE_FCOPY is {len(datagram)} bytes, less than {FCOPY_HDR_SIZE}")
    return _COMPLETE_REQUEST


def _decode_cancel(datagram: bytes) -> FcopyCancel:
    if len(datagram) < FCOPY_HDR_SIZE:
        raise _wire(f"CANCEL_FCOPY is {len(datagram)} bytes, less than {FCOPY_HDR_SIZE}")
    return _CANCEL_REQUEST


_DECODERS: Final[dict[int, Callable[[bytes], FcopyRequest]]] = {
    _START: _decode_start,
    _WRITE: _decode_write,
    _COMPLETE: _decode_complete,
    _CANCEL: _decode_cancel,
}


def decode_write_fragment(
    datagram: bytes | bytearray | memoryview,
) -> tuple[int, memoryview] | None:
    """``(offset, data)`` of a well-formed WRITE_TO_FILE; None for anything else.

    The per-fragment fast path of a transport: no request object, no
    dispatch. None says "not a valid WRITE": hand the datagram to
    ``FcopyCodec.decode_request``, which decodes it or says what is wrong.
    """
    if len(datagram) != FCOPY_WRITE_SIZE:
        return None
    operation, offset, size = _WRITE_FIELDS.unpack_from(datagram)
    if operation != _WRITE or size > DATA_FRAGMENT:
        return None
    return offset, memoryview(datagram)[_WRITE_DATA : _WRITE_DATA + size]


#: The 4-byte reply for each ``HvStatus``, encoded once: a transport's fast
#: path looks its answer up here rather than encoding one per fragment.
STATUS_REPLIES: Final[Mapping[int, bytes]] = MappingProxyType(_REPLIES)


class FcopyCodec:
    """``Codec[FcopyRequest, HvStatus]`` for /dev/vmbus/hv_fcopy.

    Stateless; one instance can serve any number of channels.
    """

    __slots__ = ()

    def registration(self) -> bytes:
        """FCOPY_VERSION_1 as a bare 4-byte int (what hv_fcopy_daemon.c writes)."""
        return _REGISTRATION

    def decode_version(self, datagram: bytes) -> KernelVersion:
        """The kernel's answer: a bare 4-byte 1 (``fcopy_on_msg`` echoes the version)."""
        if len(datagram) != _U32.size:
            raise _wire(f"version answer is {len(datagram)} bytes, not {_U32.size}")
        (version,) = _U32.unpack(datagram)
        if version != FCOPY_VERSION_1:
            raise _wire(f"version answer is {version}, not {FCOPY_VERSION_1}")
        return KernelVersion(str(version))

    def decode_request(self, datagram: bytes) -> FcopyRequest:
        """One host request; ``WireError`` (HV_E_FAIL) for anything the kernel never sends."""
        if len(datagram) < _U32.size:
            raise _wire(f"message is {len(datagram)} bytes, too short for an operation")
        operation: int = _U32.unpack_from(datagram, _OPERATION)[0]
        if operation == _WRITE:
            return _decode_write(datagram)
        decoder = _DECODERS.get(operation)
        if decoder is None:
            raise _wire(f"operation {operation} is unknown")
        return decoder(datagram)

    def encode_reply(self, request: bytes, reply: HvStatus) -> bytes:
        """The status as a bare 4-byte int; the kernel passes it to the host verbatim."""
        return _REPLIES[reply]

    def encode_failure(self, request: bytes, status: HvStatus) -> bytes:
        """Same as ``encode_reply``: an FCOPY reply is only ever a status."""
        return _REPLIES[status]
