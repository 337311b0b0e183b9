"""Differential KVP harness: one scripted host session, played against two daemons.

A session is a list of :class:`Step` (what the host sends) plus optional seed
bytes for the pool files. :func:`run_session` plays it against the reference
``hv_kvp_daemon`` (tools/hv/hv_kvp_daemon.c, Debian's build, under the
LD_PRELOAD shim) and against hvguest (``python -m hvguest kvp -n``), each on a
simulator of its own and each inside :class:`~hvguest.testing.refshim.Isolation`
(a private mount namespace, its own network namespace, a scratch directory
over /var/lib/hyperv). What the host sees at every step and the pool files'
bytes afterwards are collected per daemon; :func:`differences` lists where they
disagree. Whether a difference is deliberate is decided in
``kvp_deliberate.py``, not here.

SET_IP_INFO is never a step: the reference would run its configuration
script, and that must never reach the machine (protocol.md §3.7).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from hvguest.abi.constants import REG_SZ, KvpOp
from hvguest.testing.host import FakeHost, HostIpInfo, HostKvpReply, decode_kvp_reply
from hvguest.testing.refshim import (
    Isolation,
    isolated_command,
    launch_reference_kvp,
    stop_daemon,
)
from hvguest.testing.simulator import Simulator

#: Seconds any single step (start, registration, one request, stop) may take.
STEP_TIMEOUT: Final = 10.0
POOLS: Final = range(5)
#: The nameservers both daemons find in /etc/resolv.conf (a read-only bind in their namespace).
RESOLV_CONF: Final = "# compat sessions\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"

Daemon = Literal["reference", "hvguest"]
Observation = dict[str, object]


@dataclass(frozen=True, slots=True)
class Step:
    """One host request. ``op`` is a KvpOp name in lower case, or "raw" (``payload`` as is)."""

    op: str
    pool: int = 1
    key: str | bytes = ""
    value: str | bytes | int = ""
    value_type: int = REG_SZ
    index: int = 0
    key_size: int | None = None
    value_size: int | None = None
    mac: str = ""
    payload: bytes = b""

    def describe(self) -> str:
        """Short text for failure messages."""
        parts = [self.op, f"pool={self.pool}"]
        if self.op in ("get", "set", "delete"):
            parts.append(f"key={_short(self.key)}")
        if self.op == "set":
            parts.append(f"value={_short(self.value)}")
        if self.op == "enumerate":
            parts.append(f"index={self.index}")
        if self.op == "get_ip_info":
            parts = [self.op, f"mac={self.mac}"]
        if self.op == "raw":
            parts = [self.op, f"operation={self.payload[:1].hex()}"]
        return " ".join(parts)


def _short(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 40 else f"{shown[:30]}...({len(shown)} chars)"


# --- step builders (sessions read like host scripts) ---------------------------------


def kv_set(
    pool: int,
    key: str | bytes,
    value: str | bytes | int,
    *,
    value_type: int = REG_SZ,
    key_size: int | None = None,
    value_size: int | None = None,
) -> Step:
    return Step(
        "set", pool, key, value, value_type=value_type, key_size=key_size, value_size=value_size
    )


def kv_get(pool: int, key: str | bytes, *, key_size: int | None = None) -> Step:
    return Step("get", pool, key, key_size=key_size)


def kv_delete(pool: int, key: str | bytes, *, key_size: int | None = None) -> Step:
    return Step("delete", pool, key, key_size=key_size)


def kv_enumerate(pool: int, index: int) -> Step:
    return Step("enumerate", pool, index=index)


def kv_enumerate_through(pool: int, count: int) -> list[Step]:
    """ENUMERATE indices 0..count (one past the expected end)."""
    return [kv_enumerate(pool, index) for index in range(count + 1)]


def ip_info(mac: str) -> Step:
    return Step("get_ip_info", 0, mac=mac)


def raw(payload: bytes) -> Step:
    return Step("raw", payload[1] if len(payload) > 1 else 0, payload=payload)


@dataclass(frozen=True, slots=True)
class Session:
    """A host script; ``seed`` pre-fills pool files (pool number -> bytes) for both daemons."""

    name: str
    steps: tuple[Step, ...]
    seed: Mapping[int, bytes] = field(default_factory=dict)
    #: K-ids the session is built to provoke (the test checks they really showed up).
    expect: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one daemon did in a session: per-step host views and the pool files after."""

    daemon: Daemon
    observations: tuple[Observation, ...]
    pool_files: Mapping[int, bytes | None]
    log: str


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement: a field of a step's answer, or a pool file's bytes."""

    step_index: int | None  #: None for a pool file
    step: Step | None
    field: str  #: observation key, or "pool_file"
    reference: object
    hvguest: object
    ref_observation: Observation
    hv_observation: Observation
    pool: int | None = None

    def describe(self) -> str:
        where = (
            f"pool file {self.pool}"
            if self.step is None
            else f"step {self.step_index} ({self.step.describe()})"
        )
        ours, theirs = _short(self.hvguest), _short(self.reference)
        return f"{where}: {self.field}: reference={theirs} hvguest={ours}"


# --- playing a session ---------------------------------------------------------------


def observe(host: FakeHost, step: Step) -> Observation:
    """Send ``step`` and return the host's view of the answer as plain fields."""
    timeout = STEP_TIMEOUT
    if step.op == "get":
        return _kvp_fields(
            host.kvp_get(step.pool, step.key, key_size=step.key_size, timeout=timeout)
        )
    if step.op == "set":
        reply = host.kvp_set(
            step.pool,
            step.key,
            step.value,
            step.value_type,
            key_size=step.key_size,
            value_size=step.value_size,
            timeout=timeout,
        )
        return {"status": reply.status}
    if step.op == "delete":
        reply = host.kvp_delete(step.pool, step.key, key_size=step.key_size, timeout=timeout)
        return {"status": reply.status}
    if step.op == "enumerate":
        return _kvp_fields(host.kvp_enumerate(step.pool, step.index, timeout=timeout))
    if step.op == "get_ip_info":
        return _ip_fields(host.kvp_get_ip_info(step.mac, timeout=timeout))
    if step.op == "raw":
        answer = host.kvp_transact(step.payload, timeout=timeout)
        decoded = decode_kvp_reply(answer)
        return {"status": answer.status, "payload": answer.payload, "operation": decoded.operation}
    raise ValueError(f"unknown step {step.op!r}")


