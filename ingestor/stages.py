"""Stages: what a daemon (or a replay) opens to land files, and closes again.

``Stages.open`` runs in a thread, before anything is watched: it makes the
directories, takes the daemon's lock on its ledger (one daemon per ledger),
binds the landing dir, the warehouse and the manifests dir to the ledger
(``binding.py``: another ledger on any of them, or a ledger that does not
hold the manifests, is refused), opens the ledger, the worker, the thread
pool and the lander processes. ``close`` undoes it all, in any state a
failed open left.

After ``open`` the fields are read-only; the objects behind them say which
thread may use them (the ledger's writer is its own thread; the worker runs
in the pool's threads). ``recover`` and ``bind_pending`` are thread jobs
that return what they did, for the loop to act on.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from ingestor import binding, ledger_db, procs, scanhelpers
from ingestor.errors import Fatal, Refused
from ingestor.fsops import TempDir
from ingestor.ledger import Ledger
from ingestor.metrics import Metrics
from ingestor.outcome import Outcome
from ingestor.settings import Settings
from ingestor.worker import Worker


@dataclass(slots=True)
class Recovered:
    """What one recovery pass did: each dead owner's records finished, or handed back."""

    outcome: Outcome = field(default_factory=Outcome)
    owners: int = 0


class Stages:
    def __init__(self, s: Settings, *, owner: str, one_shot: bool, stop: threading.Event, log: Any) -> None:
        self.s = s
        self.owner = owner
        self.one_shot = one_shot
        self.stop = stop
        self.log = log
        self.bindings: list[binding.Binding] = []
        self._lock_fd = -1
        self._worker: Worker | None = None
        self._ledger: Ledger | None = None
        self._tmp: TempDir | None = None
        self._landing_fd = -1
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.landers: procs.Landers | None = None
        self.scan_workers = scanhelpers.default_workers()

    # ------------------------------------------------------------ opened parts, once open

    @property
    def worker(self) -> Worker:
        assert self._worker is not None
        return self._worker

    @property
    def ledger(self) -> Ledger:
        assert self._ledger is not None
        return self._ledger

    @property
    def tmp(self) -> TempDir:
        assert self._tmp is not None
        return self._tmp

    @property
    def landing_fd(self) -> int:
        assert self._landing_fd >= 0
        return self._landing_fd

    @property
    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        assert self._pool is not None
        return self._pool

    # ------------------------------------------------------------ open, close (in a thread)

    def open(self, metrics: Metrics) -> None:
        try:
            self._open(metrics)
        except OSError as exc:
            self.close()
            raise Fatal(
                "start",
                str(exc.filename or self.s.input),
                exc.strerror or str(exc),
                "check that the directory exists and that this user may write it",
            ) from exc
        except BaseException:
            self.close()
            raise

    def _open(self, metrics: Metrics) -> None:
        s = self.s
        for d in (s.input, s.warehouse, s.manifests):
            d.mkdir(parents=True, exist_ok=True)
        s.ledger_dir.mkdir(parents=True, exist_ok=True)
        if not self.one_shot:
            self._take_daemon_lock()
        known = ledger_db.peek_id(s.state_path)
        self.bindings = binding.bind_all(
            {"input": s.input, "warehouse": s.warehouse, "manifests": s.manifests}, known, s.state_path
        )
        if known is None:  # no ledger yet: manifests that hold lines were written by another one
            binding.check_history(s.manifests, s.state_path, lambda _id: False)
        self._worker, self._ledger, self._tmp, self._landing_fd = procs.make_worker(
            s, owner=self.owner, stop=self.stop, log=self.log
        )
        binding.check_history(s.manifests, s.state_path, self.ledger.knows)
        for b in self.bindings:
            b.commit(self.ledger.id, s.state_path)
            if b.pending:
                self.log.warning(
                    "binding_deferred",
                    path=str(b.directory),
                    cause=b.cause,
                    hint=f"not writable now: bound to this ledger once it is ({binding.NAME})",
                )
        self.ledger.commit_observer = metrics.on_commit
        if self.tmp.fd < 0:
            self.log.warning(
                "warehouse_not_writable",
                path=str(self.tmp.path),
                hint="copies wait and are retried until it is writable",
            )
        self._pool = concurrent.futures.ThreadPoolExecutor(s.concurrency + 1, thread_name_prefix="worker")
        if s.processes > 1 and not s.dry_run:
            self.landers = procs.Landers(s, s.processes)

    def _take_daemon_lock(self) -> None:
        path = self.s.ledger_dir / "daemon.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise Fatal(
                "start",
                str(self.s.state_path),
                f"another ingestor daemon (pid {other or '?'}) is running on this ledger",
                "stop it first; `ingestor replay` may run beside it",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Close what is open, in the reverse order; safe after a failed or partial open."""
        if self.landers is not None:
            self.landers.shutdown()
            self.landers = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        if self._tmp is not None:
            self._tmp.close()
            self._tmp = None
        if self._landing_fd >= 0:
            os.close(self._landing_fd)
            self._landing_fd = -1
        self._worker = None
        for b in self.bindings:
            b.release()
        self.bindings = []
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # ------------------------------------------------------------ thread jobs

    def recover(self) -> Recovered:
        """Adopt and finish the unfinished records of dead owners."""
        ledger, tmp = self.ledger, self.tmp
        owners = ledger.open_owners() | set(ledger.owners.dead_owners()) | tmp.owners()
        done = Recovered()
        for owner in sorted(owners - {self.owner}):
            if not ledger.owners.try_take(owner):
                continue  # alive: a replay, or a daemon on another ledger sharing the warehouse
            records = ledger.adopt(owner)
            temps = tmp.remove_owner(owner)
            if records:
                out = self.worker.finish(records, recovering=True)
                done.outcome.files += out.files
                done.owners += 1
                self.log.info(
                    "recovered",
                    dead_owner=owner,
                    records=len(records),
                    finished=len(out.done()),
                    unfinished=len(out.unfinished()),
                    abandoned=len(records) - len(out.done()) - len(out.unfinished()),
                    temporaries_removed=temps,
                )
            elif temps:
                self.log.info("recovered", dead_owner=owner, records=0, temporaries_removed=temps)
            ledger.owners.release(owner, remove=True)
        return done

    def bind_pending(self) -> Refused | None:
        """Bind the directories that were not writable at start, now that they may be.

        Returns the refusal if another ledger bound one meanwhile: the daemon stops.
        """
        for b in self.bindings:
            if b.pending:
                try:
                    if b.retry(self.ledger.id, self.s.state_path):
                        self.log.info("binding_done", path=str(b.directory))
                except Refused as exc:
                    self.log.error("binding_refused", path=str(b.directory), cause=str(exc))
                    return exc
        return None
