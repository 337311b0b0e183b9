"""The deliberate KVP differences from the reference, machine-readable.

Every K-id of the KVP table in docs/compat.md has an entry here (the tests
check both directions). An entry's ``explains`` is a predicate over one
:class:`~.kvp_sessions.Difference` that accepts exactly the shape of that
improvement (e.g. K1: the reference answered a GET with status 0 and an
empty value); a difference no entry explains fails the differential test.
Entries whose behaviour is never sent to the reference (SET_IP_INFO, pool
numbers out of range: undefined behaviour in C) have no predicate and are
covered by hvguest-only tests in test_kvp_reference_bugs.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from ipaddress import ip_address
from pathlib import Path
from typing import Final

from hvguest.abi.constants import HvStatus, KvpOp
from hvguest.abi.structs import KVP_POOL_RECORD_SIZE
from hvguest.config import DEFAULT_EXCLUDE_NICS

from .kvp_lab import NICS, Lab
from .kvp_sessions import Difference, Session

#: The kernel forwards at most this many UTF-16 units of a value to the host.
HOST_VALUE_UNITS: Final = 1022
#: ... and at most this many of an address list in GET_IP_INFO (no terminator: S6).
HOST_IP_UNITS: Final = 1024
_KEY_BYTES: Final = 512
#: The only MAC spelling the reference matches: /sys/class/net/*/address upper-cased.
_REFERENCE_MAC: Final = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}")
COMPAT_DOC: Final = Path(__file__).resolve().parents[2] / "docs" / "compat.md"


@dataclass(frozen=True, slots=True)
class Context:
    """What a predicate may look at besides the difference itself."""

    session: Session
    lab: Lab | None = None


Predicate = Callable[[Difference, Context], bool]


@dataclass(frozen=True, slots=True)
class Deliberate:
    summary: str
    explains: Predicate | None = None


# --- helpers -------------------------------------------------------------------------


def _items(text: object) -> list[str]:
    return [item for item in str(text).split(";") if item] if text else []


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _records(data: bytes) -> tuple[list[tuple[bytes, bytes]], list[bytes], bytes]:
    """(key/value strings, whole records, trailing partial record) of a pool file."""
    whole = len(data) - len(data) % KVP_POOL_RECORD_SIZE
    raw = [data[i : i + KVP_POOL_RECORD_SIZE] for i in range(0, whole, KVP_POOL_RECORD_SIZE)]
    strings = [
        (record[:_KEY_BYTES].split(b"\0", 1)[0], record[_KEY_BYTES:].split(b"\0", 1)[0])
        for record in raw
    ]
    return strings, raw, data[whole:]


def _duplicated_keys(session: Session, pool: int) -> set[bytes]:
    keys = [key for key, _value in _records(session.seed.get(pool, b""))[0]]
    return {key for key in keys if keys.count(key) > 1}


def _nic_of_mac(lab: Lab, mac: str) -> str | None:
    wanted = mac.replace("-", ":").lower()
    return next((nic.name for nic in NICS if nic.mac == wanted and nic.name in lab.addresses), None)


def _subnets_by_address(observation: Mapping[str, object]) -> list[tuple[str, str]]:
    return list(zip(_items(observation["ip_addr"]), _items(observation["sub_net"]), strict=False))


# --- the predicates ------------------------------------------------------------------


def _k1_get_returns_value(diff: Difference, _ctx: Context) -> bool:
    ref, ours = diff.ref_observation, diff.hv_observation
    return (
        diff.step is not None
        and diff.step.op == "get"
        and diff.field in ("value", "value_size")
        and ref["status"] == ours["status"] == HvStatus.S_OK
        and ref["value"] == ""
        and ref["value_size"] == 2
        and ours["value_size"] == 2 * (len(str(ours["value"]).encode("utf-16-le")) // 2 + 1)
    )


def _k2_exact_mac(diff: Difference, ctx: Context) -> bool:
    """Prefix-matched NICs' addresses dropped, or a MAC in another spelling accepted."""
    if diff.step is None or diff.step.op != "get_ip_info" or ctx.lab is None:
        return False
    ref, ours = diff.ref_observation, diff.hv_observation
    name = _nic_of_mac(ctx.lab, diff.step.mac)
    if name is None:
        return False
    own = set(ctx.lab.addresses[name])
    listed = set(_items(ours["ip_addr"]))
    # All of the NIC's addresses, or as many whole ones as fit the host field (K18).
    complete = listed == own or (listed < own and len(str(ours["ip_addr"])) > HOST_IP_UNITS - 64)
    if ours["status"] != HvStatus.S_OK or not complete:
        return False
    if ref["status"] == HvStatus.E_FAIL:  # the reference compares "00:15:5D:..." text only
        return _REFERENCE_MAC.fullmatch(diff.step.mac) is None
    if diff.field not in ("ip_addr", "sub_net", "addr_family"):
        return False
    others = {
        address
        for nic, addresses in ctx.lab.addresses.items()
        if nic != name and nic.startswith(name)
        for address in addresses
    }
    kept = [pair for pair in _subnets_by_address(ref) if pair[0] in own]
    extra = set(_items(ref["ip_addr"])) - own
    return bool(extra) and extra <= others and kept == _subnets_by_address(ours)


