"""FCOPY differential tests: the same host sessions against hv_fcopy_daemon 6.1 and hvguest.

Each scenario is a scripted host session (hvguest.testing.fcopy_host) run
once against Debian's /usr/sbin/hv_fcopy_daemon under the LD_PRELOAD shim and
once against ``python -m hvguest fcopy -n`` (char-device flavour), each on a
fresh simulator and a fresh target directory. What is compared is what the
host sees (every status, plus probes of the target taken mid-session) and
what is left on disk (names, contents, modes). The reference outcome is
pinned, so a change in the C daemon is noticed too; hvguest must match it
except for the differences a scenario names, each of which is listed in
docs/compat.md's FCOPY table.

The reference writes wherever the host says, as root, through symlinks:
every target here is inside the test's own temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import pytest

from hvguest.abi.constants import CREATE_PATH, DATA_FRAGMENT, OVER_WRITE, HvStatus
from hvguest.testing import fcopy_host as fh
from hvguest.testing.daemon_process import fcopy_daemon
from hvguest.testing.host import FakeHost
from hvguest.testing.refshim import build_shim, stop_daemon
from hvguest.testing.refshim.fcopy import REFERENCE_FCOPY_DAEMON, launch_reference_fcopy
from hvguest.testing.simulator import Simulator
from hvguest.testing.transport import TransportMode

pytestmark = [pytest.mark.gcc]

#: Seconds any one step (registration, one host request, a stop) may take.
STEP: Final = 10.0
#: The umask both daemons run with, so that modes compare.
UMASK: Final = 0o022
#: Where the FCOPY differences are documented.
COMPAT_DOC: Final = Path(__file__).resolve().parents[2] / "docs" / "compat.md"

OK: Final = int(HvStatus.S_OK)
E_FAIL: Final = int(HvStatus.E_FAIL)
EXISTS: Final = int(HvStatus.ERROR_ALREADY_EXISTS)

#: A tree entry: "dir", or (contents, mode) for a file, or ("->", target) for a symlink.
Entry = str | tuple[bytes, int] | tuple[str, str]


@dataclass(frozen=True)
class Outcome:
    """What one session showed: host-visible statuses and probes, then the target tree."""

    observed: tuple[object, ...]
    tree: dict[str, Entry]


# --- the two daemons -----------------------------------------------------------


#: Runs a daemon on the simulator's FCOPY device (work directory given) for the
#: block, yielding its process.
Launch = Callable[[Simulator, Path], AbstractContextManager["subprocess.Popen[bytes]"]]


@dataclass
class Guest:
    """A daemon registered on a simulated FCOPY device, and the directory it may write to."""

    host: FakeHost
    root: Path
    sim: Simulator
    process: subprocess.Popen[bytes]
    _restart: Callable[[], subprocess.Popen[bytes]]

    def crash_and_restart(self) -> None:
        """SIGKILL the daemon, wait until the device is free, start a new one (registered)."""
        self.process.kill()
        self.process.wait(STEP)
        self.sim.wait_until(
            lambda: self.sim.transport_mode("fcopy") == TransportMode.INIT, STEP, "the release"
        )
        self.process = self._restart()


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the shim")
    return build_shim(tmp_path_factory.mktemp("shim"))


def launch_reference(shim: Path) -> Launch:
    @contextmanager
    def launch(sim: Simulator, work: Path) -> Iterator[subprocess.Popen[bytes]]:
        if not REFERENCE_FCOPY_DAEMON.exists():
            pytest.skip(f"{REFERENCE_FCOPY_DAEMON} absent: .ci/run installs hyperv-daemons")
        process = launch_reference_fcopy(
            shim, sim.device_path("fcopy"), work / "state", umask=UMASK
        )
        try:
            sim.wait_registered(STEP, "fcopy")
            yield process
        finally:
            stop_daemon(process, STEP)

    return launch


@contextmanager
def launch_hvguest(sim: Simulator, work: Path) -> Iterator[subprocess.Popen[bytes]]:
    # Journal and sysfs root inside ``work`` (kept across a restart, as /run
    # is); files are fchmod'ed, so the umask does not matter.
    with fcopy_daemon(work / "hvguest", sim=sim, flavour="char") as daemon:
        yield daemon.process


@contextmanager
def running(launch: Launch, work: Path) -> Iterator[Guest]:
    """A fresh simulator, the daemon registered on it, and an empty target root."""
    work.mkdir(parents=True)
    (work / "hvguest").mkdir()
    root = work / "target"
    root.mkdir()
    with (
        Simulator(work / "sim", services=("fcopy",), reply_timeout=STEP) as sim,
        ExitStack() as daemons,
    ):
        yield Guest(
            sim.host,
            root,
            sim,
            daemons.enter_context(launch(sim, work)),
            lambda: daemons.enter_context(launch(sim, work)),
        )


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry under ``root``: directories, files with contents and mode, symlinks."""
    tree: dict[str, Entry] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            tree[name] = ("->", str(path.readlink()))
        elif path.is_dir():
            tree[name] = "dir"
        else:
            tree[name] = (path.read_bytes(), path.stat().st_mode & 0o7777)
    return tree


