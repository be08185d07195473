"""Scanner: when and where the landing dir is scanned, and with how many processes.

A scan walks the landing dir (``rescan.scan``) and hands readiness what the
ledger does not know. Scans are asked for (a new directory, an overflowed
event queue, the start, a dead lander process) or fall due every
``scan_interval``; requests that arrive during a scan are merged into the
next one. A full scan first adopts the records of processes that died
(the lifecycle's recovery) and afterwards does what only a full scan can:
remember its size, bind directories that were not writable at start,
forget writers of files that went away.

Helper processes (``scanhelpers.py``) check the names of a large scan on
the other cores. The ledger remembers each full scan's size: a daemon whose
last full scan was large starts them with itself (``prestart``), so after a
reboot they are ready when the cold first scan begins.

Ownership: every field is the event loop's. Work that blocks runs in the
loop's executor as a job that touches none of them: the walk gets a
``_Helpers`` of its own and the loop reads it back when the scan is done.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ingestor import rescan, scanhelpers
from ingestor.errors import Fatal, Refused, Retryable
from ingestor.fsops import TOO_LONG, replaced
from ingestor.metrics import Metrics
from ingestor.ready import Readiness, wait_event
from ingestor.stages import SiteStages

SCAN_SIZE_KEY = "last_full_scan_files"  # in the ledger's meta table


@dataclass(slots=True)
class _Helpers:
    """The helper processes of one scan: owned by the scan's thread until it ends."""

    stages: SiteStages
    prestarted: scanhelpers.ScanHelpers | None
    started: int = 0

    def __call__(self) -> scanhelpers.ScanHelpers:
        """``rescan.scan`` asks for helpers once the scan is large (in the scan's thread)."""
        self.started += self.stages.scan_workers
        helpers, self.prestarted = self.prestarted, None
        return helpers or new_helpers(self.stages)


def new_helpers(stages: SiteStages) -> scanhelpers.ScanHelpers:
    s = stages.s
    return scanhelpers.ScanHelpers(stages.landing_fd, s.input, s.state_path, stages.scan_workers)


