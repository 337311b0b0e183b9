"""Files on disk for FCOPY: the Linux ``FileSink`` behind ``FcopyService``.

Replaces the ``open``/``pwrite``/``close``/``unlink`` and the ``access``+``mkdir``
path walk of tools/hv/hv_fcopy_daemon.c, without its races:

* directories are opened one component at a time with
  ``O_DIRECTORY|O_NOFOLLOW`` relative to the previous one (openat), so a
  symbolic link anywhere in the chain - also one swapped in during a copy -
  is refused, never followed;
* the data goes to ``.hvguest-fcopy.<name>.<random>.tmp`` created with
  ``O_EXCL|O_NOFOLLOW`` in that directory; COMPLETE fsyncs it, sets its mode
  and owner and renames it relative to the same directory fd, with
  ``renameat2(RENAME_NOREPLACE)`` unless the host asked to overwrite
  (``link``+``unlink`` where the filesystem lacks it);
* before a temporary file is created its path is recorded in a small journal
  (``<state>/fcopy-open``, on disk and fsynced like the data), so a daemon
  killed mid-copy, or a guest that lost power, removes exactly its own
  leftovers on the next start, without scanning any filesystem.

OS errors become ``OperationFailed`` here, once: ENOSPC/EDQUOT ->
HV_ERROR_DISK_FULL, EEXIST -> HV_ERROR_ALREADY_EXISTS, anything else ->
HV_E_FAIL.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import grp
import os
import pwd
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from hvguest.abi.constants import HvStatus
from hvguest.errors import ConfigError, OperationFailed
from hvguest.services.ports import EntryKind

#: Every temporary file we create starts and ends like this (and nothing else does).
TEMP_PREFIX: Final = ".hvguest-fcopy."
TEMP_SUFFIX: Final = ".tmp"
_TEMP_RANDOM_BYTES: Final = 4
#: Bytes of the target name kept in the temporary name: NAME_MAX minus the rest.
_TEMP_NAME_KEEP: Final = 255 - len(TEMP_PREFIX) - 1 - 2 * _TEMP_RANDOM_BYTES - len(TEMP_SUFFIX)
#: The journal of open temporary files, under [paths] state.
JOURNAL_NAME: Final = Path("fcopy-open")
#: It lists the one open copy's temporary file; anything much longer is damage.
JOURNAL_READ_LIMIT: Final = 64 * 1024

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_MODE: Final = 0o755
#: renameat2() flag (linux/fs.h): fail with EEXIST instead of replacing.
RENAME_NOREPLACE: Final = 1
#: renameat2() errors meaning "this filesystem/kernel cannot do it", not "it failed".
_NOREPLACE_UNSUPPORTED: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
#: link() errors meaning "no hard links here" (vfat, some FUSE filesystems).
_LINK_UNSUPPORTED: Final = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV})


def _status_for(error: OSError) -> HvStatus:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return HvStatus.ERROR_DISK_FULL
    if error.errno == errno.EEXIST:
        return HvStatus.ERROR_ALREADY_EXISTS
    return HvStatus.E_FAIL


def _failed(error: OSError, doing: str) -> OperationFailed:
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    return OperationFailed(_status_for(error), f"{doing}: {name} ({error.strerror})")


# --- renameat2(RENAME_NOREPLACE) -------------------------------------------------------

RenameAt2 = Callable[[int, bytes, int, bytes, int], int]


def _load_renameat2() -> RenameAt2 | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc < 2.28 or another libc
        return None
    function.argtypes = (
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    )
    function.restype = ctypes.c_int
    return function


_RENAMEAT2: Final = _load_renameat2()


# --- early writeback ---------------------------------------------------------------------

#: sync_file_range() flag (linux/fs.h): start writeback of dirty pages, do not wait.
SYNC_FILE_RANGE_WRITE: Final = 2
#: Bytes written between two writeback kicks. Without them the whole file is
#: still dirty at COMPLETE and its fsync stalls the host's last request for
#: seconds on a large copy; with them the disk works while the host sends.
WRITEBACK_EVERY: Final = 8 * 1024 * 1024


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE: Final = _load_sync_file_range()


def rename_noreplace(
    dir_fd: int, source: str, target: str, *, renameat2: RenameAt2 | None = _RENAMEAT2
) -> None:
    """Rename ``source`` to ``target`` in ``dir_fd``; ``FileExistsError`` if it exists.

    renameat2(RENAME_NOREPLACE) where the kernel and filesystem support it,
    else link()+unlink() (atomic too: link never replaces). A filesystem with
    neither falls back to lstat-then-rename, whose window is documented here
    because nothing better exists there.
    """
    if renameat2 is not None:
        if renameat2(dir_fd, os.fsencode(source), dir_fd, os.fsencode(target), RENAME_NOREPLACE):
            code = ctypes.get_errno()
            if code not in _NOREPLACE_UNSUPPORTED:
                raise OSError(code, os.strerror(code), target)
        else:
            return
    try:
        os.link(source, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except OSError as error:
        if error.errno not in _LINK_UNSUPPORTED:
            raise
        with contextlib.suppress(FileNotFoundError):
            os.lstat(target, dir_fd=dir_fd)
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from None
        os.rename(source, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    os.unlink(source, dir_fd=dir_fd)


# --- the journal of open temporary files ------------------------------------------------


class TempJournal:
    """The temporary files that exist right now, kept in a small file off the data path.

    Paths are stored NUL-separated (a file name may hold a newline) and the
    file is replaced atomically, so a crash leaves either the old or the new
    list, never a torn one. With ``durable`` each new list is fsynced, and so
    is the rename, before ``add`` returns: a power cut after the temporary
    file appeared still finds it listed.
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self._entries: list[str] = []

    def add(self, temp_path: str) -> None:
        """Record ``temp_path`` before the file is created."""
        self._entries.append(temp_path)
        self._save()

    def remove(self, temp_path: str) -> None:
        """Forget ``temp_path`` (renamed or unlinked); never fails."""
        with contextlib.suppress(ValueError):
            self._entries.remove(temp_path)
        with contextlib.suppress(OSError):
            self._save()

    def clear(self) -> None:
        """Forget everything (after the leftovers were removed); never fails."""
        self._entries.clear()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def recorded(self) -> list[str]:
        """What the file lists (what a previous run may have left).

        A damaged journal must not stop the daemon: an unreadable one lists
        nothing, and only its first JOURNAL_READ_LIMIT bytes are read.
        """
        try:
            with self.path.open("rb") as journal:
                raw = journal.read(JOURNAL_READ_LIMIT + 1)
        except OSError:
            return []
        items = raw.split(b"\0")
        if len(raw) > JOURNAL_READ_LIMIT:
            items.pop()  # cut short by the limit: not a whole name
        return [os.fsdecode(item) for item in items if item]

    def _save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = self.path.with_name(self.path.name + ".new")
        data = b"".join(os.fsencode(entry) + b"\0" for entry in self._entries)
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        staging.replace(self.path)
        if self.durable:
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


