"""Daemon: wires the stages; startup → main loop → graceful shutdown.

    watch ─hint─┐
    rescan ─────┼─► Readiness ─ready─► landers ─► Worker.land (thread pool) ─► ledger / move / manifest
    new dir ────┘                         ▲
    recovery (dead owners) / retries ─────┴─► Worker.finish

One asyncio loop coordinates; everything that blocks (hashing, copying,
fsync, SQLite, directory walks) runs in threads. ``Readiness`` and the fields
of ``Daemon`` are touched only on the loop thread.

Startup: open the ledger and take this process's owner lock; adopt and finish
the unfinished records of dead owners (a crash, a ``kill -9``); start the
watcher; scan everything. Then: events, periodic scans (which also adopt the
records of any process that died meanwhile), retries with back-off.

Shutdown (SIGTERM / SIGINT): stop taking new batches, let in-flight batches
finish (bounded by ``shutdown_timeout``, after which long reads are told to
stop: nothing half-done is recorded), close the ledger, exit 0.

``one_shot`` (``ingestor replay``): no watcher, one scan, exit when nothing is
pending. Safe beside a running daemon: each process only finishes records of
owners that are dead, and every claim is decided in a ledger transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import ulid

from ingestor import binding, logs, procs, rescan, scanhelpers, systemd
from ingestor import ledger as ledger_mod
from ingestor.errors import Fatal, IngestError, Refused, Retryable
from ingestor.fsops import replaced
from ingestor.metrics import Metrics
from ingestor.progress import Progress
from ingestor.ready import TOO_LONG, Readiness, wait_event
from ingestor.records import Candidate, Record
from ingestor.settings import Settings, WatcherKind
from ingestor.watch import InotifyWatcher, WatchdogWatcher
from ingestor.worker import Outcome

MAX_BATCH_BYTES = 64 << 20
LANDING_POLL_SECONDS = 1.0  # how often a replaced landing dir's path is looked at
SCAN_SIZE_KEY = "last_full_scan_files"  # in the ledger's meta table
DEFER_SECONDS = 0.05


@dataclass(slots=True)
class RunStats:
    landed: int = 0
    duplicates: int = 0
    failed: int = 0
    not_ready: int = 0
    done_bytes: int = 0


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel and await tasks; cancel again any that swallowed a cancellation."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for t in tasks:
        if not t.cancelled():
            t.exception()  # retrieved: its crash was logged by _task_done


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        one_shot: bool = False,
        paths: list[str] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.s = settings
        self.progress = progress
        self.one_shot = one_shot
        self.paths = paths if paths is not None else [""]
        self.owner = str(ulid.ULID())
        self.log = logs.get_logger(owner=self.owner)
        self.metrics = Metrics()
        self.stats = RunStats()
        self.stop_threads = threading.Event()  # tells long reads in worker threads to stop
        self._stop_asked: asyncio.Event | None = None  # SIGTERM, SIGINT: the end of run()
        self._stopping: asyncio.Event | None = None  # the end of this cycle (a stop, or landing replaced)
        self._replaced: str | None = None  # why the landing path stopped naming the served dir
        self._cycles = 0
        self._scan_request: asyncio.Event | None = None
        self._scan_targets: set[str] = set()
        self._retry: list[Record] = []
        self._retry_due = 0.0
        self._backoff = 0.0
        self._retry_attempts = 0
        self._retry_wake: asyncio.Event | None = None
        self._batches: set[asyncio.Future[Outcome]] = set()  # worker calls in flight
        self._daemon_lock_fd = -1
        self.bindings: list[binding.Binding] = []
        self._last_failure_log = 0.0
        self._opened = False
        self._crashed = False
        self._refused: Refused | None = None  # a pending binding taken by another ledger meanwhile

    # ------------------------------------------------------------ startup

    def _open(self) -> None:
        try:
            self._open_stages()
        except OSError as exc:
            raise Fatal(
                "start",
                str(exc.filename or self.s.input),
                exc.strerror or str(exc),
                "check that the directory exists and that this user may write it",
            ) from exc

    def _open_stages(self) -> None:
        s = self.s
        for d in (s.input, s.warehouse, s.manifests):
            d.mkdir(parents=True, exist_ok=True)
        s.ledger_dir.mkdir(parents=True, exist_ok=True)
        if not self.one_shot:
            self._take_daemon_lock()
        self._bind()
        self.worker, self.ledger, self.tmp, self.landing_fd = procs.make_worker(
            s, owner=self.owner, stop=self.stop_threads, log=self.log
        )
        try:
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
        except BaseException:
            self.ledger.close()
            self.tmp.close()
            os.close(self.landing_fd)
            raise
        self.ledger.commit_observer = self.metrics.on_commit
        if self.tmp.fd < 0:
            self.log.warning(
                "warehouse_not_writable",
                path=str(self.tmp.path),
                hint="copies wait and are retried until it is writable",
            )
        self.pool = concurrent.futures.ThreadPoolExecutor(s.concurrency + 1, thread_name_prefix="worker")
        self.scan_workers = scanhelpers.default_workers()
        self._last_full_scan = -1  # files seen by the last full scan; -1 before the first
        self._helpers_started = 0  # scan helper processes started by the current scan
        self._prestarted: scanhelpers.ScanHelpers | None = None  # for the first scan
        self.landers: procs.Landers | None = None
        if s.processes > 1 and not s.dry_run:
            self.landers = procs.Landers(s, s.processes)
        self._opened = True

    def _bind(self) -> None:
        """Refuse directories bound to another ledger, and a new ledger beside written manifests."""
        s = self.s
        known = ledger_mod.peek_id(s.state_path)
        self.bindings = binding.bind_all(
            {"input": s.input, "warehouse": s.warehouse, "manifests": s.manifests}, known, s.state_path
        )
        if known is None:  # no ledger yet: manifests that hold lines were written by another one
            try:
                binding.check_history(s.manifests, s.state_path, lambda _id: False)
            except BaseException:
                self._release_bindings()
                raise

    def _release_bindings(self) -> None:
        for b in self.bindings:
            b.release()
        self.bindings = []

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
        self._daemon_lock_fd = fd

    def _close(self) -> None:
        if self._opened:
            if self.landers is not None:
                self.landers.shutdown()
            self.pool.shutdown(wait=True)
            self.ledger.close()
            self.tmp.close()
            os.close(self.landing_fd)
        self._release_bindings()
        if self._daemon_lock_fd >= 0:
            os.close(self._daemon_lock_fd)
            self._daemon_lock_fd = -1

    # ------------------------------------------------------------ recovery

    def _recover(self) -> list[Record]:
        """Adopt and finish the unfinished records of dead owners (runs in a thread)."""
        owners = self.ledger.open_owners() | set(self.ledger.owners.dead_owners()) | self.tmp.owners()
        unfinished: list[Record] = []
        for owner in sorted(owners - {self.owner}):
            if not self.ledger.owners.try_take(owner):
                continue  # alive: a replay, or a daemon on another ledger sharing the warehouse
            records = self.ledger.adopt(owner)
            temps = self.tmp.remove_owner(owner)
            if records:
                out = self.worker.finish(records, recovering=True)
                self.metrics.on_done(out.done)
                unfinished.extend(out.unfinished)
                self.log.info(
                    "recovered",
                    dead_owner=owner,
                    records=len(records),
                    finished=len(out.done),
                    abandoned=len(out.abandoned),
                    unfinished=len(out.unfinished),
                    temporaries_removed=temps,
                )
            elif temps:
                self.log.info("recovered", dead_owner=owner, records=0, temporaries_removed=temps)
            self.ledger.owners.release(owner, remove=True)
        return unfinished

    # ------------------------------------------------------------ the sink for watchers

    def hint(self, rel: str) -> None:
        self.metrics.events.inc()
        self.readiness.hint(rel)

    def written(self, rel: str) -> None:
        self.metrics.events.inc()
        self.readiness.written(rel)

    def closed(self, rel: str) -> None:
        self.metrics.events.inc()
        self.readiness.closed(rel)

    def new_dir(self, rel: str) -> None:
        self.request_scan(rel)

    def overflow(self) -> None:
        self.readiness.events_lost()
        self.request_scan("")

    def request_scan(self, rel: str) -> None:
        self._scan_targets.add(rel)
        if self._scan_request is not None:
            self._scan_request.set()

    def request_stop(self) -> None:
        if self._stop_asked is None or self._stopping is None:
            return
        if self._stop_asked.is_set():
            self.stop_threads.set()  # asked twice: stop long reads now
        self._stop_asked.set()
        self._stopping.set()

    # ------------------------------------------------------------ main

    async def run(self) -> int:
        """Serve until stopped; when the landing path stops naming the watched directory,
        stop landing from it, wait for a directory at the path and serve that one."""
        loop = asyncio.get_running_loop()
        self._stop_asked = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        server = None
        try:
            if not self.one_shot and self.s.metrics_port is not None:
                server = self.metrics.serve(self.s.metrics_port)
            while True:
                self._new_cycle()
                try:
                    await loop.run_in_executor(None, self._open)
                    code = await self._main(loop)
                finally:
                    await loop.run_in_executor(None, self._close)
                if self._replaced is None or self._stop_asked.is_set():
                    return code
                if self.one_shot:
                    return 1
                if not await self._await_landing(loop):
                    return code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if server is not None:
                server.shutdown()

    def _new_cycle(self) -> None:
        """Fresh state for serving the landing dir (again): a new owner id, nothing in flight.

        Records the previous cycle left unfinished belong to its owner, who is
        gone once its ledger connection closed: recovery adopts them.
        """
        if self._cycles:
            self.owner = str(ulid.ULID())
            self.log = logs.get_logger(owner=self.owner)
            self.stop_threads = threading.Event()
        self._cycles += 1
        self._replaced = None
        self._stopping = asyncio.Event()
        self._scan_request = asyncio.Event()
        self._retry_wake = asyncio.Event()
        self._scan_targets = set()
        self._retry = []
        self._retry_due = self._backoff = 0.0
        self._retry_attempts = 0

    async def _await_landing(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Until a directory is at the landing path (True) or a stop is asked (False).

        The loop pings the systemd watchdog meanwhile: waiting is not hanging.
        """
        assert self._stop_asked is not None
        systemd.notify(f"STATUS=waiting for a directory at {self.s.input}")
        while not self._stop_asked.is_set():
            if await loop.run_in_executor(None, os.path.isdir, self.s.input):
                self.log.info("landing_dir_back", path=str(self.s.input))
                return True
            systemd.notify("WATCHDOG=1")
            await wait_event(self._stop_asked, LANDING_POLL_SECONDS)
        return False

    def landing_replaced(self, cause: str) -> None:
        """The landing path no longer names the directory being served (loop thread).

        Nothing more is landed from it: its files are outside the landing dir
        now (``mv L L.old``), or gone. The cycle ends like a stop (in-flight
        batches finish), and ``run`` serves the directory at the path once
        there is one.
        """
        if self._replaced is not None:
            return
        self._replaced = cause
        self.metrics.error("landing_replaced")
        self.log.error(
            "landing_dir_replaced",
            path=str(self.s.input),
            cause=cause,
            hint="nothing more is landed from the old directory; the directory at the path "
            "is watched as soon as there is one",
        )
        if self._stopping is not None:
            self._stopping.set()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> int:
        assert self._stopping is not None
        s = self.s
        self.readiness = Readiness(
            landing=s.input,
            mode=s.mode,
            stability_seconds=s.stability_seconds,
            sidecar_suffix=s.sidecar_suffix,
            ignore_suffixes=s.ignore_suffixes,
            log=self.log,
            one_shot=self.one_shot,
            count_problem=self.metrics.error,
        )
        r = self.readiness
        self.metrics.bind_gauges(
            lambda: len(r.ready), lambda: len(r.pending), lambda: len(r.busy), lambda: len(self._retry)
        )
        self.watcher: InotifyWatcher | WatchdogWatcher | None = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            if not self.one_shot:
                self._prestart_scan_helpers()
            self._retry.extend(await loop.run_in_executor(None, self._recover))
            if not self.one_shot:
                self.watcher = self._start_watcher(loop)
            for p in self.paths:
                self._scan_targets.add(p)
            tasks.append(self._task(r.run(), "readiness"))
            tasks += [self._task(self._lander(), f"lander-{i}") for i in range(s.concurrency)]
            tasks.append(self._task(self._retrier(), "retrier"))
            await self._scan_once(loop)
            if self.one_shot:
                await self._until_idle()
            else:
                tasks.append(self._task(self._scanner(loop), "scanner"))
                tasks.append(self._task(self._heartbeat(), "heartbeat"))
                systemd.notify("READY=1", f"STATUS=watching {s.input}")
                self.log.info(
                    "started",
                    input=str(s.input),
                    warehouse=str(s.warehouse),
                    manifests=str(s.manifests),
                    state_path=str(s.state_path),
                    mode=s.mode.value,
                    watcher=type(self.watcher).__name__ if self.watcher else "poll",
                    dirs_watched=self.watcher.watched if self.watcher else 0,
                    metrics_port=s.metrics_port,
                )
                await self._stopping.wait()
            if self._replaced is None:
                systemd.notify("STOPPING=1")
            self.log.info("stopping", in_flight=len(r.busy), waiting=len(r.pending), ready=len(r.ready))
            await self._drain()
            if self.progress is not None:
                self.progress.close()
        finally:
            if self.watcher is not None:
                self.watcher.close()
            await _cancel_all(tasks)
            if self._prestarted is not None:  # stopped before the first scan took them
                self._prestarted.close()
                self._prestarted = None
        self.log.info(
            "stopped",
            landed=self.stats.landed,
            duplicates=self.stats.duplicates,
            failed=self.stats.failed,
            not_ready=len(r.not_ready),
            retrying=len(self._retry),
        )
        if self._refused is not None:
            raise self._refused
        if self._crashed or (self.one_shot and (self._retry or self.stats.failed or r.failed)):
            return 1
        return 0

    def _task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A stage that dies is a bug: say so loudly and stop (recovery finishes its work on restart)."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.log.critical("internal_error", task=task.get_name(), exc_info=exc)
        self._crashed = True
        self.request_stop()

    def _start_watcher(self, loop: asyncio.AbstractEventLoop) -> InotifyWatcher | WatchdogWatcher | None:
        kind = self.s.watcher
        if kind is WatcherKind.POLL:
            return None
        if kind in (WatcherKind.AUTO, WatcherKind.INOTIFY):
            w = InotifyWatcher(self.s.input, self, self.log)
            try:
                w.start(loop)
                return w
            except OSError as exc:
                if kind is WatcherKind.INOTIFY:
                    raise Fatal(
                        "start inotify", str(self.s.input), str(exc), "try --watcher watchdog"
                    ) from exc
                self.log.warning("inotify_unavailable", error=str(exc), fallback="watchdog")
        wd = WatchdogWatcher(self.s.input, self, self.log)
        wd.start(loop)
        return wd

    async def _drain(self) -> None:
        """Let in-flight batches finish, within the shutdown timeout."""
        if self._batches:
            _, late = await asyncio.wait(set(self._batches), timeout=self.s.shutdown_timeout)
            if late:
                self.log.warning("shutdown_timeout", in_flight=len(late), hint="long reads told to stop")
                self.stop_threads.set()
                if self.landers is not None:
                    self.landers.stop.set()
                await asyncio.wait(late)

    async def _until_idle(self) -> None:
        """One-shot: return once nothing is pending, ready, in flight or retryable."""
        assert self._stopping is not None
        r = self.readiness
        while not self._stopping.is_set():
            if r.idle() and not self._batches and (not self._retry or self._retry_attempts >= 3):
                return
            r.progress.clear()
            # progress is set after every judging round and every batch
            await wait_event(r.progress, 1.0)

    # ------------------------------------------------------------ scanning

    async def _scanner(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._scan_request is not None
        while True:
            if not await wait_event(self._scan_request, self.s.scan_interval):
                self._scan_targets.add("")
            await self._scan_once(loop)

    async def _scan_once(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._scan_request is not None
        self._scan_request.clear()
        targets, self._scan_targets = self._scan_targets, set()
        if not targets:
            return
        cause = await loop.run_in_executor(None, replaced, self.s.input, self.landing_fd)
        if cause is not None:  # a scan would walk the old directory through its descriptor
            self.landing_replaced(cause)
            return
        if "" in targets:
            targets = {""}
            if not self.one_shot:
                self._retry.extend(await loop.run_in_executor(None, self._recover))
        else:  # drop targets inside other targets
            targets = {t for t in targets if not any(t.startswith(o + "/") for o in targets)}
        started = time.monotonic()
        seen = 0
        self._helpers_started = 0
        for target in sorted(targets):
            seen += await loop.run_in_executor(None, self._scan, loop, target)
        self.metrics.scans.inc()
        if "" in targets:
            await loop.run_in_executor(None, self._after_full_scan, seen)
            if self.readiness.writing:  # files moved away or deleted while open: no close event comes
                gone = await loop.run_in_executor(None, self.readiness.missing, list(self.readiness.writing))
                self.readiness.writing.difference_update(gone)
            if self._refused is not None:
                self.request_stop()
            self.log.info(
                "scan_done",
                files=seen,
                seconds=round(time.monotonic() - started, 3),
                helpers=self._helpers_started,
            )

    def _scan(self, loop: asyncio.AbstractEventLoop, target: str) -> int:
        """Runs in a thread: walk and hand observations to the loop."""

        def emit(chunk: list[rescan.Observation]) -> None:
            loop.call_soon_threadsafe(self._observe, chunk)

        def too_long(rel: str, st: os.stat_result) -> None:
            loop.call_soon_threadsafe(self.readiness.reject, rel, st, TOO_LONG)

        return rescan.scan(
            self.landing_fd,
            target,
            emit=emit,
            unknown=self.ledger.unknown_keys,
            ignored=lambda rel: self.readiness.target(rel) is None,
            on_dir=self.watcher.add_dir if self.watcher is not None else None,
            stop=self.stop_threads,
            room=self.readiness.room,
            on_too_long=too_long,
            helpers=self._scan_helpers if self.scan_workers else None,
            # the first full scan may follow a reboot (cold caches) and an outage;
            # later ones are as large as the last full one was
            helpers_above=(
                rescan.HELPERS_ABOVE_FIRST
                if self._last_full_scan < 0 or self._last_full_scan > rescan.HELPERS_ABOVE
                else rescan.HELPERS_ABOVE
            ),
        )

    def _scan_helpers(self) -> scanhelpers.ScanHelpers:
        self._helpers_started += self.scan_workers
        helpers, self._prestarted = self._prestarted, None
        return helpers or self._new_scan_helpers()

    def _new_scan_helpers(self) -> scanhelpers.ScanHelpers:
        return scanhelpers.ScanHelpers(self.landing_fd, self.s.input, self.s.state_path, self.scan_workers)

    def _prestart_scan_helpers(self) -> None:
        """Start the first scan's helpers with the daemon if the last full scan was large.

        After a reboot that scan runs on cold caches, where the helpers pay
        most, and they take 0.6-0.9 s to start: started now, they are ready
        when the scan begins (the ledger remembers each full scan's size).
        """
        try:
            last = int(self.ledger.recall(SCAN_SIZE_KEY) or -1)
        except (Retryable, ValueError):
            return
        self._last_full_scan = last
        if self.scan_workers and last > rescan.HELPERS_ABOVE_FIRST:
            self._prestarted = self._new_scan_helpers()
            self.log.info("scan_helpers_prestarted", helpers=self.scan_workers, last_full_scan_files=last)

    def _bind_pending(self) -> None:
        """In a thread: bind the directories that were not writable at start, now that they may be."""
        for b in self.bindings:
            if b.pending:
                try:
                    if b.retry(self.ledger.id, self.s.state_path):
                        self.log.info("binding_done", path=str(b.directory))
                except Refused as exc:
                    self._refused = exc
                    self.log.error("binding_refused", path=str(b.directory), cause=str(exc))

    def _after_full_scan(self, seen: int) -> None:
        """In a thread: remember the scan's size; stop helpers the scan did not need."""
        self._bind_pending()
        unused, self._prestarted = self._prestarted, None
        if unused is not None:
            unused.close()
        if seen != self._last_full_scan:
            try:
                self.ledger.remember(SCAN_SIZE_KEY, str(seen))
            except (Retryable, Fatal) as exc:  # a hint for the next start only
                self.log.warning("scan_size_not_recorded", error=str(exc))
        self._last_full_scan = seen

    def _observe(self, chunk: list[rescan.Observation]) -> None:
        r = self.readiness
        for rel, st in chunk:
            r.observe(rel, st)

    # ------------------------------------------------------------ landing

    async def _lander(self) -> None:
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        r = self.readiness
        while not self._stopping.is_set():
            if not r.ready:
                waiter = asyncio.ensure_future(r.ready_event.wait())
                stopper = asyncio.ensure_future(self._stopping.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                continue
            batch = r.take(self.s.batch_size, MAX_BATCH_BYTES)
            if not batch:
                continue
            if self.landers is None:
                out = await self._in_pool(loop, self.worker.land, batch)
            else:
                landers = self.landers.pool
                try:
                    out = await self._in_pool(loop, procs.land, batch, landers)
                except concurrent.futures.BrokenExecutor:
                    self._lander_died(landers, batch)
                    continue
            self._settle(batch, out)

    def _lander_died(self, broken: concurrent.futures.Executor, batch: list[Candidate]) -> None:
        """A lander process died: new pool; its records are adopted by the next recovery pass."""
        assert self.landers is not None
        if self.landers.pool is broken:  # the first of the landers to notice rebuilds it
            self.log.error("lander_process_died", hint="a new one is started; its files are recovered")
            self.metrics.error("fatal")
            self.landers.restart()
            self.request_scan("")  # a full scan starts with a recovery pass
        self.readiness.release(c.rel for c in batch)
        for cand in batch:
            self.readiness.retry(cand.rel, DEFER_SECONDS)

    async def _in_pool(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Any,
        arg: Any,
        pool: concurrent.futures.Executor | None = None,
    ) -> Outcome:
        fut = loop.run_in_executor(pool or self.pool, fn, arg)
        self._batches.add(fut)
        try:
            # shielded: a cancelled lander must not forget a batch a thread is still landing
            return await asyncio.shield(fut)
        finally:
            if fut.done():
                self._batches.discard(fut)
            else:
                fut.add_done_callback(self._batches.discard)

    def _settle(self, batch: list[Candidate], out: Outcome) -> None:
        """Apply a batch's outcome to readiness and the retry queue (loop thread)."""
        r = self.readiness
        r.release(c.rel for c in batch)
        self.metrics.on_done(out.done)
        for rec in out.done:
            if rec.status.value == "ingested":
                self.stats.landed += 1
            else:
                self.stats.duplicates += 1
            self.stats.done_bytes += rec.identity.size
        if self.progress is not None:
            self.progress.update(
                r.admitted_files,
                r.admitted_bytes,
                self.stats.landed + self.stats.duplicates + self.stats.failed,
                self.stats.done_bytes,
            )
        for _ in out.vanished:
            self.metrics.error("vanished")
        for cand in out.deferred:
            r.retry(cand.rel, DEFER_SECONDS)
        for rel in out.changed:
            r.retry(rel, r.window)
        fresh = {rel for rel, key in out.settle if r.settle(rel, key)}
        for cand, exc in out.bad:
            self.metrics.error("bad_input")
            self.stats.failed += 1
            if cand.rel in fresh:
                self.log.warning(
                    "file_rejected", path=str(self.s.input / cand.rel), cause=exc.cause, hint=exc.hint
                )
        failures: list[IngestError] = [exc for _, exc in out.failed]
        if out.error is not None:
            failures.append(out.error)
        if failures:
            self._backoff = min(max(self._backoff * 2, 0.5), self.s.retry_max_seconds)
            for f in failures:
                self.metrics.error(f.kind)
            now = time.monotonic()
            if now - self._last_failure_log >= 5 or self.one_shot:
                self._last_failure_log = now
                first = failures[0]
                self.log.error(
                    "step_failed",
                    op=first.op,
                    path=first.path,
                    cause=first.cause,
                    hint=first.hint,
                    files=len(out.failed) + len(out.unfinished),
                    retry_in_s=self._backoff,
                )
            for cand, _ in out.failed:
                r.retry(cand.rel, self._backoff)
            if out.unfinished:
                self._retry.extend(out.unfinished)
                self._retry_due = time.monotonic() + self._backoff
                assert self._retry_wake is not None
                self._retry_wake.set()
            if self.one_shot:
                self.stats.failed += len(out.failed)
        elif out.done:
            self._backoff = 0.0
        for cand in out.stopped:
            r.forget(cand.rel)
        if out.landing_replaced is not None:
            self.landing_replaced(out.landing_replaced)

    async def _retrier(self) -> None:
        """Redo the failed steps of planned records, after the back-off."""
        assert self._stopping is not None and self._retry_wake is not None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            wait = None if not self._retry else self._retry_due - time.monotonic()
            if wait is None or wait > 0:
                self._retry_wake.clear()
                await wait_event(self._retry_wake, wait)
                continue
            records, self._retry = self._retry, []
            self._retry_attempts += 1
            out = await self._in_pool(loop, self._finish, records)
            self._settle([], out)
            if not out.unfinished:
                self._retry_attempts = 0
            self.readiness.progress.set()

    def _finish(self, records: list[Record]) -> Outcome:
        return self.worker.finish(records, recovering=True)

    async def _heartbeat(self) -> None:
        """The periodic metrics line and the systemd watchdog ping."""
        wd = systemd.watchdog_interval()
        every = self.s.metrics_interval
        now = time.monotonic()
        next_wd = now + wd if wd else None
        next_metrics = now + every if every else None
        while True:
            # two independent deadlines: the watchdog ping must not stretch the metrics period
            due = min(t for t in (next_wd, next_metrics, now + 3600.0) if t is not None)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            if next_wd is not None and wd and now >= next_wd - 1e-3:
                systemd.notify("WATCHDOG=1")
                next_wd = now + wd
            if next_metrics is not None and every and now >= next_metrics - 1e-3:
                next_metrics += every
                r = self.readiness
                self.log.info(
                    "metrics",
                    **self.metrics.snapshot(),
                    queue_depth=len(r.ready),
                    waiting=len(r.pending),
                    in_flight=len(r.busy),
                    retrying=len(self._retry),
                    events_total=self.watcher.events if self.watcher else 0,
                )
