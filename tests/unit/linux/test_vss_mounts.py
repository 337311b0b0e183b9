"""linux.mounts: mountinfo parsing (escapes, optional fields, ro) and loop detection in sysfs."""

from __future__ import annotations

from pathlib import Path

from hvguest.linux.mounts import LinuxMountSource, parse_mountinfo, unescape
from hvguest.services.ports import Mount

MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro
40 29 8:17 / /mnt/my\\040disk rw,relatime shared:20 master:3 - xfs /dev/sdb1 rw,attr2
41 29 8:17 /sub /srv/bind ro,relatime - xfs /dev/sdb1 rw,attr2
42 29 8:33 / /mnt/ro rw,relatime - ext4 /dev/sdc1 ro
43 29 7:0 / /mnt/iso rw - ext4 /dev/loop0 rw
44 29 253:0 / /mnt/dm rw - ext4 /dev/mapper/x rw
45 29 253:1 / /mnt/dm-plain rw - ext4 /dev/mapper/y rw
this line is garbage
"""


def test_unescape_decodes_octal_escapes() -> None:
    assert unescape(r"/mnt/a\040b\011c\134d\012e") == "/mnt/a b\tc\\d\ne"


def test_parse_mountinfo_fields() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mountpoint for m in mounts] == [
        "/proc",
        "/",
        "/mnt/my disk",
        "/srv/bind",
        "/mnt/ro",
        "/mnt/iso",
        "/mnt/dm",
        "/mnt/dm-plain",
    ]
    assert mounts[1] == Mount("/", "/dev/vda", "ext4", "254:0", mount_id=29, parent_id=1)
    assert mounts[2] == Mount("/mnt/my disk", "/dev/sdb1", "xfs", "8:17", mount_id=40, parent_id=29)
    assert mounts[3].read_only  # per-mount ro (a read-only bind)
    assert mounts[4].read_only  # superblock ro
    assert not mounts[2].read_only


def make_sys(tmp_path: Path) -> Path:
    block = tmp_path / "sys" / "dev" / "block"
    (block / "7:0" / "loop").mkdir(parents=True)
    # dm-0 stacked on loop0; dm-1 on a plain disk.
    for dm, slave, number in (("253:0", "loop0", "7:0"), ("253:1", "sdd", "8:48")):
        slave_dir = block / dm / "slaves" / slave
        slave_dir.mkdir(parents=True)
        (slave_dir / "dev").write_text(number + "\n")
    (block / "8:48").mkdir()
    return tmp_path / "sys"


def test_loop_devices_and_devices_stacked_on_them_are_marked(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(MOUNTINFO)
    source = LinuxMountSource(proc, make_sys(tmp_path))
    on_loop = {m.mountpoint: m.on_loop for m in source.mounts()}
    assert on_loop["/mnt/iso"]
    assert on_loop["/mnt/dm"]
    assert not on_loop["/mnt/dm-plain"]
    assert not on_loop["/proc"]


def test_a_cycle_in_slaves_ends(tmp_path: Path) -> None:
    block = tmp_path / "sys" / "dev" / "block"
    for name, other in (("253:5", "253:6"), ("253:6", "253:5")):
        slave = block / name / "slaves" / "x"
        slave.mkdir(parents=True)
        (slave / "dev").write_text(other)
    assert not LinuxMountSource(tmp_path, tmp_path / "sys").is_loop_backed("253:5")


def test_real_mountinfo_parses_and_has_root() -> None:
    mounts = LinuxMountSource().mounts()
    assert any(m.mountpoint == "/" for m in mounts)


def test_mount_points_with_unicode_line_breaks_parse() -> None:
    # The kernel leaves these characters unescaped; they must not split the line.
    text = (
        "29 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "40 29 8:17 / /mnt/a\x0cb\u2028c rw - xfs /dev/sdb1 rw\n"
    )
    assert [m.mountpoint for m in parse_mountinfo(text)] == ["/", "/mnt/a\x0cb\u2028c"]
