"""The host side of VSS: what Hyper-V's backup requests look like on the VSS channel.

Counterpart of the Windows VSS integration service (no C source for it: the
format is what drivers/hv/hv_snapshot.c reads). Each helper sends one
ICMSGTYPE_VSS packet carrying a 12-byte struct hv_vss_msg (operation byte,
then vss_cf/dm_info flags at offset 8) and waits for the answer, which the
driver writes into the same buffer: the status goes in icmsg_hdr.status and
the flags may be edited (GET_DM_INFO clears them; a reply whose first byte is
2 sets VSS_HBU_NO_AUTO_RECOVERY, sharp edge S5).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from hvguest.abi.constants import HvStatus, VssOp
from hvguest.abi.structs import VSS_MSG_SIZE
from hvguest.testing.host import FakeHost, HostNegotiation, HostPacketReply
from hvguest.testing.transport import ICMSGTYPE_NEGOTIATE, ICMSGTYPE_VSS, Version
from hvguest.testing.vss_kernel import FLAGS

#: The VSS version Windows announces (5.0) next to framework 3.0.
HOST_VSS_VERSION: Final = (5, 0)
HOST_FRAMEWORK_VERSION: Final = (3, 0)
_U32: Final = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class HostVssReply:
    """The answer to one VSS request: status and the message's operation and flags."""

    status: int
    operation: int
    flags: int

    @property
    def ok(self) -> bool:
        """status == HV_S_OK."""
        return self.status == HvStatus.S_OK


def vss_message(op: int, *, flags: int = 0, size: int = VSS_MSG_SIZE) -> bytearray:
    """A host hv_vss_msg; ``size`` > 12 pads it like FREEZE packets with LUN data."""
    if size < VSS_MSG_SIZE:
        raise ValueError(f"a VSS message is at least {VSS_MSG_SIZE} bytes")
    message = bytearray(size)
    message[0] = op
    _U32.pack_into(message, FLAGS, flags)
    return message


def decode_vss_reply(reply: HostPacketReply) -> HostVssReply:
    """Read a VSS answer as the host does."""
    data = reply.payload
    (flags,) = _U32.unpack_from(data, FLAGS)
    return HostVssReply(status=reply.status, operation=data[0], flags=flags)


def vss_raw(host: FakeHost, payload: bytes | bytearray, timeout: float | None = None) -> int:
    """Send any VSS payload (any length); the icmsg status of the answer."""
    return host.transact("vss", ICMSGTYPE_VSS, payload, timeout).status


def vss_request(
    host: FakeHost, op: int, *, flags: int = 0, timeout: float | None = None
) -> HostVssReply:
    """One VSS request ``op`` (a VssOp or any byte) and its decoded answer."""
    reply = host.transact("vss", ICMSGTYPE_VSS, vss_message(op, flags=flags), timeout)
    return decode_vss_reply(reply)


def vss_freeze(host: FakeHost, timeout: float | None = None) -> HostVssReply:
    """VSS_OP_FREEZE: the daemon freezes every filesystem it manages."""
    return vss_request(host, VssOp.FREEZE, timeout=timeout)


def vss_thaw(host: FakeHost, timeout: float | None = None) -> HostVssReply:
    """VSS_OP_THAW: the daemon thaws them again."""
    return vss_request(host, VssOp.THAW, timeout=timeout)


def vss_hot_backup(host: FakeHost, timeout: float | None = None) -> HostVssReply:
    """VSS_OP_HOT_BACKUP: "can you do a live backup?" (0 = yes)."""
    return vss_request(host, VssOp.HOT_BACKUP, timeout=timeout)


def vss_negotiate(
    host: FakeHost,
    framework_versions: tuple[Version, ...] = (HOST_FRAMEWORK_VERSION,),
    service_versions: tuple[Version, ...] = (HOST_VSS_VERSION,),
    timeout: float | None = None,
) -> HostNegotiation:
    """ICMSGTYPE_NEGOTIATE on the VSS channel (answered by the driver itself)."""
    versions = framework_versions + service_versions
    payload = bytearray(8 + 4 * max(len(versions), 2))
    struct.pack_into("<HH", payload, 0, len(framework_versions), len(service_versions))
    for i, (major, minor) in enumerate(versions):
        struct.pack_into("<HH", payload, 8 + 4 * i, major, minor)
    reply = host.transact("vss", ICMSGTYPE_NEGOTIATE, payload, timeout)
    framework_count, service_count = struct.unpack_from("<HH", reply.payload, 0)
    framework = struct.unpack_from("<HH", reply.payload, 8)
    service = struct.unpack_from("<HH", reply.payload, 12)
    return HostNegotiation(reply.status, framework_count, service_count, framework, service)