# --- directories ------------------------------------------------------------------------


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _refuse_component(error: OSError, parent_fd: int, part: str, walked: str) -> OperationFailed:
    """Turn a failed component open into the message an administrator needs."""
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            mode = os.lstat(part, dir_fd=parent_fd).st_mode
        except OSError:
            mode = 0
        if stat.S_ISLNK(mode):
            return OperationFailed(HvStatus.E_FAIL, f"{walked} is a symbolic link; not followed")
        return OperationFailed(HvStatus.E_FAIL, f"{walked} is not a directory")
    return _failed(error, f"opening {walked}")


def open_directory_chain(path: str, *, create_missing: bool) -> int:
    """An fd of the absolute ``path``, opened component by component with O_NOFOLLOW."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = ""
    try:
        for part in _components(path):
            walked += "/" + part
            if part == "..":
                raise OperationFailed(HvStatus.E_FAIL, f"{walked}: '..' is not followed")
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create_missing:
                    raise OperationFailed(
                        HvStatus.E_FAIL, f"directory {walked} does not exist (no CREATE_PATH)"
                    ) from None
                child = _create_directory(fd, part, walked)
            except OSError as error:
                raise _refuse_component(error, fd, part, walked) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_directory(parent_fd: int, part: str, walked: str) -> int:
    try:
        os.mkdir(part, _DIR_MODE, dir_fd=parent_fd)
        created = True
    except FileExistsError:
        created = False  # someone else made it meanwhile; open whatever it is, safely
    except OSError as error:
        raise _failed(error, f"creating {walked}") from None
    try:
        child = os.open(part, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        raise _refuse_component(error, parent_fd, part, walked) from None
    if created:
        # mkdir's mode is masked by the umask; 0755 is what was promised.
        with contextlib.suppress(OSError):
            os.fchmod(child, _DIR_MODE)
    return child


def temp_name(final_name: str) -> str:
    """A fresh temporary name for ``final_name`` that fits NAME_MAX."""
    kept = final_name.encode("utf-8")[:_TEMP_NAME_KEEP].decode("utf-8", errors="ignore")
    # os.urandom rather than secrets: the same bytes, without importing hashlib/hmac.
    return f"{TEMP_PREFIX}{kept}.{os.urandom(_TEMP_RANDOM_BYTES).hex()}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """``name`` has the shape of our temporary files."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


