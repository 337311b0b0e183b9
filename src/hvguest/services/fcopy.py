"""The FCOPY file writer: what each START / WRITE / COMPLETE / CANCEL means.

Replaces ``hv_start_fcopy()``, ``hv_copy_data()``, ``hv_copy_finished()`` and
``hv_copy_cancel()`` of tools/hv/hv_fcopy_daemon.c (and their copies in
hv_fcopy_uio_daemon.c); both transports hand their decoded requests here and
send back the one ``HvStatus`` it returns.

The guarantees the C daemons lack (protocol.md S15-S17, S19):

* the copy goes to a temporary file beside the target and appears under its
  final name only on a COMPLETE after every byte of ``file_size`` was written
  (a repeated fragment counts once), after fsync, by an atomic rename;
  without OVER_WRITE that rename never replaces a file, with it the old file
  stays whole until the new one is complete;
* CANCEL, ``reset()`` and a new START while a copy is open remove the
  temporary file, and so does every failed WRITE or COMPLETE: a failure leaves
  nothing behind, under any name;
* CREATE_PATH creates every missing directory, the last one included;
* destinations are checked against a policy on their resolved path, and the
  directory chain is opened without following symbolic links.

Pure decisions over the ``FileSink`` port; events go to a callback so the
daemon decides how to log them, and time comes from an injected clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, assert_never

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.protocol.fcopy_messages import (
    FcopyCancel,
    FcopyComplete,
    FcopyRequest,
    FcopyStart,
    FcopyWrite,
)
from hvguest.records import record
from hvguest.services.ports import CopyTarget, EntryKind, FileSink

#: Destinations refused whatever the configuration says: kernel interfaces.
ALWAYS_DENIED: Final = ("/proc", "/sys", "/dev")
#: NAME_MAX of Linux filesystems, in bytes.
NAME_MAX: Final = 255
#: Looked up once: WRITE answers this tens of thousands of times per copy.
_OK: Final = HvStatus.S_OK


# --- events -------------------------------------------------------------------------


@record
class CopyFinished:
    """A copy appeared under its final name."""

    target: str
    size: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        """Throughput in MB/s (10**6 bytes), from START to the rename."""
        return self.size / 1e6 / self.seconds if self.seconds > 0 else 0.0


@record
class CopyRefused:
    """A request failed; ``status`` went back to the host."""

    target: str
    reason: str
    status: HvStatus


@record
class CopyAbandoned:
    """An open copy was dropped (CANCEL, device reset, a new START); nothing kept."""

    target: str
    reason: str
    received: int


@record
class LeftoverRemoved:
    """A temporary file of a crashed earlier run was removed at start-up."""

    path: str


FcopyEvent = CopyFinished | CopyRefused | CopyAbandoned | LeftoverRemoved


# --- destination policy --------------------------------------------------------------


def _normalise_prefix(prefix: str) -> str:
    return "/" + "/".join(part for part in prefix.split("/") if part not in ("", "."))


def _under(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or inside it, by whole components (/tmpx is not in /tmp)."""
    return prefix in ("/", path) or path.startswith(prefix + "/")


@record
class DestinationPolicy:
    """Which resolved directories may receive files.

    ``denied`` always includes /proc, /sys and /dev; an empty ``allowed``
    allows everything else.
    """

    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()

    @classmethod
    def from_prefixes(cls, allowed: Sequence[str], denied: Sequence[str]) -> DestinationPolicy:
        """Normalised prefixes ("/srv/in/" -> "/srv/in") plus the always-denied ones."""
        return cls(
            allowed=tuple(_normalise_prefix(prefix) for prefix in allowed),
            denied=tuple(dict.fromkeys(_normalise_prefix(p) for p in (*ALWAYS_DENIED, *denied))),
        )

    def refusal(self, resolved_dir: str) -> str | None:
        """Why ``resolved_dir`` may not receive a file, or None if it may."""
        for prefix in self.denied:
            if _under(resolved_dir, prefix):
                return f"{resolved_dir} is under the denied directory {prefix}"
        if self.allowed and not any(_under(resolved_dir, p) for p in self.allowed):
            return f"{resolved_dir} is outside the allowed directories"
        return None


# --- the service --------------------------------------------------------------------


