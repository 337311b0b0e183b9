"""The guest's mounts from /proc/self/mountinfo, with loop-device facts from sysfs.

Replaces the getmntent() walk over /proc/mounts and is_dev_loop() of
tools/hv/hv_vss_daemon.c. mountinfo (not /proc/mounts) because it names each
mount's superblock (major:minor), which is how one filesystem mounted several
times (bind mounts, btrfs subvolumes) is recognised and frozen once.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from hvguest.records import replace
from hvguest.services.ports import Mount

#: Octal escapes the kernel writes for space, tab, newline and backslash (show_mountinfo()).
_ESCAPE: Final = re.compile(r"\\([0-7]{3})")
#: Stacking deeper than this is a loop in sysfs, not a real device stack.
_MAX_STACK_DEPTH: Final = 16


def unescape(field: str) -> str:
    """A mountinfo path field with its \\040-style octal escapes decoded."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every well-formed line of a mountinfo file, in order; on_loop is left False.

    Line format (proc(5)): ``id parent major:minor root mountpoint options
    [optional fields...] - fstype source super-options``.
    """
    mounts: list[Mount] = []
    # split("\n"), not splitlines(): the kernel escapes only space, tab,
    # newline and backslash, so a mount point may hold \f, \x85 or U+2028.
    for line in text.split("\n"):
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < separator + 3:
            continue
        try:
            mount_id, parent_id = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        options = fields[5].split(",")
        super_options = fields[separator + 3].split(",") if len(fields) > separator + 3 else []
        mounts.append(
            Mount(
                mountpoint=unescape(fields[4]),
                source=unescape(fields[separator + 2]),
                fstype=fields[separator + 1],
                device=fields[2],
                read_only="ro" in options or "ro" in super_options,
                mount_id=mount_id,
                parent_id=parent_id,
            )
        )
    return mounts


class LinuxMountSource:
    """``MountSource`` reading ``<proc>/self/mountinfo`` and ``<sys>/dev/block``."""

    def __init__(self, proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys")) -> None:
        self._mountinfo = proc_root / "self" / "mountinfo"
        self._block = sys_root / "dev" / "block"
        #: The last mountinfo text and what it gave: a FREEZE re-reads the
        #: file (mounts change) but skips the stat and sysfs walk if it did not.
        self._last: tuple[bytes, tuple[Mount, ...]] = (b"", ())

    def mounts(self) -> Sequence[Mount]:
        """Current mounts; ``on_loop`` set from sysfs for /dev/ sources.

        Returns the very same tuple while mountinfo is unchanged, so callers
        can cache what they derive from it.
        """
        with self._mountinfo.open("rb") as file:
            raw = file.read()
        if raw == self._last[0]:
            return self._last[1]
        text = raw.decode("utf-8", errors="surrogateescape")
        result: list[Mount] = []
        loop_cache: dict[str, bool] = {}
        for mount in parse_mountinfo(text):
            on_loop = False
            if mount.source.startswith("/dev/"):
                number = block_device_number(mount.source) or mount.device
                if number not in loop_cache:
                    loop_cache[number] = self.is_loop_backed(number)
                on_loop = loop_cache[number]
            result.append(replace(mount, on_loop=True) if on_loop else mount)
        self._last = (raw, tuple(result))
        return self._last[1]

    def is_loop_backed(self, number: str, depth: int = 0) -> bool:
        """Whether block device ``major:minor`` is a loop device or stacked on one.

        A loop device has a ``loop/`` directory in sysfs; a device-mapper or
        md device lists what it is built on in ``slaves/`` (is_dev_loop() in
        hv_vss_daemon.c checks the same two things).
        """
        directory = self._block / number
        if (directory / "loop").is_dir():
            return True
        if depth >= _MAX_STACK_DEPTH:
            return False
        try:
            slaves = list((directory / "slaves").iterdir())
        except OSError:
            return False
        for slave in slaves:
            try:
                slave_number = (slave / "dev").read_text(encoding="ascii").strip()
            except OSError:
                continue
            if self.is_loop_backed(slave_number, depth + 1):
                return True
        return False


def block_device_number(source: str) -> str | None:
    """``major:minor`` of the block device node ``source``, or None if it is not one.

    mountinfo's own major:minor is the superblock's, which for btrfs is an
    anonymous device; the node behind the source is what sysfs describes.
    """
    try:
        info = Path(source).stat()
    except OSError:
        return None
    if not stat.S_ISBLK(info.st_mode):
        return None
    return f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
