"""The system calls the pipeline relies on, with the kernel caveats they handle.

- ``open_beneath``: ``O_NOFOLLOW`` guards only the last component, so a landing
  subdirectory swapped for a symlink to ``/etc`` would lead an ``open`` out of
  the landing dir. ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` refuses
  any symlink in any component in one call (Linux 5.6+); without it we walk the
  components with ``O_DIRECTORY | O_NOFOLLOW`` directory descriptors.
- ``rename_noreplace``: ``rename`` silently replaces; ``renameat2`` with
  ``RENAME_NOREPLACE`` fails with EEXIST instead. Where the filesystem does not
  support the flag, ``link`` + ``unlink`` gives the same guarantee (the crash
  window where both names exist is recognised by recovery: same inode).
- ``fsync_dir``: a rename or unlink is durable only once its directory is fsynced.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import stat as stat_mod
import threading
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(os.uname().machine)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RENAME_NOREPLACE = 1

PATH_MAX = 4096  # bytes of a path the kernel takes whole, its NUL included (Linux)
TOO_LONG = f"its path is longer than {PATH_MAX} bytes: nothing there can ever be landed"

OPEN_DATA = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_have_openat2 = _SYS_OPENAT2 is not None
_have_renameat2 = hasattr(_libc, "renameat2")
if _have_renameat2:
    _libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _libc.renameat2.restype = ctypes.c_int


def open_beneath(root_fd: int, rel: str, flags: int = OPEN_DATA) -> int:
    """Open ``rel`` below the directory ``root_fd`` without following any symlink.

    Raises OSError: ELOOP for a symlink in any component, EXDEV for a path that
    would leave the root, ENOENT/ENOTDIR when something is missing.
    """
    global _have_openat2
    if rel in ("", "."):
        return os.open(".", flags | os.O_DIRECTORY, dir_fd=root_fd)
    if "/" not in rel and rel != "..":
        # one component: O_NOFOLLOW is all RESOLVE_BENEATH|NO_SYMLINKS would add (the
        # common case of a file in the landing dir itself, without ctypes' cost)
        return os.open(rel, flags | os.O_NOFOLLOW, dir_fd=root_fd)
    if _have_openat2:
        how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(_SYS_OPENAT2, root_fd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EPERM):  # EPERM: seccomp filters without openat2
            raise OSError(err, os.strerror(err), rel)
        _have_openat2 = False
    return _open_walk(root_fd, rel, flags)


def _open_walk(root_fd: int, rel: str, flags: int) -> int:
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise OSError(errno.EXDEV, "path leaves the landing dir", rel)
    fd = root_fd
    try:
        for part in parts[:-1]:
            try:
                nfd = os.open(part, OPEN_DIR, dir_fd=fd)
            except NotADirectoryError:
                # O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR; say what it is
                st = stat_at(fd, part)
                if st is not None and stat_mod.S_ISLNK(st.st_mode):
                    raise OSError(errno.ELOOP, "a symlink in the path: never followed", rel) from None
                raise
            if fd != root_fd:
                os.close(fd)
            fd = nfd
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        if fd != root_fd:
            os.close(fd)


def rel_room(root: Path | str) -> int:
    """The longest path below ``root`` (bytes) whose absolute path the kernel still takes."""
    return PATH_MAX - 1 - len(os.fsencode(root)) - 1


def longer_than(rel: str, room: int) -> bool:
    """Is ``rel`` longer than ``room`` bytes? Encodes only names that may be (4 bytes a character at most)."""
    return 4 * len(rel) > room and len(os.fsencode(rel)) > room


def replaced(path: Path | str, fd: int) -> str | None:
    """Why ``path`` no longer names the directory open as ``fd`` (None: it still does).

    A landing dir deleted or renamed away (``mv L L.old; mkdir L``) keeps
    working through its descriptor: every file landed from it would come from
    outside the landing dir, and be recorded under a path that never held it.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "the landing dir was deleted or renamed: nothing is at its path"
    except OSError as exc:
        return f"its path cannot be reached: {exc.strerror}"
    mine = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
        return "the landing dir was replaced: its path names another directory now"
    return None


