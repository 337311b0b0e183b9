"""Constants of include/uapi/linux/hyperv.h, as enums and sizes.

Enums drop the C prefix; each member names its C constant. Values that the
header does not define but the kernel drivers fix (timeouts, the version
string, device GUIDs) live here too, each citing its source file.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

#: UTIL_FW_VERSION: framework version 3.0 (major << 16 | minor).
UTIL_FW_VERSION: Final = 3 << 16 | 0
#: UTIL_WS2K8_FW_VERSION: framework version 1.0.
UTIL_WS2K8_FW_VERSION: Final = 1 << 16 | 0

#: HV_KVP_EXCHANGE_MAX_VALUE_SIZE: value bytes including the NUL.
HV_KVP_EXCHANGE_MAX_VALUE_SIZE: Final = 2048
#: HV_KVP_EXCHANGE_MAX_KEY_SIZE: key bytes including the NUL.
HV_KVP_EXCHANGE_MAX_KEY_SIZE: Final = 512
#: MAX_ADAPTER_ID_SIZE (UTF-16 units).
MAX_ADAPTER_ID_SIZE: Final = 128
#: MAX_IP_ADDR_SIZE (UTF-16 units).
MAX_IP_ADDR_SIZE: Final = 1024
#: MAX_GATEWAY_SIZE (UTF-16 units).
MAX_GATEWAY_SIZE: Final = 512
#: W_MAX_PATH (UTF-16 units).
W_MAX_PATH: Final = 260
#: DATA_FRAGMENT: bytes of file data in one WRITE_TO_FILE.
DATA_FRAGMENT: Final = 6 * 1024

#: VSS_OP_REGISTER: legacy VSS registration (leaves the kernel "not ready").
VSS_OP_REGISTER: Final = 128
#: VSS_OP_REGISTER1: current VSS registration, answered by the kernel.
VSS_OP_REGISTER1: Final = 129
#: VSS_HBU_NO_AUTO_RECOVERY: hot-backup feature flag.
VSS_HBU_NO_AUTO_RECOVERY: Final = 0x00000005

#: FCOPY_VERSION_0 (legacy, never answered by the kernel).
FCOPY_VERSION_0: Final = 0
#: FCOPY_VERSION_1 / FCOPY_CURRENT_VERSION.
FCOPY_VERSION_1: Final = 1
FCOPY_CURRENT_VERSION: Final = FCOPY_VERSION_1
#: OVER_WRITE copy flag.
OVER_WRITE: Final = 0x1
#: CREATE_PATH copy flag.
CREATE_PATH: Final = 0x2

#: KVP_OP_REGISTER: legacy KVP registration (numerically KVP_OP_GET_IP_INFO).
KVP_OP_REGISTER: Final = 4
#: KVP_OP_REGISTER1: current KVP registration.
KVP_OP_REGISTER1: Final = 100

#: REG_SZ / REG_U32 / REG_U64: KVP value types.
REG_SZ: Final = 1
REG_U32: Final = 4
REG_U64: Final = 8

#: HV_DRV_VERSION in drivers/hv/hv_kvp.c: what the kernel answers REGISTER1 with.
KVP_KERNEL_VERSION: Final = "3.1"

#: HV_UTIL_TIMEOUT (drivers/hv/hyperv_vmbus.h): seconds the kernel waits for a reply.
HV_UTIL_TIMEOUT: Final = 30
#: HV_UTIL_NEGO_TIMEOUT (drivers/hv/hyperv_vmbus.h).
HV_UTIL_NEGO_TIMEOUT: Final = 55
#: VSS_FREEZE_TIMEOUT (drivers/hv/hv_snapshot.c): seconds for a FREEZE reply.
VSS_FREEZE_TIMEOUT: Final = 15 * 60

#: Device class GUIDs (include/linux/hyperv.h).
KVP_CLASS_GUID: Final = "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"
VSS_CLASS_GUID: Final = "35fa2e29-ea23-4236-96ae-3a6ebacba440"
FCOPY_CLASS_GUID: Final = "34d14be3-dee4-41c8-9ae7-6b174977c192"
#: The FCOPY device instance GUID hard-coded by tools/hv/hv_fcopy_uio_daemon.c.
FCOPY_INSTANCE_GUID: Final = "eb765408-105f-49b6-b4aa-c123b64d17d4"


class VssOp(IntEnum):
    """enum hv_vss_op."""

    CREATE = 0  #: VSS_OP_CREATE
    DELETE = 1  #: VSS_OP_DELETE
    HOT_BACKUP = 2  #: VSS_OP_HOT_BACKUP
    GET_DM_INFO = 3  #: VSS_OP_GET_DM_INFO
    BU_COMPLETE = 4  #: VSS_OP_BU_COMPLETE
    FREEZE = 5  #: VSS_OP_FREEZE
    THAW = 6  #: VSS_OP_THAW
    AUTO_RECOVER = 7  #: VSS_OP_AUTO_RECOVER
    COUNT = 8  #: VSS_OP_COUNT


class FcopyOp(IntEnum):
    """enum hv_fcopy_op."""

    START_FILE_COPY = 0  #: START_FILE_COPY
    WRITE_TO_FILE = 1  #: WRITE_TO_FILE
    COMPLETE_FCOPY = 2  #: COMPLETE_FCOPY
    CANCEL_FCOPY = 3  #: CANCEL_FCOPY


class KvpOp(IntEnum):
    """enum hv_kvp_exchg_op."""

    GET = 0  #: KVP_OP_GET
    SET = 1  #: KVP_OP_SET
    DELETE = 2  #: KVP_OP_DELETE
    ENUMERATE = 3  #: KVP_OP_ENUMERATE
    GET_IP_INFO = 4  #: KVP_OP_GET_IP_INFO
    SET_IP_INFO = 5  #: KVP_OP_SET_IP_INFO
    COUNT = 6  #: KVP_OP_COUNT


class KvpPool(IntEnum):
    """enum hv_kvp_exchg_pool."""

    EXTERNAL = 0  #: KVP_POOL_EXTERNAL: pushed by the host administrator
    GUEST = 1  #: KVP_POOL_GUEST: written in the guest for the host to read
    AUTO = 2  #: KVP_POOL_AUTO: intrinsic guest facts, synthesised
    AUTO_EXTERNAL = 3  #: KVP_POOL_AUTO_EXTERNAL: the host describing itself
    AUTO_INTERNAL = 4  #: KVP_POOL_AUTO_INTERNAL
    COUNT = 5  #: KVP_POOL_COUNT


class HvStatus(IntEnum):
    """The HV_* status codes (unsigned; carried in a C int on the wire)."""

    S_OK = 0x00000000  #: HV_S_OK
    E_FAIL = 0x80004005  #: HV_E_FAIL
    S_CONT = 0x80070103  #: HV_S_CONT: "no more" / "not found" for KVP
    ERROR_NOT_SUPPORTED = 0x80070032  #: HV_ERROR_NOT_SUPPORTED
    ERROR_MACHINE_LOCKED = 0x800704F7  #: HV_ERROR_MACHINE_LOCKED
    ERROR_DEVICE_NOT_CONNECTED = 0x8007048F  #: HV_ERROR_DEVICE_NOT_CONNECTED
    INVALIDARG = 0x80070057  #: HV_INVALIDARG
    GUID_NOTFOUND = 0x80041002  #: HV_GUID_NOTFOUND
    ERROR_ALREADY_EXISTS = 0x80070050  #: HV_ERROR_ALREADY_EXISTS
    ERROR_DISK_FULL = 0x80070070  #: HV_ERROR_DISK_FULL


class AddrFamily(IntEnum):
    """ADDR_FAMILY_*; used as bit flags in practice (the daemon ORs them)."""

    NONE = 0x00  #: ADDR_FAMILY_NONE
    IPV4 = 0x01  #: ADDR_FAMILY_IPV4
    IPV6 = 0x02  #: ADDR_FAMILY_IPV6
