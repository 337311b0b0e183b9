"""The typed FCOPY requests both transports decode into.

Counterpart of ``struct hv_start_fcopy`` / ``hv_do_fcopy`` / ``hv_fcopy_hdr``
as tools/hv/hv_fcopy_daemon.c (char device, Linux <= 6.9) and
tools/hv/hv_fcopy_uio_daemon.c (VMBus ring through UIO, Linux >= 6.10) see
them. The two flavours frame and encode these differently (the kernel converts
names to UTF-8 for the char device; the UIO daemon gets raw UTF-16LE), but
the file writer must not care, so both codecs produce the same values and the
writer answers each with one ``HvStatus``.
"""

from __future__ import annotations

from typing import Final

from hvguest.records import record

#: OVER_WRITE (include/uapi/linux/hyperv.h): replace an existing target.
OVER_WRITE: Final = 0x1
#: CREATE_PATH: create missing directories of path_name.
CREATE_PATH: Final = 0x2


@record
class FcopyStart:
    """START_FILE_COPY: open a copy of ``file_size`` bytes to ``path_name``/``file_name``."""

    file_name: str
    path_name: str
    copy_flags: int
    file_size: int

    @property
    def overwrite(self) -> bool:
        """OVER_WRITE is set."""
        return bool(self.copy_flags & OVER_WRITE)

    @property
    def create_path(self) -> bool:
        """CREATE_PATH is set."""
        return bool(self.copy_flags & CREATE_PATH)


@record
class FcopyWrite:
    """WRITE_TO_FILE: ``data`` at ``offset``.

    ``data`` may be a view into the transport's receive buffer (no copy per
    fragment); it is valid only while the request is being handled.
    """

    offset: int
    data: bytes | memoryview


@record
class FcopyComplete:
    """COMPLETE_FCOPY: the host sent everything; make the file appear."""


@record
class FcopyCancel:
    """CANCEL_FCOPY: the host gave up (also faked by the kernel on hibernation)."""


FcopyRequest = FcopyStart | FcopyWrite | FcopyComplete | FcopyCancel