def stat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of ``name`` in ``dir_fd``; None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    """Rename that fails with EEXIST instead of replacing; EXDEV across filesystems."""
    if _have_renameat2:
        rc = _libc.renameat2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL: flag unsupported by this fs
            raise OSError(err, os.strerror(err), dst)
    os.link(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
    os.unlink(src, dir_fd=src_dir)


_SYNC_WAIT_BEFORE, _SYNC_WRITE, _SYNC_WAIT_AFTER = 1, 2, 4
_have_sync_file_range = hasattr(_libc, "sync_file_range")
if _have_sync_file_range:
    _libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _libc.sync_file_range.restype = ctypes.c_int


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting for it.

    Keeps the disk streaming during a long copy instead of piling up dirty
    pages for one long fdatasync at the end. A no-op where unsupported; the
    final fdatasync is what makes the copy durable, never this.
    """
    if _have_sync_file_range:
        _libc.sync_file_range(fd, offset, length, _SYNC_WRITE)


def wait_writeback(fd: int, offset: int, length: int) -> None:
    """Wait until a range started by ``start_writeback`` is written (so it can be dropped)."""
    if _have_sync_file_range:
        _libc.sync_file_range(fd, offset, length, _SYNC_WAIT_BEFORE | _SYNC_WRITE | _SYNC_WAIT_AFTER)


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, OPEN_DIR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until all of ``data`` is written (a write may be short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def makedirs_durable(root: Path, rel_dir: str) -> list[Path]:
    """``mkdir -p root/rel_dir``; returns the parents whose entries changed (to fsync)."""
    if not rel_dir:
        return []
    dirty: list[Path] = []
    cur = root
    for part in rel_dir.split("/"):
        nxt = cur / part
        try:
            os.mkdir(nxt, 0o755)
            dirty.append(cur)
        except FileExistsError:
            if not nxt.is_dir() or nxt.is_symlink():
                raise OSError(errno.ENOTDIR, "not a directory (or a symlink)", str(nxt)) from None
        cur = nxt
    return dirty


class TempDir:
    """``<warehouse>/.ingestor-tmp``: copies in progress, named ``<owner>-<n>``.

    It lives on the warehouse filesystem so a finished copy is renamed into
    place; a name carries its owner so recovery removes only the temporaries
    of processes that are dead.
    """

    NAME = ".ingestor-tmp"

    def __init__(self, warehouse: Path, owner: str) -> None:
        self.path = warehouse / self.NAME
        self.owner = owner
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self.fd = -1

    def open(self) -> bool:
        """Make and open the directory; False (retried on first use) if the warehouse
        is not writable yet."""
        try:
            self._dir()
            return True
        except OSError:
            return False

    def _dir(self) -> int:
        if self.fd < 0:
            self.path.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, OPEN_DIR)
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def create(self) -> tuple[str, int]:
        """A new temporary file: (name, write descriptor)."""
        with self._lock:
            name = f"{self.owner}-{next(self._seq)}"
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o644,
            dir_fd=self._dir(),
        )
        return name, fd

    def remove(self, name: str) -> None:
        if self.fd < 0:
            return  # never opened: nothing of ours can be in it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def _names(self) -> list[str]:
        try:
            return os.listdir(self._dir())
        except OSError:
            return []  # not there, or not readable yet: nothing to clean now

    def owners(self) -> set[str]:
        return {n.split("-", 1)[0] for n in self._names()}

    def remove_owner(self, owner: str) -> int:
        removed = 0
        for name in self._names():
            if name.split("-", 1)[0] == owner:
                self.remove(name)
                removed += 1
        if removed:
            os.fsync(self.fd)
        return removed
