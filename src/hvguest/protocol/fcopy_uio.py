"""FCOPY over a raw VMBus channel: IC framing, version negotiation, message decoding.

Replaces ``fcopy_pkt_process()``, the UTF-16 name conversion of
``fcopy_start()`` and the in-daemon copy of ``vmbus_prep_negotiate_resp()`` in
tools/hv/hv_fcopy_uio_daemon.c (Linux >= 6.10). Since 6.10 no kernel driver
sits between the host and the daemon: each ring packet's payload is a util
packet (``vmbuspipe_hdr`` + ``icmsg_hdr`` + service message,
include/linux/hyperv.h) and the daemon answers it itself.

How a packet is handled (protocol.md sections 1.2 and 6.4):

* :func:`decode_packet` looks at one received payload. The payload buffer
  *becomes the reply*, as in the C daemon: the host expects its own packet
  back, same length, with icflags TRANSACTION|RESPONSE and the status set.
* NEGOTIATE is answered here (:class:`Negotiation`): framework 3.0, FCOPY 1.1,
  status 0 on a match and HV_E_FAIL otherwise; the reply is ready at once.
* A well-formed FCOPY message comes back as :class:`CopyRequest`; the caller
  runs the file writer and then calls :func:`set_reply_status`.
* Anything malformed (short header, unknown operation or message type, a
  WRITE of more than 6144 bytes, names that are not valid UTF-16) comes back
  as :class:`Rejected` with the reply already carrying HV_E_FAIL; the C daemon
  exits on some of these and mangles names into 'X' on others (S18).
* A payload too short to hold an ``icmsg_hdr`` cannot be answered at all
  (:class:`Unanswerable`); the host never sends one.

Unlike the reference, CANCEL_FCOPY is decoded and handed to the writer (S19).
"""

from __future__ import annotations

import struct
from typing import Final

from hvguest.abi.constants import DATA_FRAGMENT, W_MAX_PATH, FcopyOp, HvStatus
from hvguest.abi.structs import (
    FCOPY_HDR_SIZE,
    FCOPY_START_SIZE,
    hv_do_fcopy,
    hv_fcopy_hdr,
    hv_start_fcopy,
)
from hvguest.abi.text import from_utf16_field
from hvguest.errors import WireError
from hvguest.protocol.fcopy_messages import (
    FcopyCancel,
    FcopyComplete,
    FcopyRequest,
    FcopyStart,
    FcopyWrite,
)
from hvguest.records import record

#: (major, minor) of a framework or service version.
Version = tuple[int, int]

#: vmbuspipe_hdr {flags, msgsize} + icmsg_hdr {icverframe, icmsgtype, icvermsg,
#: icmsgsize, status, ictransaction_id, icflags, reserved[2]}.
IC_HEADER: Final = struct.Struct("<II HH H HH H I BB 2x")
#: ICMSG_HDR: where the service message starts in a util packet.
ICMSG_HDR: Final = IC_HEADER.size
#: Offsets of the icmsg_hdr fields this module edits (the icmsg_hdr starts at 8).
ICMSG_TYPE_OFFSET: Final = 8 + 4
ICMSG_SIZE_OFFSET: Final = 8 + 10
ICMSG_STATUS_OFFSET: Final = 8 + 12
ICMSG_FLAGS_OFFSET: Final = 8 + 17
#: ICMSGTYPE_NEGOTIATE / ICMSGTYPE_FCOPY.
ICMSGTYPE_NEGOTIATE: Final = 0
ICMSGTYPE_FCOPY: Final = 7
#: ICMSGHDRFLAG_TRANSACTION / _REQUEST / _RESPONSE.
ICMSGHDRFLAG_TRANSACTION: Final = 1
ICMSGHDRFLAG_REQUEST: Final = 2
ICMSGHDRFLAG_RESPONSE: Final = 4
#: IC_VERSION_NEGOTIATION_MAX_VER_COUNT.
IC_VERSION_NEGOTIATION_MAX_VER_COUNT: Final = 100
#: What hv_fcopy_uio_daemon.c offers: UTIL_FW_VERSION 3.0 and FCOPY 1.1.
FRAMEWORK_VERSIONS: Final[tuple[Version, ...]] = ((3, 0),)
FCOPY_VERSIONS: Final[tuple[Version, ...]] = ((1, 1),)

