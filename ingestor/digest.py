"""Digest: a candidate path → ``Hashed`` (identity + SHA-256), read through one descriptor.

The file is opened below the landing root without following any symlink
(``fsops.open_beneath``) and with ``O_NONBLOCK`` so a FIFO cannot hang a
worker; ``fstat`` on that same descriptor must say "regular file". It is
hashed through that descriptor and ``fstat``-ed again: a file that changed
while being read (size, mtime, inode) raises ``Gone`` and goes back to waiting.

A file that must be copied rather than renamed (another filesystem, or
``st_nlink > 1``: a hard link shares its inode with a path that may lie outside
the landing dir, so the inode itself must never enter the warehouse) is copied
into the warehouse's temporary dir *while* it is hashed: one read pass.

Large files are read with ``POSIX_FADV_SEQUENTIAL`` and dropped from the page
cache behind the reader (``POSIX_FADV_DONTNEED``), so a terabyte file does not
flush everything else out of memory.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import stat as stat_mod
import threading
from collections.abc import Callable

from ingestor import faults
from ingestor.errors import BadInput, Gone, Stopping, from_oserror
from ingestor.fsops import OPEN_DATA, TempDir, open_beneath, start_writeback, wait_writeback, write_all
from ingestor.records import Candidate, Hashed, Identity
from ingestor.rejections import kind_of

BUFFER_SIZE = 1 << 20
PIPELINE_ABOVE = 8 << 20  # larger files: reading (and copying) overlaps hashing
COPY_CHUNK = 8 << 20  # 4 and 16 MiB hashed 15-25% slower from the page cache here (bench/RESULTS.md, 2.)
WRITEBACK_WINDOW = 64 << 20
DROP_CACHE_ABOVE = 256 << 20  # files larger than this are dropped from the page cache
_DROP_EVERY = 64 << 20


def digest(
    root_fd: int,
    cand: Candidate,
    *,
    warehouse_dev: int,
    tmp: TempDir,
    stop: threading.Event,
    before_read: Callable[[str, Identity], bool] | None = None,
) -> Hashed | None:
    """Hash one candidate; copy it into ``tmp`` at the same time if it cannot be renamed.

    ``before_read(rel, identity)`` is asked between the first fstat and the
    first read; when it says False the file is not read and None is returned.
    """
    try:
        fd = open_beneath(root_fd, cand.rel, OPEN_DATA)
    except OSError as exc:
        raise from_oserror("open", cand.rel, exc, source=True) from exc
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise BadInput("open", cand.rel, kind_of(st.st_mode), "FIFOs, sockets and devices are never read")
        ident = Identity.of(st)
        if before_read is not None and not before_read(cand.rel, ident):
            return None
        temp: str | None = None
        sink = -1
        if st.st_dev != warehouse_dev or st.st_nlink > 1:
            try:
                temp, sink = tmp.create()
            except OSError as exc:
                raise from_oserror("create temporary in", str(tmp.path), exc, source=False) from exc
        try:
            sha = hash_fd(fd, st.st_size, stop=stop, sink=sink, name=cand.rel)
            if sink >= 0:
                try:
                    os.fdatasync(sink)
                except OSError as exc:
                    raise from_oserror("fsync copy of", cand.rel, exc, source=False) from exc
            after = os.fstat(fd)
            if Identity.of(after) != ident:
                raise Gone("hash", cand.rel, "changed while being hashed")
        except BaseException:
            if temp is not None:
                os.close(sink)
                sink = -1
                tmp.remove(temp)
            raise
        finally:
            if sink >= 0:
                os.close(sink)
        return Hashed(cand, ident, sha, temp)
    finally:
        os.close(fd)


def hash_fd(
    fd: int,
    size: int,
    *,
    stop: threading.Event | None = None,
    sink: int = -1,
    name: str = "",
) -> str:
    """SHA-256 of ``fd`` from offset 0; every chunk is also written to ``sink`` if given."""
    if size >= PIPELINE_ABOVE:
        return _pipelined(fd, size, sink=sink, stop=stop, name=name)
    h = hashlib.sha256()
    # a small file fits with a byte to spare: its one read comes back short, which is EOF
    buf = bytearray(BUFFER_SIZE if size >= BUFFER_SIZE else max(size + 1, 4096))
    view = memoryview(buf)
    drop = size > DROP_CACHE_ABOVE
    if drop:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    offset = 0
    dropped = 0
    while True:
        try:
            n = os.preadv(fd, [buf], offset)
        except OSError as exc:
            raise from_oserror("read", name, exc, source=True) from exc
        if n == 0:
            break
        chunk = view[:n]
        h.update(chunk)
        if sink >= 0:
            _write_all(sink, chunk, name)
            if faults.ACTIVE:
                faults.ACTIVE.hit("mid_copy")
        offset += n
        if drop and offset - dropped >= _DROP_EVERY:
            os.posix_fadvise(fd, dropped, offset - dropped, os.POSIX_FADV_DONTNEED)
            dropped = offset
        if stop is not None and stop.is_set():
            raise Stopping(name)
        if n < len(buf) and offset >= size:
            break  # a short read past the expected size is EOF: no extra read to learn it
    return h.hexdigest()


def _pipelined(fd: int, size: int, *, sink: int, stop: threading.Event | None, name: str) -> str:
    """Hash (and copy, with a ``sink``) in one read pass, I/O overlapping the hash.

    Two buffers and one I/O thread: while this thread hashes chunk i, the I/O
    thread writes chunk i to the sink (when copying) and then reads chunk i+1
    into the other buffer. hashlib and the system calls release the GIL, so a
    chunk costs max(hash, write + read) instead of their sum: both cores work.
    Writeback of the copy is started every window (``sync_file_range``) so the
    disk streams; the window before last is waited for and, for large files,
    dropped from the page cache with the source pages, so a terabyte copy
    neither stalls on one huge fdatasync nor floods memory. The caller's
    fdatasync is what makes the copy durable.
    """
    h = hashlib.sha256()
    bufs = (bytearray(COPY_CHUNK), bytearray(COPY_CHUNK))
    drop = size > DROP_CACHE_ABOVE
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    offset = 0
    dropped = 0
    window_start = 0
    previous: tuple[int, int] | None = None

    def step(view: memoryview | None, nxt: bytearray, at: int, hashed: tuple[int, int] | None) -> int:
        """In the I/O thread: write this chunk (copy), drop what is hashed, read the next chunk."""
        if view is not None and sink >= 0:
            _write_all(sink, view, name)
        if hashed is not None:  # freeing pages costs as much as reading them: not in the hashing thread
            os.posix_fadvise(fd, *hashed, os.POSIX_FADV_DONTNEED)
        return _pread(fd, nxt, at, name) if at >= 0 else 0

    cur = 0
    n = _pread(fd, bufs[cur], offset, name)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="io") as io:
        while n:
            view = memoryview(bufs[cur])[:n]
            at_end = n < len(bufs[cur]) and offset + n >= size
            hashed = None
            if drop and offset - dropped >= _DROP_EVERY:
                hashed = (dropped, offset - dropped)
                dropped = offset
            pending = io.submit(step, view, bufs[1 - cur], -1 if at_end else offset + n, hashed)
            try:
                h.update(view)
            finally:
                n_next = pending.result()  # the buffer is free again; raises the I/O error
            offset += n
            if faults.ACTIVE and sink >= 0:
                faults.ACTIVE.hit("mid_copy")
            if sink >= 0 and offset - window_start >= WRITEBACK_WINDOW:
                start_writeback(sink, window_start, offset - window_start)
                if previous is not None:
                    wait_writeback(sink, *previous)
                    if drop:
                        os.posix_fadvise(sink, *previous, os.POSIX_FADV_DONTNEED)
                previous = (window_start, offset - window_start)
                window_start = offset
            if stop is not None and stop.is_set():
                raise Stopping(name)
            cur = 1 - cur
            n = n_next
    return h.hexdigest()


def _pread(fd: int, buf: bytearray, offset: int, name: str) -> int:
    try:
        return os.preadv(fd, [buf], offset)
    except OSError as exc:
        raise from_oserror("read", name, exc, source=True) from exc


def _write_all(fd: int, data: memoryview, name: str) -> None:
    try:
        write_all(fd, data)
    except OSError as exc:
        raise from_oserror("copy", name, exc, source=False) from exc


def hash_at(dir_fd: int, name: str) -> str | None:
    """SHA-256 of a file we own (in the warehouse), or None if it is missing."""
    try:
        fd = os.open(name, OPEN_DATA, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        return hash_fd(fd, os.fstat(fd).st_size, name=name)
    finally:
        os.close(fd)
