"""hvguest's KVP daemon against the reference hv_kvp_daemon: same host script, same answers.

Each session runs once against Debian's hv_kvp_daemon 6.1 (tools/hv/hv_kvp_daemon.c)
and once against ``python -m hvguest kvp -n``, each on its own simulator and in
its own namespaces (kvp_sessions.py). The test fails on any difference in what
the host sees or in the pool files' bytes that no deliberate difference of
docs/compat.md (kvp_deliberate.py) explains. The sessions cover every operation
on every pool, boundary sizes, non-ASCII text, the AUTO pool, many records,
pre-existing pool files written by others, and GET_IP_INFO on several NICs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hvguest.abi.constants import REG_U32, REG_U64, HvStatus, KvpOp
from hvguest.abi.structs import KVP_MSG_SIZE, KVP_POOL_RECORD_SIZE

from .kvp_deliberate import DELIBERATE, Context, documented_kvp_ids, explain
from .kvp_lab import NICS, Lab
from .kvp_sessions import (
    Outcome,
    Sandbox,
    Session,
    Step,
    differences,
    expand,
    ip_info,
    kv_delete,
    kv_enumerate,
    kv_enumerate_through,
    kv_get,
    kv_set,
    raw,
    run_session,
)

pytestmark = [pytest.mark.root, pytest.mark.gcc, pytest.mark.usefixtures("real_state_untouched")]

#: The AUTO pool's keys, in index order; the values must agree except as listed.
AUTO_KEYS = (
    "FullyQualifiedDomainName",
    "IntegrationServicesVersion",
    "NetworkAddressIPv4",
    "NetworkAddressIPv6",
    "OSBuildNumber",
    "OSName",
    "OSMajorVersion",
    "OSMinorVersion",
    "OSVersion",
    "ProcessorArchitecture",
)


def record(key: bytes, value: bytes) -> bytes:
    """A pool record as other writers (cloud-init, the reference) lay it out."""
    return key.ljust(512, b"\0") + value.ljust(KVP_POOL_RECORD_SIZE - 512, b"\0")


def every_operation(pool: int) -> list[Step]:
    return [
        kv_get(pool, "missing"),
        kv_delete(pool, "missing"),
        kv_enumerate(pool, 0),
        kv_set(pool, "alpha", "one"),
        kv_set(pool, "beta", "two"),
        kv_set(pool, "gamma", "three"),
        kv_get(pool, "alpha"),
        kv_get(pool, "Alpha"),  # case-sensitive
        kv_set(pool, "alpha", "uno, longer than before"),
        kv_set(pool, "beta", "2"),  # shorter: stale bytes in the reference's record
        kv_delete(pool, "alpha"),  # first record: the tail shifts up
        kv_delete(pool, "alpha"),
        *kv_enumerate_through(pool, 2),
        kv_enumerate(pool, 1000),
        kv_delete(pool, "gamma"),  # last record
        *kv_enumerate_through(pool, 1),
        kv_set_u32(pool, "u32", 4294967295),
        kv_set_u64(pool, "u64", 18446744073709551615),
        kv_set(pool, "other-type", "ignored", value_type=7),  # kernel: empty value
        kv_get(pool, "u32"),
        *kv_enumerate_through(pool, 4),
    ]


def kv_set_u32(pool: int, key: str, value: int) -> Step:
    return kv_set(pool, key, value, value_type=REG_U32)


def kv_set_u64(pool: int, key: str, value: int) -> Step:
    return kv_set(pool, key, value, value_type=REG_U64)


def boundaries() -> list[Step]:
    key_255 = "k" * 255  # 255 units + NUL fill the 512-byte host key field
    value_1023 = "v" * 1023  # 1023 units + NUL fill the 2048-byte host value field
    key_256 = "K" * 256  # one over: no room for the terminator
    value_1024 = "V" * 1024
    return [
        kv_set(0, key_255, value_1023),
        kv_get(0, key_255),
        kv_set(0, key_256, value_1024, key_size=512, value_size=2048),
        kv_set(0, "short", "x", key_size=600),  # key_size beyond the field
        kv_set(0, "utf8-limit", "語" * 1000),  # 3000 UTF-8 bytes: cut at 2047
        kv_set(0, "astral-limit", "😀" * 512, value_size=2048),  # 2048 UTF-8 bytes: cut at 2044
        kv_set(0, "語" * 200, "CJK key cut at 511 bytes"),
        *kv_enumerate_through(0, 6),
        kv_delete(0, key_255),
        *kv_enumerate_through(0, 5),
    ]


def unicode_text() -> list[Step]:
    texts = [
        "café",
        "naïve Ünïcödé",
        "日本語のキー",
        "𝄞 music 😀",
        "a\ud800b",
        "\udfff\ud800x",
        "ok\u200d",
    ]
    steps: list[Step] = []
    for n, text in enumerate(texts):
        steps += [kv_set(1, text, f"{text}={n}"), kv_get(1, text)]
    steps += kv_enumerate_through(1, len(texts))
    steps += [kv_delete(1, "café"), kv_delete(1, "ab"), *kv_enumerate_through(1, len(texts) - 2)]
    return steps


def many_records(count: int) -> list[Step]:
    steps: list[Step] = [
        kv_set(0, f"record-{n:03d}", f"value {n} " + "x" * (n % 37)) for n in range(count)
    ]
    steps += [kv_set(0, f"record-{n:03d}", "rewritten") for n in range(0, count, 17)]
    steps += [kv_delete(0, f"record-{n:03d}") for n in range(5, count, 23)]
    steps += [kv_get(0, "record-199"), kv_get(0, "record-005")]
    steps += kv_enumerate_through(0, count - len(range(5, count, 23)))
    return steps


def unknown_operations() -> list[Step]:
    steps = []
    for operation in (6, 7, 9, 100, 255):
        message = bytearray(KVP_MSG_SIZE)
        message[0], message[1] = operation, 1
        steps.append(raw(bytes(message)))
    return steps


K1_K11 = frozenset({"K1", "K11"})
PLAIN_SESSIONS = [
    *(
        Session(f"every-operation-pool-{pool}", expand(every_operation(pool)), expect=K1_K11)
        for pool in range(5)
    ),
    Session("boundary-sizes", expand(boundaries()), expect=K1_K11),
    Session("unicode", expand(unicode_text()), expect=K1_K11),
    Session("many-records", expand(many_records(200)), expect=K1_K11),
    Session(
        "unknown-operations",
        expand([*unknown_operations(), kv_set(1, "still", "serving"), kv_enumerate(1, 0)]),
        expect=frozenset({"K5"}),
    ),
    Session(
        "seeded-by-other-writers",
        expand(
            [
                *kv_enumerate_through(0, 3),
                kv_get(0, "dup"),
                kv_set(0, "dup", "updated"),
                *kv_enumerate_through(0, 3),
                kv_delete(0, "dup"),
                *kv_enumerate_through(0, 2),
                *kv_enumerate_through(3, 2),
                kv_get(3, "latin1"),
                *kv_enumerate_through(4, 1),
                kv_set(4, "appended", "after a partial record"),
                *kv_enumerate_through(4, 2),
            ]
        ),
        seed={
            0: record(b"dup", b"first") + record(b"other", b"x") + record(b"dup", b"second"),
            3: record(b"latin1", "café".encode("latin-1")) + record(b"fine", b"ok"),
            4: record(b"whole", b"record") + b"half a record" * 20,
        },
        expect=frozenset({"K1", "K10", "K11", "K12", "K20"}),
    ),
]


def lab_session() -> Session:
    steps: list[Step] = kv_enumerate_through(2, len(AUTO_KEYS))
    for nic in NICS:
        steps += [ip_info(nic.mac.upper()), ip_info(nic.mac.lower())]
    steps += [
        ip_info(NICS[0].mac.upper().replace(":", "-")),
        ip_info("00:15:5D:FF:FF:FF"),
        ip_info(""),
    ]
    return Session("nics-and-auto-pool", expand(steps))


def assert_only_deliberate(
    session: Session, reference: Outcome, hvguest: Outcome, lab: Lab | None = None
) -> set[str]:
    """Fail on any unexplained difference; the K-ids that explained the others."""
    context = Context(session, lab)
    used: set[str] = set()
    unexplained: list[str] = []
    for difference in differences(session, reference, hvguest):
        ids = explain(difference, context)
        if ids is None:
            unexplained.append(difference.describe())
        else:
            used |= ids
    assert not unexplained, (
        "differences not listed in docs/compat.md:\n"
        + "\n".join(unexplained)
        + (f"\n--- reference log ---\n{reference.log}\n--- hvguest log ---\n{hvguest.log}")
    )
    return used


@pytest.mark.parametrize("session", PLAIN_SESSIONS, ids=lambda session: session.name)
def test_session_differs_only_deliberately(
    session: Session, plain_sandbox: Sandbox, tmp_path: Path
) -> None:
    reference, hvguest = run_session(session, plain_sandbox, tmp_path)
    used = assert_only_deliberate(session, reference, hvguest)
    # Every session really ran and provoked what it was written for.
    assert len(reference.observations) == len(hvguest.observations) == len(session.steps)
    assert session.expect <= used <= DELIBERATE.keys()


def test_nics_and_auto_pool_differ_only_deliberately(
    lab_sandbox: Sandbox, kvp_lab: Lab, tmp_path: Path
) -> None:
    session = lab_session()
    reference, hvguest = run_session(session, lab_sandbox, tmp_path)
    used = assert_only_deliberate(session, reference, hvguest, kvp_lab)
    # The namespace really exercised what it was built for.
    assert {"K2", "K13", "K18"} <= used
    ours = dict(
        zip(AUTO_KEYS, (o["value"] for o in hvguest.observations[: len(AUTO_KEYS)]), strict=True)
    )
    assert ours["IntegrationServicesVersion"] == "3.1"
    eth0 = hvguest.observations[len(AUTO_KEYS) + 1]
    assert eth0["status"] == HvStatus.S_OK
    assert eth0["gate_way"] == "192.0.2.1;2001:db8:0:1::1;"
    assert eth0["dns_addr"] == "192.0.2.53;2001:db8::53;"


def test_session_steps_cover_every_operation_and_pool() -> None:
    """The scripts above really send every KVP operation but SET_IP_INFO to every pool."""
    sent = {(step.op, step.pool) for session in PLAIN_SESSIONS for step in session.steps}
    for pool in range(5):
        for op in ("get", "set", "delete", "enumerate"):
            assert (op, pool) in sent
    assert all(
        step.op != KvpOp.SET_IP_INFO.name.lower()
        for session in PLAIN_SESSIONS
        for step in session.steps
    )


def test_every_deliberate_difference_is_documented_and_vice_versa() -> None:
    assert documented_kvp_ids() == set(DELIBERATE)
