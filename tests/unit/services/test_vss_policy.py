"""build_plan: the reference's mount rules, the added skips, config lists, order and dedup."""

from __future__ import annotations

import pytest

from hvguest.config import VssConfig
from hvguest.linux.mounts import parse_mountinfo
from hvguest.services.ports import Mount
from hvguest.services.vss import FreezePolicy, build_plan, cannot_freeze_reason

ROOT = Mount("/", "/dev/sda2", "ext4", "8:2")
BOOT_EFI = Mount("/boot/efi", "/dev/sda1", "vfat", "8:1")
DATA = Mount("/data", "/dev/sdb1", "xfs", "8:17")
PROC = Mount("/proc", "proc", "proc", "0:22")
RUN = Mount("/run", "tmpfs", "tmpfs", "0:25")
DOCKER = Mount("/var/lib/docker/overlay2/x/merged", "overlay", "overlay", "0:50")
NFS = Mount("/mnt/nfs", "server:/export", "nfs4", "0:60")
SSHFS = Mount("/mnt/ssh", "me@host:", "fuse.sshfs", "0:61")
RO = Mount("/mnt/ro", "/dev/sdc1", "ext4", "8:33", read_only=True)
LOOP = Mount("/mnt/iso", "/dev/loop0", "ext4", "7:0", on_loop=True)
SNAP = Mount("/snap/core/1", "/dev/loop1", "squashfs", "7:1", read_only=True, on_loop=True)
EVERYTHING = [ROOT, PROC, RUN, BOOT_EFI, DATA, DOCKER, NFS, SSHFS, RO, LOOP, SNAP]


def reasons(mounts: list[Mount], policy: FreezePolicy | None = None) -> dict[str, str]:
    plan = build_plan(mounts, policy or FreezePolicy())
    return {skip.mount.mountpoint: skip.reason for skip in plan.skipped}


def test_default_policy_freezes_real_block_filesystems_root_last() -> None:
    plan = build_plan(EVERYTHING, FreezePolicy())
    assert plan.mountpoints == ("/data", "/")
    assert len(plan.skipped) == len(EVERYTHING) - 2


def test_every_skipped_mount_has_one_clear_reason() -> None:
    why = reasons(EVERYTHING)
    assert "pseudo filesystem" in why["/proc"]
    assert "in memory" in why["/run"]
    assert "vfat" in why["/boot/efi"]
    assert "overlay cannot be frozen" in why[DOCKER.mountpoint]
    assert "network filesystem" in why["/mnt/nfs"]
    assert "FUSE" in why["/mnt/ssh"]
    assert "read-only" in why["/mnt/ro"]
    assert "loop device" in why["/mnt/iso"]
    assert "image" in why["/snap/core/1"]


def test_pseudo_filesystems_and_config_choices_are_not_notable() -> None:
    plan = build_plan([PROC, RUN, DATA], FreezePolicy(exclude_mounts=frozenset({"/data"})))
    notable = {skip.mount.mountpoint: skip.notable for skip in plan.skipped}
    assert notable == {"/proc": False, "/run": True, "/data": False}


def test_source_outside_dev_is_skipped() -> None:
    odd = Mount("/mnt/odd", "LABEL=x", "ext4", "8:40")
    assert "not a /dev/ block device" in reasons([odd])["/mnt/odd"]


def test_bind_mount_freezes_its_superblock_once() -> None:
    bind = Mount("/srv/data", "/dev/sdb1", "xfs", "8:17")
    plan = build_plan([DATA, bind], FreezePolicy())
    assert plan.mountpoints == ("/data",)
    assert "same filesystem as /data" in reasons([DATA, bind])["/srv/data"]


def test_root_filesystem_mounted_twice_is_frozen_through_root_last() -> None:
    root_bind = Mount("/var/lib/kubelet", "/dev/sda2", "ext4", "8:2")
    plan = build_plan([root_bind, DATA, ROOT], FreezePolicy())
    assert plan.mountpoints == ("/data", "/")


def test_btrfs_subvolumes_share_one_superblock() -> None:
    subvolumes = [
        Mount("/", "/dev/sda3", "btrfs", "0:30"),
        Mount("/home", "/dev/sda3", "btrfs", "0:30"),
        Mount("/var", "/dev/sda3", "btrfs", "0:30"),
    ]
    assert build_plan(subvolumes, FreezePolicy()).mountpoints == ("/",)


def test_read_only_bind_of_a_writable_filesystem_does_not_hide_it() -> None:
    ro_bind = Mount("/srv/ro", "/dev/sdb1", "xfs", "8:17", read_only=True)
    assert build_plan([ro_bind, DATA], FreezePolicy()).mountpoints == ("/data",)


