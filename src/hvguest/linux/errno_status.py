"""The one errno -> HV status table for failed file operations; no C counterpart.

hv_kvp_daemon.c answers HV_E_FAIL for every failed pool write; the status
codes of include/uapi/linux/hyperv.h let a host tell a full disk from other
failures, and the FCOPY daemon reports the same conditions, so every adapter
that turns an ``OSError`` into a status uses this table.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Final

from hvguest.abi.constants import HvStatus

#: Anything not listed is HV_E_FAIL.
STATUS_BY_ERRNO: Final[Mapping[int, HvStatus]] = {
    errno.ENOSPC: HvStatus.ERROR_DISK_FULL,
    errno.EDQUOT: HvStatus.ERROR_DISK_FULL,
    errno.EEXIST: HvStatus.ERROR_ALREADY_EXISTS,
}


def status_for_errno(error_number: int | None) -> HvStatus:
    """The HV status that reports a failed file operation with this errno."""
    return STATUS_BY_ERRNO.get(error_number or 0, HvStatus.E_FAIL)
