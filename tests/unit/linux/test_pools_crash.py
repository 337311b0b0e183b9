"""SIGKILL a process editing a pool at random points; the pool must stay sound.

The child (this file run as a script) does random SETs and DELETEs through
LinuxPoolStore and appends an intent line to a log *before* each operation,
so the parent knows every value ever written, which operations completed
(those followed by another line) and which one was in flight at the kill.
After each kill the parent checks the file:

* the size is a multiple of 2560 (or ends in the pre-existing partial tail);
* every record is one that was written completely, or a blank slot (the
  documented residue of an append cut short);
* every key has exactly the value the completed operations give it; only the
  key of the in-flight operation may be either before or after it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hvguest.abi.constants import KvpPool
from hvguest.linux.pools import RECORD_SIZE, LinuxPoolStore, decode_record, encode_record

GUEST = KvpPool.GUEST
KEYS = [b"key-%02d" % n for n in range(24)]
#: Kills per test run; raise it (HVGUEST_CRASH_ITERATIONS) for a soak run.
ITERATIONS = int(os.environ.get("HVGUEST_CRASH_ITERATIONS", "25"))
TAIL = b"torn-cloud-init-record\0" + b"\x7f" * 754  # 777 bytes: somebody else's crash
STARTUP_TIMEOUT = 30.0


def make_value(key: bytes, version: str, length: int) -> bytes:
    unit = key + b":" + version.encode() + b";"
    return (unit * (length // len(unit) + 1))[:length]


# ---------------------------------------------------------------------------- child


def child(state_dir: Path, log_path: Path, seed: int, mode: str) -> None:
    rng = random.Random(seed)
    store = LinuxPoolStore(state_dir, fsync=False)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for n in range(1_000_000):  # bounded; the parent kills us long before
        key = rng.choice(KEYS)
        version = f"{seed}.{n}"
        if mode == "all" and rng.random() < 0.3:
            os.write(log, b"D %s\n" % key)
            store.delete(GUEST, key)
            continue
        # In "tail" mode only short values: the one case that stays tear-free behind a
        # foreign partial tail (long over long would need to park a copy past the tail).
        long_value = mode == "all" and rng.random() < 0.5
        length = rng.randint(512, 2047) if long_value else rng.randint(0, 511)
        os.write(log, b"S %s %s %d\n" % (key, version.encode(), length))
        store.set(GUEST, key, make_value(key, version, length))


# --------------------------------------------------------------------------- parent


@dataclass
class Model:
    """What the pool must contain, rebuilt from the children's intent logs."""

    values: dict[bytes, bytes] = field(default_factory=dict)
    written: set[tuple[bytes, bytes]] = field(default_factory=set)
    operations: int = 0

    def apply(self, line: bytes) -> tuple[bytes, bytes | None]:
        """The key and its value after the logged operation."""
        fields = line.split()
        key = fields[1]
        if fields[0] == b"D":
            return key, None
        value = make_value(key, fields[2].decode(), int(fields[3]))
        self.written.add((key, value))
        return key, value

    def commit(self, key: bytes, value: bytes | None) -> None:
        self.operations += 1
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value


def check_pool(path: Path, model: Model, log: bytes, *, tail: bytes, context: str) -> int:
    """Verify the file against the model, then advance the model; returns the blank slots."""
    lines = log.split(b"\n")
    # The last element is b"" after a complete line, or a torn line: that op never started.
    complete, torn = lines[:-1], lines[-1]
    in_flight = complete.pop() if complete and not torn else None
    for line in complete:
        model.commit(*model.apply(line))
    before = dict(model.values)
    # The in-flight SET may have landed: its value counts as written completely.
    flight_key, flight_after = model.apply(in_flight) if in_flight is not None else (None, None)

    data = path.read_bytes()
    assert len(data) % RECORD_SIZE == len(tail), f"{context}: size {len(data)}"
    assert data.endswith(tail), f"{context}: partial tail damaged"
    whole = len(data) - len(tail)
    found: dict[bytes, bytes] = {}
    blanks = 0
    for offset in range(0, whole, RECORD_SIZE):
        key, value = decode_record(data, offset)
        if not key:
            blanks += 1
            continue
        assert (key, value) in model.written, f"{context}: torn record at {offset}: {key!r}"
        found[key] = value  # the last record wins

    expected = before
    if flight_key is not None:
        outcome = found.get(flight_key)
        assert outcome in (before.get(flight_key), flight_after), (
            f"{context}: in-flight key {flight_key!r} is neither before nor after"
        )
        model.commit(flight_key, outcome)
        expected = dict(model.values)
    assert found == expected, f"{context}: lost or stale keys"
    return blanks


def run_and_kill(state_dir: Path, log_path: Path, seed: int, mode: str, delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, __file__, "child", str(state_dir), str(log_path), str(seed), mode],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (log_path.exists() and log_path.stat().st_size > 0):
            if proc.poll() is not None:
                _, err = proc.communicate(timeout=10)
                pytest.fail(f"child exited with {proc.returncode}: {err.decode()}")
            if time.monotonic() > deadline:
                pytest.fail("child did not start editing the pool")
            time.sleep(0.005)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)


@pytest.mark.parametrize("mode", ["all", "tail"])
def test_sigkill_at_random_points_never_loses_or_tears_a_record(tmp_path: Path, mode: str) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    state_dir = tmp_path / "hyperv"
    state_dir.mkdir()
    path = state_dir / ".kvp_pool_1"
    model = Model()
    tail = TAIL if mode == "tail" else b""
    if mode == "tail":  # every key exists, so the child only rewrites in place
        for key in KEYS:
            value = make_value(key, "seed", 100)
            model.commit(key, value)
            model.written.add((key, value))
        path.write_bytes(b"".join(encode_record(k, v) for k, v in model.values.items()) + TAIL)

    blanks = 0
    for iteration in range(ITERATIONS):
        log_path = tmp_path / f"intent-{iteration}.log"
        run_and_kill(state_dir, log_path, rng.randrange(1 << 30), mode, rng.uniform(0, 0.03))
        context = f"seed {seed}, mode {mode}, kill {iteration}"
        new_blanks = check_pool(path, model, log_path.read_bytes(), tail=tail, context=context)
        assert new_blanks <= blanks + 1, f"{context}: one crash left several blank slots"
        blanks = new_blanks
    assert model.operations > ITERATIONS  # the kills landed mid-run, not before the first op

    with LinuxPoolStore(state_dir, fsync=False) as store:  # and the pool is still usable
        store.set(GUEST, b"after", b"the storm")
        assert store.get(GUEST, b"after") == b"the storm"
        for key, value in model.values.items():
            assert store.get(GUEST, key) == value


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