def _k5_unknown_operation(diff: Difference, _ctx: Context) -> bool:
    if diff.step is None or diff.step.op != "raw" or diff.field not in ("status", "payload"):
        return False
    operation = diff.step.payload[0]
    return (
        operation >= KvpOp.COUNT
        and diff.ref_observation["status"] == HvStatus.S_OK
        and diff.hv_observation["status"] == HvStatus.ERROR_NOT_SUPPORTED
    )


def _k10_duplicates(diff: Difference, ctx: Context) -> bool:
    """Seeded duplicate keys: differences only at or after the first duplicate's position."""
    if diff.step is None:
        return False
    duplicated = _duplicated_keys(ctx.session, diff.step.pool)
    if not duplicated:
        return False
    if diff.step.op in ("get", "set", "delete"):
        key = diff.step.key.encode() if isinstance(diff.step.key, str) else diff.step.key
        return key in duplicated
    if diff.step.op == "enumerate":
        strings = _records(ctx.session.seed[diff.step.pool])[0]
        first = min(i for i, (key, _v) in enumerate(strings) if key in duplicated)
        return diff.step.index >= first
    return False


def _k12_invalid_utf8(diff: Difference, _ctx: Context) -> bool:
    ref, ours = diff.ref_observation, diff.hv_observation
    return (
        diff.step is not None
        and diff.step.op in ("enumerate", "get")
        and ref["status"] in (HvStatus.E_FAIL, HvStatus.S_OK)
        and ours["status"] == HvStatus.S_OK
        and "\ufffd" in str(ours.get("key", "")) + str(ours.get("value", ""))
        and (ref["status"] == HvStatus.E_FAIL or ref["value"] == "")
    )


def _k13_auto_addresses(diff: Difference, ctx: Context) -> bool:
    """AUTO pool address lists: excluded NICs left out, whole addresses within 1022 units."""
    if (
        diff.step is None
        or diff.step.op != "enumerate"
        or diff.step.pool != 2
        or diff.step.index not in (2, 3)
        or diff.field not in ("value", "value_size")
        or ctx.lab is None
    ):
        return False
    ref_value, our_value = str(diff.ref_observation["value"]), str(diff.hv_observation["value"])
    excluded = {
        address
        for nic, addresses in ctx.lab.addresses.items()
        if any(fnmatchcase(nic, pattern) for pattern in DEFAULT_EXCLUDE_NICS)
        for address in addresses
    }
    known = {address for addresses in ctx.lab.addresses.values() for address in addresses}
    ref_items = [item for item in _items(ref_value) if item not in excluded]
    if len(ref_value) >= HOST_VALUE_UNITS and ref_items:
        ref_items.pop()  # the kernel cut the reference's last address short
    ours = _items(our_value)
    return (
        len(our_value) <= HOST_VALUE_UNITS
        and all(item in known and item not in excluded for item in ours)
        and ours[: len(ref_items)] == ref_items
        and all(_is_address(item) for item in ours)
    )


