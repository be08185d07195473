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
import stat as stat_mod
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ingestor.fsops import OPEN_DIR, open_beneath
from ingestor.records import Identity

CHUNK = 1024

Observation = tuple[str, os.stat_result]


def walk(
    landing_fd: int,
    start: str = "",
    *,
    on_dir: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> Iterator[Observation]:
    """Every non-directory entry below ``start`` (relative), as (rel, lstat)."""
    try:
        top = open_beneath(landing_fd, start, OPEN_DIR) if start else os.dup(landing_fd)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV):  # a symlink: never followed
            return
        raise
    stack: list[tuple[int, str]] = [(top, start)]
    while stack:
        fd, rel_dir = stack.pop()
        if on_dir is not None:
            on_dir(rel_dir)
        try:
            with os.scandir(fd) as it:
                entries = list(it)
        except OSError:
            os.close(fd)
            continue
        for entry in entries:
            if stop is not None and stop.is_set():
                os.close(fd)
                for other, _ in stack:
                    os.close(other)
                return
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat_mod.S_ISDIR(st.st_mode):
                if entry.name.startswith("."):
                    continue
                try:
                    sub = os.open(entry.name, OPEN_DIR, dir_fd=fd)
                except OSError:
                    continue  # replaced by a symlink meanwhile, or gone
                stack.append((sub, rel))
            else:
                yield rel, st
        os.close(fd)


def scan(
    landing_fd: int,
    start: str,
    *,
    emit: Callable[[list[Observation]], None],
    live: Callable[[list[Identity]], set[Identity]],
    ignored: Callable[[str], bool],
    on_dir: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Walk below ``start`` and ``emit`` chunks of observations; returns files seen."""
    seen = 0
    chunk: list[Observation] = []

    def flush() -> None:
        regular = [Identity.of(st) for rel, st in chunk if stat_mod.S_ISREG(st.st_mode)]
        skip = live(regular) if regular else set()
        keep = [(rel, st) for rel, st in chunk if not skip or Identity.of(st) not in skip]
        if keep:
            emit(keep)
        chunk.clear()

    for rel, st in walk(landing_fd, start, on_dir=on_dir, stop=stop):
        seen += 1
        if ignored(rel):
            continue
        chunk.append((rel, st))
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
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
