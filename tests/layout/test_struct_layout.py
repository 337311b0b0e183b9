"""The ctypes mirror against gcc: every sizeof, alignment and offsetof, and every constant.

A C probe is generated from ``hvguest.abi.structs.ALL_STRUCTS``: for each
struct it prints sizeof and _Alignof, and for every member reachable through
``_fields_`` (anonymous unions included, under their C member paths such as
``body.kvp_enum_data.data.value``) its offsetof and sizeof. It is compiled with
``gcc -Wall -Werror`` against the installed uapi header and the project's
reference copy, run, and compared with what ctypes computes. Constants in
``hvguest.abi.constants`` that the header defines are printed by the same probe.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path

import pytest

from hvguest.abi import constants, structs

pytestmark = pytest.mark.gcc

SYSTEM_HEADER = Path("/usr/include/linux/hyperv.h")
#: shared/ sits next to the project root (see the shared README).
REFERENCE_HEADER = Path(__file__).resolve().parents[2] / "../shared/reference/hyperv.h"

CType = type[ctypes.Structure] | type[ctypes.Union]
Layout = dict[str, int]

#: C spelling of each enum's members: the enum drops this prefix.
ENUM_PREFIXES: dict[type[IntEnum], str] = {
    constants.VssOp: "VSS_OP_",
    constants.FcopyOp: "",
    constants.KvpOp: "KVP_OP_",
    constants.KvpPool: "KVP_POOL_",
    constants.HvStatus: "HV_",
    constants.AddrFamily: "ADDR_FAMILY_",
}


# --- the ctypes side -----------------------------------------------------------------


def members(cls: CType, parent: str = "", base: int = 0) -> Iterator[tuple[str, int, int]]:
    """(C member path, offset, size) of every member, depth first.

    An anonymous union has no name in C: its members are reached directly, so
    its own name is left out of the path and it gets no row of its own.
    """
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for name, field_type, *_ in cls._fields_:
        descriptor = getattr(cls, name)
        offset = base + descriptor.offset
        path = parent if name in anonymous else f"{parent}.{name}".lstrip(".")
        if name not in anonymous:
            yield path, offset, descriptor.size
        if isinstance(field_type, type) and issubclass(field_type, ctypes.Structure | ctypes.Union):
            yield from members(field_type, path, offset)


def ctypes_layout(name: str, cls: CType) -> Layout:
    layout = {f"sizeof {name}": ctypes.sizeof(cls), f"alignof {name}": ctypes.alignment(cls)}
    for path, offset, size in members(cls):
        layout[f"offsetof {name}.{path}"] = offset
        layout[f"sizeof {name}.{path}"] = size
    return layout


def all_ctypes_layouts() -> Layout:
    layout: Layout = {}
    for name, cls in structs.ALL_STRUCTS.items():
        layout |= ctypes_layout(name, cls)
    return layout


def python_constants() -> dict[str, int]:
    """Every integer constant of abi.constants under its C name."""
    named = {
        name: value
        for name, value in vars(constants).items()
        if name.isupper() and type(value) is int
    }
    for enum, prefix in ENUM_PREFIXES.items():
        named |= {f"{prefix}{member.name}": member.value for member in enum}
    return named


def packed_everywhere(cls: CType) -> CType:
    """A copy of ``cls`` with ``_pack_ = 1`` on it and on every nested struct/union."""
    fields: list[tuple[object, ...]] = []
    for name, field_type, *rest in cls._fields_:
        if isinstance(field_type, type) and issubclass(field_type, ctypes.Structure | ctypes.Union):
            fields.append((name, packed_everywhere(field_type), *rest))
        else:
            fields.append((name, field_type, *rest))
    base = ctypes.Union if issubclass(cls, ctypes.Union) else ctypes.Structure
    namespace: dict[str, object] = {"_pack_": 1, "_fields_": fields}
    if hasattr(cls, "_anonymous_"):
        namespace["_anonymous_"] = cls._anonymous_
    packed: CType = type(cls.__name__, (base,), namespace)
    return packed


# --- the gcc side -------------------------------------------------------------------


def probe_source(include: str, names: list[str], *, pack_all: bool = False) -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#pragma pack(push, 1)" if pack_all else "",
        f"#include {include}",
        "#pragma pack(pop)" if pack_all else "",
        "#define MEMBER_SIZE(type, member) sizeof(((type *)0)->member)",
        "int main(void) {",
    ]

    def emit(key: str, expression: str, fmt: str = "%zu") -> None:
        lines.append(f'    printf("%s {fmt}\\n", "{key}", {expression});')

    for name, cls in structs.ALL_STRUCTS.items():
        c_type = f"struct {name}"
        emit(f"sizeof {name}", f"sizeof({c_type})")
        emit(f"alignof {name}", f"_Alignof({c_type})")
        for path, _, _ in members(cls):
            emit(f"offsetof {name}.{path}", f"offsetof({c_type}, {path})")
            emit(f"sizeof {name}.{path}", f"MEMBER_SIZE({c_type}, {path})")
    for name in names:
        emit(f"const {name}", f"(long long)({name})", "%lld")
    lines += ["    return 0;", "}", ""]
    return "\n".join(lines)


def compile_and_run(source: str, workdir: Path) -> Layout:
    c_file = workdir / "probe.c"
    binary = workdir / "probe"
    c_file.write_text(source)
    built = subprocess.run(
        ["gcc", "-Wall", "-Werror", "-o", str(binary), str(c_file)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    output = subprocess.run(
        [str(binary)], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    layout: Layout = {}
    for line in output.splitlines():
        key, _, value = line.rpartition(" ")
        layout[key] = int(value)
    return layout


def header_identifiers(header: Path) -> set[str]:
    """Every upper-case identifier in the header: its #defines and enum constants."""
    return set(re.findall(r"\b[A-Z_][A-Z0-9_]*\b", header.read_text()))