def _is_address(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _k18_aligned_subnets(diff: Difference, ctx: Context) -> bool:
    """Whole addresses within the host field, one subnet per address (S10, S6)."""
    if (
        diff.step is None
        or diff.step.op != "get_ip_info"
        or diff.field not in ("ip_addr", "sub_net")
    ):
        return False
    if ctx.lab is None or (name := _nic_of_mac(ctx.lab, diff.step.mac)) is None:
        return False
    ref, ours = diff.ref_observation, diff.hv_observation
    addresses, ref_addresses = _items(ours["ip_addr"]), _items(ref["ip_addr"])
    if len(str(ref["ip_addr"])) >= HOST_IP_UNITS:
        ref_addresses.pop()  # the kernel cut the reference's list mid-address
    ref_subnets, our_subnets = _items(ref["sub_net"]), _items(ours["sub_net"])
    common = min(len(ref_subnets), len(our_subnets))
    return (
        len(str(ours["ip_addr"])) < HOST_IP_UNITS
        and set(addresses) <= set(ctx.lab.addresses[name])
        and addresses[: len(ref_addresses)] == ref_addresses[: len(addresses)]
        and len(our_subnets) == len(addresses)
        and our_subnets[:common] == ref_subnets[:common]
        and (
            len(ref_subnets) != len(_items(ref["ip_addr"]))
            or len(str(ref["ip_addr"])) >= HOST_IP_UNITS
        )
    )


def explain_pool_file(diff: Difference, ctx: Context) -> set[str] | None:
    """The K-ids that together explain a pool file difference, or None."""
    if (
        diff.pool is None
        or not isinstance(diff.reference, bytes)
        or not isinstance(diff.hvguest, bytes)
    ):
        return None
    used: set[str] = set()
    ref_strings, ref_raw, ref_tail = _records(diff.reference)
    our_strings, our_raw, our_tail = _records(diff.hvguest)
    if our_tail != ref_tail:
        seed_tail = _records(ctx.session.seed.get(diff.pool, b""))[2]
        if ref_tail or our_tail != seed_tail:
            return None
        used.add("K20")
    if ref_strings != our_strings:
        duplicated = _duplicated_keys(ctx.session, diff.pool)
        if not duplicated:
            return None
        ref_rest = [record for record in ref_strings if record[0] not in duplicated]
        our_rest = [record for record in our_strings if record[0] not in duplicated]
        our_keys = [key for key, _value in our_strings]
        if ref_rest != our_rest or any(our_keys.count(key) > 1 for key in duplicated):
            return None
        used.add("K10")
    elif ref_raw != our_raw:
        clean = all(
            record == key.ljust(_KEY_BYTES, b"\0") + value.ljust(len(record) - _KEY_BYTES, b"\0")
            for record, (key, value) in zip(our_raw, our_strings, strict=True)
        )
        if not clean:
            return None
        used.add("K11")
    return used


#: K-id -> what differs and the predicate accepting it (None: never sent to the reference).
DELIBERATE: Final[Mapping[str, Deliberate]] = {
    "K1": Deliberate("host GET returns the stored value", _k1_get_returns_value),
    "K2": Deliberate(
        "GET_IP_INFO: exact (normalised) MAC, that NIC's addresses only", _k2_exact_mac
    ),
    "K3": Deliberate("default routes through that NIC only (the 6.1 reference agrees)"),
    "K4": Deliberate("pool >= 5 -> HV_E_FAIL; index past the end -> HV_S_CONT (UB in C)"),
    "K5": Deliberate("unknown operation -> HV_ERROR_NOT_SUPPORTED", _k5_unknown_operation),
    "K6": Deliberate("malformed message -> log line, HV status, keep serving"),
    "K7": Deliberate("pool I/O error -> HV status, keep serving"),
    "K8": Deliberate("crash-safe in-place pool edits with fdatasync (same bytes)"),
    "K9": Deliberate("flock and fcntl locks"),
    "K10": Deliberate("duplicate keys: last record wins, SET/DELETE act on all", _k10_duplicates),
    "K11": Deliberate("clean NUL padding in pool records (see explain_pool_file)"),
    "K12": Deliberate("stored non-UTF-8 bytes sent with U+FFFD", _k12_invalid_utf8),
    "K13": Deliberate("AUTO pool: container NICs excluded, whole addresses", _k13_auto_addresses),
    "K14": Deliberate("FQDN/os-release refreshed while running"),
    "K15": Deliberate("plain host name until the FQDN resolves"),
    "K16": Deliberate("SET_IP_INFO validated, atomic, argv, timeout (never sent to the reference)"),
    "K17": Deliberate("SET_IP_INFO families in their own sections (never sent to the reference)"),
    "K18": Deliberate("GET_IP_INFO subnets stay aligned with addresses", _k18_aligned_subnets),
    "K19": Deliberate("zeroed registration message"),
    "K20": Deliberate("a trailing partial pool record is kept (see explain_pool_file)"),
    # Not a difference in any answer: checked in test_reference_shim.py and the e2e tests.
    "K21": Deliberate("a missing or busy device is waited for and logged once, not an exit"),
}


def explain(diff: Difference, ctx: Context) -> set[str] | None:
    """The K-ids explaining ``diff`` (a non-empty set), or None if it is not deliberate."""
    if diff.step is None:
        return explain_pool_file(diff, ctx)
    ids = {
        kid
        for kid, entry in DELIBERATE.items()
        if entry.explains is not None and entry.explains(diff, ctx)
    }
    return ids or None


def documented_kvp_ids(doc: Path = COMPAT_DOC) -> set[str]:
    """The K-ids in the first column of docs/compat.md's tables."""
    return set(re.findall(r"^\| (K\d+) \|", doc.read_text(encoding="utf-8"), flags=re.MULTILINE))
