"""Lifecycle: a daemon (or a one-shot replay) from start to stop.

    watch ─hint─┐
    scanner ────┼─► Readiness ─ready─► Landing ─► Worker.land (threads or lander processes)
    new dir ────┘                         ▲
    recovery (dead owners) / retries ─────┴─► Worker.finish

``Daemon.run`` is the whole life, in order (as uvicorn's ``Server._serve``):
start (open the stages: ledger, bindings, worker; ``stages.py``), recover
(adopt and finish the records of dead owners: a crash, a ``kill -9``),
serve (watch, scan, land; events, periodic scans that also recover, retries
with back-off), drain (in-flight batches finish, within
``shutdown_timeout``, then long reads are told to stop: nothing half-done
is recorded), stop (close the stages). SIGTERM and SIGINT ask for the stop.

If the landing path stops naming the directory being served (deleted,
renamed away, replaced, unmounted), the cycle ends as a stop does and
``run`` waits for a directory at the path and serves it: nothing more is
landed from the old one. A replay (``one_shot``) exits 1 instead.

``one_shot`` (``ingestor replay``): no watcher, one scan, the end when
nothing is pending. Safe beside a running daemon: each process only finishes
records of owners that are dead, and every claim is decided in a ledger
transaction.

Ownership: one asyncio loop coordinates, and every field here is the loop's;
everything that blocks runs in threads (``stages``, the workers, the scans),
which hand results back to the loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from typing import Any

import ulid

from ingestor import logs, systemd
from ingestor.errors import Fatal, Refused
from ingestor.heartbeat import heartbeat
from ingestor.landing import Landing, RunStats
from ingestor.metrics import Metrics
from ingestor.progress import Progress
from ingestor.ready import Readiness, wait_event
from ingestor.scanner import Scanner
from ingestor.settings import Settings, WatcherKind
from ingestor.stages import Stages
from ingestor.watch import InotifyWatcher, WatchdogWatcher

LANDING_POLL_SECONDS = 1.0  # how often a replaced landing dir's path is looked at
RETRY_ROUNDS = 3  # a replay gives up on records still failing after this many retries


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
        self.one_shot = one_shot
        self.paths = paths if paths is not None else [""]
        self.progress = progress
        self.metrics = Metrics()
        self.stats = RunStats()
        self.owner = str(ulid.ULID())
        self.log = logs.get_logger(owner=self.owner)
        self.watcher: InotifyWatcher | WatchdogWatcher | None = None
        self._stop_asked = asyncio.Event()  # SIGTERM, SIGINT: the end of run()
        self._stopping = asyncio.Event()  # the end of this cycle: a stop, or the landing dir replaced
        self._stop_threads = threading.Event()  # tells long reads in worker threads to stop
        self._replaced: str | None = None  # why the landing path stopped naming the served dir
        self._refused: Refused | None = None  # a pending binding taken by another ledger meanwhile
        self._crashed = False
        self._cycles = 0

    # ------------------------------------------------------------ the life

    async def run(self) -> int:
        """Serve until stopped; serve the directory at the landing path again if it is replaced."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        server = None
        try:
            if not self.one_shot and self.s.metrics_port is not None:
                server = self.metrics.serve(self.s.metrics_port)
            while True:
                code = await self._serve()
                if self._replaced is None or self._stop_asked.is_set():
                    return code
                if self.one_shot or not await self._await_landing():
                    return 1 if self.one_shot else code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if server is not None:  # waits for the server thread's poll: off the loop
                await loop.run_in_executor(None, server.shutdown)

    async def _serve(self) -> int:
        """One cycle: start, recover, serve, drain, stop."""
        loop = asyncio.get_running_loop()
        self._new_cycle()
        s = self.s
        stages = self.stages = Stages(
            s, owner=self.owner, one_shot=self.one_shot, stop=self._stop_threads, log=self.log
        )
        r = self.readiness = self._readiness()
        self.scanner = Scanner(
            stages, r, self.metrics, self.log, one_shot=self.one_shot, recover=self._recover,
            landing_replaced=self.landing_replaced, refused=self._refuse,
        )  # fmt: skip
        self.landing = Landing(
            s, stages, r, self.metrics, self.log, one_shot=self.one_shot, stats=self.stats,
            progress=self.progress, stopping=self._stopping, ask_scan=self.scanner.ask,
            landing_replaced=self.landing_replaced,
        )  # fmt: skip
        self.metrics.bind_gauges(
            lambda: len(r.ready), lambda: len(r.pending), lambda: len(r.busy), lambda: len(self.landing.retry)
        )
        tasks: list[asyncio.Task[Any]] = []
        try:
            await loop.run_in_executor(None, stages.open, self.metrics)
            if not self.one_shot:
                await self.scanner.prestart()
            await self._recover()
            if not self.one_shot:
                self.watcher = await self._start_watcher()
                self.scanner.add_dir = self.watcher.add_dir if self.watcher else None
            self.scanner.targets.update(self.paths)
            tasks.append(self._task(r.run(), "readiness"))
            tasks += [self._task(self.landing.lander(), f"lander-{i}") for i in range(s.concurrency)]
            tasks.append(self._task(self.landing.retrier(), "retrier"))
            await self.scanner.scan()
            if self.one_shot:
                await self._until_idle()
            else:
                tasks.append(self._task(self.scanner.run(s.scan_interval), "scanner"))
                tasks.append(
                    self._task(
                        heartbeat(self.metrics, s.metrics_interval, self.log, self._gauges), "heartbeat"
                    )
                )
                self._started()
                await self._stopping.wait()
            if self._replaced is None:
                systemd.notify("STOPPING=1")
            self.log.info("stopping", in_flight=len(r.busy), waiting=len(r.pending), ready=len(r.ready))
            await self.landing.drain(s.shutdown_timeout)
            if self.progress is not None:
                self.progress.close()
        finally:
            if self.watcher is not None:
                await self.watcher.stop()
                self.watcher = None
            await _cancel_all(tasks)
            self.scanner.close()
            await loop.run_in_executor(None, stages.close)
        return self._stopped()

    def _new_cycle(self) -> None:
        """Fresh state for serving the landing dir (again), under a new owner id.

        Records a previous cycle left unfinished belong to its owner, who is
        gone once its ledger connection closed: recovery adopts them.
        """
        if self._cycles:
            self.owner = str(ulid.ULID())
            self.log = logs.get_logger(owner=self.owner)
            self._stop_threads = threading.Event()
        self._cycles += 1
        self._replaced = None
        self._stopping = asyncio.Event()
        if self._stop_asked.is_set():
            self._stopping.set()

    def _readiness(self) -> Readiness:
        s = self.s
        return Readiness(
            landing=s.input,
            mode=s.mode,
            stability_seconds=s.stability_seconds,
            sidecar_suffix=s.sidecar_suffix,
            ignore_suffixes=s.ignore_suffixes,
            log=self.log,
            one_shot=self.one_shot,
            count_problem=self.metrics.error,
        )

    async def _recover(self) -> None:
        """Adopt and finish the records of dead owners; what failed again goes to the retrier."""
        done = await asyncio.get_running_loop().run_in_executor(None, self.stages.recover)
        self.landing.apply(done.outcome)

    def _started(self) -> None:
        s = self.s
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

    def _stopped(self) -> int:
        r, st = self.readiness, self.stats
        self.log.info(
            "stopped",
            landed=st.landed,
            duplicates=st.duplicates,
            failed=st.failed,
            not_ready=len(r.not_ready),
            retrying=len(self.landing.retry),
        )
        if self._refused is not None:
            raise self._refused
        if self._crashed or (self.one_shot and (self.landing.retry or st.failed or r.failed)):
            return 1
        return 0

    async def _until_idle(self) -> None:
        """One-shot: return once nothing is pending, ready, in flight or retryable."""
        r, landing = self.readiness, self.landing
        while not self._stopping.is_set():
            retrying = landing.retry and landing.retry_attempts < RETRY_ROUNDS
            if r.idle() and not landing.in_flight and not retrying:
                return
            r.progress.clear()
            # progress is set after every judging round and every batch
            await wait_event(r.progress, 1.0)

    async def _await_landing(self) -> bool:
        """Until a directory is at the landing path (True) or a stop is asked (False).

        The loop pings the systemd watchdog meanwhile: waiting is not hanging.
        """
        loop = asyncio.get_running_loop()
        systemd.notify(f"STATUS=waiting for a directory at {self.s.input}")
        while not self._stop_asked.is_set():
            if await loop.run_in_executor(None, os.path.isdir, self.s.input):
                self.log.info("landing_dir_back", path=str(self.s.input))
                return True
            systemd.notify("WATCHDOG=1")
            await wait_event(self._stop_asked, LANDING_POLL_SECONDS)
        return False

    # ------------------------------------------------------------ stopping

    def request_stop(self) -> None:
        """SIGTERM, SIGINT: drain and stop; asked twice, long reads stop at once."""
        if self._stop_asked.is_set():
            self._stop_threads.set()
        self._stop_asked.set()
        self._stopping.set()

    def landing_replaced(self, cause: str) -> None:
        """The landing path no longer names the directory being served.

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
        self._stopping.set()

    def _refuse(self, exc: Refused) -> None:
        self._refused = exc
        self.request_stop()

    def _task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A stage that dies is a bug: say so loudly and stop (recovery finishes its work on restart)."""
        if task.cancelled() or task.exception() is None:
            return
        self.log.critical("internal_error", task=task.get_name(), exc_info=task.exception())
        self._crashed = True
        self.request_stop()

    # ------------------------------------------------------------ events in (the watcher's sink)

    async def _start_watcher(self) -> InotifyWatcher | WatchdogWatcher | None:
        loop = asyncio.get_running_loop()
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
        # in a thread: importing watchdog and starting its observer (which walks the tree) blocks
        await loop.run_in_executor(None, wd.start, loop)
        return wd

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
        self.scanner.ask(rel)

    def overflow(self) -> None:
        self.readiness.events_lost()
        self.scanner.ask("")

    def _gauges(self) -> dict[str, int]:
        r = self.readiness
        return {
            "queue_depth": len(r.ready),
            "waiting": len(r.pending),
            "in_flight": len(r.busy),
            "retrying": len(self.landing.retry),
            "events_total": self.watcher.events if self.watcher else 0,
        }


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
