"""Reference bugs (protocol.md §10) met by the differential tests, pinned one by one.

Each test states what the reference hv_kvp_daemon 6.1 does (so a change in the
C daemon shows) and what hvguest does instead (the K-id of docs/compat.md).
Both daemons play one session in the NIC namespace (module fixture); the
bugs that are undefined behaviour in C (S7, S8) are sent to hvguest only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hvguest.abi.constants import AddrFamily, HvStatus
from hvguest.abi.structs import KVP_MSG_SIZE, KVP_POOL_RECORD_SIZE

from .kvp_lab import Lab
from .kvp_sessions import (
    Outcome,
    Sandbox,
    Session,
    Step,
    expand,
    ip_info,
    kv_delete,
    kv_enumerate,
    kv_get,
    kv_set,
    play,
    raw,
    run_session,
)

pytestmark = [pytest.mark.root, pytest.mark.gcc, pytest.mark.usefixtures("real_state_untouched")]


def _record(key: bytes, value: bytes) -> bytes:
    return key.ljust(512, b"\0") + value.ljust(KVP_POOL_RECORD_SIZE - 512, b"\0")


def _unknown_operation(operation: int) -> bytes:
    message = bytearray(KVP_MSG_SIZE)
    message[0], message[1] = operation, 1
    return bytes(message)


#: Step index -> what it provokes; the tests below read the observations by these names.
BUG_STEPS: dict[str, Step] = {
    "set-long": kv_set(1, "key", "a long first value"),
    "set-short": kv_set(1, "key", "short"),
    "get": kv_get(1, "key"),
    "eth1": ip_info("00:15:5D:C0:00:02"),
    "eth2": ip_info("00:15:5D:C0:00:04"),
    "auto-ipv4": kv_enumerate(2, 2),
    "auto-ipv6": kv_enumerate(2, 3),
    "unknown-op": raw(_unknown_operation(9)),
    "not-utf8": kv_enumerate(3, 0),
    "dup-0": kv_enumerate(0, 0),
    "dup-1": kv_enumerate(0, 1),
    "dup-2": kv_enumerate(0, 2),
    "dup-delete": kv_delete(0, "dup"),
    "append-after-partial": kv_set(4, "new", "v"),
}
NAMES = list(BUG_STEPS)
PARTIAL_TAIL = b"torn record" * 10
SEED = {
    0: _record(b"dup", b"first") + _record(b"other", b"x") + _record(b"dup", b"second"),
    3: _record(b"bad", b"caf\xe9") + _record(b"good", b"ok"),
    4: _record(b"whole", b"record") + PARTIAL_TAIL,
}
BUG_SESSION = Session("reference-bugs", expand(list(BUG_STEPS.values())), seed=SEED)


@pytest.fixture(scope="module")
def outcomes(
    kvp_shim: Path,
    kvp_resolv_conf: Path,
    kvp_lab: Lab,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Outcome, Outcome]:
    sandbox = Sandbox(kvp_shim, kvp_lab.netns, kvp_resolv_conf)
    return run_session(BUG_SESSION, sandbox, tmp_path_factory.mktemp("kvp-bugs"))


def seen(outcome: Outcome, name: str) -> dict[str, object]:
    return outcome.observations[NAMES.index(name)]


def test_s1_get_answers_empty_in_the_reference_and_the_value_in_hvguest(
    outcomes: tuple[Outcome, Outcome],
) -> None:
    reference, hvguest = outcomes
    ref = seen(reference, "get")
    assert (ref["status"], ref["value"], ref["value_size"]) == (0, "", 2)
    assert (seen(hvguest, "get")["status"], seen(hvguest, "get")["value"]) == (0, "short")  # K1


def test_s9_stale_bytes_leak_into_reference_records_but_not_hvguest(
    outcomes: tuple[Outcome, Outcome],
) -> None:
    reference, hvguest = outcomes
    expected = _record(b"key", b"short")
    ref_pool, our_pool = reference.pool_files[1], hvguest.pool_files[1]
    assert ref_pool is not None
    assert ref_pool != expected
    assert b"short\0 first value" in ref_pool  # the tail of the longer, older value
    assert our_pool == expected  # K11: clean NUL padding


def test_s11_prefix_match_mixes_eth10_into_eth1(
    outcomes: tuple[Outcome, Outcome], kvp_lab: Lab
) -> None:
    reference, hvguest = outcomes
    ref_addresses = str(seen(reference, "eth1")["ip_addr"]).split(";")
    our_addresses = str(seen(hvguest, "eth1")["ip_addr"]).split(";")
    assert "203.0.113.130" in ref_addresses  # eth10's address reported for eth1
    assert our_addresses == list(kvp_lab.addresses["eth1"])  # K2: exact MAC, that NIC only
    assert (
        seen(hvguest, "eth1")["gate_way"] == seen(reference, "eth1")["gate_way"] == "203.0.113.1;"
    )


def test_s10_and_s6_subnets_misalign_and_addresses_overflow_in_the_reference(
    outcomes: tuple[Outcome, Outcome],
) -> None:
    reference, hvguest = outcomes
    ref, ours = seen(reference, "eth2"), seen(hvguest, "eth2")
    ref_addresses = str(ref["ip_addr"]).split(";")
    assert len(str(ref["ip_addr"])) == 1024  # the whole host field, no terminator (S6)
    assert len(str(ref["sub_net"]).split(";")) < len(ref_addresses) - 1  # S10
    our_addresses = str(ours["ip_addr"]).split(";")
    assert len(str(ours["ip_addr"])) < 1024  # K18: whole addresses, terminated
    assert len(str(ours["sub_net"]).split(";")) == len(our_addresses)
    assert ours["addr_family"] == AddrFamily.IPV4 | AddrFamily.IPV6


def test_auto_pool_lists_container_addresses_and_is_cut_by_the_kernel_in_the_reference(
    outcomes: tuple[Outcome, Outcome], kvp_lab: Lab
) -> None:
    reference, hvguest = outcomes
    docker = kvp_lab.addresses["docker0"]
    assert docker[0] in str(seen(reference, "auto-ipv4")["value"])
    assert docker[0] not in str(seen(hvguest, "auto-ipv4")["value"])  # K13
    ref_v6, our_v6 = (
        str(seen(reference, "auto-ipv6")["value"]),
        str(seen(hvguest, "auto-ipv6")["value"]),
    )
    assert len(ref_v6) == 1022  # the kernel's limit, whatever it cuts
    every_address = {address for addresses in kvp_lab.addresses.values() for address in addresses}
    # The reference's list was longer than that: the kernel cut it wherever 1022 fell
    # (here it may even land on a separator; elsewhere it leaves half an address).
    assert not ref_v6.endswith(";")
    assert len(set(ref_v6.split(";")) & every_address) < len(
        every_address & set(kvp_lab.addresses["eth2"])
    )
    assert len(our_v6) <= 1022
    assert set(our_v6.split(";")) <= every_address - set(docker)  # whole addresses only


def test_unknown_operation_is_echoed_as_success_by_the_reference(
    outcomes: tuple[Outcome, Outcome],
) -> None:
    reference, hvguest = outcomes
    assert seen(reference, "unknown-op")["status"] == HvStatus.S_OK
    assert seen(hvguest, "unknown-op")["status"] == HvStatus.ERROR_NOT_SUPPORTED  # K5


def test_stored_non_utf8_fails_the_reference_enumeration(
    outcomes: tuple[Outcome, Outcome],
) -> None:
    reference, hvguest = outcomes
    assert seen(reference, "not-utf8")["status"] == HvStatus.E_FAIL
    ours = seen(hvguest, "not-utf8")
    assert (ours["status"], ours["key"], ours["value"]) == (0, "bad", "caf\ufffd")  # K12


def test_duplicate_keys_resurface_in_the_reference(outcomes: tuple[Outcome, Outcome]) -> None:
    reference, hvguest = outcomes

    def listing(outcome: Outcome) -> list[tuple[object, object]]:
        return [
            (seen(outcome, name)["key"], seen(outcome, name)["value"])
            for name in ("dup-0", "dup-1", "dup-2")
            if seen(outcome, name)["status"] == 0
        ]

    assert listing(reference) == [("dup", "first"), ("other", "x"), ("dup", "second")]
    assert listing(hvguest) == [("other", "x"), ("dup", "second")]  # K10: last record wins
    # DELETE removed only the first "dup" in the reference: the second one is back.
    assert reference.pool_files[0] is not None
    assert b"second" in reference.pool_files[0]
    assert hvguest.pool_files[0] == _record(b"other", b"x")


def test_partial_record_is_dropped_by_the_reference_and_kept_by_hvguest(
    outcomes: tuple[Outcome, Outcome],
) -> None:
    reference, hvguest = outcomes
    ref_pool, our_pool = reference.pool_files[4], hvguest.pool_files[4]
    assert ref_pool is not None
    assert our_pool is not None
    assert len(ref_pool) == 2 * KVP_POOL_RECORD_SIZE
    assert PARTIAL_TAIL not in ref_pool
    assert our_pool == _record(b"whole", b"record") + _record(b"new", b"v") + PARTIAL_TAIL  # K20


def test_out_of_range_pool_and_index_are_refused_by_hvguest(
    kvp_shim: Path, kvp_resolv_conf: Path, tmp_path: Path
) -> None:
    """S7/S8 are undefined behaviour in C: only hvguest gets these (K4)."""
    session = Session(
        "out-of-range",
        expand(
            [
                kv_set(5, "k", "v"),
                kv_get(255, "k"),
                kv_enumerate(7, 0),
                kv_enumerate(1, 2**31),
                kv_enumerate(1, 2**32 - 1),
                kv_set(1, "still", "serving"),
                kv_enumerate(1, 0),
            ]
        ),
    )
    outcome = play("hvguest", session, Sandbox(kvp_shim, None, kvp_resolv_conf), tmp_path)
    statuses = [observation["status"] for observation in outcome.observations]
    assert statuses == [HvStatus.E_FAIL] * 3 + [HvStatus.S_CONT] * 2 + [HvStatus.S_OK] * 2
    assert outcome.observations[-1]["key"] == "still"
    assert outcome.pool_files[1] == _record(b"still", b"serving")