# --- host sessions ------------------------------------------------------------------

DATA: Final = bytes(range(256)) * 80  # 20480 bytes: three full fragments and a short one
FILE_MODE_REFERENCE: Final = 0o744 & ~UMASK
FILE_MODE_HVGUEST: Final = 0o644


def write_all(host: FakeHost, data: bytes, *, start: int = 0) -> list[int]:
    """Each fragment's status (6144-byte fragments), up to the first failure."""
    statuses: list[int] = []
    for position in range(0, len(data), DATA_FRAGMENT):
        chunk = data[position : position + DATA_FRAGMENT]
        statuses.append(fh.fcopy_write(host, start + position, chunk))
        if statuses[-1]:
            break
    return statuses


def full_copy(host: FakeHost, path: str, name: str, data: bytes, flags: int = 0) -> list[object]:
    """START, WRITEs, COMPLETE; the host stops at the first failure (no COMPLETE then)."""
    start = fh.fcopy_start(host, path, name, flags=flags, file_size=len(data))
    if start:
        return [start]
    writes = write_all(host, data)
    if writes and writes[-1]:
        return [start, *writes]
    return [start, *writes, fh.fcopy_complete(host)]


def plain_copy(g: Guest) -> list[object]:
    return full_copy(g.host, str(g.root), "plain.bin", DATA)


def empty_file(g: Guest) -> list[object]:
    return full_copy(g.host, str(g.root), "empty", b"")


def overwrite_refused(g: Guest) -> list[object]:
    existing = g.root / "exists.txt"
    existing.write_bytes(b"old contents")
    existing.chmod(0o644)
    result = full_copy(g.host, str(g.root), "exists.txt", b"new")
    # A CANCEL after the refused START must not remove the existing file.
    return [*result, fh.fcopy_cancel(g.host)]


def overwrite_allowed(g: Guest) -> list[object]:
    existing = g.root / "exists.txt"
    existing.write_bytes(b"old contents, longer than the new ones")
    existing.chmod(0o644)
    return full_copy(g.host, str(g.root), "exists.txt", b"new", OVER_WRITE)


def create_path_trailing_slash(g: Guest) -> list[object]:
    return full_copy(g.host, f"{g.root}/a/b/c/", "f.txt", b"deep", CREATE_PATH)


def create_path_no_trailing_slash(g: Guest) -> list[object]:
    return full_copy(g.host, f"{g.root}/x/y", "f.txt", b"deep", CREATE_PATH)


def missing_dir_without_create_path(g: Guest) -> list[object]:
    return full_copy(g.host, f"{g.root}/nope/", "f.txt", b"x")


def cancel_mid_copy(g: Guest) -> list[object]:
    target = g.root / "partial.bin"
    start = fh.fcopy_start(g.host, str(g.root), target.name, file_size=len(DATA))
    first = fh.fcopy_write(g.host, 0, DATA[:DATA_FRAGMENT])
    visible = target.exists()
    return [start, first, ("partial visible", visible), fh.fcopy_cancel(g.host)]


