"""Reconciliation scan: the landing tree → observations, with no events at all.

Makes the system correct where events are missing (NFS, an overflowed inotify
queue, a daemon that was down, a directory filled before its watch existed);
events only make it fast. Runs in a thread and hands observations to the loop
in chunks: the walk reads directory entries in a thread of its own, the names
are ``lstat``-ed and looked up in the ledger by ``check`` — in this process,
or, for a large scan, in helper processes on the other cores
(``scanhelpers.py``), which answer with the few the ledger does not know.

The walk never follows a symlink: every directory is opened with
``O_DIRECTORY | O_NOFOLLOW`` relative to its parent's descriptor, and entries
are ``lstat``-ed relative to it. Hidden directories are not entered. Files
whose identity the ledger says is in flight or kept are left out here, so a
scan over a landing dir full of already-seen files reads no file.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import queue
import stat as stat_mod
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from ingestor.binding import NAME as BINDING_NAME
from ingestor.fsops import OPEN_DIR, PATH_MAX, longer_than, open_beneath

CHUNK = 1024
HELPERS_ABOVE = 50_000  # names in one scan before helper processes are started
# the same for a scan that is likely to be large or slow (the daemon's first,
# after a restart or a reboot, over a cold cache): helpers take 0.3-0.9 s to start
HELPERS_ABOVE_FIRST = 5_000

Observation = tuple[str, os.stat_result]
Key = tuple[int, int, int, int]  # (device, inode, size, mtime_ns): an Identity, as a plain tuple


def walk(
    landing_fd: int,
    start: str = "",
    *,
    on_dir: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    room: int = PATH_MAX,
    on_too_long: Callable[[str, os.stat_result], None] | None = None,
) -> Iterator[tuple[str, list[str]]]:
    """The non-directory names below ``start``, as (rel_dir, names), at most ``CHUNK`` names each.

    Only the directory entries are read (their type comes with them on every
    local filesystem); the names are ``lstat``-ed by ``check``. An entry whose
    path below the landing dir is longer than ``room`` bytes (its absolute path
    would not fit in ``PATH_MAX``) goes to ``on_too_long`` with its ``lstat``,
    once per walk, and is neither listed nor entered: nothing could land it.
    """
    try:
        top = open_beneath(landing_fd, start, OPEN_DIR) if start else os.dup(landing_fd)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno in (
            errno.ELOOP,
            errno.EXDEV,
            errno.ENAMETOOLONG,
        ):  # a symlink; or too long: reported by the full scan
            return
        raise
    stack: list[tuple[int, str]] = [(top, start)]
    try:
        while stack:
            if stop is not None and stop.is_set():
                return
            fd, rel_dir = stack.pop()
            names: list[str] = []
            try:
                if on_dir is not None:
                    on_dir(rel_dir)
                prefix = f"{rel_dir}/" if rel_dir else ""
                with os.scandir(fd) as it:
                    for entry in it:
                        try:
                            is_dir = entry.is_dir(follow_symlinks=False)
                            if longer_than(prefix + entry.name, room):
                                if on_too_long is not None and not entry.name.startswith("."):
                                    on_too_long(prefix + entry.name, entry.stat(follow_symlinks=False))
                                continue
                        except OSError:
                            continue
                        if not is_dir:
                            if rel_dir or entry.name != BINDING_NAME:
                                names.append(entry.name)
                        elif not entry.name.startswith("."):
                            try:
                                stack.append((os.open(entry.name, OPEN_DIR, dir_fd=fd), prefix + entry.name))
                            except OSError:
                                continue  # replaced by a symlink meanwhile, or gone
            except OSError:
                continue  # the directory went away or cannot be read
            finally:
                os.close(fd)
            for at in range(0, len(names), CHUNK):
                yield rel_dir, names[at : at + CHUNK]
    finally:
        for other, _ in stack:
            os.close(other)


def check(
    landing_fd: int, unknown: Callable[[list[Key]], list[int]], rel_dir: str, names: list[str]
) -> list[Observation]:
    """``lstat`` the ``names`` of ``rel_dir`` and keep those the ledger does not know.

    The directory is opened below the landing dir without following a
    symlink. Regular files go to ``unknown`` (the ledger); anything else
    (symlinks, FIFOs...) is kept: the ledger never knows it, and the caller
    reports it. An entry that is a directory by now is left to the next walk.
    """
    try:
        dfd = open_beneath(landing_fd, rel_dir, OPEN_DIR) if rel_dir else os.dup(landing_fd)
    except OSError:
        return []  # gone, or a symlink now: what is there is seen by the next scan
    prefix = f"{rel_dir}/" if rel_dir else ""
    regular: list[Observation] = []
    other: list[Observation] = []
    try:
        for name in names:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile (or unreadable): its events, or the next scan
            if stat_mod.S_ISREG(st.st_mode):
                regular.append((prefix + name, st))
            elif not stat_mod.S_ISDIR(st.st_mode):
                other.append((prefix + name, st))
    finally:
        os.close(dfd)
    keys = [(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for _, st in regular]
    fresh = [regular[i] for i in unknown(keys)] if keys else []
    return fresh + other


class Helpers(Protocol):
    """Processes that run ``check`` for a scan (``ingestor/scanhelpers.py``)."""

    workers: int

    def ready(self) -> bool: ...
    def submit(self, rel_dir: str, names: list[str]) -> concurrent.futures.Future[list[Observation]]: ...
    def close(self) -> None: ...


def scan(
    landing_fd: int,
    start: str,
    *,
    emit: Callable[[list[Observation]], None],
    unknown: Callable[[list[Key]], list[int]],
    ignored: Callable[[str], bool],
    on_dir: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    helpers: Callable[[], Helpers] | None = None,
    helpers_above: int = HELPERS_ABOVE,
    room: int = PATH_MAX,
    on_too_long: Callable[[str, os.stat_result], None] | None = None,
) -> int:
    """Walk below ``start`` and ``emit`` what the ledger does not know; returns files seen.

    ``unknown(keys)`` gives the positions of the identities the ledger does not
    know as in flight or kept (a thousand per query); only those files are
    looked at further (ignore rules, then ``emit``), so a million already-seen
    files cost their walk and a thousand queries that return nothing.

    The walk (directory entries only) runs in a thread of its own; the names
    are checked (``lstat`` and the ledger) in this thread. Past
    ``helpers_above`` names in one scan, ``helpers()`` starts processes that
    check chunks in parallel: most of a large scan is the kernel's work on
    each ``lstat`` and SQLite's on each key, and one process does that on one
    core at a time. Until they are ready, and for good if they fail, the
    chunks are checked here.
    """
    seen = 0
    todo: queue.Queue[tuple[str, list[str]] | None] = queue.Queue(maxsize=8)
    halt = threading.Event()
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            for item in walk(landing_fd, start, on_dir=on_dir, stop=halt, room=room, on_too_long=on_too_long):
                todo.put(item)
                if stop is not None and stop.is_set():
                    return
        except BaseException as exc:
            failed.append(exc)
        finally:
            todo.put(None)

    def deliver(found: list[Observation]) -> None:
        keep = [obs for obs in found if not ignored(obs[0])]
        if keep:
            emit(keep)

    pool: Helpers | None = None
    use_pool = helpers is not None
    inflight: deque[tuple[str, list[str], concurrent.futures.Future[list[Observation]]]] = deque()

    def settle(rel_dir: str, names: list[str], fut: concurrent.futures.Future[list[Observation]]) -> None:
        nonlocal use_pool
        try:
            found = fut.result()
        except concurrent.futures.BrokenExecutor:
            use_pool = False  # a helper died: this chunk and the rest are checked here
            found = check(landing_fd, unknown, rel_dir, names)
        except RuntimeError:  # the helper found another dir at the landing path: checked here
            use_pool = False
            found = check(landing_fd, unknown, rel_dir, names)
        deliver(found)

    walker = threading.Thread(target=produce, name="scan-walk", daemon=True)
    walker.start()
    try:
        while (item := todo.get()) is not None:
            rel_dir, names = item
            seen += len(names)
            if use_pool and pool is None and seen > helpers_above:
                assert helpers is not None
                pool = helpers()
            ready = False
            if use_pool and pool is not None:
                try:
                    ready = pool.ready()
                except concurrent.futures.BrokenExecutor:
                    use_pool = False  # they could not start: everything is checked here
            if ready:
                assert pool is not None
                while len(inflight) >= 2 * pool.workers:
                    settle(*inflight.popleft())
                if use_pool:
                    try:
                        inflight.append((rel_dir, names, pool.submit(rel_dir, names)))
                        continue
                    except (concurrent.futures.BrokenExecutor, RuntimeError):
                        use_pool = False
            deliver(check(landing_fd, unknown, rel_dir, names))
        while inflight:
            settle(*inflight.popleft())
    except BaseException:
        halt.set()
        while todo.get() is not None:  # let the walker finish its put and stop
            pass
        raise
    finally:
        walker.join()
        if pool is not None:
            pool.close()
    if failed:
        raise failed[0]
    return seen


def landing_paths(landing: Path, paths: list[Path]) -> list[str]:
    """Relative paths of ``paths`` (files or dirs) below the landing dir; ValueError otherwise."""
    out = []
    root = os.path.realpath(landing)
    for p in paths:
        absolute = os.path.abspath(p)
        parent = os.path.realpath(os.path.dirname(absolute))
        full = os.path.join(parent, os.path.basename(absolute))
        if full != root and not full.startswith(root + "/"):
            raise ValueError(f"{p} is not inside the landing dir {landing}")
        out.append(os.path.relpath(full, root) if full != root else "")
    return out
