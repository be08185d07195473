"""Stages: what a daemon (or a replay) opens to land files, and closes again.

``Stages`` is what every landing dir shares, opened once in a thread before
anything is watched: the daemon's lock on its ledger (one daemon per
ledger), the ledger, the thread pool, the lander processes, and the
warehouses' temporary dirs and manifest writers (one per directory, shared by
the landing dirs that use it). ``SiteStages`` is one landing dir's part
(``open_site``): its directories made and bound to the ledger (``binding.py``:
another ledger on any of them, or a ledger that does not hold the manifests,
is refused), its id in the ledger, its worker and its descriptor. ``close``
undoes it all, in any state a failed open left.

After ``open`` the fields are read-only, but for the caches of shared
directories, which only the loop's open and close jobs touch (one at a
time); the objects behind them say which thread may use them (the ledger's
writer is its own thread; the workers run in the pool's threads).
``recover`` and ``bind_pending`` are thread jobs that return what they did,
for the loop to act on.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import itertools
import os
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from ingestor import binding, ledger_db, procs, rejections, scanhelpers
from ingestor.errors import Fatal, Refused
from ingestor.fsops import TempDir
from ingestor.ledger import Ledger
from ingestor.manifest import ManifestWriter
from ingestor.metrics import Metrics
from ingestor.outcome import Outcome
from ingestor.records import Record
from ingestor.settings import Settings
from ingestor.sources import Site
from ingestor.worker import Worker


class Stages:
    def __init__(
        self, s: Settings, *, owner: str, one_shot: bool, stop: threading.Event, log: Any, plain: bool = True
    ) -> None:
        self.s = s  # daemon-wide settings
        self.owner = owner
        self.one_shot = one_shot
        self.stop = stop
        self.log = log
        self.plain = plain
        self._lock_fd = -1
        self._ledger: Ledger | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.landers: procs.Landers | None = None
        self.scan_workers = scanhelpers.default_workers()
        self.tmps: dict[Path, TempDir] = {}
        self.writers: dict[Path, ManifestWriter] = {}
        self._bound: dict[Path, tuple[binding.Binding, int]] = {}  # directory → (binding, users)
        self._serials = itertools.count(1)

    @property
    def ledger(self) -> Ledger:
        assert self._ledger is not None
        return self._ledger

    @property
    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        assert self._pool is not None
        return self._pool

    # ------------------------------------------------------------ open, close (in a thread)

    def open(self, metrics: Metrics, manifests: list[Path] | None = None) -> None:
        """``manifests``: the manifests dirs of the landing dirs found at start; checked before
        a new ledger is made beside manifests another ledger wrote."""
        try:
            self._open(metrics, manifests or [])
        except OSError as exc:
            self.close()
            raise Fatal(
                "start",
                str(exc.filename or self.s.state_path),
                exc.strerror or str(exc),
                "check that the directory exists and that this user may write it",
            ) from exc
        except BaseException:
            self.close()
            raise

    def _open(self, metrics: Metrics, manifests: list[Path]) -> None:
        s = self.s
        s.ledger_dir.mkdir(parents=True, exist_ok=True)
        if not self.one_shot:
            self._take_daemon_lock()
        if ledger_db.peek_id(s.state_path) is None:  # no ledger yet: manifests with lines are another's
            for m in manifests:
                if m.is_dir():
                    binding.check_history(m, s.state_path, lambda _id: False)
        self._ledger = procs.open_ledger(s, self.owner, plain=self.plain)
        self.ledger.commit_observer = metrics.on_commit
        self._pool = concurrent.futures.ThreadPoolExecutor(s.concurrency + 1, thread_name_prefix="worker")
        if s.processes > 1 and not s.dry_run:
            self.landers = procs.Landers(s, s.processes, plain=self.plain)

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
        for tmp in self.tmps.values():
            tmp.close()
        self.tmps.clear()
        for b, _ in self._bound.values():
            b.release()
        self._bound.clear()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # ------------------------------------------------------------ landing dirs (in a thread)

    def open_site(self, site: Site, *, create: bool) -> SiteStages:
        """Make, bind and open one landing dir; ``create``: make the landing dir itself too
        (a literal path; a placeholder's directories are never made by the daemon)."""
        s = site.settings
        try:
            if create:
                s.input.mkdir(parents=True, exist_ok=True)
            elif not s.input.is_dir():
                raise FileNotFoundError(2, "the landing dir is gone", str(s.input))
            for d in (s.warehouse, s.manifests):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Fatal(
                "start",
                str(exc.filename or s.input),
                exc.strerror or str(exc),
                "check that the directory exists and that this user may write it",
            ) from exc
        held = self._bind({"input": s.input, "warehouse": s.warehouse, "manifests": s.manifests})
        try:
            binding.check_history(s.manifests, self.s.state_path, self.ledger.knows)
            site_id, wh = self.ledger.site(
                str(s.input),
                str(s.warehouse),
                str(s.manifests),
                site.source,
                orjson.dumps(site.dataset).decode(),
            )
            site = dataclasses.replace(site, site_id=site_id, wh=wh, serial=next(self._serials))
            worker, landing_fd = procs.site_worker(
                site, self.ledger, stop=self.stop, log=self.log, tmps=self.tmps, writers=self.writers
            )
        except OSError as exc:
            self._unbind(held)
            raise Fatal(
                "start", str(exc.filename or s.input), exc.strerror or str(exc), "check the directory"
            ) from exc
        except BaseException:
            self._unbind(held)
            raise
        try:
            for b in held:
                b.commit(self.ledger.id, self.s.state_path)
        except OSError as exc:  # the directory went away meanwhile, or no descriptor left
            os.close(landing_fd)
            self._unbind(held)
            raise Fatal("start", str(exc.filename or s.input), exc.strerror or str(exc), "retried") from exc
        for b in held:
            if b.pending:
                self.log.warning(
                    "binding_deferred",
                    path=str(b.directory),
                    cause=b.cause,
                    hint=f"not writable now: bound to this ledger once it is ({binding.NAME})",
                )
        tmp = self.tmps[s.warehouse]
        if tmp.fd < 0:
            self.log.warning(
                "warehouse_not_writable",
                path=str(tmp.path),
                hint="copies wait and are retried until it is writable",
            )
        return SiteStages(self, site, worker, landing_fd, held)

    def _bind(self, dirs: dict[str, Path]) -> list[binding.Binding]:
        new = {role: d for role, d in dirs.items() if d not in self._bound}
        known = self.ledger.id
        fresh = binding.bind_all(new, known, self.s.state_path)
        for b in fresh:
            self._bound[b.directory] = (b, 0)
        held = [self._bound[d][0] for d in dirs.values()]
        for d in dirs.values():
            b, users = self._bound[d]
            self._bound[d] = (b, users + 1)
        return held

    def _unbind(self, held: list[binding.Binding]) -> None:
        for b in held:
            entry = self._bound.get(b.directory)
            if entry is None:
                continue
            if entry[1] <= 1:
                del self._bound[b.directory]
                b.release()
            else:
                self._bound[b.directory] = (b, entry[1] - 1)

    # ------------------------------------------------------------ thread jobs

    def recover(self, served: dict[int, SiteStages]) -> dict[int, Outcome]:
        """Adopt and finish the unfinished records of dead owners, in the landing dirs served.

        Records of a landing dir not served now stay their dead owner's,
        adopted once it is served again.
        """
        ledger = self.ledger
        owners = ledger.open_owners() | set(ledger.owners.dead_owners())
        for tmp in self.tmps.values():
            owners |= tmp.owners()
        done: dict[int, Outcome] = defaultdict(Outcome)
        for owner in sorted(owners - {self.owner}):
            if not ledger.owners.try_take(owner):
                continue  # alive: a replay, or a daemon on another ledger sharing the warehouse
            records = ledger.adopt(owner, list(served))
            temps = sum(tmp.remove_owner(owner) for tmp in self.tmps.values())
            self._finish_rejections(served.values(), owner)
            if records:
                self._finish(records, served, done, dead_owner=owner, temporaries_removed=temps)
            elif temps:
                self.log.info("recovered", dead_owner=owner, records=0, temporaries_removed=temps)
            ledger.owners.release(owner, remove=not ledger.holds_open(owner))
        return done

    def recover_own(self, site: SiteStages) -> Outcome:
        """A landing dir served again: finish what this process left of it last time."""
        records = self.ledger.adopt(self.owner, [site.site.site_id])
        self._finish_rejections([site], self.owner)
        done: dict[int, Outcome] = defaultdict(Outcome)
        if records:
            self._finish(
                records, {site.site.site_id: site}, done, dead_owner=self.owner, temporaries_removed=0
            )
        return done[site.site.site_id]

    def _finish_rejections(self, sites: Iterable[SiteStages], owner: str) -> None:
        """The rejected files' lines ``owner`` committed and did not write (rejections.py)."""
        for site in sites:
            n = rejections.finish(site, owner)
            if n:
                self.log.info("recovered_rejections", dead_owner=owner, lines=n, path=str(site.s.input))

    def _finish(
        self,
        records: list[Record],
        served: dict[int, SiteStages],
        done: dict[int, Outcome],
        **log: Any,
    ) -> None:
        by_site: dict[int, list[Record]] = defaultdict(list)
        for r in records:
            by_site[r.site].append(r)
        finished = unfinished = 0
        for site_id, recs in by_site.items():
            out = served[site_id].worker.finish(recs, recovering=True)
            done[site_id].files += out.files
            finished += len(out.done())
            unfinished += len(out.unfinished())
        self.log.info(
            "recovered",
            records=len(records),
            finished=finished,
            unfinished=unfinished,
            abandoned=len(records) - finished - unfinished,
            **log,
        )


class SiteStages:
    """One landing dir's part: what the scanner and the landing of that dir use."""

    def __init__(
        self, shared: Stages, site: Site, worker: Worker, landing_fd: int, held: list[binding.Binding]
    ) -> None:
        self.shared = shared
        self.site = site
        self.s = site.settings
        self.worker = worker
        self.landing_fd = landing_fd
        self.bindings = held
        self.ledger = shared.ledger
        self.pool = shared.pool
        self.landers = shared.landers
        self.stop = shared.stop
        self.scan_workers = shared.scan_workers
        self.scan_key = f"last_full_scan_files:{site.site_id}" if site.site_id else "last_full_scan_files"

    @property
    def tmp(self) -> TempDir:
        return self.shared.tmps[self.s.warehouse]

    @property
    def manifest(self) -> ManifestWriter:
        return self.shared.writers[self.s.manifests]

    def land_job(self, batch: list[Any]) -> tuple[Site, list[Any]]:
        """What a lander process takes: the landing dir with the batch."""
        return (self.site, batch)

    def close(self) -> None:
        """In a thread: let the landing dir go (served no more)."""
        if self.landing_fd >= 0:
            os.close(self.landing_fd)
            self.landing_fd = -1
        self.shared._unbind(self.bindings)
        self.bindings = []

    def bind_pending(self) -> Refused | None:
        """Bind the directories that were not writable at start, now that they may be.

        Returns the refusal if another ledger bound one meanwhile: the daemon stops.
        """
        for b in self.bindings:
            if b.pending:
                try:
                    if b.retry(self.ledger.id, self.shared.s.state_path):
                        self.shared.log.info("binding_done", path=str(b.directory))
                except Refused as exc:
                    self.shared.log.error("binding_refused", path=str(b.directory), cause=str(exc))
                    return exc
        return None