def restart_mid_copy(g: Guest) -> list[object]:
    """A new START while a copy is open (S16), then the second copy completes."""
    first = fh.fcopy_start(g.host, str(g.root), "first.bin", file_size=len(DATA))
    written = fh.fcopy_write(g.host, 0, DATA[:DATA_FRAGMENT])
    return [first, written, *full_copy(g.host, str(g.root), "second.bin", b"second")]


def short_complete(g: Guest) -> list[object]:
    """COMPLETE after fewer bytes than START announced."""
    start = fh.fcopy_start(g.host, str(g.root), "short.bin", file_size=len(DATA))
    return [start, *write_all(g.host, DATA[:100]), fh.fcopy_complete(g.host)]


def hibernate_mid_copy(g: Guest) -> list[object]:
    """The kernel fakes a CANCEL on suspend: the partial copy must go away."""
    start = fh.fcopy_start(g.host, str(g.root), "partial.bin", file_size=len(DATA))
    first = fh.fcopy_write(g.host, 0, DATA[:DATA_FRAGMENT])
    g.sim.suspend("fcopy")
    g.sim.wait_until(lambda: not g.sim.message_queued("fcopy"), STEP, "the fake CANCEL read")
    deadline = time.monotonic() + STEP
    while snapshot(g.root) and time.monotonic() < deadline:
        time.sleep(0.01)  # the daemon acts on the fake CANCEL after reading it
    return [start, first]


def killed_mid_copy(g: Guest) -> list[object]:
    """SIGKILL mid-copy, a new daemon, then the host retries the same file."""
    start = fh.fcopy_start(g.host, str(g.root), "retried.bin", file_size=len(DATA))
    first = fh.fcopy_write(g.host, 0, DATA[:DATA_FRAGMENT])
    g.crash_and_restart()
    return [start, first, *full_copy(g.host, str(g.root), "retried.bin", b"fresh")]


def symlink_target(g: Guest) -> list[object]:
    """The target name is a symlink to a file outside the destination directory."""
    outside = g.root.parent / "outside.txt"
    outside.write_bytes(b"not yours")
    (g.root / "link.txt").symlink_to(Path("..") / outside.name)
    result = full_copy(g.host, str(g.root), "link.txt", b"written", OVER_WRITE)
    return [*result, ("outside", outside.read_bytes())]


def write_without_start(g: Guest) -> list[object]:
    """WRITE with no copy open, then an unknown operation; the daemon keeps serving."""
    stray = fh.fcopy_write(g.host, 0, b"stray")
    unknown = fh.fcopy_raw(g.host, fh.header_message(9))
    return [stray, unknown, *full_copy(g.host, str(g.root), "after.txt", b"after")]


UNICODE_DIR: Final = "dossier-é/日本語"
UNICODE_NAME: Final = "naïve-ファイル-\U0001f600.txt"


def unicode_names(g: Guest) -> list[object]:
    return full_copy(g.host, f"{g.root}/{UNICODE_DIR}/", UNICODE_NAME, b"unicode", CREATE_PATH)


# --- expectations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A session, the reference outcome pinned, and hvguest's where it differs (with the reason)."""

    name: str
    session: Callable[[Guest], list[object]]
    reference: Outcome
    #: hvguest's outcome where it deliberately differs (modes aside), else None.
    hvguest: Outcome | None = None
    #: The docs/compat.md rows (F1, F2, ...) that explain hvguest's outcome.
    compat: tuple[str, ...] = field(default=())


def ref_file(contents: bytes) -> tuple[bytes, int]:
    return (contents, FILE_MODE_REFERENCE)


def with_hvguest_modes(outcome: Outcome) -> Outcome:
    """The same outcome with every file at hvguest's default mode (compat row F1)."""
    tree: dict[str, Entry] = {
        name: (entry[0], FILE_MODE_HVGUEST)
        if isinstance(entry, tuple) and isinstance(entry[0], bytes)
        else entry
        for name, entry in outcome.tree.items()
    }
    return replace(outcome, tree=tree)


