"""Byte-exact ctypes mirrors of the structs in include/uapi/linux/hyperv.h.

C names are kept so that grep finds both sides; each docstring quotes the C
declaration. ``_pack_ = 1`` appears exactly where C says
``__attribute__((packed))``: ``hv_kvp_msg_get``/``_set``/``_delete``/
``_register`` are *not* packed, and because ``hv_kvp_msg_delete`` aligns to 4
the body union of ``hv_kvp_msg`` is 7428 bytes and the whole message 7432
(not 7430). tests/layout compares every size and offset here with gcc.

ctypes objects never leave ``abi`` and ``protocol``.
"""

from __future__ import annotations

import ctypes
from ctypes import c_int32, c_uint8, c_uint16, c_uint32, c_uint64
from typing import Final

from hvguest.abi.constants import (
    DATA_FRAGMENT,
    HV_KVP_EXCHANGE_MAX_KEY_SIZE,
    HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
    MAX_ADAPTER_ID_SIZE,
    MAX_GATEWAY_SIZE,
    MAX_IP_ADDR_SIZE,
    W_MAX_PATH,
)

# ruff: noqa: N801 - C struct names are kept so grep finds both sides.


class hv_vss_hdr(ctypes.LittleEndianStructure):
    """struct hv_vss_hdr { __u8 operation; __u8 reserved[7]; } __attribute__((packed));"""

    _pack_ = 1
    _fields_ = [("operation", c_uint8), ("reserved", c_uint8 * 7)]


class hv_vss_check_feature(ctypes.LittleEndianStructure):
    """struct hv_vss_check_feature { __u32 flags; } __attribute__((packed));"""

    _pack_ = 1
    _fields_ = [("flags", c_uint32)]


class hv_vss_check_dm_info(ctypes.LittleEndianStructure):
    """struct hv_vss_check_dm_info { __u32 flags; } __attribute__((packed));"""

    _pack_ = 1
    _fields_ = [("flags", c_uint32)]


class _hv_vss_msg_head(ctypes.Union):
    """union { struct hv_vss_hdr vss_hdr; int error; };"""

    _pack_ = 1
    _fields_ = [("vss_hdr", hv_vss_hdr), ("error", c_int32)]


class _hv_vss_msg_body(ctypes.Union):
    """union { struct hv_vss_check_feature vss_cf; struct hv_vss_check_dm_info dm_info; };"""

    _pack_ = 1
    _fields_ = [("vss_cf", hv_vss_check_feature), ("dm_info", hv_vss_check_dm_info)]


class hv_vss_msg(ctypes.LittleEndianStructure):
    """struct hv_vss_msg {
        union { struct hv_vss_hdr vss_hdr; int error; };
        union { struct hv_vss_check_feature vss_cf; struct hv_vss_check_dm_info dm_info; };
    } __attribute__((packed));
    """

    _pack_ = 1
    _anonymous_ = ("_head", "_body")
    _fields_ = [("_head", _hv_vss_msg_head), ("_body", _hv_vss_msg_body)]


class hv_fcopy_hdr(ctypes.LittleEndianStructure):
    """struct hv_fcopy_hdr {
        __u32 operation; __u8 service_id0[16]; __u8 service_id1[16];
    } __attribute__((packed));
    """

    _pack_ = 1
    _fields_ = [
        ("operation", c_uint32),
        ("service_id0", c_uint8 * 16),
        ("service_id1", c_uint8 * 16),
    ]


class hv_start_fcopy(ctypes.LittleEndianStructure):
    """struct hv_start_fcopy {
        struct hv_fcopy_hdr hdr; __u16 file_name[W_MAX_PATH]; __u16 path_name[W_MAX_PATH];
        __u32 copy_flags; __u64 file_size;
    } __attribute__((packed));
    """

    _pack_ = 1
    _fields_ = [
        ("hdr", hv_fcopy_hdr),
        ("file_name", c_uint16 * W_MAX_PATH),
        ("path_name", c_uint16 * W_MAX_PATH),
        ("copy_flags", c_uint32),
        ("file_size", c_uint64),
    ]


class hv_do_fcopy(ctypes.LittleEndianStructure):
    """struct hv_do_fcopy {
        struct hv_fcopy_hdr hdr; __u32 pad; __u64 offset; __u32 size;
        __u8 data[DATA_FRAGMENT];
    } __attribute__((packed));
    """

    _pack_ = 1
    _fields_ = [
        ("hdr", hv_fcopy_hdr),
        ("pad", c_uint32),
        ("offset", c_uint64),
        ("size", c_uint32),
        ("data", c_uint8 * DATA_FRAGMENT),
    ]