def test_a_mount_hidden_under_a_later_one_is_skipped() -> None:
    under = Mount("/data", "/dev/sdd1", "ext4", "8:49")
    plan = build_plan([under, DATA], FreezePolicy())
    assert plan.mountpoints == ("/data",)
    assert plan.freeze[0].device == "8:17"
    assert plan.skipped[0].reason == "hidden under a later mount at the same path"


def test_include_mounts_is_an_allow_list() -> None:
    policy = FreezePolicy(include_mounts=frozenset({"/data"}))
    plan = build_plan(EVERYTHING, policy)
    assert plan.mountpoints == ("/data",)
    assert reasons(EVERYTHING, policy)["/"] == "not in [vss] include_mounts"


def test_include_mounts_does_not_override_the_loop_rule() -> None:
    policy = FreezePolicy(include_mounts=frozenset({"/mnt/iso"}))
    assert build_plan(EVERYTHING, policy).mountpoints == ()


def test_exclude_lists_and_fstype_lists() -> None:
    assert build_plan(EVERYTHING, FreezePolicy(exclude_fstypes=frozenset({"xfs"}))).mountpoints == (
        "/",
    )
    assert build_plan(EVERYTHING, FreezePolicy(include_fstypes=frozenset({"xfs"}))).mountpoints == (
        "/data",
    )
    assert build_plan(EVERYTHING, FreezePolicy(exclude_mounts=frozenset({"/"}))).mountpoints == (
        "/data",
    )


def test_an_included_fstype_is_trusted_to_freeze() -> None:
    policy = FreezePolicy(
        include_mounts=frozenset({"/run", "/data"}), include_fstypes=frozenset({"tmpfs", "xfs"})
    )
    assert build_plan(EVERYTHING, policy).mountpoints == ("/run", "/data")


def test_policy_from_config_normalises_trailing_slashes() -> None:
    policy = FreezePolicy.from_config(
        VssConfig(include_mounts=("/data/", "/"), exclude_fstypes=("xfs",))
    )
    assert policy.include_mounts == frozenset({"/data", "/"})
    assert policy.exclude_fstypes == frozenset({"xfs"})


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs", "f2fs", "jfs"])
def test_block_filesystems_can_freeze(fstype: str) -> None:
    assert cannot_freeze_reason(fstype) is None


def test_excluding_a_mount_point_excludes_its_filesystem_everywhere() -> None:
    # FIFREEZE freezes the superblock: a bind mount of an excluded filesystem
    # (here the root filesystem) must not freeze it through the back door.
    root_bind = Mount("/var/lib/kubelet", "/dev/sda2", "ext4", "8:2")
    policy = FreezePolicy(exclude_mounts=frozenset({"/"}))
    plan = build_plan([ROOT, DATA, root_bind], policy)
    assert plan.mountpoints == ("/data",)
    assert "exclude_mounts" in reasons([ROOT, DATA, root_bind], policy)["/var/lib/kubelet"]


def test_a_mount_covered_by_a_mount_over_its_parent_directory_is_skipped() -> None:
    # /srv/a/b, then /srv/a mounted over it: opening /srv/a/b reaches a
    # directory of the new /srv/a filesystem (excluded here), so freezing
    # "/srv/a/b" would freeze that one instead. mountinfo lists "/" after its
    # children, as on a booted system, so list order cannot decide this.
    mounts = parse_mountinfo(
        "22 27 0:21 / /proc rw - proc proc rw\n"
        "27 1 8:2 / / rw - ext4 /dev/sda2 rw\n"
        "40 27 8:17 / /srv/a/b rw - xfs /dev/sdb1 rw\n"
        "41 27 8:33 / /srv/a rw - ext4 /dev/sdc1 rw\n"
        "42 41 8:49 / /srv/a/c rw - ext4 /dev/sdd1 rw\n"
    )
    policy = FreezePolicy(exclude_mounts=frozenset({"/srv/a"}))
    plan = build_plan(mounts, policy)
    assert plan.mountpoints == ("/srv/a/c", "/")
    assert "hidden under another mount" in reasons(mounts, policy)["/srv/a/b"]


def test_stacked_mounts_freeze_only_the_top_one_whatever_the_list_order() -> None:
    mounts = parse_mountinfo(
        "30 50 8:49 / /data rw - ext4 /dev/sdd1 rw\n"
        "27 1 8:2 / / rw - ext4 /dev/sda2 rw\n"
        "50 27 8:17 / /data rw - xfs /dev/sdb1 rw\n"
    )
    plan = build_plan(mounts, FreezePolicy())
    assert [mount.device for mount in plan.freeze] == ["8:49", "8:2"]
