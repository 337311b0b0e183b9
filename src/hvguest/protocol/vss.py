"""VSS messages as typed values, and the codec between them and ``struct hv_vss_msg``.

Replaces the message handling of ``main()`` in tools/hv/hv_vss_daemon.c (the
part between ``read()`` and ``write()``) and mirrors what the kernel's
drivers/hv/hv_snapshot.c sends and reads back:

* registration: a 12-byte ``hv_vss_msg`` with operation VSS_OP_REGISTER1
  (129); the kernel answers with a bare 4-byte u32 129;
* requests: exactly 12 bytes, only the operation byte set (the kernel forwards
  only FREEZE, THAW and HOT_BACKUP; it answers the other operations itself);
* replies: the request with the status in ``error`` (bytes 0-3, overlaying the
  operation byte) and ``vss_cf.flags`` at byte 8.
"""

from __future__ import annotations

import struct
from typing import Final, assert_never

from hvguest.abi.constants import VSS_OP_REGISTER1, HvStatus, VssOp
from hvguest.abi.structs import VSS_MSG_SIZE, hv_vss_msg
from hvguest.errors import WireError
from hvguest.protocol.channel import KernelVersion
from hvguest.records import record

#: ``error`` (the union with the header) and ``vss_cf.flags``, from the ctypes mirror.
_ERROR: Final = hv_vss_msg.error.offset
_FLAGS: Final = hv_vss_msg.vss_cf.offset
_OPERATION: Final = hv_vss_msg.vss_hdr.offset
_U32: Final = struct.Struct("<I")
#: The kernel's registration answer: a bare u32 (vss_on_msg() in hv_snapshot.c).
_VERSION_SIZE: Final = _U32.size


@record
class VssFreeze:
    """VSS_OP_FREEZE: quiesce and freeze the guest's filesystems."""


@record
class VssThaw:
    """VSS_OP_THAW: thaw what FREEZE froze."""


@record
class VssHotBackup:
    """VSS_OP_HOT_BACKUP: can the guest take part in a live (hot) backup?"""


@record
class VssOther:
    """A known VSS operation the kernel normally answers itself (CREATE, GET_DM_INFO, ...)."""

    operation: int


VssRequest = VssFreeze | VssThaw | VssHotBackup | VssOther


@record
class VssReply:
    """The status for ``error`` and the ``vss_cf.flags`` (HOT_BACKUP's feature bits)."""

    status: HvStatus
    flags: int = 0


_SIMPLE: Final[dict[int, VssRequest]] = {
    VssOp.FREEZE: VssFreeze(),
    VssOp.THAW: VssThaw(),
    VssOp.HOT_BACKUP: VssHotBackup(),
}


class VssCodec:
    """``Codec[VssRequest, VssReply]`` for /dev/vmbus/hv_vss."""

    __slots__ = ()

    def registration(self) -> bytes:
        """12 bytes, operation VSS_OP_REGISTER1; zeroed where the C daemon sends stack bytes."""
        message = bytearray(VSS_MSG_SIZE)
        message[_OPERATION] = VSS_OP_REGISTER1
        return bytes(message)

    def decode_version(self, datagram: bytes) -> KernelVersion:
        """The bare u32 129; anything else is a ``WireError`` (the C daemon exits)."""
        if len(datagram) != _VERSION_SIZE:
            raise WireError(
                f"VSS registration answer is {len(datagram)} bytes, not {_VERSION_SIZE}"
            )
        (version,) = _U32.unpack(datagram)
        if version != VSS_OP_REGISTER1:
            raise WireError(f"VSS kernel answered version {version}, not {VSS_OP_REGISTER1}")
        return KernelVersion(str(version))

    def decode_request(self, datagram: bytes) -> VssRequest:
        """One request; ``WireError`` for a wrong size (E_FAIL) or an unknown operation.

        An operation outside ``enum hv_vss_op`` is answered ERROR_NOT_SUPPORTED
        (hv_vss_daemon logs "Illegal op" and answers 0, which tells the host a
        request nobody understood succeeded).
        """
        if len(datagram) != VSS_MSG_SIZE:
            raise WireError(f"VSS request is {len(datagram)} bytes, not {VSS_MSG_SIZE}")
        operation = datagram[_OPERATION]
        simple = _SIMPLE.get(operation)
        if simple is not None:
            return simple
        if operation < VssOp.COUNT:
            return VssOther(operation)
        raise WireError(f"VSS operation {operation} is unknown", HvStatus.ERROR_NOT_SUPPORTED)

    def encode_reply(self, request: bytes, reply: VssReply) -> bytes:
        """``request`` with ``error`` = status and ``vss_cf.flags`` = flags."""
        match reply:
            case VssReply(status=status, flags=flags):
                message = _base(request)
                _U32.pack_into(message, _ERROR, status.value)
                _U32.pack_into(message, _FLAGS, flags & 0xFFFFFFFF)
                return bytes(message)
            case _:
                assert_never(reply)

    def encode_failure(self, request: bytes, status: HvStatus) -> bytes:
        """``request`` with only ``error`` = ``status``."""
        message = _base(request)
        _U32.pack_into(message, _ERROR, status.value)
        return bytes(message)


def _base(request: bytes) -> bytearray:
    """A copy of the request to lay the reply over; zeroed if it was not a whole message."""
    if len(request) == VSS_MSG_SIZE:
        return bytearray(request)
    return bytearray(VSS_MSG_SIZE)