class hv_kvp_ipaddr_value(ctypes.LittleEndianStructure):
    """struct hv_kvp_ipaddr_value {
        __u16 adapter_id[MAX_ADAPTER_ID_SIZE]; __u8 addr_family; __u8 dhcp_enabled;
        __u16 ip_addr[MAX_IP_ADDR_SIZE]; __u16 sub_net[MAX_IP_ADDR_SIZE];
        __u16 gate_way[MAX_GATEWAY_SIZE]; __u16 dns_addr[MAX_IP_ADDR_SIZE];
    } __attribute__((packed));

    The daemon side fills these u16 arrays with NUL-terminated UTF-8 bytes;
    the kernel converts them to UTF-16 for the host (drivers/hv/hv_kvp.c).
    """

    _pack_ = 1
    _fields_ = [
        ("adapter_id", c_uint16 * MAX_ADAPTER_ID_SIZE),
        ("addr_family", c_uint8),
        ("dhcp_enabled", c_uint8),
        ("ip_addr", c_uint16 * MAX_IP_ADDR_SIZE),
        ("sub_net", c_uint16 * MAX_IP_ADDR_SIZE),
        ("gate_way", c_uint16 * MAX_GATEWAY_SIZE),
        ("dns_addr", c_uint16 * MAX_IP_ADDR_SIZE),
    ]


class hv_kvp_hdr(ctypes.LittleEndianStructure):
    """struct hv_kvp_hdr { __u8 operation; __u8 pool; __u16 pad; } __attribute__((packed));"""

    _pack_ = 1
    _fields_ = [("operation", c_uint8), ("pool", c_uint8), ("pad", c_uint16)]


class _hv_kvp_value_union(ctypes.Union):
    """union { __u8 value[HV_KVP_EXCHANGE_MAX_VALUE_SIZE]; __u32 value_u32; __u64 value_u64; };

    Not packed in the installed header; it holds no padding either way.
    """

    _fields_ = [
        ("value", c_uint8 * HV_KVP_EXCHANGE_MAX_VALUE_SIZE),
        ("value_u32", c_uint32),
        ("value_u64", c_uint64),
    ]


