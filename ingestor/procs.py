"""Lander processes: ``--processes N`` lands batches in N child processes, one GIL each.

Small files cost Python time per file (digest, plan, move, manifest line), and
one process runs Python on one core at a time. Each child is a whole
``Worker`` with its own ledger connection and owner lock — exactly what a
daemon and an ``ingestor replay`` beside it already are — so every claim is
still decided in a ledger transaction and a child's unfinished records are
adopted like any dead owner's.

A child dies with its parent (``PR_SET_PDEATHSIG``): a ``kill -9`` of the
daemon leaves no child landing behind its back; the next daemon adopts what
the children left unfinished. A child ignores SIGTERM and SIGINT (systemd
and a terminal send them to the whole group): the parent drains, then shuts
the pool down. If a child dies (a crash, an injected fault), the pool is
rebuilt and the parent's next recovery pass finishes the child's records.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import ulid

from ingestor import faults, logs, runs
from ingestor.errors import Fatal
from ingestor.fsops import TempDir
from ingestor.ledger import Ledger
from ingestor.manifest import ManifestRecord, ManifestWriter
from ingestor.outcome import Outcome
from ingestor.plan import PlanPolicy, scope_of
from ingestor.records import Candidate
from ingestor.settings import DedupScope, Mode, Settings
from ingestor.sources import Site, plain_site
from ingestor.worker import Worker

_PR_SET_PDEATHSIG = 1
_QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"

# the child's ledger and workers (one per landing dir served); set by _init, used only by the
# child's one task thread
_ledger: Ledger | None = None
_plain: Site | None = None
_workers: dict[int, tuple[int, Worker, int]] = {}  # site id → (serial, worker, landing fd)
_tmps: dict[Path, TempDir] = {}
_writers: dict[Path, ManifestWriter] = {}
_owner = ""
_stop: Any = None


def open_ledger(s: Settings, owner: str, *, plain: bool) -> Ledger:
    """The ledger on its own connection (the parent's and each child's); ``plain``: a ledger of
    one landing dir, bound to its three directories."""
    ledger = Ledger(s.state_path, owner)
    ledger.open(
        {"landing": str(s.input), "warehouse": str(s.warehouse), "manifests": str(s.manifests)}
        if plain
        else None
    )
    return ledger


def site_worker(
    site: Site,
    ledger: Ledger,
    *,
    stop: threading.Event | Any,
    log: Any,
    tmps: dict[Path, TempDir],
    writers: dict[Path, ManifestWriter],
) -> tuple[Worker, int]:
    """A Worker for one landing dir on a shared ledger; temporaries and manifest writers are
    shared by the landing dirs with the same warehouse or manifests dir. Returns it and the
    landing dir's descriptor (the caller closes it)."""
    s = site.settings
    landing_fd = os.open(s.input, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp = tmps.get(s.warehouse)
        if tmp is None:
            tmp = tmps[s.warehouse] = TempDir(s.warehouse, ledger.owner)
            tmp.open()
        writer = writers.get(s.manifests)
        if writer is None:
            writer = writers[s.manifests] = ManifestWriter(s.manifests)
        worker = Worker(
            landing=s.input,
            landing_fd=landing_fd,
            warehouse=s.warehouse,
            ledger=ledger,
            manifest=writer,
            tmp=tmp,
            policy=policy_of(site),
            stability_ns=int(s.stability_seconds * 1e9) if s.mode is Mode.STABILITY else 0,
            stop=stop,
            log=log,
            dry_run=s.dry_run,
            tail=ManifestRecord.tail_of(site.source, site.dataset),
        )
    except BaseException:
        os.close(landing_fd)
        raise
    return worker, landing_fd


def policy_of(site: Site) -> PlanPolicy:
    s = site.settings
    return PlanPolicy(
        s.layout,
        s.dedup,
        s.on_duplicate,
        s.warehouse,
        site=site.site_id,
        wh=site.wh,
        scope=scope_of(site.site_id, s.dedup_scope is DedupScope.DATASET),
        fields=(("source", site.source), *site.values),
    )


def make_worker(
    s: Settings, *, owner: str, stop: threading.Event | Any, log: Any
) -> tuple[Worker, Ledger, TempDir, int]:
    """The Worker of a ledger of one landing dir (site 0), on its own ledger connection."""
    ledger = open_ledger(s, owner, plain=True)
    tmps: dict[Path, TempDir] = {}
    worker, landing_fd = site_worker(plain_site(s), ledger, stop=stop, log=log, tmps=tmps, writers={})
    return worker, ledger, tmps[s.warehouse], landing_fd


def quiet_tracker() -> None:
    """Keep the resource tracker's warning after a child was killed out of the JSON log."""
    if _QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_TRACKER)