FRAGMENTS: Final = [OK] * 4

SCENARIOS: Final = [
    Scenario(
        "plain_copy",
        plain_copy,
        Outcome((OK, *FRAGMENTS, OK), {"plain.bin": ref_file(DATA)}),
    ),
    Scenario("empty_file", empty_file, Outcome((OK, OK), {"empty": ref_file(b"")})),
    Scenario(
        "overwrite_refused",
        overwrite_refused,
        # S17: target_fd is still 0 after a refused START, and fd 0 is the
        # device (closed at start-up, then reused by its open): the CANCEL
        # closes the device, so the host sees HV_E_FAIL and the daemon reconnects.
        Outcome((EXISTS, E_FAIL), {"exists.txt": (b"old contents", 0o644)}),
        hvguest=Outcome((EXISTS, OK), {"exists.txt": (b"old contents", 0o644)}),
        compat=("F6",),
    ),
    Scenario(
        "overwrite_allowed",
        overwrite_allowed,
        # O_TRUNC on the existing file: it keeps its own mode.
        Outcome((OK, OK, OK), {"exists.txt": (b"new", 0o644)}),
    ),
    Scenario(
        "create_path_trailing_slash",
        create_path_trailing_slash,
        Outcome(
            (OK, OK, OK),
            {"a": "dir", "a/b": "dir", "a/b/c": "dir", "a/b/c/f.txt": ref_file(b"deep")},
        ),
    ),
    Scenario(
        "create_path_no_trailing_slash",
        create_path_no_trailing_slash,
        Outcome((E_FAIL,), {"x": "dir"}),  # S15: the last component is not created
        hvguest=Outcome((OK, OK, OK), {"x": "dir", "x/y": "dir", "x/y/f.txt": ref_file(b"deep")}),
        compat=("F2",),
    ),
    Scenario(
        "missing_dir_without_create_path",
        missing_dir_without_create_path,
        Outcome((E_FAIL,), {}),
    ),
    Scenario(
        "cancel_mid_copy",
        cancel_mid_copy,
        Outcome((OK, OK, ("partial visible", True), OK), {}),
        hvguest=Outcome((OK, OK, ("partial visible", False), OK), {}),
        compat=("F3",),
    ),
    Scenario(
        "restart_mid_copy",
        restart_mid_copy,
        # S16: the first copy's partial file stays behind (and its fd leaks).
        Outcome(
            (OK, OK, OK, OK, OK),
            {"first.bin": ref_file(DATA[:DATA_FRAGMENT]), "second.bin": ref_file(b"second")},
        ),
        hvguest=Outcome((OK, OK, OK, OK, OK), {"second.bin": ref_file(b"second")}),
        compat=("F4",),
    ),
    Scenario(
        "short_complete",
        short_complete,
        # S17: file_size is never checked, the short file is kept.
        Outcome((OK, OK, OK), {"short.bin": ref_file(DATA[:100])}),
        hvguest=Outcome((OK, OK, E_FAIL), {}),
        compat=("F5",),
    ),
    Scenario("hibernate_mid_copy", hibernate_mid_copy, Outcome((OK, OK), {})),
    Scenario(
        "killed_mid_copy",
        killed_mid_copy,
        # The partial file stays under the final name, and the retry is refused.
        Outcome((OK, OK, EXISTS), {"retried.bin": ref_file(DATA[:DATA_FRAGMENT])}),
        hvguest=Outcome((OK, OK, OK, OK, OK), {"retried.bin": ref_file(b"fresh")}),
        compat=("F3",),
    ),
    Scenario(
        "symlink_target",
        symlink_target,
        # Followed: the file outside the destination is overwritten.
        Outcome((OK, OK, OK, ("outside", b"written")), {"link.txt": ("->", "../outside.txt")}),
        hvguest=Outcome(
            (E_FAIL, ("outside", b"not yours")), {"link.txt": ("->", "../outside.txt")}
        ),
        compat=("F7",),
    ),
    Scenario(
        "write_without_start",
        write_without_start,
        # The reference pwrite()s to fd 0 (its own device: S17), which the
        # kernel refuses; either way the host gets HV_E_FAIL.
        Outcome((E_FAIL, E_FAIL, OK, OK, OK), {"after.txt": ref_file(b"after")}),
    ),
    Scenario(
        "unicode_names",
        unicode_names,
        Outcome(
            (OK, OK, OK),
            {
                "dossier-é": "dir",
                UNICODE_DIR: "dir",
                f"{UNICODE_DIR}/{UNICODE_NAME}": ref_file(b"unicode"),
            },
        ),
    ),
]