#: icmsg_negotiate: icframe_vercnt u16, icmsg_vercnt u16, reserved u32, then versions.
_NEGOTIATE_COUNTS: Final = struct.Struct("<HH")
_NEGOTIATE_VERSIONS: Final = ICMSG_HDR + 8
_VERSION: Final = struct.Struct("<HH")
#: What icmsgsize says in a negotiation answer (vmbus_prep_negotiate_resp()).
_NEGOTIATE_REPLY_SIZE: Final = 0x10
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")

# Offsets of the FCOPY fields inside a util packet, taken from the gcc-checked mirrors.
_OPERATION: Final = ICMSG_HDR + hv_fcopy_hdr.operation.offset
_FILE_NAME: Final = ICMSG_HDR + hv_start_fcopy.file_name.offset
_PATH_NAME: Final = ICMSG_HDR + hv_start_fcopy.path_name.offset
_NAME_BYTES: Final = 2 * W_MAX_PATH
_COPY_FLAGS: Final = ICMSG_HDR + hv_start_fcopy.copy_flags.offset
_FILE_SIZE: Final = ICMSG_HDR + hv_start_fcopy.file_size.offset
_WRITE_OFFSET: Final = ICMSG_HDR + hv_do_fcopy.offset.offset
_WRITE_SIZE: Final = ICMSG_HDR + hv_do_fcopy.size.offset
_WRITE_DATA: Final = ICMSG_HDR + hv_do_fcopy.data.offset


@record
class Negotiation:
    """A NEGOTIATE, already answered in the packet; None where nothing matched."""

    framework: Version | None
    service: Version | None

    @property
    def ok(self) -> bool:
        """Both a framework and an FCOPY version were agreed."""
        return self.framework is not None and self.service is not None


@record
class CopyRequest:
    """A well-formed FCOPY message; answer it with :func:`set_reply_status`."""

    request: FcopyRequest


@record
class Rejected:
    """A malformed packet, already answered in the packet with ``error.status``."""

    error: WireError


@record
class Unanswerable:
    """Too short to carry an icmsg_hdr: there is nothing to put a status into."""

    length: int


Incoming = Negotiation | CopyRequest | Rejected | Unanswerable


def decode_packet(packet: bytearray | memoryview) -> Incoming:
    """Decode one ring payload; NEGOTIATE and malformed packets are answered in place.

    ``packet`` must be writable: it is turned into the reply. A
    :class:`CopyRequest`'s ``FcopyWrite.data`` is a view into it.
    """
    view = memoryview(packet).cast("B")
    if len(view) < ICMSG_HDR:
        return Unanswerable(len(view))
    # hv_fcopy_uio_daemon.c pre-sets HV_E_FAIL so that every early exit answers a failure.
    set_reply_status(view, HvStatus.E_FAIL)
    (icmsgtype,) = _U16.unpack_from(view, ICMSG_TYPE_OFFSET)
    if icmsgtype == ICMSGTYPE_NEGOTIATE:
        negotiation = negotiate(view, FRAMEWORK_VERSIONS, FCOPY_VERSIONS)
        if negotiation.ok:
            set_reply_status(view, HvStatus.S_OK)
        return negotiation
    if icmsgtype != ICMSGTYPE_FCOPY:
        return Rejected(WireError(f"unexpected IC message type {icmsgtype}"))
    try:
        return CopyRequest(_decode_fcopy(view))
    except WireError as error:
        return Rejected(error)


def set_reply_status(packet: bytearray | memoryview, status: int) -> None:
    """Turn the request in ``packet`` into its reply: icflags TRANSACTION|RESPONSE, ``status``."""
    _U32.pack_into(packet, ICMSG_STATUS_OFFSET, status & 0xFFFF_FFFF)
    packet[ICMSG_FLAGS_OFFSET] = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE


def negotiate(
    packet: bytearray | memoryview,
    framework_versions: tuple[Version, ...],
    service_versions: tuple[Version, ...],
) -> Negotiation:
    """vmbus_prep_negotiate_resp(): rewrite the icmsg_negotiate in ``packet`` as our answer.

    Our versions are tried in our preference order against whatever the host
    lists; the first exact match wins. On failure both counts are 0 and the
    two version slots hold the host's counts, as the C code leaves them.
    """
    length = len(packet)
    if length < ICMSG_HDR + _NEGOTIATE_COUNTS.size:
        return Negotiation(None, None)
    _U16.pack_into(packet, ICMSG_SIZE_OFFSET, _NEGOTIATE_REPLY_SIZE)
    framework_count, service_count = _NEGOTIATE_COUNTS.unpack_from(packet, ICMSG_HDR)
    framework: Version | None = None
    service: Version | None = None
    listed = _NEGOTIATE_VERSIONS + _VERSION.size * (framework_count + service_count)
    if (
        framework_count <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT
        and service_count <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT
        and listed <= length
    ):
        framework = _first_offered(framework_versions, _versions(packet, 0, framework_count))
        if framework is not None:
            offered = _versions(packet, framework_count, service_count)
            service = _first_offered(service_versions, offered)
    found = framework is not None and service is not None
    count = 1 if found else 0
    _NEGOTIATE_COUNTS.pack_into(packet, ICMSG_HDR, count, count)
    # The two slots exist even when the host listed fewer versions (the C code
    # writes them unconditionally); skip them only if the packet ends first.
    if length >= _NEGOTIATE_VERSIONS + 2 * _VERSION.size:
        _VERSION.pack_into(packet, _NEGOTIATE_VERSIONS, *(framework or (framework_count, 0)))
        _VERSION.pack_into(
            packet,
            _NEGOTIATE_VERSIONS + _VERSION.size,
            *(service if found and service else (service_count, 0)),
        )
    return Negotiation(framework, service if found else None)


def _versions(packet: bytearray | memoryview, first: int, count: int) -> list[Version]:
    return [
        _VERSION.unpack_from(packet, _NEGOTIATE_VERSIONS + _VERSION.size * (first + i))
        for i in range(count)
    ]


def _first_offered(ours: tuple[Version, ...], offered: list[Version]) -> Version | None:
    for version in ours:
        if version in offered:
            return version
    return None


def _decode_fcopy(view: memoryview) -> FcopyRequest:
    length = len(view)
    if length < ICMSG_HDR + FCOPY_HDR_SIZE:
        raise WireError(f"FCOPY packet of {length} bytes is shorter than its header")
    (operation,) = _U32.unpack_from(view, _OPERATION)
    if operation == FcopyOp.START_FILE_COPY:
        return _decode_start(view)
    if operation == FcopyOp.WRITE_TO_FILE:
        return _decode_write(view)
    if operation == FcopyOp.COMPLETE_FCOPY:
        return FcopyComplete()
    if operation == FcopyOp.CANCEL_FCOPY:
        return FcopyCancel()
    raise WireError(f"unknown FCOPY operation {operation}")


def _decode_start(view: memoryview) -> FcopyStart:
    if len(view) < ICMSG_HDR + FCOPY_START_SIZE:
        raise WireError(
            f"START_FILE_COPY of {len(view) - ICMSG_HDR} bytes (needs {FCOPY_START_SIZE})"
        )
    (copy_flags,) = _U32.unpack_from(view, _COPY_FLAGS)
    (file_size,) = _U64.unpack_from(view, _FILE_SIZE)
    return FcopyStart(
        file_name=_name(view, _FILE_NAME, "file_name"),
        path_name=_name(view, _PATH_NAME, "path_name"),
        copy_flags=copy_flags,
        file_size=file_size,
    )


def _name(view: memoryview, offset: int, what: str) -> str:
    """A UTF-16LE name field: surrogate pairs joined, a lone surrogate refused (not 'X')."""
    try:
        return from_utf16_field(bytes(view[offset : offset + _NAME_BYTES]))
    except ValueError as error:
        raise WireError(f"{what} is not valid UTF-16: {error}") from None


def _decode_write(view: memoryview) -> FcopyWrite:
    if len(view) < _WRITE_DATA:
        raise WireError(f"WRITE_TO_FILE of {len(view) - ICMSG_HDR} bytes lacks its header")
    (offset,) = _U64.unpack_from(view, _WRITE_OFFSET)
    (size,) = _U32.unpack_from(view, _WRITE_SIZE)
    if size > DATA_FRAGMENT:
        raise WireError(f"WRITE_TO_FILE of {size} bytes (at most {DATA_FRAGMENT})")
    if _WRITE_DATA + size > len(view):
        raise WireError(f"WRITE_TO_FILE says {size} bytes but carries {len(view) - _WRITE_DATA}")
    return FcopyWrite(offset=offset, data=view[_WRITE_DATA : _WRITE_DATA + size])