# --- fixtures -----------------------------------------------------------------------


def header_include(which: str) -> tuple[Path, str]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if which == "system":
        if not SYSTEM_HEADER.is_file():
            pytest.skip(f"{SYSTEM_HEADER} is not installed (linux-libc-dev)")
        return SYSTEM_HEADER, "<linux/hyperv.h>"
    reference = REFERENCE_HEADER.resolve()
    if not reference.is_file():
        pytest.skip(f"no reference header at {reference}")
    return reference, f'"{reference}"'


@pytest.fixture(scope="module", params=["system", "reference"])
def header(request: pytest.FixtureRequest) -> tuple[Path, str]:
    param: str = request.param
    return header_include(param)


@pytest.fixture(scope="module")
def gcc_layout(header: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Layout:
    path, include = header
    names = sorted(python_constants().keys() & header_identifiers(path))
    return compile_and_run(probe_source(include, names), tmp_path_factory.mktemp("probe"))


# --- tests --------------------------------------------------------------------------


def test_every_size_alignment_and_offset_matches_gcc(gcc_layout: Layout) -> None:
    expected = all_ctypes_layouts()
    compiled = {key: value for key, value in gcc_layout.items() if not key.startswith("const ")}
    assert compiled.keys() == expected.keys()
    mismatches = {
        key: (expected[key], compiled[key]) for key in expected if expected[key] != compiled[key]
    }
    assert mismatches == {}, "ctypes vs gcc"


def test_the_probe_covers_nested_and_anonymous_members(gcc_layout: Layout) -> None:
    assert gcc_layout["offsetof hv_kvp_msg.body.kvp_enum_data.data.value"] == 532
    assert gcc_layout["offsetof hv_kvp_msg.body.kvp_get.data.value_u64"] == 528
    assert gcc_layout["offsetof hv_kvp_msg.error"] == 0
    assert gcc_layout["offsetof hv_vss_msg.dm_info.flags"] == 8
    assert len([key for key in gcc_layout if key.startswith("offsetof ")]) > 100


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("hv_kvp_msg", 7432),
        ("hv_kvp_ip_msg", 7428),
        ("hv_vss_msg", 12),
        ("hv_start_fcopy", 1088),
        ("hv_do_fcopy", 6196),
    ],
)
def test_message_sizes(gcc_layout: Layout, name: str, size: int) -> None:
    assert gcc_layout[f"sizeof {name}"] == size
    assert ctypes.sizeof(structs.ALL_STRUCTS[name]) == size


def test_an_everything_packed_mirror_would_be_caught(gcc_layout: Layout) -> None:
    # The trap of style.md 1.2: packing hv_kvp_msg_delete too gives 7430, which
    # the driver refuses (len < sizeof -> EINVAL). The comparison above sees it.
    packed = ctypes_layout("hv_kvp_msg", packed_everywhere(structs.hv_kvp_msg))
    assert packed["sizeof hv_kvp_msg"] == 7430
    assert gcc_layout["sizeof hv_kvp_msg"] == 7432
    differing = {key for key in packed if packed[key] != gcc_layout[key]}
    assert {"sizeof hv_kvp_msg", "sizeof hv_kvp_msg.body"} <= differing


def test_gcc_agrees_that_packing_everything_gives_7430(
    header: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    source = probe_source(header[1], [], pack_all=True)
    layout = compile_and_run(source, tmp_path_factory.mktemp("packed"))
    packed = ctypes_layout("hv_kvp_msg", packed_everywhere(structs.hv_kvp_msg))
    assert layout["sizeof hv_kvp_msg"] == 7430
    assert {key: layout[key] for key in packed} == packed


def test_every_constant_the_header_defines_has_the_compiled_value(
    header: tuple[Path, str], gcc_layout: Layout
) -> None:
    ours = python_constants()
    defined = ours.keys() & header_identifiers(header[0])
    compiled = {key.removeprefix("const "): value for key, value in gcc_layout.items()}
    assert {name: compiled[name] for name in defined} == {name: ours[name] for name in defined}
    # Every enum member must be found under its C name (a renamed member would
    # otherwise drop out of the comparison silently), and so must the sizes.
    enum_names = {
        f"{prefix}{member.name}" for enum, prefix in ENUM_PREFIXES.items() for member in enum
    }
    assert enum_names <= defined
    assert {
        "HV_KVP_EXCHANGE_MAX_KEY_SIZE",
        "HV_KVP_EXCHANGE_MAX_VALUE_SIZE",
        "MAX_ADAPTER_ID_SIZE",
        "MAX_IP_ADDR_SIZE",
        "MAX_GATEWAY_SIZE",
        "W_MAX_PATH",
        "DATA_FRAGMENT",
        "KVP_OP_REGISTER",
        "KVP_OP_REGISTER1",
        "VSS_OP_REGISTER1",
        "REG_SZ",
        "UTIL_FW_VERSION",
    } <= defined


def test_every_enum_in_constants_has_a_c_prefix() -> None:
    enums = {
        value
        for value in vars(constants).values()
        if isinstance(value, type) and issubclass(value, IntEnum) and value is not IntEnum
    }
    assert enums == set(ENUM_PREFIXES)
