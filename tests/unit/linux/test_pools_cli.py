"""``hvguest pool list|get|set|delete|dump`` (hvguest.daemon.pool_cli)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hvguest.daemon.pool_cli import display, main


def pack(key: bytes, value: bytes) -> bytes:
    return struct.pack("512s2048s", key, value)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "hyperv"
    path.mkdir()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["pool", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_the_effective_items_of_every_existing_pool(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (state_dir / ".kvp_pool_0").write_bytes(pack(b"host", b"pushed"))
    (state_dir / ".kvp_pool_1").write_bytes(pack(b"a", b"1") + pack(b"b", b"2") + pack(b"a", b"3"))
    code, out, _ = run(capsys, "list", "--state-dir", str(state_dir))
    assert code == 0
    assert out.splitlines() == [
        f"# pool 0: {state_dir}/.kvp_pool_0 (1 keys)",
        "host=pushed",
        f"# pool 1: {state_dir}/.kvp_pool_1 (2 keys)",
        "b=2",
        "a=3",
    ]
    code, out, _ = run(capsys, "list", "--pool", "1", "--state-dir", str(state_dir))
    assert out.splitlines() == ["b=2", "a=3"]


def test_text_output_escapes_what_a_terminal_would_mangle() -> None:
    assert display("clé".encode()) == "clé"
    assert display(b"a\xffb\n\\") == "a\\xffb\\x0a\\\\"
    assert display(b"k=v", also="=") == "k\\x3dv"


def test_get_prints_the_value_or_fails_with_exit_1(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (state_dir / ".kvp_pool_3").write_bytes(pack(b"PhysicalHostName", b"HOST01"))
    assert run(capsys, "get", "PhysicalHostName", "--pool", "3", "--state-dir", str(state_dir)) == (
        0,
        "HOST01\n",
        "",
    )
    code, out, err = run(capsys, "get", "nope", "--pool", "3", "--state-dir", str(state_dir))
    assert (code, out) == (1, "")
    assert "'nope' not found in pool 3" in err


def test_get_on_a_missing_pool_file_fails_without_creating_it(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "get", "k", "--state-dir", str(state_dir))
    assert code == 1
    assert "not found in pool 1" in err
    assert not (state_dir / ".kvp_pool_1").exists()


def test_set_and_delete_default_to_pool_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "created-by-set"
    assert run(capsys, "set", "k", "v", "--state-dir", str(state_dir)) == (0, "", "")
    assert (state_dir / ".kvp_pool_1").read_bytes() == pack(b"k", b"v")
    assert run(capsys, "set", "k", "w", "--state-dir", str(state_dir))[0] == 0
    assert (state_dir / ".kvp_pool_1").read_bytes() == pack(b"k", b"w")
    assert run(capsys, "delete", "k", "--state-dir", str(state_dir)) == (0, "", "")
    assert (state_dir / ".kvp_pool_1").read_bytes() == b""
    code, _, err = run(capsys, "delete", "k", "--state-dir", str(state_dir))
    assert code == 1
    assert "not found" in err


def test_set_refused_by_the_limits_exits_1(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "set", "k" * 512, "v", "--state-dir", str(state_dir))
    assert code == 1
    assert "refused" in err


def test_dump_shows_duplicates_blank_slots_and_the_partial_tail(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = bytes(2560)
    (state_dir / ".kvp_pool_1").write_bytes(
        pack(b"a", b"1") + pack(b"a", b"2") + blank + b"\x01\x02"
    )
    code, out, _ = run(capsys, "dump", "--pool", "1", "--state-dir", str(state_dir))
    assert code == 0
    assert out.splitlines() == [
        f"# pool 1: {state_dir}/.kvp_pool_1, 7682 bytes, 3 records, partial tail 2 bytes",
        "[0] @0 a=1",
        "[1] @2560 a=2",
        "[2] @5120 = (blank slot)",
        "partial tail: 0102",
    ]


def test_json_list_and_get_have_a_stable_schema(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (state_dir / ".kvp_pool_1").write_bytes(pack(b"k\xff", "välue".encode()))
    code, out, _ = run(capsys, "list", "--pool", "1", "--json", "--state-dir", str(state_dir))
    assert code == 0
    item = {"key": "k\\xff", "value": "välue", "key_hex": "6bff", "value_hex": "76c3a46c7565"}
    assert json.loads(out) == {
        "schema": 1,
        "pools": [{"pool": 1, "path": f"{state_dir}/.kvp_pool_1", "exists": True, "items": [item]}],
    }
    # argv arrives decoded with surrogateescape; the CLI matches the exact bytes.
    code, out, _ = run(
        capsys, "get", os.fsdecode(b"k\xff"), "--json", "--state-dir", str(state_dir)
    )
    assert code == 0
    assert json.loads(out) == {
        "schema": 1,
        "pool": 1,
        "path": f"{state_dir}/.kvp_pool_1",
        **item,
    }


def test_json_dump_schema(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (state_dir / ".kvp_pool_1").write_bytes(pack(b"a", b"1") + b"\x09")
    code, out, _ = run(capsys, "dump", "--json", "--state-dir", str(state_dir))
    assert code == 0
    document = json.loads(out)
    assert document["schema"] == 1
    assert [entry["exists"] for entry in document["pools"]] == [False, True, False, False, False]
    assert document["pools"][1] == {
        "pool": 1,
        "path": f"{state_dir}/.kvp_pool_1",
        "exists": True,
        "records": [
            {
                "index": 0,
                "offset": 0,
                "blank": False,
                "key": "a",
                "value": "1",
                "key_hex": "61",
                "value_hex": "31",
            }
        ],
        "partial_tail_size": 1,
        "partial_tail_hex": "09",
    }
    assert document["pools"][0]["records"] == []


def test_module_entry_point_keeps_argv_bytes_exact(state_dir: Path) -> None:
    command: list[str | bytes] = [sys.executable, "-m", "hvguest.daemon.pool_cli", "pool"]
    where: list[str | bytes] = ["--state-dir", os.fsencode(state_dir)]
    subprocess.run([*command, "set", b"k\xfe", b"v\x80", *where], check=True, timeout=60)
    assert (state_dir / ".kvp_pool_1").read_bytes() == pack(b"k\xfe", b"v\x80")
    result = subprocess.run(
        [*command, "get", b"missing", *where], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 1


def test_the_main_cli_dispatches_pool_commands(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hvguest.daemon.cli import main as hvguest_main

    assert hvguest_main(["pool", "set", "k", "v", "--state-dir", str(state_dir)]) == 0
    assert hvguest_main(["pool", "get", "k", "--state-dir", str(state_dir)]) == 0
    assert capsys.readouterr().out == "v\n"