def _kvp_fields(reply: HostKvpReply) -> Observation:
    return {
        "status": reply.status,
        "key": reply.key,
        "value": reply.value,
        "key_size": reply.key_size,
        "value_size": reply.value_size,
        "value_type": reply.value_type,
    }


def _ip_fields(reply: HostIpInfo) -> Observation:
    return {
        "status": reply.status,
        "adapter_id": reply.adapter_id,
        "addr_family": reply.addr_family,
        "dhcp_enabled": reply.dhcp_enabled,
        "ip_addr": reply.ip_addr,
        "sub_net": reply.sub_net,
        "gate_way": reply.gate_way,
        "dns_addr": reply.dns_addr,
    }


@dataclass(frozen=True, slots=True)
class Sandbox:
    """What both daemons of a run share: the shim, the network namespace, resolv.conf."""

    shim: Path
    netns: Path | None = None
    resolv_conf: Path | None = None

    def isolation(self, cover: Path) -> Isolation:
        binds = () if self.resolv_conf is None else ((self.resolv_conf, Path("/etc/resolv.conf")),)
        return Isolation(state_cover=cover, netns=self.netns, binds=binds)


def write_resolv_conf(directory: Path) -> Path:
    path = directory / "resolv.conf"
    path.write_text(RESOLV_CONF, encoding="utf-8")
    return path


