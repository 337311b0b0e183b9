"""The least a Python FCOPY daemon can do per fragment: the floor under hvguest's numbers.

The same calls as hv_fcopy_daemon, in the same order, on the simulated char
device (:class:`bench.floor_device.FloorDevice`): poll, read (receive the
message, acknowledge it), pwrite the fragment at its offset, write the 4-byte
status (send it, receive the write's result).
START opens the target (no temporary file, no policy, no checks), COMPLETE
closes it. Whatever hvguest adds over this is the price of its checks and
crash safety; whatever this loses to the C daemon is the price of Python
alone. Run as ``python -m bench.fcopy_floor SOCKET``.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

from bench.floor_device import FloorDevice
from hvguest.abi.constants import FCOPY_VERSION_1
from hvguest.protocol.fcopy import FcopyCodec, decode_write_fragment
from hvguest.protocol.fcopy_messages import FcopyStart

_STATUS = struct.Struct("<I")
_OK = _STATUS.pack(0)


def serve(path: str) -> int:
    """Register on the device at ``path`` and answer until it goes away."""
    device = FloorDevice.open(path)
    if device is None:
        return 1
    if not device.write(_STATUS.pack(FCOPY_VERSION_1)) or device.next_message() is None:
        return 0  # the second: the kernel's answer to the registration
    next_message, write = device.next_message, device.write
    codec, pwrite, target = FcopyCodec(), os.pwrite, -1
    while (message := next_message()) is not None:
        fragment = decode_write_fragment(message)
        if fragment is not None:
            pwrite(target, fragment[1], fragment[0])
        else:
            request = codec.decode_request(bytes(message))
            if isinstance(request, FcopyStart):
                name = Path(request.path_name) / request.file_name
                target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            elif target >= 0:  # COMPLETE or CANCEL
                os.close(target)
                target = -1
        if not write(_OK):
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
