"""hvguest.linux.uio: finding, binding and sizing the FCOPY device on fake sysfs trees.

Trees are real directories in tmp_path; binding goes through the UIO
simulator's FIFOs (a write to new_id really binds) and modprobe is a real
child process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hvguest.abi.constants import FCOPY_CLASS_GUID, FCOPY_INSTANCE_GUID
from hvguest.linux.uio import (
    RING_RETRY_DELAY,
    FcopyUioNode,
    UioError,
    bind_to_uio,
    bound_driver,
    find_fcopy_device,
    find_ring_file,
    prepare_fcopy_uio,
    ring_size_of,
    uio_node_name,
)
from hvguest.testing.uio_sim import UioSimulator

OTHER_INSTANCE = "0e0b6031-5213-4934-818b-38d90ced39db"


def vmbus_device(sys_root: Path, instance: str, class_id: str) -> Path:
    device = sys_root / "bus" / "vmbus" / "devices" / instance
    device.mkdir(parents=True)
    (device / "class_id").write_text(f"{{{class_id}}}\n", encoding="ascii")
    return device


# --- find_fcopy_device -------------------------------------------------------------------


def test_instance_guid_directory_is_found(tmp_path: Path) -> None:
    device = vmbus_device(tmp_path, FCOPY_INSTANCE_GUID, FCOPY_CLASS_GUID)
    assert find_fcopy_device(tmp_path) == device


def test_any_device_of_the_fcopy_class_is_found(tmp_path: Path) -> None:
    vmbus_device(
        tmp_path, "a" * 8 + "-0000-0000-0000-000000000000", "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"
    )
    device = vmbus_device(tmp_path, OTHER_INSTANCE, FCOPY_CLASS_GUID.upper())
    assert find_fcopy_device(tmp_path) == device


def test_no_fcopy_device_gives_none(tmp_path: Path) -> None:
    vmbus_device(tmp_path, OTHER_INSTANCE, "35fa2e29-ea23-4236-96ae-3a6ebacba440")
    (tmp_path / "bus" / "vmbus" / "devices" / "broken").mkdir()  # no class_id
    assert find_fcopy_device(tmp_path) is None


def test_missing_vmbus_tree_gives_none(tmp_path: Path) -> None:
    assert find_fcopy_device(tmp_path / "not-hyperv") is None


# --- bind_to_uio -------------------------------------------------------------------------


def test_already_bound_device_is_left_alone(tmp_path: Path) -> None:
    with UioSimulator(tmp_path) as sim:
        assert sim.is_bound()
        assert bind_to_uio(sim.sys_root, sim.device_dir) is False
        assert sim.bind_requests == []
        assert bound_driver(sim.device_dir) == "uio_hv_generic"
        assert uio_node_name(sim.device_dir) == "uio0"


def test_unbound_device_is_bound_by_writing_the_class_guid_to_new_id(tmp_path: Path) -> None:
    with UioSimulator(tmp_path, bound=False) as sim:
        assert not sim.is_bound()
        assert uio_node_name(sim.device_dir) is None
        assert bind_to_uio(sim.sys_root, sim.device_dir) is True
        assert sim.bind_requests == [f"new_id {FCOPY_CLASS_GUID}"]
        assert sim.is_bound()
        assert uio_node_name(sim.device_dir) == "uio0"


def test_missing_driver_is_loaded_with_modprobe_first(tmp_path: Path) -> None:
    with UioSimulator(tmp_path, bound=False, driver_loaded=False) as sim:
        assert not sim.driver_dir.exists()
        assert bind_to_uio(sim.sys_root, sim.device_dir, modprobe=sim.modprobe_argv) is True
        assert sim.driver_dir.is_dir()
        assert sim.is_bound()


def test_failing_modprobe_is_a_clear_error(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('FATAL: no module'); sys.exit(1)"]
    with UioSimulator(tmp_path, bound=False, driver_loaded=False) as sim:
        with pytest.raises(UioError, match="failed \\(1\\): FATAL: no module"):
            bind_to_uio(sim.sys_root, sim.device_dir, modprobe=argv)
        assert not sim.is_bound()


def test_modprobe_that_does_not_create_the_driver_is_an_error(tmp_path: Path) -> None:
    with (
        UioSimulator(tmp_path, bound=False, driver_loaded=False) as sim,
        pytest.raises(UioError, match="not available after"),
    ):
        bind_to_uio(sim.sys_root, sim.device_dir, modprobe=[sys.executable, "-c", "pass"])


def test_missing_modprobe_program_is_an_error(tmp_path: Path) -> None:
    with (
        UioSimulator(tmp_path, bound=False, driver_loaded=False) as sim,
        pytest.raises(UioError, match="cannot run"),
    ):
        bind_to_uio(sim.sys_root, sim.device_dir, modprobe=[str(tmp_path / "no-modprobe")])


def test_device_that_never_binds_is_an_error_after_the_wait(tmp_path: Path) -> None:
    device = vmbus_device(tmp_path, FCOPY_INSTANCE_GUID, FCOPY_CLASS_GUID)
    driver = tmp_path / "bus" / "vmbus" / "drivers" / "uio_hv_generic"
    driver.mkdir(parents=True)
    (driver / "new_id").write_text("", encoding="ascii")
    with pytest.raises(UioError, match="did not bind"):
        bind_to_uio(tmp_path, device, bind_wait=0.1)
    assert (driver / "new_id").read_text(encoding="ascii") == FCOPY_CLASS_GUID + "\n"


def test_device_bound_to_another_driver_is_refused(tmp_path: Path) -> None:
    device = vmbus_device(tmp_path, FCOPY_INSTANCE_GUID, FCOPY_CLASS_GUID)
    other = tmp_path / "bus" / "vmbus" / "drivers" / "hv_utils"
    other.mkdir(parents=True)
    (device / "driver").symlink_to(other)
    with pytest.raises(UioError, match="bound to hv_utils"):
        bind_to_uio(tmp_path, device)


# --- ring size ---------------------------------------------------------------------------


def make_ring(device: Path, relid: str, size: int) -> Path:
    ring = device / "channels" / relid / "ring"
    ring.parent.mkdir(parents=True, exist_ok=True)
    with ring.open("wb") as handle:
        handle.truncate(size)
    return ring


def test_ring_size_is_half_the_ring_file(tmp_path: Path) -> None:
    ring = make_ring(tmp_path, "14", 40960)
    assert find_ring_file(tmp_path) == ring
    assert ring_size_of(ring) == 20480


def test_first_channel_with_a_ring_is_used(tmp_path: Path) -> None:
    (tmp_path / "channels" / "10").mkdir(parents=True)
    ring = make_ring(tmp_path, "11", 40960)
    make_ring(tmp_path, "12", 81920)
    assert find_ring_file(tmp_path) == ring


def test_channels_directory_appearing_after_the_first_look_is_found(tmp_path: Path) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        make_ring(tmp_path, "14", 40960)

    assert find_ring_file(tmp_path, sleep=sleep).name == "ring"
    assert sleeps == [RING_RETRY_DELAY]


def test_ring_appearing_after_the_first_look_is_found(tmp_path: Path) -> None:
    (tmp_path / "channels" / "14").mkdir(parents=True)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        make_ring(tmp_path, "14", 40960)

    assert find_ring_file(tmp_path, sleep=sleep) == tmp_path / "channels" / "14" / "ring"
    assert sleeps == [RING_RETRY_DELAY]


def test_no_channels_directory_after_the_retry_is_an_error(tmp_path: Path) -> None:
    sleeps: list[float] = []
    with pytest.raises(UioError, match="Could not determine ring size"):
        find_ring_file(tmp_path, sleep=sleeps.append)
    assert sleeps == [RING_RETRY_DELAY]


def test_no_ring_after_the_retry_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "channels" / "14").mkdir(parents=True)
    sleeps: list[float] = []
    with pytest.raises(UioError, match="no ring under"):
        find_ring_file(tmp_path, sleep=sleeps.append)
    assert sleeps == [RING_RETRY_DELAY]


@pytest.mark.parametrize("size", [0, 4096, 40961])
def test_ring_file_that_is_not_two_page_aligned_rings_is_an_error(
    tmp_path: Path, size: int
) -> None:
    with pytest.raises(UioError, match="not two page-aligned rings"):
        ring_size_of(make_ring(tmp_path, "1", size))


# --- prepare_fcopy_uio -------------------------------------------------------------------


def test_prepare_finds_binds_and_sizes_the_simulated_device(tmp_path: Path) -> None:
    with UioSimulator(tmp_path, bound=False) as sim:
        node = prepare_fcopy_uio(sim.sys_root, sim.dev_root)
        assert node == FcopyUioNode(
            device_dir=sim.device_dir,
            node=sim.dev_root / "uio0",
            ring_file=sim.ring_file,
            ring_size=20480,
        )


def test_prepare_without_a_device_gives_none(tmp_path: Path) -> None:
    with UioSimulator(tmp_path, offered=False) as sim:
        assert prepare_fcopy_uio(sim.sys_root, sim.dev_root) is None
        sim.offer()
        assert prepare_fcopy_uio(sim.sys_root, sim.dev_root) is not None
