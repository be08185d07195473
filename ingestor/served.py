"""Served: one landing dir being served, with its own readiness, scanner, landing and watches.

The daemon (``lifecycle.py``) makes one per landing dir it serves and lets it
go when its path stops naming the directory (``landing_replaced``). It is the
watcher's sink for that directory. Everything here is the loop's.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from typing import TYPE_CHECKING, Any

from ingestor import rejections
from ingestor.errors import Fatal, Retryable
from ingestor.landing import Landing
from ingestor.ready import Readiness, wait_event
from ingestor.rejections import Rejected
from ingestor.scanner import Scanner
from ingestor.stages import SiteStages
from ingestor.watch import InotifyWatcher, WatchdogWatcher

if TYPE_CHECKING:
    from ingestor.lifecycle import Daemon


class Served:
    """One landing dir being served: its readiness, scanner, landing and watcher (the loop's)."""

    def __init__(self, daemon: Daemon, st: SiteStages) -> None:
        self.daemon = daemon
        self.st = st
        self.site = st.site
        s = self.s = st.s
        self.source = daemon.sources[self.site.source]
        self.log = daemon.log if daemon.config.plain else daemon.log.bind(source=self.site.source)
        self.stopping = asyncio.Event()
        self.replaced: str | None = None
        self.watcher: InotifyWatcher | WatchdogWatcher | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        m = daemon.metrics
        m.source_seen(self.site.source)
        self.readiness = r = Readiness(
            landing=s.input,
            mode=s.mode,
            stability_seconds=s.stability_seconds,
            sidecar_suffix=s.sidecar_suffix,
            ignore_suffixes=s.ignore_suffixes,
            include=s.include,
            exclude=s.exclude,
            log=self.log,
            one_shot=daemon.one_shot,
            count_problem=m.error,
            on_reject=self.rejected,
        )
        self.rejects: list[Rejected] = []  # found, not on record yet
        self._recording: asyncio.Task[None] | None = None
        self._record_lock = asyncio.Lock()  # one job at a time puts rejections on record
        self._rejections_closed = False
        self.scanner = Scanner(
            st, r, m, self.log, one_shot=daemon.one_shot, recover=daemon.recover,
            landing_replaced=self.landing_replaced, refused=daemon.refuse,
        )  # fmt: skip
        self.scanner.slots = daemon.scan_slots
        if not daemon.config.plain:
            self.scanner.where = {"path": str(s.input)}
        self.landing = Landing(
            s, st, r, m, self.log, one_shot=daemon.one_shot, stats=daemon.stats,
            progress=daemon.progress, stopping=self.stopping, ask_scan=self.scanner.ask,
            landing_replaced=self.landing_replaced, source=self.site.source,
        )  # fmt: skip
        if daemon.stopping.is_set():
            self.stopping.set()

    @property
    def key(self) -> str:
        return self.site.key

    def start_tasks(self) -> None:
        d, s = self.daemon, self.s
        self.tasks.append(d.task(self.readiness.run(), "readiness"))
        self.tasks += [d.task(self.landing.lander(), f"lander-{i}") for i in range(s.concurrency)]
        self.tasks.append(d.task(self.landing.retrier(), "retrier"))
        if not d.one_shot:
            self.tasks.append(d.task(self.scanner.run(None), "scanner"))

    def landing_replaced(self, cause: str) -> None:
        """The landing path no longer names the directory being served.

        Nothing more is landed from it: its files are outside the landing dir
        now (``mv L L.old``), or gone. Its in-flight batches finish; the
        directory at the path is served once there is one.
        """
        if self.replaced is not None or self.stopping.is_set():
            return
        self.replaced = cause
        d = self.daemon
        if self.source.path.literal:
            d.metrics.error("landing_replaced")
            self.log.error(
                "landing_dir_replaced",
                path=str(self.s.input),
                cause=cause,
                hint="nothing more is landed from the old directory; the directory at the path "
                "is watched as soon as there is one",
            )
        else:
            self.log.info("landing_dir_gone", path=str(self.s.input), cause=cause)
        self.stopping.set()
        d.task(d.stop_site(self), "stop-site")

    # files that will not land, on record (rejections.py)

    def rejected(self, r: Rejected) -> None:
        """A file that will not land as it is: put on record soon, with others found meanwhile."""
        self.rejects.append(r)
        if not self._rejections_closed and (self._recording is None or self._recording.done()):
            self._recording = self.daemon.task(self._record(), "rejections")

    async def _record(self) -> None:
        delay = 0.5
        while self.rejects and not self._rejections_closed:  # found meanwhile too
            if await self.record_rejections():
                delay = 0.5
                continue
            if await wait_event(self.stopping, delay):
                return  # stopping: close_rejections makes the last attempt
            delay = min(delay * 2, self.s.retry_max_seconds)

    async def record_rejections(self) -> bool:
        """One attempt to put what was found on record; False if it must be tried again."""
        async with self._record_lock:  # after the job in flight, if any
            batch, self.rejects = self.rejects, []
            if not batch:
                return True
            try:
                job = functools.partial(rejections.record, self.st, batch)
                n = await asyncio.get_running_loop().run_in_executor(None, job)
            except (Retryable, Fatal, OSError, sqlite3.Error) as exc:
                self.rejects[:0] = batch
                self.daemon.metrics.error("retryable")
                self.log.warning("rejections_not_recorded", files=len(batch), error=str(exc))
                return False
            self.daemon.rejected += n
            return True

    async def close_rejections(self) -> None:
        """The landing dir let go: one last attempt, after the job in flight; none after it (what is
        left is found again by the next start)."""
        self._rejections_closed = True
        await self.record_rejections()

    # the watcher's sink (every call on the loop)

    def hint(self, rel: str) -> None:
        self.daemon.metrics.events.inc()
        self.readiness.hint(rel)

    def written(self, rel: str) -> None:
        self.daemon.metrics.events.inc()
        self.readiness.written(rel)

    def closed(self, rel: str) -> None:
        self.daemon.metrics.events.inc()
        self.readiness.closed(rel)

    def new_dir(self, rel: str) -> None:
        self.scanner.ask(rel)

    def overflow(self) -> None:
        self.readiness.events_lost()
        self.scanner.ask("")
