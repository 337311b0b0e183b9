"""Stand-ins for the other programs that share the KVP pool files (run as scripts).

``append``: writes like cloud-init's HyperVKvpReportingHandler (open "ab",
``flock(LOCK_EX)``, whole 2560-byte ``512s2048s`` records, flush, unlock).
``read``: reads like kvp_client from microsoft/lis-test (POSIX read lock
F_RDLCK on the whole file, then every record), checking that each whole
record is complete and well-formed; it prints a JSON report.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
import struct
import sys
import time
from pathlib import Path
from typing import Final

RECORD: Final = struct.Struct("512s2048s")
#: Values the daemon side of the test writes: b"<key>=v<number>".
_STORE_VALUE: Final = re.compile(rb"(store-\d+)=v\d+")


def appended_value(key: bytes) -> bytes:
    """What the appender stores under ``key`` (the reader checks it)."""
    return b'{"name":"' + key + b'","result":"SUCCESS"}'


def record_problem(record: bytes) -> str | None:
    """Why ``record`` is not a complete record of this test, or None."""
    key_field, value_field = RECORD.unpack(record)
    key, sep, key_pad = key_field.partition(b"\0")
    value, vsep, value_pad = value_field.partition(b"\0")
    if not sep or not vsep or key_pad.strip(b"\0") or value_pad.strip(b"\0"):
        return f"unterminated or dirty field: {key[:40]!r}"
    if key.startswith(b"ci|"):
        return None if value == appended_value(key) else f"torn cloud-init record {key!r}"
    match = _STORE_VALUE.fullmatch(value)
    if match is None or match.group(1) != key:
        return f"torn daemon record {key!r}={value[:40]!r}"
    return None


def append(path: Path, count: int, pause: float) -> None:
    with path.open("ab") as stream:
        for number in range(count):
            key = b"ci|%d" % number
            fcntl.flock(stream, fcntl.LOCK_EX)
            stream.write(RECORD.pack(key, appended_value(key)))
            stream.flush()
            fcntl.flock(stream, fcntl.LOCK_UN)
            time.sleep(pause)  # spread the appends over the daemon's run


def read(path: Path, stop: Path, max_rounds: int) -> dict[str, object]:
    rounds = partial = most = 0
    problems: list[str] = []
    while rounds < max_rounds and not stop.exists():
        with path.open("rb") as stream:
            fcntl.lockf(stream, fcntl.LOCK_SH)  # F_RDLCK, start 0, len 0
            data = stream.read()
            fcntl.lockf(stream, fcntl.LOCK_UN)
        rounds += 1
        whole = len(data) - len(data) % RECORD.size
        # The appender holds only flock, so it may be mid-write: kvp_client's fread()
        # would drop that partial record too.
        partial += whole != len(data)
        most = max(most, whole // RECORD.size)
        for offset in range(0, whole, RECORD.size):
            problem = record_problem(data[offset : offset + RECORD.size])
            if problem is not None:
                problems.append(f"round {rounds} @{offset}: {problem}")
    return {"rounds": rounds, "partial": partial, "most_records": most, "problems": problems}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    actions = parser.add_subparsers(dest="action", required=True)
    appender = actions.add_parser("append")
    appender.add_argument("path", type=Path)
    appender.add_argument("count", type=int)
    appender.add_argument("pause", type=float)
    reader = actions.add_parser("read")
    reader.add_argument("path", type=Path)
    reader.add_argument("stop", type=Path)
    reader.add_argument("max_rounds", type=int)
    args = parser.parse_args(argv)
    if args.action == "append":
        append(args.path, args.count, args.pause)
    else:
        print(json.dumps(read(args.path, args.stop, args.max_rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
