"""The simulated-device wire protocol: a character device spoken over a Unix socket.

Counterpart of the file operations in drivers/hv/hv_utils_transport.c. A
simulated ``/dev/vmbus/hv_*`` node is an ``AF_UNIX``/``SOCK_SEQPACKET``
listening socket; **one connection is one open() of the device**. Datagram
boundaries stand in for the device's one-read-one-message rule. Every datagram
starts with a one-byte tag::

    server -> client  O <int32 LE errno>  first datagram after accept: the open()
                                         result (0 = opened; EBUSY if another
                                         opener holds the device, EBADF if it is
                                         being destroyed). After a non-zero errno
                                         the server closes the connection.
    server -> client  M <message>        the kernel queued a message for the daemon
                                         (its one-deep queue is now full)
    client -> server  A                  the daemon read that message: the kernel
                                         frees its queue slot and runs the service's
                                         on-read callback (e.g. "registered")
    client -> server  W <bytes>          write(bytes)
    server -> client  R <int32 LE>       that write's result: >= 0 bytes accepted,
                                         < 0 is -errno (EINVAL, EFAULT, EBADF, ...)
    server -> client  H                  the device was destroyed (rescind): reads and
                                         writes now fail with EBADF, poll reports hangup
    client closes                        close(fd): the kernel's release (reset callback)

``A`` exists because the kernel decides things at the moment the daemon reads
(the registration answer makes the service READY only once read, and a second
message while the first is unread fails with EFAULT); the server cannot see
reads otherwise. Writes are synchronous: the client sends ``W`` and waits for
``R``, stashing any ``M``/``H`` that arrive meanwhile. A read whose buffer is
smaller than the message fails with EINVAL on the client and the message stays
stashed, as the kernel keeps it queued.

hvguest.linux.device.SimulatedDevice (the Python client) and the C LD_PRELOAD
shim keep their own copies of these few bytes, because ``hvguest.linux`` must
not import ``hvguest.testing``; a unit test checks the Python copies agree.
"""

from __future__ import annotations

import struct
from typing import Final

#: server -> client: open() result, followed by an int32 LE errno (0 = success).
TAG_OPEN: Final = b"O"
#: server -> client: a kernel -> daemon message follows.
TAG_MESSAGE: Final = b"M"
#: client -> server: the queued message was read (no payload).
TAG_CONSUMED: Final = b"A"
#: client -> server: write(2) of the bytes that follow.
TAG_WRITE: Final = b"W"
#: server -> client: the result of the last write, an int32 LE (>= 0 count, < 0 -errno).
TAG_RESULT: Final = b"R"
#: server -> client: the device was destroyed (no payload).
TAG_HANGUP: Final = b"H"

#: Largest payload after the tag, either way. The kernel's memdup_user() would take
#: more; no daemon writes more than one 7432-byte hv_kvp_msg.
MAX_PAYLOAD: Final = 65536
#: Receive buffer size that holds any datagram of this protocol.
MAX_DATAGRAM: Final = 1 + MAX_PAYLOAD

#: The int32 little-endian that follows TAG_OPEN and TAG_RESULT.
INT32: Final = struct.Struct("<i")


def encode_open(errno_value: int) -> bytes:
    """The datagram answering an open(): 0 or a positive errno."""
    return TAG_OPEN + INT32.pack(errno_value)


def encode_result(result: int) -> bytes:
    """The datagram answering a write: a byte count or a negative errno."""
    return TAG_RESULT + INT32.pack(result)


def decode_int32(datagram: bytes | bytearray | memoryview) -> int:
    """The int32 after the tag of an ``O`` or ``R`` datagram."""
    (value,) = INT32.unpack_from(datagram, 1)
    return int(value)
