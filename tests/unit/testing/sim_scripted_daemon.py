"""A scripted stand-in for hv_kvp_daemon, to exercise the simulator without the real daemon.

Opens the simulated device through hvguest.linux.device.SimulatedDevice and
speaks raw hv_kvp_msg bytes, so every test controls exactly what the kernel
sees. Replies are built like the reference daemon builds them: the request
buffer edited in place, the status written over the op/pool header.

Run as a script (``python sim_scripted_daemon.py DEVICE [--stall]``) it
registers and serves a small in-memory pool until the device goes away; with
``--stall`` it reads requests and never answers.
"""

from __future__ import annotations

import argparse
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from hvguest.abi.constants import KVP_OP_REGISTER1, HvStatus, KvpOp
from hvguest.abi.structs import KVP_MSG_SIZE
from hvguest.linux.device import SimulatedDevice
from hvguest.testing import kvp_kernel as kvp

_U32 = struct.Struct("<I")

#: The MAC the script mode knows for GET_IP_INFO, and what it reports.
KNOWN_MAC = "00:15:5D:00:00:01"
KNOWN_IP = {
    "ip_addr": "192.0.2.10;2001:db8::10",
    "sub_net": "255.255.255.0;64",
    "gate_way": "192.0.2.1",
    "dns_addr": "192.0.2.53",
}


def registration(operation: int = KVP_OP_REGISTER1, size: int = KVP_MSG_SIZE) -> bytes:
    """A registration write: op 100 in an otherwise zero hv_kvp_msg."""
    message = bytearray(size)
    message[kvp.OPERATION] = operation
    return bytes(message)


def c_text(data: bytes, offset: int) -> str:
    """The NUL-terminated UTF-8 string at ``offset``."""
    return kvp.c_string(data, offset).decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class KernelRequest:
    """A message the simulated kernel queued for the daemon."""

    raw: bytes

    @property
    def operation(self) -> int:
        return self.raw[kvp.OPERATION]

    @property
    def pool(self) -> int:
        return self.raw[kvp.POOL]

    def u32(self, offset: int) -> int:
        return int(_U32.unpack_from(self.raw, offset)[0])

    def text(self, offset: int) -> str:
        return c_text(self.raw, offset)

    @property
    def key(self) -> str:
        """The key of a GET/SET (offset 16) or DELETE (offset 8)."""
        return self.text(kvp.DELETE_KEY if self.operation == KvpOp.DELETE else kvp.SET_KEY)


def build_reply(
    request: bytes,
    *,
    status: int = HvStatus.S_OK,
    fields: dict[int, bytes] | None = None,
) -> bytes:
    """The request edited in place: ``status`` at offset 0 and raw ``fields`` by offset."""
    reply = bytearray(request)
    _U32.pack_into(reply, kvp.ERROR, status & 0xFFFFFFFF)
    for offset, data in (fields or {}).items():
        reply[offset : offset + len(data)] = data
    return bytes(reply)


def nul(text: str) -> bytes:
    """UTF-8 with a terminator."""
    return text.encode() + b"\0"


class ScriptedDaemon:
    """One open of the simulated KVP device, driven step by step."""

    def __init__(self, path: Path) -> None:
        self.device = SimulatedDevice(path)
        #: The error that ended serve(), if any.
        self.error: OSError | None = None

    def register(self, operation: int = KVP_OP_REGISTER1) -> bytes:
        """Write the registration and read the kernel's answer."""
        self.device.write(registration(operation))
        return self.device.read(KVP_MSG_SIZE)

    def read_request(self) -> KernelRequest:
        return KernelRequest(self.device.read(KVP_MSG_SIZE))

    def reply(self, data: bytes) -> int:
        return self.device.write(data)

    def answer(
        self, request: KernelRequest, *, status: int = 0, fields: dict[int, bytes] | None = None
    ) -> int:
        return self.reply(build_reply(request.raw, status=status, fields=fields))

    def close(self) -> None:
        self.device.close()

    def serve(self, store: dict[tuple[int, str], str], *, stall: bool = False) -> None:
        """Answer requests from ``store`` until a device call fails (EBADF on destroy)."""
        while True:
            try:
                request = self.read_request()
                if not stall:
                    self.reply(answer_from_store(request, store))
            except OSError as error:
                self.error = error
                return

    def serve_in_thread(self, store: dict[tuple[int, str], str]) -> threading.Thread:
        thread = threading.Thread(target=self.serve, args=(store,), daemon=True)
        thread.start()
        return thread


def answer_from_store(request: KernelRequest, store: dict[tuple[int, str], str]) -> bytes:
    """What a working daemon would answer, with GET's value placed at 532 (sharp edge S1)."""
    raw, pool, operation = request.raw, request.pool, request.operation
    if operation == KvpOp.SET:
        value = raw[kvp.SET_VALUE : kvp.SET_VALUE + max(request.u32(kvp.SET_VALUE_SIZE) - 1, 0)]
        store[pool, request.key] = value.decode("utf-8", "surrogateescape")
        return build_reply(raw)
    if operation == KvpOp.GET:
        if (pool, request.key) not in store:
            return build_reply(raw, status=HvStatus.S_CONT)
        return build_reply(raw, fields={kvp.ENUM_VALUE: nul(store[pool, request.key])})
    if operation == KvpOp.DELETE:
        if store.pop((pool, request.key), None) is None:
            return build_reply(raw, status=HvStatus.S_CONT)
        return build_reply(raw)
    if operation == KvpOp.ENUMERATE:
        items = [(key, value) for (p, key), value in store.items() if p == pool]
        index = request.u32(kvp.ENUM_INDEX)
        if index >= len(items):
            return build_reply(raw, status=HvStatus.S_CONT)
        found_key, found_value = items[index]
        fields = {kvp.ENUM_KEY: nul(found_key), kvp.ENUM_VALUE: nul(found_value)}
        return build_reply(raw, fields=fields)
    if operation == KvpOp.GET_IP_INFO:
        if request.text(kvp.IP_ADAPTER_ID) != KNOWN_MAC:
            return build_reply(raw, status=HvStatus.E_FAIL)
        offsets = {
            "ip_addr": kvp.IP_ADDR,
            "sub_net": kvp.IP_SUB_NET,
            "gate_way": kvp.IP_GATE_WAY,
            "dns_addr": kvp.IP_DNS_ADDR,
        }
        fields = {offsets[name]: nul(value) for name, value in KNOWN_IP.items()}
        fields[kvp.IP_DHCP_ENABLED] = b"\x01"
        return build_reply(raw, fields=fields)
    if operation == KvpOp.SET_IP_INFO:
        return build_reply(raw)
    return build_reply(raw, status=HvStatus.E_FAIL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("device", type=Path)
    parser.add_argument("--stall", action="store_true", help="read requests, never answer")
    args = parser.parse_args()
    daemon = ScriptedDaemon(args.device)
    daemon.register()
    sys.stdout.write("registered\n")
    sys.stdout.flush()
    daemon.serve({}, stall=args.stall)
    daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
