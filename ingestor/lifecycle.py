"""Lifecycle: a daemon (or a one-shot replay) from start to stop, for every landing dir.

    watch ─hint─┐
    scanner ────┼─► Readiness ─ready─► Landing ─► Worker.land (threads or lander processes)
    new dir ────┘                         ▲
    recovery (dead owners) / retries ─────┴─► Worker.finish

``Daemon.run`` is the whole life, in order (as uvicorn's ``Server._serve``):
start (open what every landing dir shares: ledger, pools, one inotify
descriptor; ``stages.py``), find the landing dirs (each source's path, its
placeholders matched against the directories there now) and serve each
(``served.py``: its bindings, worker, readiness, scanner, landing, watches),
recover (adopt and finish the records of dead owners: a crash, a ``kill
-9``), serve (events, the scan schedule: one recovery pass then a full scan of
every landing dir each ``scan_interval``, one scan at a time; retries with
back-off; discovery of new landing dirs through watches on the directories
above them), drain (in-flight batches finish, within ``shutdown_timeout``,
then long reads are told to stop: nothing half-done is recorded), stop (close
everything). SIGTERM and SIGINT ask for the stop.

A landing dir whose path stops naming the directory being served (deleted,
renamed away, replaced, unmounted) is let go alone: its in-flight batches
finish, nothing more is landed from it; a literal path is served again once a
directory is back there, a placeholder's match once discovery finds one. A
replay (``one_shot``) exits 1 instead. A landing dir that cannot be opened
(refused, gone meanwhile, no descriptor left) is said once and tried again at
the next discovery; the others go on.

``one_shot`` (``ingestor replay``): no watcher, one scan of each landing dir,
the end when nothing is pending anywhere. Safe beside a running daemon: each
process only finishes records of owners that are dead, and every claim is
decided in a ledger transaction.

Ownership: one asyncio loop coordinates, and every field here and in
``served.py`` is the loop's; everything that blocks runs in threads
(``stages``, the workers, the scans, discovery), which hand results back to
the loop.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import ulid

from ingestor import logs, rescan, runs, scanhelpers, systemd
from ingestor.errors import Fatal, Refused, Retryable
from ingestor.fsops import replaced
from ingestor.heartbeat import heartbeat
from ingestor.landing import RunStats
from ingestor.metrics import Metrics
from ingestor.progress import Progress
from ingestor.ready import wait_event
from ingestor.served import Served
from ingestor.settings import Settings, WatcherKind
from ingestor.sources import Config, Site, Source, site_ok
from ingestor.stages import SiteStages, Stages
from ingestor.watch import InotifyHub, InotifyWatcher, WatchdogWatcher

LANDING_POLL_SECONDS = 1.0  # how often a literal landing path that names no directory is looked at
PASS_SCANS_WITH_HELPERS = 2  # scans at once in a pass that shares helper processes
RETRY_ROUNDS = 3  # a replay gives up on records still failing after this many retries
FD_PER_LANDING_DIR = 8  # its descriptor, three bindings, the temporary dir, room for its scan
FD_RESERVE = 128  # kept free for the ledger's connections, scans, lander pipes, the metrics


class Daemon:
    def __init__(
        self,
        config: Config | Settings,
        *,
        one_shot: bool = False,
        progress: Progress | None = None,
        only: dict[str, list[str] | None] | None = None,
    ) -> None:
        if isinstance(config, Settings):
            from ingestor.sources import plain_config

            config = plain_config(config)
        self.config = config
        self.s = config.settings
        self.sources = {src.name: src for src in config.sources}
        self.one_shot = one_shot
        # replay: landing dirs (keys) to their paths to scan; None: everything
        self.only = only
        self.progress = progress
        self.metrics = Metrics()
        self.stats = RunStats()
        self.owner = str(ulid.ULID())
        self.run_id = runs.new_id()  # on every log line of the run from here on
        runs.set_current(self.run_id)
        self._run_begun = False
        self.rejected = 0  # files put on record as rejected by this run
        self._error: str | None = None  # the first internal error, for the run's summary
        self.log = logs.get_logger(owner=self.owner)
        self.hub: InotifyHub | None = None
        self.sites: dict[str, Served] = {}
        self.gone: set[str] = set()  # literal landing dirs replaced: served again once back
        self._stop_asked = asyncio.Event()  # SIGTERM, SIGINT: the end of run()
        self.stopping = asyncio.Event()
        self._stop_threads = threading.Event()  # tells long reads in worker threads to stop
        self._discover = asyncio.Event()
        self._refused: Refused | None = None
        self._crashed = False
        self._lost_landing = False  # a replay's landing dir was replaced
        self._tasks: list[asyncio.Task[Any]] = []
        self._starting: set[str] = set()
        # scans at once, all landing dirs together: one. Two scans in one process only share
        # its GIL (bench_sources: a pass of 200 landing dirs 3.8 s one at a time, 6.9 s two at
        # a time); a large scan uses the other cores through its helper processes
        self.scan_slots = asyncio.Lock()
        self._said_refused: set[str] = set()  # landing dirs refused, said once

    # ------------------------------------------------------------ the life

    async def run(self) -> int:
        """Serve every landing dir until stopped."""
        _raise_open_files_limit()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        server = None
        try:
            if not self.one_shot and self.s.metrics_port is not None:
                server = self.metrics.serve(self.s.metrics_port)
            return await self._serve()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if server is not None:  # waits for the server thread's poll: off the loop
                await loop.run_in_executor(None, server.shutdown)

    async def _serve(self) -> int:
        """Start, recover, serve, drain, stop."""
        loop = asyncio.get_running_loop()
        s = self.s
        stages = self.stages = Stages(
            s, owner=self.owner, one_shot=self.one_shot, stop=self._stop_threads, log=self.log,
            plain=self.config.plain,
        )  # fmt: skip
        for src in self.config.sources:
            self._bind_gauges(src.name)
        try:
            if not self.one_shot and s.watcher in (WatcherKind.AUTO, WatcherKind.INOTIFY):
                self.hub = self._start_hub()
            found = await loop.run_in_executor(None, self._find_sites)
            manifests = [site.settings.manifests for _, site in found]
            await loop.run_in_executor(None, stages.open, self.metrics, manifests)
            await loop.run_in_executor(None, self._begin_run)
            await self.start_sites(found, at_start=True)
            if self.one_shot:
                sites = list(self.sites.values())
                await self.scan_pass(sites, await self._pass_helpers(sites, first=True))
                await self._until_idle()
            else:
                self._tasks.append(self.task(self._scan_ticker(), "scan-ticker"))
                self._tasks.append(self.task(self._discovery(), "discovery"))
                self._tasks.append(
                    self.task(
                        heartbeat(self.metrics, s.metrics_interval, self.log, self._gauges), "heartbeat"
                    )
                )
                self._started()
                await self.stopping.wait()
            systemd.notify("STOPPING=1")
            self.log.info("stopping", **self._counts())
            await asyncio.gather(*(v.landing.drain(s.shutdown_timeout) for v in list(self.sites.values())))
            self._tally()
            if self.progress is not None:
                self.progress.close()
        except BaseException as exc:
            self._error = self._error or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            await _cancel_all(self._tasks)
            for v in list(self.sites.values()):
                await self._close_site(v)
            if self.hub is not None:
                self.hub.close()
            if self._run_begun:
                summary = self._summary()
                counts = self._run_counts()
                await loop.run_in_executor(
                    None, runs.try_finish, stages.ledger, self.run_id, counts, summary, self.log
                )
            await loop.run_in_executor(None, stages.close)
        return self._stopped()

    def _begin_run(self) -> None:
        """In a thread: this run on record, and the runs that died before it marked so."""
        ledger = self.stages.ledger
        kind = runs.Kind.REPLAY if self.one_shot else runs.Kind.DAEMON
        runs.begin(ledger, self.run_id, kind)
        self._run_begun = True
        for dead in runs.close_dead(ledger):
            self.log.warning("run_ended_unclean", dead_run_id=dead, summary=runs.DIED)

    def _run_counts(self) -> runs.Counts:
        st = self.stats
        return runs.Counts(st.landed, st.duplicates, self.rejected, self.metrics.error_count)

    def _summary(self) -> str | None:
        """Why the run failed (its first cause), or None: a success."""
        if self._error is not None:
            return self._error
        if self._refused is not None:
            return f"refused: {self._refused}"
        if self._crashed:
            return "internal error: see the internal_error line of its log"
        if self.one_shot:
            parts = []
            if self._lost_landing:
                parts.append("the landing dir was replaced")
            failed = self.stats.failed + self._failed
            if failed:
                parts.append(f"{_files(failed)} could not be landed")
            if self._retrying:
                parts.append(f"{_files(self._retrying)} still failing after {RETRY_ROUNDS} retries")
            if parts:
                return "; ".join(parts)
        return None

    def _bind_gauges(self, source: str) -> None:
        """A source's gauges: the sum over its landing dirs served now."""

        def of(source: str = source) -> list[Served]:
            return [v for v in list(self.sites.values()) if v.site.source == source]

        self.metrics.bind_gauges(
            source,
            lambda: sum(len(v.readiness.ready) for v in of()),
            lambda: sum(len(v.readiness.pending) for v in of()),
            lambda: sum(len(v.readiness.busy) for v in of()),
            lambda: sum(len(v.landing.retry) for v in of()),
        )

    def _start_hub(self) -> InotifyHub | None:
        hub = InotifyHub(self.log, on_level=self._level_event)
        try:
            hub.start(asyncio.get_running_loop())
            return hub
        except OSError as exc:
            if self.s.watcher is WatcherKind.INOTIFY:
                raise Fatal(
                    "start inotify", str(self.s.state_path), str(exc), "try --watcher watchdog"
                ) from exc
            self.log.warning("inotify_unavailable", error=str(exc), fallback="watchdog")
            return None

    # ------------------------------------------------------------ landing dirs

    def _find_sites(self) -> list[tuple[Source, Site]]:
        """In a thread: every landing dir to serve now (a literal one whether it exists or not)."""
        out: list[tuple[Source, Site]] = []
        for src in self.config.sources:
            if src.path.literal:
                out.append((src, src.site(src.path.head, {})))
                continue
            if self.hub is not None:
                self._watch_levels(src)
            out.extend((src, site) for site in src.sites(self._refused_dir))
        if self.only is not None:
            out = [(src, site) for src, site in out if site.key in self.only]
        return out

    def _watch_levels(self, src: Source) -> None:
        """In a thread: watch every directory where a new landing dir of ``src`` could appear,
        until a pass adds none (a directory made meanwhile is found by the next expansion)."""
        assert self.hub is not None
        watched: set[Path] = set()
        for _ in range(64):
            top, _name = src.path.approach()
            levels = [top, *src.path.levels()]
            new = [p for p in levels if p not in watched]
            if not new:
                return
            for p in new:
                self.hub.watch_level(p)
            watched.update(new)

    def _refused_dir(self, path: Path, cause: str) -> None:
        """A directory that is not served: said once (until it is served), tried again at
        every discovery."""
        key = str(path)
        if key not in self._said_refused:
            self._said_refused.add(key)
            self.log.warning("landing_dir_refused", path=key, cause=cause)

    def _open_site(self, site: Site, *, create: bool) -> SiteStages:
        """In a thread: check a landing dir's paths as the plain settings are, then open it."""
        problem = site_ok(site)
        if problem is not None:
            raise Refused(problem)
        return self.stages.open_site(site, create=create)

    def _room_for_landing_dirs(self) -> int:
        """How many more landing dirs the descriptors allow (their own, their bindings),
        keeping ``FD_RESERVE`` for the ledger's connections, scans, lander pipes, the metrics."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        try:
            used = len(os.listdir("/proc/self/fd"))
        except OSError:
            return 1 << 30  # no /proc: nothing to go by, the open itself says
        if soft == resource.RLIM_INFINITY:
            return 1 << 30
        return (soft - FD_RESERVE - used) // FD_PER_LANDING_DIR

    def _level_event(self, _path: Path, _name: str) -> None:
        self._discover.set()

    async def start_sites(self, found: list[tuple[Source, Site]], *, at_start: bool = False) -> None:
        """Open, recover and serve landing dirs not served yet."""
        loop = asyncio.get_running_loop()
        opened: list[Served] = []
        room = self._room_for_landing_dirs()
        for src, site in found:
            if site.key in self.sites or site.key in self._starting or self.stopping.is_set():
                continue
            room -= 1
            if room < 0:
                self._refused_dir(
                    site.landing,
                    "no file descriptors left for another landing dir (RLIMIT_NOFILE): raise "
                    "LimitNOFILE; tried again at the next discovery",
                )
                continue
            self._starting.add(site.key)
            try:
                st = await loop.run_in_executor(
                    None, functools.partial(self._open_site, site, create=src.path.literal)
                )
            except (Refused, Fatal, OSError) as exc:
                if at_start and src.path.literal:
                    raise
                if src.path.literal and isinstance(exc, Refused):
                    self.refuse(exc)
                    return
                self._refused_dir(site.landing, str(exc))
                continue
            finally:
                self._starting.discard(site.key)
            served = Served(self, st)
            self.sites[site.key] = served
            self._said_refused.discard(site.key)
            if at_start and not self.one_shot:
                await served.scanner.prestart(helpers=len(found) == 1)
            if site.key in self.gone:
                self.gone.discard(site.key)
                self.log.info("landing_dir_back", path=str(site.landing))
            opened.append(served)
        if not opened:
            return
        first: scanhelpers.HelperPool | None = None
        if at_start and not self.one_shot:  # started now: they warm up during the recovery
            first = await self._pass_helpers(opened, first=True)
        try:
            await self._serve_opened(opened, at_start)
        except BaseException:
            if first is not None:
                first.close()
            raise
        if at_start and not self.one_shot:  # the first full scans: one pass, as the ticker's
            self._tasks.append(self.task(self.scan_pass(opened, first), "first-scans"))

    async def _serve_opened(self, opened: list[Served], at_start: bool) -> None:
        """Recover, watch and start serving landing dirs just opened."""
        loop = asyncio.get_running_loop()
        await self.recover()
        for v in opened:
            own = await loop.run_in_executor(None, self.stages.recover_own, v.st)
            v.landing.apply(own)
            await self._watch(v)
            v.start_tasks()
            if self.one_shot or not at_start:  # the daemon's first scans are a pass (start_sites)
                paths = self.only.get(v.key) if self.only is not None else None
                v.scanner.targets.update(paths if paths is not None else [""])
            v.scanner.recovered_at_start = True  # the recovery pass above
            if not self.one_shot and not at_start:
                v.scanner.request.set()
            if not at_start:
                self.log.info(
                    "landing_dir_found", path=str(v.s.input), source=v.site.source, dataset=v.site.dataset
                )

    async def _watch(self, v: Served) -> None:
        if self.one_shot or self.s.watcher is WatcherKind.POLL:
            return
        loop = asyncio.get_running_loop()
        if self.hub is not None:
            w = InotifyWatcher(v.s.input, v, v.log, self.hub)
            w.start(loop)
            w.add_dir("")
            v.watcher = w
        else:
            wd = WatchdogWatcher(v.s.input, v, v.log)
            await loop.run_in_executor(None, wd.start, loop)
            v.watcher = wd
        v.scanner.add_dir = v.watcher.add_dir

    async def stop_site(self, v: Served) -> None:
        """A landing dir replaced: its in-flight batches finish, then it is let go."""
        await v.landing.drain(self.s.shutdown_timeout)
        await self._close_site(v)
        if v.source.path.literal:
            self.gone.add(v.key)
            if self.one_shot:
                self._lost_landing = True
                self.request_stop()
            else:
                systemd.notify(f"STATUS=waiting for a directory at {v.s.input}")
        self._discover.set()

    async def _close_site(self, v: Served) -> None:
        if self.sites.get(v.key) is not v:
            return
        del self.sites[v.key]
        v.stopping.set()
        if v.watcher is not None:
            await v.watcher.stop()
            v.watcher = None
        await _cancel_all(v.tasks)
        await v.close_rejections()
        v.scanner.close()
        await asyncio.get_running_loop().run_in_executor(None, v.st.close)

    async def _discovery(self) -> None:
        """Serve landing dirs that appear: a placeholder's new match, a literal path back."""
        loop = asyncio.get_running_loop()
        while True:
            waiting = any(
                src.path.literal and src.site(src.path.head, {}).key not in self.sites
                for src in self.config.sources
            )
            timeout = LANDING_POLL_SECONDS if waiting else self.s.scan_interval
            await wait_event(self._discover, timeout)
            self._discover.clear()
            found = await loop.run_in_executor(None, self._find_present)
            await self.start_sites(found)
            for v in list(self.sites.values()):
                if not v.source.path.literal and not v.stopping.is_set():
                    cause = await loop.run_in_executor(None, replaced, v.s.input, v.st.landing_fd)
                    if cause is not None:
                        v.landing_replaced(cause)

    def _find_present(self) -> list[tuple[Source, Site]]:
        """``_find_sites`` without the literal paths that name no directory now."""
        return [
            (src, site) for src, site in self._find_sites() if not src.path.literal or site.landing.is_dir()
        ]

    async def _scan_ticker(self) -> None:
        """Every ``scan_interval``: one recovery pass, then a full scan of each landing dir,
        one at a time (the daemon's scan slot)."""
        while not await wait_event(self.stopping, self.s.scan_interval):
            sites = list(self.sites.values())
            helpers = await self._pass_helpers(sites, first=False)  # warm during the recovery
            await self.recover()  # once a pass, not once a landing dir
            await self.scan_pass(sites, helpers)

    async def _pass_helpers(self, sites: list[Served], *, first: bool) -> scanhelpers.HelperPool | None:
        """One pool of scan helpers for a pass over several landing dirs whose last full scans
        add up to a large one (a single landing dir starts its own when its scan is large)."""
        workers = self.stages.scan_workers
        if len(sites) < 2 or not workers:
            return None
        total = sum(max(v.scanner.last_full_scan, 0) for v in sites)
        if total <= (rescan.HELPERS_ABOVE_FIRST if first else rescan.HELPERS_ABOVE):
            return None
        self.log.info("scan_helpers_started", helpers=workers, landing_dirs=len(sites), last_pass_files=total)
        state = self.s.state_path
        return await asyncio.get_running_loop().run_in_executor(None, scanhelpers.HelperPool, state, workers)

    async def scan_pass(self, sites: list[Served], helpers: scanhelpers.HelperPool | None) -> None:
        """A full scan of each landing dir (in a one-shot run, what it was asked to scan), one
        at a time (the scan slot), sharing ``helpers``, which are stopped at the end.

        With helpers, two at a time, in slots of the pass's own: the helpers do the checking,
        and the scan of the next landing dir walks while the last chunks of the one before are
        checked (one at a time, the helpers would wait at the end of every landing dir).
        """
        slots = asyncio.Semaphore(PASS_SCANS_WITH_HELPERS) if helpers is not None else None

        async def one(v: Served) -> None:
            if v.stopping.is_set():
                return
            if not self.one_shot:
                v.scanner.targets.add("")
            v.scanner.shared = helpers
            try:
                await v.scanner.scan(recovered=True, slots=slots)
            finally:
                v.scanner.shared = None

        try:
            await asyncio.gather(*(one(v) for v in sites))
        finally:
            if helpers is not None:
                await asyncio.get_running_loop().run_in_executor(None, helpers.close)

    async def recover(self) -> None:
        """Adopt and finish the records of dead owners; what failed again goes to the retrier.

        A pass that cannot run (no descriptor left, the ledger busy) is said and
        tried again at the next full scan: nothing it would adopt is lost.
        """
        served = {v.site.site_id: v for v in self.sites.values()}
        try:
            done = await asyncio.get_running_loop().run_in_executor(
                None, self.stages.recover, {i: v.st for i, v in served.items()}
            )
        except (OSError, sqlite3.Error, Retryable) as exc:
            self.metrics.error("retryable")
            self.log.warning("recovery_failed", error=str(exc), hint="tried again at the next full scan")
            return
        for site_id, out in done.items():
            served[site_id].landing.apply(out)

    def _started(self) -> None:
        s = self.s
        if self.config.plain:
            systemd.notify("READY=1", f"STATUS=watching {s.input}")
            where: dict[str, Any] = {
                "input": str(s.input), "warehouse": str(s.warehouse), "manifests": str(s.manifests),
            }  # fmt: skip
        else:
            systemd.notify("READY=1", f"STATUS=watching {len(self.sites)} landing dirs")
            where = {"sources": [src.name for src in self.config.sources], "landing_dirs": len(self.sites)}
        watcher = "poll"
        if self.hub is not None:
            watcher = "InotifyWatcher"
        elif s.watcher is not WatcherKind.POLL:
            watcher = "WatchdogWatcher"
        self.log.info(
            "started",
            **where,
            state_path=str(s.state_path),
            mode=s.mode.value,
            watcher=watcher,
            dirs_watched=sum(v.watcher.watched for v in self.sites.values() if v.watcher is not None),
            metrics_port=s.metrics_port,
        )

    def _counts(self) -> dict[str, int]:
        vs = list(self.sites.values())
        return {
            "in_flight": sum(len(v.readiness.busy) for v in vs),
            "waiting": sum(len(v.readiness.pending) for v in vs),
            "ready": sum(len(v.readiness.ready) for v in vs),
        }

    def _stopped(self) -> int:
        st = self.stats
        self.log.info(
            "stopped",
            landed=st.landed,
            duplicates=st.duplicates,
            failed=st.failed,
            not_ready=self._not_ready,
            retrying=self._retrying,
        )
        if self._refused is not None:
            raise self._refused
        if self._crashed or (
            self.one_shot and (self._lost_landing or self._retrying or st.failed or self._failed)
        ):
            return 1
        return 0

    async def _until_idle(self) -> None:
        """One-shot: return once nothing is pending, ready, in flight or retryable anywhere."""

        def idle(v: Served) -> bool:
            retrying = v.landing.retry and v.landing.retry_attempts < RETRY_ROUNDS
            return v.readiness.idle() and not v.landing.in_flight and not retrying

        while not self.stopping.is_set():
            vs = list(self.sites.values())
            if all(idle(v) for v in vs):
                break
            for v in vs:
                v.readiness.progress.clear()
            # progress is set after every judging round and every batch
            await asyncio.wait(
                [asyncio.ensure_future(wait_event(v.readiness.progress, 1.0)) for v in vs],
                return_when=asyncio.FIRST_COMPLETED,
            )

    def _tally(self) -> None:
        """What is left, for the ``stopped`` line and a replay's exit code."""
        vs = list(self.sites.values())
        self._not_ready = sum(len(v.readiness.not_ready) for v in vs)
        self._retrying = sum(len(v.landing.retry) for v in vs)
        self._failed = sum(v.readiness.failed for v in vs)

    _not_ready = 0
    _retrying = 0
    _failed = 0

    # ------------------------------------------------------------ stopping

    def request_stop(self) -> None:
        """SIGTERM, SIGINT: drain and stop; asked twice, long reads stop at once."""
        if self._stop_asked.is_set():
            self._stop_threads.set()
        self._stop_asked.set()
        self.stopping.set()
        for v in self.sites.values():
            v.stopping.set()

    def refuse(self, exc: Refused) -> None:
        self._refused = exc
        self.request_stop()

    def task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A stage that dies is a bug: say so loudly and stop (recovery finishes its work on restart)."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.log.critical("internal_error", task=task.get_name(), exc_info=exc)
        self._error = self._error or f"internal error in {task.get_name()}: {type(exc).__name__}: {exc}"
        self._crashed = True
        self.request_stop()

    def _gauges(self) -> dict[str, int]:
        c = self._counts()
        return {
            "queue_depth": c["ready"],
            "waiting": c["waiting"],
            "in_flight": c["in_flight"],
            "retrying": sum(len(v.landing.retry) for v in self.sites.values()),
            "events_total": self.hub.events if self.hub is not None else 0,
            "landing_dirs": len(self.sites),
        }


def _files(n: int) -> str:
    return "1 file" if n == 1 else f"{n:,} files"


def _raise_open_files_limit() -> None:
    """Every landing dir served holds a few descriptors (its own, its bindings, lander
    processes' too): take the hard limit, as servers do, not the shell's soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard)
            )
        except (ValueError, OSError):
            pass  # kept as it was: descriptors run out later, each landing dir then says so


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