# --- the adapters -----------------------------------------------------------------------


class LinuxCopyTarget:
    """A temporary file being written; ``commit`` renames it, ``discard`` removes it."""

    __slots__ = (
        "_dir_fd",
        "_fd",
        "_kick_at",
        "_sink",
        "_unflushed",
        "final_name",
        "path",
        "temp_name",
        "temp_path",
    )

    def __init__(
        self, sink: LinuxFileSink, dir_fd: int, fd: int, *, directory: str, temp: str, final: str
    ) -> None:
        self._sink = sink
        self._dir_fd = dir_fd
        self._fd = fd
        # Only worth it when COMPLETE will fsync; otherwise the kernel decides.
        self._kick_at = WRITEBACK_EVERY if sink.fsync and _SYNC_FILE_RANGE else 1 << 63
        self._unflushed = 0
        self.temp_name = temp
        self.final_name = final
        self.temp_path = f"{directory.rstrip('/')}/{temp}"
        self.path = f"{directory.rstrip('/')}/{final}"

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        """One pwrite; a short write is continued so the next call reports the errno."""
        size = len(data)
        try:
            written = os.pwrite(self._fd, data, offset)
            while written < len(data):
                data = memoryview(data)[written:]
                offset += written
                written = os.pwrite(self._fd, data, offset)
                if written == 0:
                    raise OperationFailed(HvStatus.E_FAIL, f"writing {self.path}: no progress")
        except OSError as error:
            raise _failed(error, f"writing {self.path}") from None
        self._unflushed += size
        if self._unflushed >= self._kick_at:
            self._unflushed = 0
            assert _SYNC_FILE_RANGE is not None
            # Asynchronous and best effort: a failure here shows up at fsync.
            _SYNC_FILE_RANGE(self._fd, 0, 0, SYNC_FILE_RANGE_WRITE)

    def commit(self, *, replace: bool) -> None:
        """fsync, chmod/chown, close, then the atomic rename (see the module docstring)."""
        sink = self._sink
        try:
            os.fchmod(self._fd, sink.file_mode)
            if sink.uid != -1 or sink.gid != -1:
                os.fchown(self._fd, sink.uid, sink.gid)
            if sink.fsync:
                os.fsync(self._fd)
            fd, self._fd = self._fd, -1
            os.close(fd)
            if replace:
                os.rename(
                    self.temp_name,
                    self.final_name,
                    src_dir_fd=self._dir_fd,
                    dst_dir_fd=self._dir_fd,
                )
            else:
                rename_noreplace(self._dir_fd, self.temp_name, self.final_name)
            if sink.fsync:
                # The rename itself must survive a crash too.
                os.fsync(self._dir_fd)
        except OSError as error:
            self.discard()
            if error.errno == errno.EEXIST:
                raise OperationFailed(
                    HvStatus.ERROR_ALREADY_EXISTS, f"{self.path} appeared during the copy; kept"
                ) from None
            raise _failed(error, f"finishing {self.path}") from None
        self._release()

    def discard(self) -> None:
        """Close and unlink the temporary file (relative to the directory fd); never fails.

        A temporary file that cannot be unlinked now (EROFS, EIO, EBUSY) stays
        in the journal, so the next start-up removes it.
        """
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
        removed = True
        if self._dir_fd >= 0:
            try:
                os.unlink(self.temp_name, dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        self._release(forget=removed)

    def _release(self, *, forget: bool = True) -> None:
        if self._dir_fd >= 0:
            fd, self._dir_fd = self._dir_fd, -1
            os.close(fd)
            if forget:
                self._sink.journal.remove(self.temp_path)


class LinuxDestinationDir:
    """An open destination directory (an fd reached without following links)."""

    __slots__ = ("_fd", "_sink", "path")

    def __init__(self, sink: LinuxFileSink, fd: int, path: str) -> None:
        self._sink = sink
        self._fd = fd
        self.path = path

    def entry_kind(self, name: str) -> EntryKind:
        """lstat relative to the directory fd."""
        try:
            mode = os.lstat(name, dir_fd=self._fd).st_mode
        except FileNotFoundError:
            return EntryKind.MISSING
        except OSError as error:
            raise _failed(error, f"examining {name}") from None
        if stat.S_ISREG(mode):
            return EntryKind.FILE
        if stat.S_ISLNK(mode):
            return EntryKind.SYMLINK
        return EntryKind.OTHER

    def free_bytes(self) -> int:
        """f_bavail * f_frsize: what is left without the root reserve."""
        try:
            info = os.fstatvfs(self._fd)
        except OSError as error:
            raise _failed(error, f"statvfs {self.path}") from None
        return info.f_bavail * info.f_frsize

    def create_temp(self, final_name: str) -> LinuxCopyTarget:
        """Record, then create, the temporary file (mode 0600 until COMPLETE)."""
        temp = temp_name(final_name)
        temp_path = f"{self.path.rstrip('/')}/{temp}"
        try:
            self._sink.journal.add(temp_path)
        except OSError as error:
            raise _failed(error, f"recording {temp_path} in {self._sink.journal.path}") from None
        try:
            fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=self._fd)
        except OSError as error:
            self._sink.journal.remove(temp_path)
            raise _failed(error, f"creating {temp_path}") from None
        return LinuxCopyTarget(
            self._sink, os.dup(self._fd), fd, directory=self.path, temp=temp, final=final_name
        )

    def close(self) -> None:
        """Close the directory fd (targets hold their own duplicate)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class LinuxFileSink:
    """``FileSink`` on the real filesystem."""

    def __init__(
        self,
        journal_path: Path,
        *,
        file_mode: int = 0o644,
        uid: int = -1,
        gid: int = -1,
        fsync: bool = True,
    ) -> None:
        self.journal = TempJournal(journal_path, durable=fsync)
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid
        self.fsync = fsync

    def resolve(self, path: str) -> str:
        """realpath: links resolved as far as the path exists, the rest appended."""
        return os.path.realpath(path)

    def open_directory(self, path: str, *, create_missing: bool) -> LinuxDestinationDir:
        """See ``open_directory_chain``."""
        return LinuxDestinationDir(
            self, open_directory_chain(path, create_missing=create_missing), path
        )

    def cleanup_leftovers(self) -> Sequence[str]:
        """Unlink the journal's temporary files that still exist, then empty the journal."""
        removed: list[str] = []
        for temp_path in self.journal.recorded():
            directory, _slash, name = temp_path.rpartition("/")
            # Only ever our own names: a damaged journal must not delete user files.
            if is_temp_name(name) and self._remove_leftover(directory or "/", name):
                removed.append(temp_path)
        self.journal.clear()
        return removed

    @staticmethod
    def _remove_leftover(directory: str, name: str) -> bool:
        """Unlink ``name`` if it is still a regular file; False if nothing was removed."""
        try:
            fd = open_directory_chain(directory, create_missing=False)
        except (OSError, OperationFailed):
            return False
        try:
            if not stat.S_ISREG(os.lstat(name, dir_fd=fd).st_mode):
                return False
            os.unlink(name, dir_fd=fd)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True


def resolve_owner(owner: str, group: str) -> tuple[int, int]:
    """``[fcopy] owner/group`` (names or numbers) as uid/gid; -1 keeps the daemon's."""
    return _lookup(owner, "owner", lambda name: pwd.getpwnam(name).pw_uid), _lookup(
        group, "group", lambda name: grp.getgrnam(name).gr_gid
    )


def _lookup(value: str, key: str, by_name: Callable[[str], int]) -> int:
    if not value:
        return -1
    if value.isdigit():
        return int(value)
    try:
        return by_name(value)
    except KeyError:
        raise ConfigError(f"[fcopy] {key}: no such {key} {value!r}") from None
