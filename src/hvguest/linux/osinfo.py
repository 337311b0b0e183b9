"""OS facts and the FQDN for the AUTO pool.

Replaces kvp_get_os_info() and kvp_get_domain_name() in
tools/hv/hv_kvp_daemon.c. The reference computes both once at start-up; here
``facts()`` re-reads /etc/os-release when its (device, inode, size, mtime)
changes (looked at no more than once a second), so an OS upgrade shows
without a restart, and ``fqdn()`` returns what
a background thread last resolved, so a slow DNS server never delays a host
request (protocol.md S11).

FQDN choice: while resolution fails, ``fqdn()`` returns the plain host name
rather than the reference's "getaddrinfo failed: 0x<code> <text>": the host
shows this value as the VM's name, and an error text there is worse than the
short name. Resolution is retried with exponential backoff, repeated every
``refresh_interval`` seconds, and redone at once when the host name changes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol

from hvguest.records import record
from hvguest.services.ports import OsFacts

log = logging.getLogger(__name__)

#: fgets() buffer of kvp_get_os_info(): a line is read in pieces of at most 511 bytes.
LINE_BUFFER: Final = 512
#: Files read when /etc/os-release is missing, in this order (kvp_get_os_info()).
LEGACY_RELEASE_FILES: Final = ("SuSE-release", "redhat-release")

#: Seconds between re-resolutions of an FQDN that resolved.
DEFAULT_REFRESH_INTERVAL: Final = 300.0
#: First retry delay after a failed resolution; doubles up to ``DEFAULT_RETRY_MAX``.
DEFAULT_RETRY_INITIAL: Final = 1.0
DEFAULT_RETRY_MAX: Final = 60.0
#: How often the resolver thread looks for a host name change while it waits.
DEFAULT_HOSTNAME_POLL: Final = 5.0
#: Seconds during which facts() trusts its last look at the release files: a
#: host sweep asks for them six times within a millisecond, an upgrade can wait a second.
DEFAULT_RELEASE_RECHECK: Final = 1.0
#: How long ``close()`` waits for the thread (it may be inside getaddrinfo()).
CLOSE_TIMEOUT: Final = 2.0


class UnameResult(Protocol):
    """The fields of ``os.uname()`` used here."""

    @property
    def sysname(self) -> str:
        """Kernel name ("Linux")."""
        ...

    @property
    def release(self) -> str:
        """Kernel release ("6.1.0-13-amd64")."""
        ...

    @property
    def machine(self) -> str:
        """Hardware name ("x86_64")."""
        ...


class Resolver(Protocol):
    """``socket.getaddrinfo`` as called here (positional arguments)."""

    def __call__(  # noqa: PLR0917 - the signature of socket.getaddrinfo()
        self, host: str, port: None, family: int, kind: int, proto: int, flags: int, /
    ) -> Sequence[tuple[object, object, object, str, object]]:
        """Address records; the first carries the canonical name with AI_CANONNAME."""
        ...


def getaddrinfo_ascii(  # noqa: PLR0917 - the signature of socket.getaddrinfo()
    host: str, port: None, family: int, kind: int, proto: int, flags: int, /
) -> Sequence[tuple[object, object, object, str, object]]:
    """``socket.getaddrinfo``, with an ASCII host name passed as bytes.

    Given a str, CPython encodes the name with the "idna" codec, which loads
    unicodedata and stringprep (about 0.3 MB) into the daemon for good; a
    host name is ASCII on every sane system, and then both give the same bytes.
    """
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    return socket.getaddrinfo(name, port, family, kind, proto, flags)


@record
class ReleaseInfo:
    """What the release files say: name, major and minor version (None = not said)."""

    name: str | None
    major: str = ""
    minor: str = ""


def fgets_lines(data: bytes) -> list[bytes]:
    """``data`` cut as repeated fgets(buf, 512) calls return it, each cut at its first NUL.

    A piece ends after a newline or after 511 bytes, so a longer line comes
    back as several pieces, each parsed on its own as the reference does.
    """
    size = LINE_BUFFER - 1
    pieces: list[bytes] = []
    start = 0
    while start < len(data):
        newline = data.find(b"\n", start, start + size)
        end = start + size if newline < 0 else newline + 1
        # C string functions stop at the first NUL byte.
        pieces.append(data[start:end].split(b"\0", 1)[0])
        start = end
    return pieces


def parse_os_release(data: bytes) -> ReleaseInfo:
    """NAME and VERSION_ID exactly as kvp_get_os_info() reads them.

    Lines starting with "#" are skipped; a line splits at its first "=";
    in the value every ', " and newline is dropped and a backslash takes the
    next character literally. The last NAME / VERSION_ID wins.
    """
    name: str | None = None
    version = ""
    for line in fgets_lines(data):
        if line.startswith(b"#"):
            continue
        key, equals, raw_value = line.partition(b"=")
        if not equals:
            continue
        value = _unquote(raw_value)
        if key == b"NAME":
            name = value
        elif key == b"VERSION_ID":
            version = value
    return ReleaseInfo(name, version)


def _unquote(raw: bytes) -> str:
    out = bytearray()
    index = 0
    while index < len(raw):
        byte = raw[index : index + 1]
        if byte == b"\\":
            index += 1
            if index >= len(raw):
                break
            out += raw[index : index + 1]
        elif byte not in (b"'", b'"', b"\n"):
            out += byte
        index += 1
    return out.decode("utf-8", errors="replace")


def parse_legacy_release(data: bytes) -> ReleaseInfo:
    """SuSE-release / redhat-release: up to three lines are name, major, minor.

    Each line loses its newline; an empty file says nothing (the name stays
    the kernel's).
    """
    lines = [_first_field(line) for line in fgets_lines(data)[:3]]
    if not lines:
        return ReleaseInfo(None)
    lines += [""] * (3 - len(lines))
    return ReleaseInfo(lines[0], lines[1], lines[2])


def _first_field(line: bytes) -> str:
    return line.split(b"\n", 1)[0].decode("utf-8", errors="replace")


_FileKey = tuple[int, int, int, int] | None


def _file_key(path: Path) -> _FileKey:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class LinuxOsInfo:
    """``OsInfo`` from /etc/os-release, uname() and a background FQDN resolver.

    The resolver thread starts in the constructor (the reference resolves at
    start-up too) and is a daemon thread; ``close()`` stops it.
    """

    def __init__(
        self,
        *,
        etc_root: Path = Path("/etc"),
        uname: Callable[[], UnameResult] = os.uname,
        resolve: Resolver = getaddrinfo_ascii,
        hostname: Callable[[], str] = socket.gethostname,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
        hostname_poll: float = DEFAULT_HOSTNAME_POLL,
        release_recheck: float = DEFAULT_RELEASE_RECHECK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._etc_root = etc_root
        # Built once: a host sweep asks for the facts six times in a row.
        self._os_release = etc_root / "os-release"
        self._legacy_release = tuple(etc_root / name for name in LEGACY_RELEASE_FILES)
        # The kernel's name, release and machine cannot change while it runs.
        self._uname = uname()
        self._resolve = resolve
        self._hostname = hostname
        self._refresh_interval = refresh_interval
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._hostname_poll = hostname_poll
        self._release_recheck = release_recheck
        self._clock = clock
        self._release_key: tuple[_FileKey, ...] | None = None
        self._release_checked = 0.0
        self._release = ReleaseInfo(None)
        # (host name it belongs to, value); replaced as a whole, read without a
        # lock: a reference assignment is atomic.
        self._fqdn: tuple[str, str] | None = None
        # The name the thread resolves or last resolved; callers asking for it
        # again must not cut a retry backoff short.
        self._attempted: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hvguest-fqdn", daemon=True)
        self._thread.start()

    # -- OsInfo ----------------------------------------------------------------------

    def facts(self) -> OsFacts:
        """Current facts; the release files are parsed again only after they change."""
        uname = self._uname
        release = self._current_release()
        return OsFacts(
            os_name=release.name if release.name is not None else uname.sysname,
            os_major=release.major,
            os_minor=release.minor,
            kernel_release=uname.release,
            machine=uname.machine,
        )

    def fqdn(self) -> str:
        """The last resolved FQDN of the current host name, or the host name itself.

        Never blocks: a changed host name is returned as is at once, and the
        resolver thread is woken to resolve it.
        """
        name = self._safe_hostname()
        resolved = self._fqdn
        if resolved is None or resolved[0] != name:
            if name != self._attempted:
                self._wake.set()  # a name the thread has not tried yet
            return name
        return resolved[1]

    def close(self) -> None:
        """Stop the resolver thread (waits briefly; it is a daemon thread anyway)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(CLOSE_TIMEOUT)

    # -- os-release ----------------------------------------------------------------

    def _current_release(self) -> ReleaseInfo:
        now = self._clock()
        if self._release_key is not None and now - self._release_checked < self._release_recheck:
            return self._release
        self._release_checked = now
        key: tuple[_FileKey, ...] = (_file_key(self._os_release),)
        if key[0] is None:
            key += tuple(_file_key(path) for path in self._legacy_release)
        if key != self._release_key:
            self._release = self._read_release()
            self._release_key = key
        return self._release

    def _read_release(self) -> ReleaseInfo:
        try:
            return parse_os_release((self._etc_root / "os-release").read_bytes())
        except OSError:
            pass  # no os-release: the pre-systemd files below, as the reference does
        for name in LEGACY_RELEASE_FILES:
            try:
                data = (self._etc_root / name).read_bytes()
            except OSError:
                continue
            return parse_legacy_release(data)
        return ReleaseInfo(None)

    # -- FQDN thread ---------------------------------------------------------------

    def _safe_hostname(self) -> str:
        try:
            return self._hostname()
        except Exception as error:  # fqdn() and the thread must never raise
            log.debug("reading the host name failed: %s", error)
            return ""

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            name = self._safe_hostname()
            self._attempted = name
            try:
                canonical = self._canonical_name(name)
            except Exception as error:  # a resolver bug must not kill the thread
                log.debug("resolving host name %r failed: %s", name, error)
                canonical = None
            if canonical is not None:
                self._fqdn = (name, canonical)
                failures = 0
                delay = self._refresh_interval
            else:
                previous = self._fqdn
                if previous is None or previous[0] != name:
                    self._fqdn = (name, name)
                # Otherwise keep the last good answer through a passing DNS outage.
                failures += 1
                delay = min(self._retry_initial * 2 ** (failures - 1), self._retry_max)
            self._sleep(delay, name)

    def _canonical_name(self, name: str) -> str | None:
        if not name:
            return None
        records = self._resolve(
            name, None, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME
        )
        # Only the first record carries ai_canonname (getaddrinfo(3)).
        return next((record[3] for record in records if record[3]), None)

    def _sleep(self, delay: float, resolved_name: str) -> None:
        """Wait ``delay`` seconds, less if stopped, woken, or the host name changes."""
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wake.wait(min(remaining, self._hostname_poll)):
                return
            if self._safe_hostname() != resolved_name:
                return
