"""Reconciliation scan: the landing tree → observations, with no events at all.

Makes the system correct where events are missing (NFS, an overflowed inotify
queue, a daemon that was down, a directory filled before its watch existed);
events only make it fast. Runs in a thread and hands observations to the loop
in chunks.

The walk never follows a symlink: every directory is opened with
``O_DIRECTORY | O_NOFOLLOW`` relative to its parent's descriptor, and entries
are ``lstat``-ed relative to it. Hidden directories are not entered. Files
whose identity the ledger says is in flight or kept are left out here, so a
scan over a landing dir full of already-seen files reads no file.
"""

from __future__ import annotations

import errno
import os
import queue
import stat as stat_mod
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ingestor.fsops import OPEN_DIR, open_beneath

CHUNK = 1024

Observation = tuple[str, os.stat_result]
Key = tuple[int, int, int, int]  # (device, inode, size, mtime_ns): an Identity, as a plain tuple


def walk(
    landing_fd: int,
    start: str = "",
    *,
    on_dir: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> Iterator[list[Observation]]:
    """The non-directory entries below ``start``, one list per directory, as (rel, lstat)."""
    try:
        top = open_beneath(landing_fd, start, OPEN_DIR) if start else os.dup(landing_fd)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV):  # a symlink: never followed
            return
        raise
    stack: list[tuple[int, str]] = [(top, start)]
    try:
        while stack:
            if stop is not None and stop.is_set():
                return
            fd, rel_dir = stack.pop()
            try:
                if on_dir is not None:
                    on_dir(rel_dir)
                prefix = f"{rel_dir}/" if rel_dir else ""
                found: list[Observation] = []
                with os.scandir(fd) as it:
                    for entry in it:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except (FileNotFoundError, NotADirectoryError):
                            continue
                        if not stat_mod.S_ISDIR(st.st_mode):
                            found.append((prefix + entry.name, st))
                        elif not entry.name.startswith("."):
                            try:
                                stack.append((os.open(entry.name, OPEN_DIR, dir_fd=fd), prefix + entry.name))
                            except OSError:
                                continue  # replaced by a symlink meanwhile, or gone
            except OSError:
                continue  # the directory went away or cannot be read
            finally:
                os.close(fd)
            if found:
                yield found
    finally:
        for other, _ in stack:
            os.close(other)


def scan(
    landing_fd: int,
    start: str,
    *,
    emit: Callable[[list[Observation]], None],
    unknown: Callable[[list[Key]], list[int]],
    ignored: Callable[[str], bool],
    on_dir: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Walk below ``start`` and ``emit`` chunks of observations; returns files seen.

    ``unknown(keys)`` gives the positions of the identities the ledger does not
    know as in flight or kept (a thousand per query); only those files are
    looked at further (ignore rules, then ``emit``), so a million already-seen
    files cost their walk and a thousand queries that return nothing.
    """
    seen = 0
    # the walk runs in a thread of its own while this one asks the ledger: SQLite
    # and the walk's system calls both run without the GIL, so a cold ledger's
    # page reads overlap the walk instead of adding to it
    todo: queue.Queue[list[Observation] | None] = queue.Queue(maxsize=4)
    halt = threading.Event()
    failed: list[BaseException] = []

    def produce() -> None:
        nonlocal seen
        chunk: list[Observation] = []
        try:
            for found in walk(landing_fd, start, on_dir=on_dir, stop=halt):
                seen += len(found)
                chunk.extend(found)
                if len(chunk) >= CHUNK:
                    todo.put(chunk)
                    chunk = []
                if stop is not None and stop.is_set():
                    return
            if chunk:
                todo.put(chunk)
        except BaseException as exc:
            failed.append(exc)
        finally:
            todo.put(None)

    def check(chunk: list[Observation]) -> None:
        regular = [obs for obs in chunk if stat_mod.S_ISREG(obs[1].st_mode)]
        keys = [(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for _, st in regular]
        fresh = [regular[i] for i in unknown(keys)] if keys else []
        if len(regular) < len(chunk):  # symlinks, FIFOs...: the ledger never knows them
            fresh.extend(obs for obs in chunk if not stat_mod.S_ISREG(obs[1].st_mode))
        keep = [obs for obs in fresh if not ignored(obs[0])]
        if keep:
            emit(keep)

    walker = threading.Thread(target=produce, name="scan-walk", daemon=True)
    walker.start()
    try:
        while (chunk := todo.get()) is not None:
            check(chunk)
    except BaseException:
        halt.set()
        while todo.get() is not None:  # let the walker finish its put and stop
            pass
        raise
    finally:
        walker.join()
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
