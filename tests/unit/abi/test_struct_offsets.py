"""The ctypes mirror against the sizes and offsets written out in protocol.md section 1.3.

tests/layout checks the mirror against gcc; this runs everywhere (no compiler)
and pins the numbers the protocol document states, so a change to either side
shows up as a disagreement here.
"""

from __future__ import annotations

import ctypes
from functools import reduce

import pytest

from hvguest.abi import structs
from hvguest.abi.structs import (
    FCOPY_HDR_SIZE,
    FCOPY_START_SIZE,
    FCOPY_WRITE_SIZE,
    KVP_IP_MSG_SIZE,
    KVP_MSG_SIZE,
    KVP_POOL_RECORD_SIZE,
    VSS_MSG_SIZE,
)

CData = ctypes.Structure | ctypes.Union


def offset_of(root: CData, path: str) -> tuple[int, int]:
    """(offset, size) of the member at dotted C path ``path`` of the instance ``root``."""
    *parents, last = path.split(".")
    parent: CData = reduce(getattr, parents, root)
    descriptor = getattr(type(parent), last)
    return ctypes.addressof(parent) - ctypes.addressof(root) + descriptor.offset, descriptor.size


KVP_MSG_MEMBERS = [
    ("kvp_hdr.operation", 0, 1),
    ("kvp_hdr.pool", 1, 1),
    ("kvp_hdr.pad", 2, 2),
    ("error", 0, 4),
    ("body.kvp_get.data.value_type", 4, 4),
    ("body.kvp_get.data.key_size", 8, 4),
    ("body.kvp_get.data.value_size", 12, 4),
    ("body.kvp_get.data.key", 16, 512),
    ("body.kvp_get.data.value", 528, 2048),
    ("body.kvp_get.data.value_u32", 528, 4),
    ("body.kvp_get.data.value_u64", 528, 8),
    ("body.kvp_set.data.key", 16, 512),
    ("body.kvp_set.data.value", 528, 2048),
    ("body.kvp_enum_data.index", 4, 4),
    ("body.kvp_enum_data.data.value_type", 8, 4),
    ("body.kvp_enum_data.data.key_size", 12, 4),
    ("body.kvp_enum_data.data.value_size", 16, 4),
    ("body.kvp_enum_data.data.key", 20, 512),
    ("body.kvp_enum_data.data.value", 532, 2048),
    ("body.kvp_delete.key_size", 4, 4),
    ("body.kvp_delete.key", 8, 512),
    ("body.kvp_register.version", 4, 512),
    ("body.kvp_ip_val.adapter_id", 4, 256),
    ("body.kvp_ip_val.addr_family", 260, 1),
    ("body.kvp_ip_val.dhcp_enabled", 261, 1),
    ("body.kvp_ip_val.ip_addr", 262, 2048),
    ("body.kvp_ip_val.sub_net", 2310, 2048),
    ("body.kvp_ip_val.gate_way", 4358, 1024),
    ("body.kvp_ip_val.dns_addr", 5382, 2048),
]


@pytest.mark.parametrize(("path", "offset", "size"), KVP_MSG_MEMBERS)
def test_hv_kvp_msg_member(path: str, offset: int, size: int) -> None:
    assert offset_of(structs.hv_kvp_msg(), path) == (offset, size)


@pytest.mark.parametrize(
    ("path", "offset", "size"),
    [
        ("operation", 0, 1),
        ("pool", 1, 1),
        ("kvp_ip_val.adapter_id", 2, 256),
        ("kvp_ip_val.addr_family", 258, 1),
        ("kvp_ip_val.dhcp_enabled", 259, 1),
        ("kvp_ip_val.ip_addr", 260, 2048),
        ("kvp_ip_val.sub_net", 2308, 2048),
        ("kvp_ip_val.gate_way", 4356, 1024),
        ("kvp_ip_val.dns_addr", 5380, 2048),
    ],
)
def test_hv_kvp_ip_msg_member_is_shifted_by_two(path: str, offset: int, size: int) -> None:
    assert offset_of(structs.hv_kvp_ip_msg(), path) == (offset, size)


@pytest.mark.parametrize(
    ("struct_type", "path", "offset", "size"),
    [
        (structs.hv_vss_msg, "vss_hdr.operation", 0, 1),
        (structs.hv_vss_msg, "vss_hdr.reserved", 1, 7),
        (structs.hv_vss_msg, "error", 0, 4),
        (structs.hv_vss_msg, "vss_cf.flags", 8, 4),
        (structs.hv_vss_msg, "dm_info.flags", 8, 4),
        (structs.hv_fcopy_hdr, "operation", 0, 4),
        (structs.hv_fcopy_hdr, "service_id0", 4, 16),
        (structs.hv_fcopy_hdr, "service_id1", 20, 16),
        (structs.hv_start_fcopy, "file_name", 36, 520),
        (structs.hv_start_fcopy, "path_name", 556, 520),
        (structs.hv_start_fcopy, "copy_flags", 1076, 4),
        (structs.hv_start_fcopy, "file_size", 1080, 8),
        (structs.hv_do_fcopy, "pad", 36, 4),
        (structs.hv_do_fcopy, "offset", 40, 8),
        (structs.hv_do_fcopy, "size", 48, 4),
        (structs.hv_do_fcopy, "data", 52, 6144),
    ],
)
def test_vss_and_fcopy_members(
    struct_type: type[ctypes.Structure], path: str, offset: int, size: int
) -> None:
    assert offset_of(struct_type(), path) == (offset, size)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("hv_kvp_msg", 7432),
        ("hv_kvp_ip_msg", 7428),
        ("hv_kvp_ipaddr_value", 7426),
        ("hv_kvp_exchg_msg_value", 2572),
        ("hv_kvp_msg_enumerate", 2576),
        ("hv_kvp_msg_delete", 516),
        ("hv_kvp_register", 512),
        ("hv_vss_msg", 12),
        ("hv_fcopy_hdr", 36),
        ("hv_start_fcopy", 1088),
        ("hv_do_fcopy", 6196),
    ],
)
def test_struct_size(name: str, size: int) -> None:
    assert ctypes.sizeof(structs.ALL_STRUCTS[name]) == size


def test_exported_message_sizes() -> None:
    assert (KVP_MSG_SIZE, KVP_IP_MSG_SIZE, VSS_MSG_SIZE) == (7432, 7428, 12)
    assert (FCOPY_HDR_SIZE, FCOPY_START_SIZE, FCOPY_WRITE_SIZE) == (36, 1088, 6196)
    assert KVP_POOL_RECORD_SIZE == 2560


def test_error_overlays_operation_and_pool_little_endian() -> None:
    message = structs.hv_kvp_msg.from_buffer_copy(b"\x03\x01\x00\x00".ljust(KVP_MSG_SIZE, b"\0"))
    assert (message.kvp_hdr.operation, message.kvp_hdr.pool) == (3, 1)
    assert message.error == 0x0103
    message.error = -2147467259  # HV_E_FAIL read as a C int
    assert bytes(message)[:4] == (0x80004005).to_bytes(4, "little")
