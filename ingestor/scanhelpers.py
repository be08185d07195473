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
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sqlite3
from pathlib import Path

from ingestor import rescan
from ingestor.ledger_db import connect, unknown_keys
from ingestor.procs import die_with_parent, quiet_tracker, shutdown_pool

# the helper's landing dir and ledger connection; set once by _init
_landing_fd = -1
_conn: sqlite3.Connection | None = None
_state_path = Path()


def default_workers() -> int:
    """Helpers for this machine: one per core up to 4; none on one core."""
    cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(4, cores)


def _init(landing: str, identity: tuple[int, int], state_path: str, parent: int) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    global _landing_fd, _conn, _state_path
    fd = os.open(landing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != identity:  # replaced since the daemon opened it: check nothing
        os.close(fd)
        raise RuntimeError(f"{landing} is no longer the daemon's landing dir")
    _landing_fd = fd
    _state_path = Path(state_path)
    _conn = connect(_state_path, readonly=True)


def _check(rel_dir: str, names: list[str]) -> list[rescan.Observation]:
    assert _conn is not None
    conn = _conn
    return rescan.check(_landing_fd, lambda keys: unknown_keys(conn, keys, _state_path), rel_dir, names)


class ScanHelpers:
    """A pool of helper processes for one scan (``rescan.Helpers``)."""

    def __init__(self, landing_fd: int, landing: Path, state_path: Path, workers: int) -> None:
        quiet_tracker()
        st = os.fstat(landing_fd)
        self.workers = workers
        self._pool = concurrent.futures.ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(str(landing), (st.st_dev, st.st_ino), str(state_path), os.getpid()),
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

    def submit(self, rel_dir: str, names: list[str]) -> concurrent.futures.Future[list[rescan.Observation]]:
        return self._pool.submit(_check, rel_dir, names)

    def close(self) -> None:
        shutdown_pool(self._pool, cancel=True)  # a scan a minute must not leave descriptors to the GC