def die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def _init(settings: Settings, stop: Any, parent: int, plain: bool, run: tuple[str | None, str]) -> None:
    die_with_parent(parent)
    runs.set_current(*run)  # the daemon's run: on its manifest lines and log lines
    if os.environ.get("INGESTOR_LANDER_FAULTS"):  # fault points of the lander processes only (tests)
        faults.ACTIVE = faults.parse(os.environ["INGESTOR_LANDER_FAULTS"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure(settings.log_level.value)
    global _ledger, _plain, _owner, _stop
    _owner = str(ulid.ULID())
    _stop = stop
    _ledger = open_ledger(settings, _owner, plain=plain)
    _plain = plain_site(settings) if plain else None
    multiprocessing.util.Finalize(None, _close, exitpriority=10)


def _close() -> None:
    for _, _, fd in _workers.values():
        os.close(fd)
    for tmp in _tmps.values():
        tmp.close()
    if _ledger is not None:
        _ledger.close()


def land(job: list[Candidate] | tuple[Site, list[Candidate]]) -> Outcome:
    """A batch of one landing dir (``(site, batch)``; a plain batch is the plain landing dir's)."""
    assert _ledger is not None
    if isinstance(job, tuple):
        site, batch = job
    else:
        assert _plain is not None
        site, batch = _plain, job
    have = _workers.get(site.site_id)
    if have is None or have[0] != site.serial:  # a landing dir served again: a new descriptor
        if have is not None:
            os.close(have[2])
        log = logs.get_logger(owner=_owner, process="lander")
        worker, fd = site_worker(site, _ledger, stop=_stop, log=log, tmps=_tmps, writers=_writers)
        have = _workers[site.site_id] = (site.serial, worker, fd)
    return have[1].land(batch)


class Landers:
    """The pool of lander processes (``spawn``: no thread state of the parent is copied)."""

    def __init__(self, settings: Settings, count: int, *, plain: bool = True) -> None:
        # After an unclean pool shutdown (a child killed) multiprocessing's resource
        # tracker unlinks the pool's semaphores and says so with a plain-text warning
        # on stderr; the cleanup is what matters, the text would break the JSON log.
        # The tracker takes its warning filters from the interpreter's -W options.
        quiet_tracker()
        self.settings = settings
        self.plain = plain
        # the broken pool being replaced (the loop's): the first landing dir to notice restarts it
        self.restarting: concurrent.futures.Executor | None = None
        self.count = count
        self._ctx = multiprocessing.get_context("spawn")
        self.stop = self._ctx.Event()
        self.pool = self._make()
        # Start the children now, not at the first batch: spawning and importing
        # take about a second, which would otherwise fall on the first files.
        try:
            for fut in self._warm():
                fut.result()
        except concurrent.futures.BrokenExecutor as exc:
            self.pool.shutdown(wait=False, cancel_futures=True)
            raise Fatal(
                "start lander processes",
                str(settings.state_path),
                str(exc),
                "see the lines above; or --processes 1",
            ) from exc

    def _make(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            self.count,
            mp_context=self._ctx,
            initializer=_init,
            initargs=(self.settings, self.stop, os.getpid(), self.plain, (runs.RUN_ID, runs.HOST)),
        )

    def _warm(self) -> list[concurrent.futures.Future[int]]:
        """One no-op per child: with ``spawn`` a pool starts a process per task it has no idle one for."""
        return [self.pool.submit(os.getpid) for _ in range(self.count)]

    def restart(self) -> None:
        """After a child died: the pool is broken; make a new one."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._make()
        self._warm()

    def shutdown(self) -> None:
        shutdown_pool(self.pool, cancel=False)


def shutdown_pool(pool: concurrent.futures.ProcessPoolExecutor, *, cancel: bool) -> None:
    """Shut a process pool down and close its result pipe, which the executor leaves to the GC."""
    results = getattr(pool, "_result_queue", None)
    pool.shutdown(wait=True, cancel_futures=cancel)
    if results is not None:
        results.close()