def _check_name(file_name: str) -> None:
    if not file_name or file_name in (".", ".."):
        raise OperationFailed(HvStatus.E_FAIL, f"file name {file_name!r} is not a file name")
    if "/" in file_name:
        raise OperationFailed(HvStatus.E_FAIL, f"file name {file_name!r} contains '/'")
    if len(file_name.encode("utf-8")) > NAME_MAX:
        raise OperationFailed(HvStatus.E_FAIL, f"file name is longer than {NAME_MAX} bytes")


def _check_directory(path_name: str) -> str:
    """The absolute, normalised ``path_name``; refuses relative paths and '..'."""
    if not path_name.startswith("/"):
        raise OperationFailed(HvStatus.E_FAIL, f"path {path_name!r} is not absolute")
    parts = [part for part in path_name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OperationFailed(HvStatus.E_FAIL, f"path {path_name!r} contains '..'")
    return "/" + "/".join(parts)


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


#: Out-of-order byte ranges one copy may track; a host never sends any.
MAX_SCATTERED_RANGES: Final = 1024


@record(frozen=False)
class _OpenCopy:
    target: CopyTarget
    path: str
    file_size: int
    overwrite: bool
    started: float
    #: Bytes the host sent (repeats included): for the log only.
    received: int = 0
    #: Every byte below this was written. Counting bytes is not enough: a
    #: repeated or overlapping fragment would make a short file look complete.
    contiguous: int = 0
    #: Written [start, end) ranges above ``contiguous`` (out-of-order fragments).
    scattered: list[tuple[int, int]] | None = None

    def note_written(self, start: int, end: int) -> bool:
        """Record that [start, end) was written; False if too scattered to track."""
        ranges = [*(self.scattered or ()), (start, end)]
        ranges.sort()
        kept: list[tuple[int, int]] = []
        for low, high in ranges:
            if low <= self.contiguous:
                self.contiguous = max(self.contiguous, high)
            elif kept and low <= kept[-1][1]:
                kept[-1] = (kept[-1][0], max(kept[-1][1], high))
            else:
                kept.append((low, high))
        # Ranges the grown prefix now reaches join it too.
        while kept and kept[0][0] <= self.contiguous:
            self.contiguous = max(self.contiguous, kept.pop(0)[1])
        self.scattered = kept or None
        return len(kept) <= MAX_SCATTERED_RANGES


class FcopyService:
    """Answers FCOPY requests with an ``HvStatus``; at most one copy is open at a time.

    ``handle`` never raises for anything a host or the OS can cause: every
    failure becomes a status and a ``CopyRefused`` event.
    """

    __slots__ = ("_clock", "_copy", "_policy", "_report", "_sink")

    def __init__(
        self,
        sink: FileSink,
        *,
        policy: DestinationPolicy | None = None,
        clock: Callable[[], float],
        report: Callable[[FcopyEvent], None] = lambda _event: None,
    ) -> None:
        self._sink = sink
        self._policy = policy if policy is not None else DestinationPolicy.from_prefixes((), ())
        self._clock = clock
        self._report = report
        self._copy: _OpenCopy | None = None

    @property
    def copy_open(self) -> bool:
        """A START succeeded and neither COMPLETE nor CANCEL has ended it yet."""
        return self._copy is not None

    def handle(self, request: FcopyRequest) -> HvStatus:
        """The status for one request."""
        # WRITE first: it is the hot path, tens of thousands per copy.
        if isinstance(request, FcopyWrite):
            return self.write(request.offset, request.data)
        if isinstance(request, FcopyStart):
            return self._start(request)
        if isinstance(request, FcopyComplete):
            return self._complete()
        if isinstance(request, FcopyCancel):
            return self._cancel()
        assert_never(request)

    def reset(self) -> None:
        """Abandon any open copy: the device was closed or the daemon is stopping."""
        self._abandon("the device was reset")

    def cleanup_leftovers(self) -> None:
        """Remove temporary files a crashed earlier run recorded (start-up only)."""
        for path in self._sink.cleanup_leftovers():
            self._report(LeftoverRemoved(path))

    # -- operations ----------------------------------------------------------------

    def _start(self, request: FcopyStart) -> HvStatus:
        # hv_fcopy_daemon.c leaks the old fd and partial file here (S16).
        self._abandon("a new START arrived")
        shown = _join(request.path_name, request.file_name)
        try:
            self._copy = self._open(request)
        except OperationFailed as failure:
            return self._refuse(shown, str(failure), failure.status)
        return HvStatus.S_OK

    def _open(self, request: FcopyStart) -> _OpenCopy:
        _check_name(request.file_name)
        directory = _check_directory(request.path_name)
        # The resolved path names the real place; the literal one is what
        # open_directory walks (it follows no link), should a link in the
        # chain be swapped for a directory after resolve(): check both.
        refusal = self._policy.refusal(self._sink.resolve(directory)) or self._policy.refusal(
            directory
        )
        if refusal is not None:
            raise OperationFailed(HvStatus.E_FAIL, refusal)
        destination = self._sink.open_directory(directory, create_missing=request.create_path)
        try:
            kind = destination.entry_kind(request.file_name)
            if kind is not EntryKind.MISSING and not request.overwrite:
                raise OperationFailed(
                    HvStatus.ERROR_ALREADY_EXISTS, f"target exists ({kind.value})"
                )
            if kind in (EntryKind.SYMLINK, EntryKind.OTHER):
                raise OperationFailed(HvStatus.E_FAIL, f"target is a {kind.value}; not replaced")
            free = destination.free_bytes()
            if free < request.file_size:
                raise OperationFailed(
                    HvStatus.ERROR_DISK_FULL,
                    f"{request.file_size} bytes announced, {free} free",
                )
            target = destination.create_temp(request.file_name)
        finally:
            destination.close()
        return _OpenCopy(
            target=target,
            path=_join(directory, request.file_name),
            file_size=request.file_size,
            overwrite=request.overwrite,
            started=self._clock(),
        )

    def write(self, offset: int, data: bytes | memoryview) -> HvStatus:
        """WRITE_TO_FILE of ``data`` at ``offset``: what ``handle`` does for an ``FcopyWrite``.

        Public so that a transport's fast path can skip building the request
        object for each of the tens of thousands of fragments of a copy.
        """
        copy = self._copy
        if copy is None:
            return self._refuse("", "WRITE_TO_FILE without an open copy", HvStatus.E_FAIL)
        size = len(data)
        if offset + size > copy.file_size:
            return self._fail_open(
                copy,
                f"write of {size} bytes at {offset} passes the announced size {copy.file_size}",
                HvStatus.E_FAIL,
            )
        try:
            copy.target.write_at(offset, data)
        except OperationFailed as failure:
            return self._fail_open(copy, str(failure), failure.status)
        copy.received += size
        if offset == copy.contiguous and copy.scattered is None:
            copy.contiguous += size  # the host's order: the hot path
        elif size and not copy.note_written(offset, offset + size):
            return self._fail_open(copy, "too many out-of-order fragments", HvStatus.E_FAIL)
        return _OK

    def _complete(self) -> HvStatus:
        copy = self._copy
        if copy is None:
            return self._refuse("", "COMPLETE_FCOPY without an open copy", HvStatus.E_FAIL)
        if copy.contiguous != copy.file_size:
            return self._fail_open(
                copy,
                f"received {copy.received} bytes, but not bytes {copy.contiguous}.."
                f" of the {copy.file_size} announced",
                HvStatus.E_FAIL,
            )
        self._copy = None
        try:
            copy.target.commit(replace=copy.overwrite)
        except OperationFailed as failure:
            return self._refuse(copy.path, str(failure), failure.status)
        self._report(CopyFinished(copy.path, copy.file_size, self._clock() - copy.started))
        return HvStatus.S_OK

    def _cancel(self) -> HvStatus:
        # Also what the kernel fakes on hibernation; with nothing open it is a no-op.
        self._abandon("the host cancelled the copy")
        return HvStatus.S_OK

    # -- helpers ---------------------------------------------------------------------

    def _abandon(self, reason: str) -> None:
        copy, self._copy = self._copy, None
        if copy is not None:
            copy.target.discard()
            self._report(CopyAbandoned(copy.path, reason, copy.received))

    def _fail_open(self, copy: _OpenCopy, reason: str, status: HvStatus) -> HvStatus:
        """A failure in the middle of a copy: drop it, so nothing is left behind."""
        self._copy = None
        copy.target.discard()
        return self._refuse(copy.path, reason, status)

    def _refuse(self, target: str, reason: str, status: HvStatus) -> HvStatus:
        self._report(CopyRefused(target, reason, status))
        return status