class Scanner:
    def __init__(
        self,
        stages: SiteStages,
        readiness: Readiness,
        metrics: Metrics,
        log: Any,
        *,
        one_shot: bool,
        recover: Callable[[], Awaitable[None]],
        landing_replaced: Callable[[str], None],
        refused: Callable[[Refused], None],
    ) -> None:
        self.stages = stages
        self.readiness = readiness
        self.metrics = metrics
        self.log = log
        self.one_shot = one_shot
        self.recover = recover
        self.landing_replaced = landing_replaced
        self.refused = refused
        self.add_dir: Callable[[str], None] | None = None  # the watcher's, once it runs
        self.request = asyncio.Event()
        self.targets: set[str] = set()
        self.last_full_scan = -1  # files seen by the last full scan; -1 before the first
        self.prestarted: scanhelpers.ScanHelpers | None = None  # for the first scan
        self.shared: scanhelpers.HelperPool | None = None  # a pass's helpers (lifecycle.Daemon.scan_pass)
        self._one = asyncio.Lock()
        # the daemon's scan slot, all landing dirs together: 200 landing dirs scanned at once
        # only fight over the GIL and the executor (lifecycle.Daemon.scan_slots)
        self.slots: asyncio.Semaphore | asyncio.Lock = asyncio.Lock()
        self.where: dict[str, str] = {}  # what scan_done says of the landing dir (with sources)
        self.recovered_at_start = False  # the daemon recovered just before the first full scan

    def ask(self, rel: str) -> None:
        """Scan below ``rel`` soon ("" is everything)."""
        self.targets.add(rel)
        self.request.set()

    async def prestart(self, *, helpers: bool = True) -> None:
        """Recall the last full scan's size, and start the first scan's helpers now if it was
        large (``helpers``: the daemon starts them for a pass of many landing dirs).

        After a reboot that scan runs on cold caches, where the helpers pay
        most, and they take 0.6-0.9 s to start: started with the daemon, they
        are ready when the scan begins.
        """
        job = functools.partial(self._prestart_job, helpers)
        last, started = await asyncio.get_running_loop().run_in_executor(None, job)
        self.last_full_scan, self.prestarted = last, started

    def _prestart_job(self, helpers: bool) -> tuple[int, scanhelpers.ScanHelpers | None]:
        try:
            last = int(self.stages.ledger.recall(self.stages.scan_key) or -1)
        except (Retryable, ValueError):
            return -1, None
        workers = self.stages.scan_workers
        if not helpers or not workers or last <= rescan.HELPERS_ABOVE_FIRST:
            return last, None
        self.log.info("scan_helpers_prestarted", helpers=workers, last_full_scan_files=last)
        return last, new_helpers(self.stages)

    async def run(self, scan_interval: float | None) -> None:
        """Scan when asked, and every ``scan_interval`` seconds (None: the daemon's scan ticker
        asks each landing dir in turn); until cancelled."""
        while True:
            if not await wait_event(self.request, scan_interval):
                self.targets.add("")
            await self.scan()

    async def scan(
        self, *, recovered: bool = False, slots: asyncio.Semaphore | asyncio.Lock | None = None
    ) -> None:
        """One scan of everything asked for since the last one (one at a time);
        ``recovered``: the caller ran the recovery pass a full scan begins with; ``slots``: the
        slots to take instead of the daemon's (a pass with helpers).

        A scan that fails on the environment (no descriptor left, an
        unreadable directory on the way, the ledger busy) is said and done
        again at the next full scan: the landing dir is still served.
        """
        async with self._one, slots or self.slots:
            try:
                await self._scan(recovered)
            except (OSError, sqlite3.Error, Retryable) as exc:
                self.metrics.error("retryable")
                self.log.warning("scan_failed", error=str(exc), hint="scanned again at the next full scan")

    async def _scan(self, recovered: bool) -> None:
        loop = asyncio.get_running_loop()
        self.request.clear()
        targets, self.targets = self.targets, set()
        if not targets:
            return
        cause = await loop.run_in_executor(None, replaced, self.stages.s.input, self.stages.landing_fd)
        if cause is not None:  # a scan would walk the old directory through its descriptor
            self.landing_replaced(cause)
            return
        full = "" in targets
        if full:
            targets = {""}
            if not self.one_shot and not recovered and not self.recovered_at_start:
                await self.recover()
            self.recovered_at_start = False
        else:  # drop targets inside other targets
            targets = {t for t in targets if not any(t.startswith(o + "/") for o in targets)}
        started = time.monotonic()
        seen = 0
        last = self.last_full_scan
        if full and self.shared is not None:  # a pass's helpers: running already, for every chunk
            st = self.stages
            view = scanhelpers.ScanHelpers(st.landing_fd, st.s.input, st.s.state_path, 0, pool=self.shared)
            helpers, above = _Helpers(st, view), 0
        else:
            helpers = _Helpers(self.stages, self.prestarted)
            self.prestarted = None
            # the first full scan may follow a reboot (cold caches) and an outage;
            # later ones are as large as the last full one was
            large = last < 0 or last > rescan.HELPERS_ABOVE
            above = rescan.HELPERS_ABOVE_FIRST if large else rescan.HELPERS_ABOVE
        for target in sorted(targets):
            seen += await loop.run_in_executor(None, self._walk, loop, target, helpers, above, self.add_dir)
        self.metrics.scans.inc()
        if not full:
            self.prestarted = helpers.prestarted  # not needed by a small scan: kept for the full one
            return
        writing = list(self.readiness.writing)
        refused, gone = await loop.run_in_executor(
            None, self._after_full, seen, self.last_full_scan, helpers, writing
        )
        self.last_full_scan = seen
        self.readiness.writing.difference_update(gone)
        if refused is not None:
            self.refused(refused)
        self.log.info(
            "scan_done",
            files=seen,
            seconds=round(time.monotonic() - started, 3),
            helpers=helpers.started,
            **self.where,
        )

    def _walk(
        self,
        loop: asyncio.AbstractEventLoop,
        target: str,
        helpers: _Helpers,
        helpers_above: int,
        on_dir: Callable[[str], None] | None,
    ) -> int:
        """In a thread: walk ``target`` and hand observations and rejections to the loop."""
        r = self.readiness

        def emit(chunk: list[rescan.Observation]) -> None:
            loop.call_soon_threadsafe(_observe, r, chunk)

        def too_long(rel: str, st: os.stat_result) -> None:
            loop.call_soon_threadsafe(r.reject, rel, st, TOO_LONG)

        return rescan.scan(
            self.stages.landing_fd,
            target,
            emit=emit,
            unknown=self.stages.ledger.unknown_keys,
            ignored=lambda rel: r.target(rel) is None,  # reads settings only: safe in a thread
            on_dir=on_dir,  # the watcher's add_dir: thread-safe
            stop=self.stages.stop,
            room=r.room,
            on_too_long=too_long,
            helpers=helpers if self.stages.scan_workers else None,
            helpers_above=helpers_above,
        )

    def _after_full(
        self, seen: int, last: int, helpers: _Helpers, writing: list[str]
    ) -> tuple[Refused | None, list[str]]:
        """In a thread: what only a full scan does. Returns a binding refused meanwhile, and
        the writers' files that went away (moved or deleted while open: no close event comes)."""
        if helpers.prestarted is not None:  # started for a scan that turned out small
            helpers.prestarted.close()
        if seen != last:
            try:
                self.stages.ledger.remember(self.stages.scan_key, str(seen))
            except (Retryable, Fatal) as exc:  # a hint for the next start only
                self.log.warning("scan_size_not_recorded", error=str(exc))
        return self.stages.bind_pending(), self.readiness.missing(writing)

    def close(self) -> None:
        """Stop helpers that were started with the daemon and never used (stopped before a scan)."""
        if self.prestarted is not None:
            self.prestarted.close()
            self.prestarted = None


def _observe(readiness: Readiness, chunk: list[rescan.Observation]) -> None:
    for rel, st in chunk:
        readiness.observe(rel, st)
