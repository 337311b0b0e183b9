"""``hvguest pool list|get|set|delete|dump``: inspect and edit the KVP pool files.

No C counterpart in tools/hv (kvp_client from microsoft/lis-test is the
closest: it prints ``Key: %s; Value: %s`` per record). Reads open the files
read-only under shared locks and never create them; ``set``/``delete`` lock
and edit like the daemon (``hvguest.linux.pools.PoolFile``), so a running
daemon picks the change up at its next request.

Text output escapes what a terminal would mangle: bytes that are not UTF-8,
control characters and backslashes become ``\\xNN`` / ``\\\\`` (and ``=`` in
keys of ``list``). ``--json`` output has a stable schema (``"schema": 1``):
each key and value is given as text (invalid UTF-8 backslash-escaped) and as
exact hex (``key_hex``, ``value_hex``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from hvguest.abi.constants import KvpPool
from hvguest.errors import HvError
from hvguest.linux.pools import (
    DEFAULT_STATE_DIR,
    RECORD_SIZE,
    PoolContents,
    PoolFile,
    PoolRecord,
    pool_path,
    read_pool,
)

JSON_SCHEMA_VERSION: Final = 1
EXIT_OK: Final = 0
#: Key not found, or the operation failed (message on stderr).
EXIT_FAILED: Final = 1
_POOLS: Final = tuple(pool for pool in KvpPool if pool is not KvpPool.COUNT)
_PROG: Final = "hvguest pool"


def add_pool_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pool`` and its actions; the parsed namespace runs with ``run_pool_command``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"directory of the .kvp_pool_N files (default {DEFAULT_STATE_DIR})",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")

    def pool_option(parser: argparse.ArgumentParser, default: int | None) -> None:
        scope = f"default {default}" if default is not None else "default: all pools"
        parser.add_argument(
            "--pool", type=int, choices=range(len(_POOLS)), default=default, help=scope
        )

    pool = subparsers.add_parser(
        "pool",
        help="inspect or edit the KVP pool files",
        description="Inspect or edit the KVP pool files shared with the host.",
    )
    actions = pool.add_subparsers(dest="pool_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="effective key=value per pool")
    pool_option(listing, None)
    get = actions.add_parser("get", parents=[common], help="print one value (exit 1 if missing)")
    get.add_argument("key")
    pool_option(get, int(KvpPool.GUEST))
    set_ = actions.add_parser("set", parents=[common], help="add or replace a key")
    set_.add_argument("key")
    set_.add_argument("value")
    pool_option(set_, int(KvpPool.GUEST))
    delete = actions.add_parser("delete", parents=[common], help="remove every record of a key")
    delete.add_argument("key")
    pool_option(delete, int(KvpPool.GUEST))
    dump = actions.add_parser(
        "dump", parents=[common], help="raw records incl. duplicates and partial tail"
    )
    pool_option(dump, None)
    pool.set_defaults(handler=run_pool_command)


def run_pool_command(args: argparse.Namespace) -> int:
    """Run a parsed ``pool`` action; returns the exit code."""
    state_dir: Path = args.state_dir
    try:
        match args.pool_action:
            case "list":
                return _list(state_dir, _selected(args.pool), as_json=args.json)
            case "dump":
                return _dump(state_dir, _selected(args.pool), as_json=args.json)
            case "get":
                return _get(state_dir, KvpPool(args.pool), args.key, as_json=args.json)
            case "set":
                return _set(state_dir, KvpPool(args.pool), args.key, args.value, as_json=args.json)
            case "delete":
                return _delete(state_dir, KvpPool(args.pool), args.key, as_json=args.json)
            case other:
                raise ValueError(f"unknown pool action {other!r}")
    except HvError as err:
        print(f"{_PROG}: {err}", file=sys.stderr)
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hvguest.daemon.pool_cli pool ...``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="hvguest")
    add_pool_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_pool_command(parser.parse_args(argv))


# -------------------------------------------------------------------------- actions


def _selected(pool: int | None) -> tuple[KvpPool, ...]:
    return _POOLS if pool is None else (KvpPool(pool),)


def _items(path: Path) -> list[tuple[bytes, bytes]] | None:
    if not path.exists():
        return None
    with PoolFile(path, readonly=True) as pool_file:
        return pool_file.items()


def _argument_bytes(text: str) -> bytes:
    # argv was decoded with surrogateescape; this gives back the exact bytes typed.
    return os.fsencode(text)


def _list(state_dir: Path, pools: tuple[KvpPool, ...], *, as_json: bool) -> int:
    listing = []
    for pool in pools:
        path = pool_path(state_dir, pool)
        listing.append((pool, path, _items(path)))
    if as_json:
        _print_json(
            {
                "pools": [
                    {
                        "pool": int(pool),
                        "path": str(path),
                        "exists": items is not None,
                        "items": [_json_pair(key, value) for key, value in items or []],
                    }
                    for pool, path, items in listing
                ]
            }
        )
        return EXIT_OK
    for pool, path, items in listing:
        if items is None:
            continue
        if len(pools) > 1:
            print(f"# pool {int(pool)}: {path} ({len(items)} keys)")
        for key, value in items:
            print(f"{display(key, also='=')}={display(value)}")
    return EXIT_OK


def _dump(state_dir: Path, pools: tuple[KvpPool, ...], *, as_json: bool) -> int:
    dumps: list[tuple[KvpPool, Path, PoolContents | None]] = []
    for pool in pools:
        path = pool_path(state_dir, pool)
        dumps.append((pool, path, read_pool(path) if path.exists() else None))
    if as_json:
        _print_json({"pools": [_json_dump(pool, path, contents) for pool, path, contents in dumps]})
        return EXIT_OK
    for pool, path, contents in dumps:
        if contents is None:
            print(f"# pool {int(pool)}: {path} (missing)")
            continue
        size = len(contents.records) * RECORD_SIZE + contents.partial_tail_size
        print(
            f"# pool {int(pool)}: {path}, {size} bytes, {len(contents.records)} records, "
            f"partial tail {contents.partial_tail_size} bytes"
        )
        for record in contents.records:
            marker = " (blank slot)" if record.blank else ""
            print(
                f"[{record.index}] @{record.offset} "
                f"{display(record.key, also='=')}={display(record.value)}{marker}"
            )
        if contents.partial_tail:
            print(f"partial tail: {contents.partial_tail.hex()}")
    return EXIT_OK


def _get(state_dir: Path, pool: KvpPool, key_text: str, *, as_json: bool) -> int:
    path = pool_path(state_dir, pool)
    key = _argument_bytes(key_text)
    value = None
    if path.exists():
        with PoolFile(path, readonly=True) as pool_file:
            value = pool_file.get(key)
    if value is None:
        return _not_found(key, pool, path)
    if as_json:
        _print_json({"pool": int(pool), "path": str(path), **_json_pair(key, value)})
    else:
        print(display(value))
    return EXIT_OK


def _set(state_dir: Path, pool: KvpPool, key_text: str, value_text: str, *, as_json: bool) -> int:
    path = pool_path(state_dir, pool)
    key, value = _argument_bytes(key_text), _argument_bytes(value_text)
    state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    with PoolFile(path) as pool_file:
        pool_file.set(key, value)
    if as_json:
        _print_json(
            {"pool": int(pool), "path": str(path), "action": "set", **_json_pair(key, value)}
        )
    return EXIT_OK


def _delete(state_dir: Path, pool: KvpPool, key_text: str, *, as_json: bool) -> int:
    path = pool_path(state_dir, pool)
    key = _argument_bytes(key_text)
    deleted = False
    if path.exists():
        with PoolFile(path) as pool_file:
            deleted = pool_file.delete(key)
    if not deleted:
        return _not_found(key, pool, path)
    if as_json:
        _print_json(
            {
                "pool": int(pool),
                "path": str(path),
                "action": "delete",
                "key": _json_text(key),
                "key_hex": key.hex(),
            }
        )
    return EXIT_OK


def _not_found(key: bytes, pool: KvpPool, path: Path) -> int:
    print(f"{_PROG}: key '{display(key)}' not found in pool {int(pool)} ({path})", file=sys.stderr)
    return EXIT_FAILED


# ----------------------------------------------------------------------- formatting


def display(raw: bytes, *, also: str = "") -> str:
    """``raw`` as printable text: invalid UTF-8, controls, ``\\`` and ``also`` escaped."""
    out = []
    for char in raw.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, smuggled by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F or char in also:
            out.append(f"\\x{code:02x}")
        else:
            out.append(char)
    return "".join(out)


def _json_text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _json_pair(key: bytes, value: bytes) -> dict[str, str]:
    return {
        "key": _json_text(key),
        "value": _json_text(value),
        "key_hex": key.hex(),
        "value_hex": value.hex(),
    }


def _json_record(record: PoolRecord) -> dict[str, object]:
    return {
        "index": record.index,
        "offset": record.offset,
        "blank": record.blank,
        **_json_pair(record.key, record.value),
    }


def _json_dump(pool: KvpPool, path: Path, contents: PoolContents | None) -> dict[str, object]:
    records = contents.records if contents is not None else []
    tail = contents.partial_tail if contents is not None else b""
    return {
        "pool": int(pool),
        "path": str(path),
        "exists": contents is not None,
        "records": [_json_record(record) for record in records],
        "partial_tail_size": len(tail),
        "partial_tail_hex": tail.hex(),
    }


def _print_json(document: dict[str, object]) -> None:
    print(json.dumps({"schema": JSON_SCHEMA_VERSION, **document}, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