@contextmanager
def running_daemon(
    daemon: Daemon, sandbox: Sandbox, workdir: Path, seed: Mapping[int, bytes]
) -> Iterator[tuple[Simulator, Path, Path]]:
    """A registered, negotiated daemon on a fresh simulator: (simulator, state dir, log)."""
    state_dir = workdir / "state"
    cover = workdir / "cover"
    log_path = workdir / "daemon.log"
    for directory in (state_dir, cover):
        directory.mkdir(parents=True)
    for pool, data in seed.items():
        (state_dir / f".kvp_pool_{pool}").write_bytes(data)
    with Simulator(workdir / "dev", reply_timeout=STEP_TIMEOUT) as sim, log_path.open("wb") as log:
        isolation = sandbox.isolation(cover)
        if daemon == "reference":
            process = launch_reference_kvp(
                sandbox.shim,
                sim.kvp_device_path,
                state_dir,
                stdout=log,
                stderr=log,
                isolation=isolation,
            )
        else:
            config = workdir / "hvguest.toml"
            config.write_text(
                f'[kvp]\ndevice = "{sim.kvp_device_path}"\nstate_dir = "{state_dir}"\n'
                "ip_injection = false\n",
                encoding="utf-8",
            )
            env = dict(os.environ, HVGUEST_CONFIG=str(config))
            env.pop("NOTIFY_SOCKET", None)
            process = subprocess.Popen(
                isolated_command([sys.executable, "-m", "hvguest", "kvp", "-n"], isolation),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            sim.wait_registered(STEP_TIMEOUT)
            negotiation = sim.host.kvp_negotiate(timeout=STEP_TIMEOUT)
            assert negotiation.status == 0, f"{daemon}: negotiation failed"
            yield sim, state_dir, log_path
        finally:
            stop_daemon(process)
        assert not any(cover.iterdir()), f"{daemon} wrote under the real /var/lib/hyperv path"


def play(daemon: Daemon, session: Session, sandbox: Sandbox, workdir: Path) -> Outcome:
    """Run ``session`` against one daemon and collect its :class:`Outcome`."""
    with running_daemon(daemon, sandbox, workdir, session.seed) as (sim, state_dir, log_path):
        observations = tuple(observe(sim.host, step) for step in session.steps)
    pool_files = {pool: _read_or_none(state_dir / f".kvp_pool_{pool}") for pool in POOLS}
    return Outcome(
        daemon, observations, pool_files, log_path.read_text(encoding="utf-8", errors="replace")
    )


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def run_session(session: Session, sandbox: Sandbox, workdir: Path) -> tuple[Outcome, Outcome]:
    """(reference, hvguest) outcomes of ``session``."""
    reference = play("reference", session, sandbox, workdir / "reference")
    hvguest = play("hvguest", session, sandbox, workdir / "hvguest")
    return reference, hvguest


def differences(session: Session, reference: Outcome, hvguest: Outcome) -> list[Difference]:
    """Every field where the two outcomes disagree, in step order, then pool files."""
    found: list[Difference] = []
    for index, (step, ref, ours) in enumerate(
        zip(session.steps, reference.observations, hvguest.observations, strict=True)
    ):
        for name in sorted(ref.keys() | ours.keys()):
            if ref.get(name) != ours.get(name):
                found.append(
                    Difference(index, step, name, ref.get(name), ours.get(name), ref, ours)
                )
    for pool in POOLS:
        ref_bytes, our_bytes = reference.pool_files[pool], hvguest.pool_files[pool]
        if ref_bytes != our_bytes:
            found.append(
                Difference(None, None, "pool_file", ref_bytes, our_bytes, {}, {}, pool=pool)
            )
    return found


def is_op(step: Step | None, *ops: str) -> bool:
    return step is not None and step.op in ops


def kvp_op_name(operation: int) -> str:
    """ "get", "set", ... for a KvpOp value; "op<n>" otherwise."""
    try:
        return KvpOp(operation).name.lower()
    except ValueError:
        return f"op{operation}"


def expand(steps: Sequence[Step | Sequence[Step]]) -> tuple[Step, ...]:
    """Flatten a script mixing single steps and lists of steps."""
    flat: list[Step] = []
    for item in steps:
        if isinstance(item, Step):
            flat.append(item)
        else:
            flat.extend(item)
    return tuple(flat)
