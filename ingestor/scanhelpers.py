"""Scan helper processes: ``rescan.check`` on several cores for a large scan.

A reconciliation scan over a million already-seen files is mostly the
kernel's work on each ``lstat`` and SQLite's on each key; both run without the
GIL, but one Python process still spends a core's worth of time around them
(and with the kernel's caches cold, the ``lstat`` s are most of it). The scan
hands chunks of names to these processes once a scan has seen
``rescan.HELPERS_ABOVE`` names; they answer with the few observations the
ledger does not know.

A helper only reads: the landing dir (opened by path, refused unless it is the
daemon's landing dir, then every directory below it opened without following
a symlink, as in the daemon) and the ledger (a read-only connection). It
dies with the daemon (``PR_SET_PDEATHSIG``) and ignores SIGTERM and SIGINT (the
daemon stops them). They are started for a scan and stopped after it: a scan
every minute does not keep two idle interpreters.

A daemon with many landing dirs scans them one after the other in a pass;
200 scans of 5,000 names each never reach ``HELPERS_ABOVE`` alone, yet the
pass is as large as one scan of a million. The pass starts one pool for all
of them (``HelperPool``) when the landing dirs' last full scans add up to a
large one; each chunk names its landing dir and its identity, and a helper
keeps the last ``DIRS_KEPT`` landing dirs open.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sqlite3
from collections import OrderedDict
from pathlib import Path

from ingestor import rescan
from ingestor.ledger_db import connect, unknown_keys
from ingestor.procs import die_with_parent, quiet_tracker, shutdown_pool

# the helper's ledger connection, and the landing dirs it opened (set by _init and _dir_fd)
_conn: sqlite3.Connection | None = None
_state_path = Path()
_dirs: OrderedDict[tuple[str, int, int], int] = OrderedDict()
DIRS_KEPT = 64  # landing dirs a helper keeps open: a pass over 200 visits each once, in turn


def default_workers() -> int:
    """Helpers for this machine: one per core up to 4; none on one core."""
    cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(4, cores)


def _init(state_path: str, parent: int, first: tuple[str, tuple[int, int]] | None) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    global _conn, _state_path
    if first is not None:  # a pool for one landing dir: one that was replaced fails the pool at once
        _dir_fd(*first)
    _state_path = Path(state_path)
    _conn = connect(_state_path, readonly=True)


def _dir_fd(landing: str, identity: tuple[int, int]) -> int:
    """The landing dir, opened by path once and kept; RuntimeError if it is not the daemon's."""
    key = (landing, *identity)
    fd = _dirs.get(key)
    if fd is not None:
        _dirs.move_to_end(key)
        return fd
    fd = os.open(landing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != identity:  # replaced since the daemon opened it: check nothing
        os.close(fd)
        raise RuntimeError(f"{landing} is no longer the daemon's landing dir")
    _dirs[key] = fd
    while len(_dirs) > DIRS_KEPT:
        os.close(_dirs.popitem(last=False)[1])
    return fd


def _check(
    landing: str, identity: tuple[int, int], rel_dir: str, names: list[str]
) -> list[rescan.Observation]:
    assert _conn is not None
    conn = _conn
    fd = _dir_fd(landing, identity)
    return rescan.check(fd, lambda keys: unknown_keys(conn, keys, _state_path), rel_dir, names)


class HelperPool:
    """Helper processes for one scan, or for a pass that scans every landing dir in turn:
    each chunk names its landing dir, which a helper opens once and checks is the daemon's."""

    def __init__(
        self, state_path: Path, workers: int, first: tuple[str, tuple[int, int]] | None = None
    ) -> None:
        quiet_tracker()
        self.workers = workers
        self._pool = concurrent.futures.ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(str(state_path), os.getpid(), first),
        )
        # one no-op per helper: they start (spawn, import) while the scan goes on here
        self._warm = [self._pool.submit(os.getpid) for _ in range(workers)]

    def ready(self) -> bool:
        """True once the helpers answered; raises BrokenExecutor if they could not start."""
        if not all(f.done() for f in self._warm):
            return False
        for f in self._warm:
            f.result()
        return True

    def pids(self) -> list[int]:
        """The helpers' process ids (once ready)."""
        return [f.result() for f in self._warm]

    def submit(
        self, landing: str, identity: tuple[int, int], rel_dir: str, names: list[str]
    ) -> concurrent.futures.Future[list[rescan.Observation]]:
        return self._pool.submit(_check, landing, identity, rel_dir, names)

    def close(self) -> None:
        shutdown_pool(self._pool, cancel=True)  # a scan a minute must not leave descriptors to the GC


class ScanHelpers:
    """The helpers of one landing dir's scan (``rescan.Helpers``): a pool of its own, or a
    view of a pass's shared ``pool``, which the pass closes (``close`` leaves it running)."""

    def __init__(
        self, landing_fd: int, landing: Path, state_path: Path, workers: int, pool: HelperPool | None = None
    ) -> None:
        st = os.fstat(landing_fd)
        self._landing = str(landing)
        self._identity = (st.st_dev, st.st_ino)
        self._owned = pool is None
        self.pool = pool or HelperPool(state_path, workers, (self._landing, self._identity))
        self.workers = self.pool.workers

    def ready(self) -> bool:
        return self.pool.ready()

    def pids(self) -> list[int]:
        return self.pool.pids()

    def submit(self, rel_dir: str, names: list[str]) -> concurrent.futures.Future[list[rescan.Observation]]:
        return self.pool.submit(self._landing, self._identity, rel_dir, names)

    def close(self) -> None:
        if self._owned:
            self.pool.close()
