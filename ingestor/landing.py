"""Landing: batches of ready files to the workers, and each file's result back to readiness.

``lander`` tasks (``--concurrency`` of them) take batches from readiness and
hand them to a worker: a thread of the stages' pool, or, with
``--processes``, a lander process (``procs.py``). ``apply`` follows each
file's result (``outcome.Then``): a landed file is counted, a changed one
judged again, a rejected one set aside until it changes, a failed step backed
off (doubling up to ``retry_max_seconds``), an unfinished record queued for
the ``retrier``, which re-enters the worker's ``finish`` with it.

A lander process that dies breaks its pool: the first lander to notice
starts a new one (in a thread: spawning blocks) and asks for a full scan,
which begins with the recovery of the dead process's records.

Ownership: every field is the event loop's; worker calls run in threads or
processes and give back an ``Outcome``, which ``apply`` reads on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ingestor import procs
from ingestor.errors import IngestError
from ingestor.metrics import Metrics
from ingestor.outcome import Outcome, Then
from ingestor.progress import Progress
from ingestor.ready import Readiness, wait_event
from ingestor.records import Candidate, Record, Status
from ingestor.rejections import VANISHED, VANISHED_HINT, Rejected
from ingestor.settings import Settings
from ingestor.stages import SiteStages

MAX_BATCH_BYTES = 64 << 20
DEFER_SECONDS = 0.05
FAILURE_LOG_SECONDS = 5.0  # at most one step_failed line this often (a daemon; a replay says each)


@dataclass(slots=True)
class RunStats:
    landed: int = 0
    duplicates: int = 0
    failed: int = 0
    done_bytes: int = 0


class Landing:
    def __init__(
        self,
        s: Settings,
        stages: SiteStages,
        readiness: Readiness,
        metrics: Metrics,
        log: Any,
        *,
        one_shot: bool,
        stats: RunStats,
        progress: Progress | None,
        stopping: asyncio.Event,
        ask_scan: Callable[[str], None],
        landing_replaced: Callable[[str], None],
        source: str = "default",
    ) -> None:
        self.s = s
        self.source = source
        self.stages = stages
        self.readiness = readiness
        self.metrics = metrics
        self.log = log
        self.one_shot = one_shot
        self.stats = stats
        self.progress = progress
        self.stopping = stopping
        self.ask_scan = ask_scan
        self.landing_replaced = landing_replaced
        self._device = os.fstat(stages.landing_fd).st_dev  # a rejected file's, as the worker saw it
        self.retry: list[Record] = []  # planned records whose next step failed
        self.retry_due = 0.0
        self.retry_attempts = 0
        self.retry_wake = asyncio.Event()
        self.backoff = 0.0
        self.in_flight: set[asyncio.Future[Outcome]] = set()  # worker calls not finished
        self._last_failure_log = 0.0

    # ------------------------------------------------------------ the tasks

    async def lander(self) -> None:
        """Take batches while there are ready files; until stopping."""
        r = self.readiness
        while not self.stopping.is_set():
            if not r.ready:
                waiter = asyncio.ensure_future(r.ready_event.wait())
                stopper = asyncio.ensure_future(self.stopping.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                continue
            batch = r.take(self.s.batch_size, MAX_BATCH_BYTES)
            if not batch:
                continue
            landers = self.stages.landers
            if landers is None:
                out = await self.call(self.stages.worker.land, batch)
            else:
                pool = landers.pool
                try:
                    out = await self.call(procs.land, self.stages.land_job(batch), pool)
                except (concurrent.futures.BrokenExecutor, RuntimeError) as exc:
                    # RuntimeError: submitted to a pool another landing dir's lander just replaced
                    broken = isinstance(exc, concurrent.futures.BrokenExecutor)
                    if not broken and landers.pool is pool:
                        raise
                    await self._lander_died(pool, batch)
                    continue
            self.apply(out, taken=batch)

    async def retrier(self) -> None:
        """Redo the failed steps of planned records, after the back-off; until stopping."""
        while not self.stopping.is_set():
            wait = None if not self.retry else self.retry_due - time.monotonic()
            if wait is None or wait > 0:
                self.retry_wake.clear()
                await wait_event(self.retry_wake, wait)
                continue
            records, self.retry = self.retry, []
            self.retry_attempts += 1
            out = await self.call(self._finish, records)
            self.apply(out)
            if not out.unfinished():
                self.retry_attempts = 0
            self.readiness.progress.set()

    def _finish(self, records: list[Record]) -> Outcome:
        return self.stages.worker.finish(records, recovering=True)

    async def call(self, fn: Any, arg: Any, pool: concurrent.futures.Executor | None = None) -> Outcome:
        """``fn(arg)`` in the pool (default: the stages' threads), counted in flight until it ends."""
        fut = asyncio.get_running_loop().run_in_executor(pool or self.stages.pool, fn, arg)
        self.in_flight.add(fut)
        try:
            # shielded: a cancelled lander must not forget a batch a thread is still landing
            return await asyncio.shield(fut)
        finally:
            if fut.done():
                self.in_flight.discard(fut)
            else:
                fut.add_done_callback(self.in_flight.discard)

    async def _lander_died(self, broken: concurrent.futures.Executor, batch: list[Candidate]) -> None:
        """A lander process died: a new pool; its records are adopted by the next recovery pass."""
        landers = self.stages.landers
        assert landers is not None
        self.readiness.release(c.rel for c in batch)
        for cand in batch:
            self.readiness.retry(cand.rel, DEFER_SECONDS)
        # the first to notice rebuilds it: the pool is every landing dir's
        if landers.pool is broken and landers.restarting is not broken:
            landers.restarting = broken
            self.log.error("lander_process_died", hint="a new one is started; its files are recovered")
            self.metrics.error("fatal")
            await asyncio.get_running_loop().run_in_executor(None, landers.restart)
            self.ask_scan("")  # a full scan starts with a recovery pass

    async def drain(self, timeout: float) -> None:
        """Let the worker calls in flight finish; after ``timeout`` tell long reads to stop."""
        if self.in_flight:
            _, late = await asyncio.wait(set(self.in_flight), timeout=timeout)
            if late:
                self.log.warning("shutdown_timeout", in_flight=len(late), hint="long reads told to stop")
                self.stages.stop.set()
                if self.stages.landers is not None:
                    self.stages.landers.stop.set()
                await asyncio.wait(late)

    # ------------------------------------------------------------ results

    def apply(self, out: Outcome, taken: Iterable[Candidate] = ()) -> None:
        """Follow each file's result; ``taken``: the batch's candidates, which readiness lets go."""
        r = self.readiness
        r.release(c.rel for c in taken)
        failures: list[IngestError] = []
        backed_off: list[str] = []
        unfinished: list[Record] = []
        done: list[Record] = []
        for f in out.files:
            then = f.then
            if then is Then.DONE:
                assert f.record is not None
                done.append(f.record)
            elif then is Then.DEFER:
                r.retry(f.rel, DEFER_SECONDS)
            elif then is Then.CHANGED:
                r.retry(f.rel, r.window)
            elif then is Then.VANISHED:
                self.metrics.error("vanished")
                if f.record is not None:  # planned, gone before it moved: abandoned, and on record
                    i = f.record.identity
                    ident = (i.inode, i.device, i.size, i.mtime_ns)
                    r.on_reject(Rejected(f.rel, ident, VANISHED, VANISHED_HINT))
            elif then is Then.REJECTED:
                self._rejected(f.rel, f.key, f.error)
            elif then is Then.REPORTED:
                if f.key is not None:
                    r.settle(f.rel, f.key)
            elif then is Then.BACK_OFF:
                assert f.error is not None
                failures.append(f.error)
                backed_off.append(f.rel)
            elif then is Then.UNFINISHED:
                assert f.record is not None and f.error is not None
                failures.append(f.error)
                unfinished.append(f.record)
            elif then is Then.STOPPED:
                r.forget(f.rel)
        self._count(done)
        if failures:
            self._back_off(failures, backed_off, unfinished)
        elif done:
            self.backoff = 0.0
        if out.landing_replaced is not None:
            self.landing_replaced(out.landing_replaced)

    def _count(self, done: list[Record]) -> None:
        self.metrics.on_done(done, self.source)
        for rec in done:
            if rec.status is Status.INGESTED:
                self.stats.landed += 1
            else:
                self.stats.duplicates += 1
            self.stats.done_bytes += rec.identity.size
        if self.progress is not None:
            r, st = self.readiness, self.stats
            self.progress.update(
                r.admitted_files, r.admitted_bytes, st.landed + st.duplicates + st.failed, st.done_bytes
            )

    def _rejected(self, rel: str, key: tuple[int, int, int, int] | None, exc: IngestError | None) -> None:
        """Bad input: counted; reported once, and not looked at again, until it changes."""
        self.metrics.error("bad_input")
        self.stats.failed += 1
        if key is not None and self.readiness.settle(rel, key) and exc is not None:
            self.log.warning("file_rejected", path=str(self.s.input / rel), cause=exc.cause, hint=exc.hint)
            ino, size, mtime_ns, _ = key
            self.readiness.on_reject(Rejected(rel, (ino, self._device, size, mtime_ns), exc.cause, exc.hint))

    def _back_off(self, failures: list[IngestError], paths: list[str], records: list[Record]) -> None:
        self.backoff = min(max(self.backoff * 2, 0.5), self.s.retry_max_seconds)
        for f in failures:
            self.metrics.error(f.kind)
        now = time.monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_SECONDS or self.one_shot:
            self._last_failure_log = now
            first = failures[0]
            self.log.error(
                "step_failed",
                op=first.op,
                path=first.path,
                cause=first.cause,
                hint=first.hint,
                files=len(paths) + len(records),
                retry_in_s=self.backoff,
            )
        for rel in paths:
            self.readiness.retry(rel, self.backoff)
        if records:
            self.retry.extend(records)
            self.retry_due = time.monotonic() + self.backoff
            self.retry_wake.set()
        if self.one_shot:
            self.stats.failed += len(paths)