class hv_kvp_exchg_msg_value(ctypes.LittleEndianStructure):
    """struct hv_kvp_exchg_msg_value {
        __u32 value_type; __u32 key_size; __u32 value_size;
        __u8 key[HV_KVP_EXCHANGE_MAX_KEY_SIZE];
        union { __u8 value[HV_KVP_EXCHANGE_MAX_VALUE_SIZE]; __u32 value_u32; __u64 value_u64; };
    } __attribute__((packed));
    """

    _pack_ = 1
    _anonymous_ = ("_value",)
    _fields_ = [
        ("value_type", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("key", c_uint8 * HV_KVP_EXCHANGE_MAX_KEY_SIZE),
        ("_value", _hv_kvp_value_union),
    ]


class hv_kvp_msg_enumerate(ctypes.LittleEndianStructure):
    """struct hv_kvp_msg_enumerate {
        __u32 index; struct hv_kvp_exchg_msg_value data;
    } __attribute__((packed));
    """

    _pack_ = 1
    _fields_ = [("index", c_uint32), ("data", hv_kvp_exchg_msg_value)]


class hv_kvp_msg_get(ctypes.LittleEndianStructure):
    """struct hv_kvp_msg_get { struct hv_kvp_exchg_msg_value data; };  (not packed)"""

    _fields_ = [("data", hv_kvp_exchg_msg_value)]


class hv_kvp_msg_set(ctypes.LittleEndianStructure):
    """struct hv_kvp_msg_set { struct hv_kvp_exchg_msg_value data; };  (not packed)"""

    _fields_ = [("data", hv_kvp_exchg_msg_value)]


class hv_kvp_msg_delete(ctypes.LittleEndianStructure):
    """struct hv_kvp_msg_delete { __u32 key_size; __u8 key[HV_KVP_EXCHANGE_MAX_KEY_SIZE]; };

    NOT packed in C: its 4-byte alignment pads the hv_kvp_msg body union to 7428.
    """

    _fields_ = [("key_size", c_uint32), ("key", c_uint8 * HV_KVP_EXCHANGE_MAX_KEY_SIZE)]


class hv_kvp_register(ctypes.LittleEndianStructure):
    """struct hv_kvp_register { __u8 version[HV_KVP_EXCHANGE_MAX_KEY_SIZE]; };  (not packed)"""

    _fields_ = [("version", c_uint8 * HV_KVP_EXCHANGE_MAX_KEY_SIZE)]


class _hv_kvp_msg_head(ctypes.Union):
    """union { struct hv_kvp_hdr kvp_hdr; int error; };"""

    _pack_ = 1
    _fields_ = [("kvp_hdr", hv_kvp_hdr), ("error", c_int32)]


class _hv_kvp_msg_body(ctypes.Union):
    """union {
        struct hv_kvp_msg_get kvp_get; struct hv_kvp_msg_set kvp_set;
        struct hv_kvp_msg_delete kvp_delete; struct hv_kvp_msg_enumerate kvp_enum_data;
        struct hv_kvp_ipaddr_value kvp_ip_val; struct hv_kvp_register kvp_register;
    } body;

    Deliberately without ``_pack_``: C does not pack this union's alignment
    away, and hv_kvp_msg_delete gives it 4, so it is 7428 bytes.
    """

    _fields_ = [
        ("kvp_get", hv_kvp_msg_get),
        ("kvp_set", hv_kvp_msg_set),
        ("kvp_delete", hv_kvp_msg_delete),
        ("kvp_enum_data", hv_kvp_msg_enumerate),
        ("kvp_ip_val", hv_kvp_ipaddr_value),
        ("kvp_register", hv_kvp_register),
    ]


class hv_kvp_msg(ctypes.LittleEndianStructure):
    """struct hv_kvp_msg {
        union { struct hv_kvp_hdr kvp_hdr; int error; };
        union { ... } body;
    } __attribute__((packed));
    """

    _pack_ = 1
    _anonymous_ = ("_head",)
    _fields_ = [("_head", _hv_kvp_msg_head), ("body", _hv_kvp_msg_body)]


class hv_kvp_ip_msg(ctypes.LittleEndianStructure):
    """struct hv_kvp_ip_msg {
        __u8 operation; __u8 pool; struct hv_kvp_ipaddr_value kvp_ip_val;
    } __attribute__((packed));

    The host-side layout of GET/SET_IP_INFO: 2 bytes shifted against hv_kvp_msg.
    """

    _pack_ = 1
    _fields_ = [("operation", c_uint8), ("pool", c_uint8), ("kvp_ip_val", hv_kvp_ipaddr_value)]


#: Every mirrored struct, by C name (the layout test walks this).
ALL_STRUCTS: Final[dict[str, type[ctypes.Structure]]] = {
    "hv_vss_hdr": hv_vss_hdr,
    "hv_vss_check_feature": hv_vss_check_feature,
    "hv_vss_check_dm_info": hv_vss_check_dm_info,
    "hv_vss_msg": hv_vss_msg,
    "hv_fcopy_hdr": hv_fcopy_hdr,
    "hv_start_fcopy": hv_start_fcopy,
    "hv_do_fcopy": hv_do_fcopy,
    "hv_kvp_ipaddr_value": hv_kvp_ipaddr_value,
    "hv_kvp_hdr": hv_kvp_hdr,
    "hv_kvp_exchg_msg_value": hv_kvp_exchg_msg_value,
    "hv_kvp_msg_enumerate": hv_kvp_msg_enumerate,
    "hv_kvp_msg_get": hv_kvp_msg_get,
    "hv_kvp_msg_set": hv_kvp_msg_set,
    "hv_kvp_msg_delete": hv_kvp_msg_delete,
    "hv_kvp_register": hv_kvp_register,
    "hv_kvp_msg": hv_kvp_msg,
    "hv_kvp_ip_msg": hv_kvp_ip_msg,
}

#: sizeof of the messages that cross the character devices.
KVP_MSG_SIZE: Final = ctypes.sizeof(hv_kvp_msg)
VSS_MSG_SIZE: Final = ctypes.sizeof(hv_vss_msg)
FCOPY_START_SIZE: Final = ctypes.sizeof(hv_start_fcopy)
FCOPY_WRITE_SIZE: Final = ctypes.sizeof(hv_do_fcopy)
FCOPY_HDR_SIZE: Final = ctypes.sizeof(hv_fcopy_hdr)
KVP_IP_MSG_SIZE: Final = ctypes.sizeof(hv_kvp_ip_msg)
#: The on-disk pool record of tools/hv/hv_kvp_daemon.c: key[512] + value[2048].
KVP_POOL_RECORD_SIZE: Final = HV_KVP_EXCHANGE_MAX_KEY_SIZE + HV_KVP_EXCHANGE_MAX_VALUE_SIZE