def expected_hvguest(scenario: Scenario) -> Outcome:
    return with_hvguest_modes(scenario.hvguest or scenario.reference)


def run_session(launch: Launch, work: Path, scenario: Scenario) -> Outcome:
    with running(launch, work) as guest:
        observed = tuple(scenario.session(guest))
        return Outcome(observed, snapshot(guest.root))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_reference_and_hvguest_differ_only_as_documented(
    scenario: Scenario, shim: Path, tmp_path: Path
) -> None:
    reference = run_session(launch_reference(shim), tmp_path / "reference", scenario)
    assert reference == scenario.reference, "the reference daemon changed behaviour"
    hvguest = run_session(launch_hvguest, tmp_path / "hvguest", scenario)
    assert hvguest == expected_hvguest(scenario)
    if hvguest.observed != reference.observed or scenario.hvguest is not None:
        assert scenario.compat, "an undocumented difference"


def test_every_named_difference_is_documented() -> None:
    text = COMPAT_DOC.read_text(encoding="utf-8")
    section = text[text.index("## FCOPY") :]
    end = section.find("\n## ", 1)  # up to the next section
    section = section if end < 0 else section[:end]
    for row in ["F1", *(row for s in [*SCENARIOS, DISK_FULL] for row in s.compat)]:
        assert f"| {row} |" in section, f"{row} is missing from docs/compat.md's FCOPY section"


# --- a full filesystem (needs root to mount a small tmpfs) -----------------------------

SMALL_FS: Final = "64k"


def disk_full(g: Guest) -> list[object]:
    """A copy bigger than a 64 KiB tmpfs; the host cancels after the failure."""
    small = g.root / "small"
    small.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS},mode=0755", "hvtest", str(small)],
        check=True,
    )
    try:
        result = full_copy(g.host, str(small), "big.bin", DATA * 16)  # 320 KiB
        if result[-1] != OK:
            result.append(fh.fcopy_cancel(g.host))
        return [*result, ("left on the full fs", snapshot(small))]
    finally:
        # Lazily if a daemon still holds a file there: the mount must not outlive the test.
        if subprocess.run(["umount", str(small)], check=False).returncode:
            subprocess.run(["umount", "--lazy", str(small)], check=True)


DISK_FULL = Scenario(
    "disk_full",
    disk_full,
    # 10 fragments fit in 16 pages; the 11th is a short write whose errno is
    # stale (S17), so HV_E_FAIL rather than DISK_FULL; the CANCEL unlinks.
    Outcome((OK, *[OK] * 10, E_FAIL, OK, ("left on the full fs", {})), {"small": "dir"}),
    hvguest=Outcome(
        (int(HvStatus.ERROR_DISK_FULL), OK, ("left on the full fs", {})), {"small": "dir"}
    ),
    compat=("F8",),
)


@pytest.mark.root
def test_a_full_filesystem(shim: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting the small tmpfs needs root")
    reference = run_session(launch_reference(shim), tmp_path / "reference", DISK_FULL)
    assert reference == DISK_FULL.reference, "the reference daemon changed behaviour"
    hvguest = run_session(launch_hvguest, tmp_path / "hvguest", DISK_FULL)
    assert hvguest == expected_hvguest(DISK_FULL)
