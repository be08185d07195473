"""Readiness: hints and observations of paths → candidates judged complete.

Owned by the event loop: every method runs on the loop thread, so its state
needs no lock. Only ``_stat_many`` (``lstat`` calls) runs in a thread.

Inputs are hints ("look at this path", from inotify or watchdog) and
observations (a path with its ``lstat``, from the reconciliation scan).
Events are hints, the filesystem is the truth: a path is judged by ``lstat``.

Stability mode (default): a file is complete when its size and mtime have not
changed for the window, and, where inotify sees the writes, its writer has
closed it: a file written to (``IN_MODIFY``) is not complete until an
``IN_CLOSE_WRITE`` after its last write, however long the writer pauses. Every write moves the mtime, so "mtime older than the
window" *is* "no write event for the window" — without subscribing to one
IN_MODIFY per write. Where mtimes come from another clock (NFS, a clock step),
the rule falls back to observations: size and mtime unchanged across two
``lstat`` a full window apart (monotonic clock). A file whose mtime is too
recent is re-armed for the rest of its window.

Sidecar mode: ``foo.csv`` is complete when ``foo.csv.ok`` exists and the data
was not modified after the sidecar was made; if it was (the sidecar came
first), the stability rule applies to the data too. A sidecar whose data file
does not come is reported once, never ingested.

Always ignored: names starting with ``.`` (and everything under a hidden
directory), the configured suffixes (``.tmp`` ``.part`` ``.swp``), sidecars,
and anything that is not a regular file (reported once: symlinks are never
followed, FIFOs and devices never opened).
"""

from __future__ import annotations

import asyncio
import heapq
import os
import stat as stat_mod
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ingestor.fsops import TOO_LONG, longer_than, rel_room
from ingestor.globs import compile_globs
from ingestor.outcome import stat_key
from ingestor.records import Candidate
from ingestor.rejections import ORPHAN_HINT, SHORTEN, Rejected, hint_for, ident_of
from ingestor.rejections import kind_of as _kind
from ingestor.settings import Mode

CHECK_BATCH = 4096


class Verdict(Enum):
    READY = 1
    REARM = 2  # not yet: look again later
    DROP = 3  # gone, or not ours to ingest


@dataclass(slots=True)
class Pending:
    due: float  # monotonic
    seen_at: float  # monotonic time of the first hint or observation
    size: int = -1  # last observation (-1: none yet)
    mtime_ns: int = -1
    observed_at: float = 0.0  # monotonic time the observation was made
    waits: int = 0  # re-arms so far


class Readiness:
    def __init__(
        self,
        *,
        landing: Path,
        mode: Mode,
        stability_seconds: float,
        sidecar_suffix: str,
        ignore_suffixes: Iterable[str],
        log: Any,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        one_shot: bool = False,
        clock: Callable[[], float] = time.monotonic,
        count_problem: Callable[[str], None] | None = None,
        on_reject: Callable[[Rejected], None] | None = None,
    ) -> None:
        self.landing = landing
        self.mode = mode
        self.window = stability_seconds
        self.window_ns = int(stability_seconds * 1e9)
        self.sidecar_suffix = sidecar_suffix
        self.ignore_suffixes = tuple(ignore_suffixes)
        self.include = compile_globs(tuple(include))
        self.exclude = compile_globs(tuple(exclude))
        self.log = log
        self.one_shot = one_shot
        self.clock = clock
        self.count_problem = count_problem or (lambda kind: None)
        self.on_reject = on_reject or (lambda r: None)  # put on record (rejections.py)
        self.pending: dict[str, Pending] = {}
        self._heap: list[tuple[float, str]] = []
        # oldest first; an OrderedDict because taking from the front of a plain dict
        # that had many deletions walks over their holes (quadratic at 10k files)
        self.ready: OrderedDict[str, Candidate] = OrderedDict()
        self.busy: set[str] = set()  # handed to a worker, not finished (owned by the daemon)
        self.hinted_busy: set[str] = set()  # busy paths an event named meanwhile
        # rel → (inode, size, mtime, ctime) of a file not to look at again until it changes
        # (rejected input, dry-run reports)
        self.settled: dict[str, tuple[int, int, int, int]] = {}
        self.orphans: set[str] = set()  # sidecars reported without data
        self.room = rel_room(landing)  # bytes of a path below the landing dir the kernel takes
        self.failed = 0  # files rejected here that one-shot mode reports as not landed
        # written to through inotify's eyes (IN_MODIFY) and not closed since: never ready
        self.writing: set[str] = set()
        self.not_ready: list[str] = []  # one-shot mode: files left because still changing
        # one-shot progress: distinct paths judged complete so far (one-shot runs are bounded)
        self.judged_ready: set[str] = set()
        self.admitted_files = 0
        self.admitted_bytes = 0
        self._wake = asyncio.Event()
        self.ready_event = asyncio.Event()
        self.progress = asyncio.Event()  # set whenever a round of judging ends

    # ------------------------------------------------------------ filters

    def ignored(self, rel: str) -> bool:
        name = rel.rpartition("/")[2]
        if not name or name.startswith(".") or "/." in "/" + rel:
            return True
        if name.endswith(self.ignore_suffixes):
            return True
        if self.include is not None and not self.include.match(rel):
            return True
        return self.exclude is not None and self.exclude.match(rel) is not None

    def target(self, rel: str) -> str | None:
        """The data path a hint is about, or None when it is ignored."""
        if rel.endswith(self.sidecar_suffix):
            if self.mode is not Mode.SIDECAR:
                return None
            rel = rel[: -len(self.sidecar_suffix)]
        if self.ignored(rel):
            return None
        return rel

    # ------------------------------------------------------------ inputs

    def hint(self, rel: str) -> None:
        """An event said something happened at ``rel``."""
        target = self.target(rel)
        if target is None:
            return
        if longer_than(target, self.room):
            self.reject(target, None, TOO_LONG)
            return
        # a settled path is judged again, but reported again only if its key changed
        now = self.clock()
        delay = 0.0 if self.mode is Mode.SIDECAR else self.window
        self._schedule(target, now + delay, now, from_event=True)

    def observe(self, rel: str, st: os.stat_result) -> None:
        """The scan saw ``rel`` with this ``lstat``: judge it now, without a second stat."""
        target = self.target(rel)
        if target is None:
            return
        if target != rel:  # a sidecar seen by the scan: look at its data file
            self._schedule(target, self.clock(), self.clock(), from_event=False)
            return
        if target in self.pending or target in self.ready or target in self.busy:
            return
        if self.settled.get(target) == stat_key(st):
            return
        now = self.clock()
        if self.mode is Mode.SIDECAR:
            self._schedule(target, now, now, from_event=False)
            return
        p = Pending(due=now, seen_at=now)
        self.pending[target] = p
        verdict, delay = self._judge_stability(target, p, st, now)
        self._apply(target, p, verdict, delay, st.st_size)

    def reject(self, rel: str, st: os.stat_result | None, cause: str, hint: str | None = None) -> None:
        """``rel`` can never be landed (too long a path, unreachable): reported once, never judged.

        Reported again only if it changes; in one-shot mode it counts as a
        file that could not be landed.
        """
        if self.settle(rel, stat_key(st) if st is not None else (-1, -1, -1, -1)):
            self.log.warning("file_rejected", path=str(self.landing / rel), cause=cause)
            self.count_problem("bad_input")
            self.failed += 1
            if hint is None:
                hint = (
                    SHORTEN if cause == TOO_LONG else "check the permissions of the directories on its path"
                )
            self.on_reject(Rejected(rel, ident_of(st), cause, hint))
        self.pending.pop(rel, None)

    def written(self, rel: str) -> None:
        """An event said ``rel`` was written to: not complete before the writer closes it."""
        self.writing.add(rel)
        if rel in self.ready:  # judged complete a moment ago: judge it again
            self.hint(rel)

    def closed(self, rel: str) -> None:
        """An event said the writer of ``rel`` closed it (or a file was renamed to ``rel``)."""
        self.writing.discard(rel)
        self.hint(rel)

    def events_lost(self) -> None:
        """The event queue overflowed: which writers closed is not known, the stability rule decides."""
        self.writing.clear()

    def forget(self, rel: str) -> None:
        self.pending.pop(rel, None)
        self.ready.pop(rel, None)

    def retry(self, rel: str, delay: float) -> None:
        """Look at ``rel`` again in ``delay`` seconds."""
        now = self.clock()
        self._schedule(rel, now + delay, now, from_event=False)

    def settle(self, rel: str, key: tuple[int, int, int, int]) -> bool:
        """Do not look at ``rel`` again until it changes; False if it was settled as is."""
        if self.settled.get(rel) == key:
            return False
        self.settled[rel] = key
        return True

    def _schedule(self, rel: str, due: float, now: float, *, from_event: bool) -> None:
        if rel in self.busy:
            # a worker has this path; something happened to it (a new file under the same
            # name, right after the old one landed): look again once the worker lets go
            if from_event:
                self.hinted_busy.add(rel)
            return
        if rel in self.ready:
            if not from_event:
                return
            # written to again after it was judged complete: judge it again
            cand = self.ready.pop(rel)
            self.pending[rel] = Pending(due=due, seen_at=cand.seen_at)
            heapq.heappush(self._heap, (due, rel))
            self._wake.set()
            return
        p = self.pending.get(rel)
        if p is None:
            p = self.pending[rel] = Pending(due=due, seen_at=now)
        elif due > p.due or self.mode is Mode.SIDECAR:
            p.due = due
        else:
            return
        heapq.heappush(self._heap, (due, rel))
        self._wake.set()

    # ------------------------------------------------------------ judging

    def _judge_stability(self, rel: str, p: Pending, st: os.stat_result, now: float) -> tuple[Verdict, float]:
        if rel in self.writing:  # its IN_CLOSE_WRITE brings it back (a hint), then a window
            p.size, p.mtime_ns, p.observed_at = st.st_size, st.st_mtime_ns, now
            return Verdict.REARM, self.window
        if p.size >= 0 and (p.size, p.mtime_ns) != (st.st_size, st.st_mtime_ns):
            p.size, p.mtime_ns, p.observed_at = st.st_size, st.st_mtime_ns, now
            return Verdict.REARM, self.window
        age_ns = time.time_ns() - st.st_mtime_ns
        if age_ns >= self.window_ns:
            return Verdict.READY, 0.0
        if p.size >= 0 and now - p.observed_at >= self.window:
            return Verdict.READY, 0.0  # unchanged across a whole window: mtime is from another clock
        if p.size < 0:
            p.size, p.mtime_ns, p.observed_at = st.st_size, st.st_mtime_ns, now
        remaining = (self.window_ns - age_ns) / 1e9 if age_ns >= 0 else self.window
        return Verdict.REARM, min(max(remaining, 0.001), self.window)

    def missing(self, rels: list[str]) -> list[str]:
        """Runs in a thread (reads no state): which of ``rels`` are not there any more."""
        prefix = f"{self.landing}/"
        return [rel for rel in rels if _lstat(prefix + rel) is None]

    def _stat_many(self, rels: list[str]) -> list[tuple[_Stat, _Stat]]:
        """Runs in a thread: lstat each due path, and its sidecar in sidecar mode."""
        prefix = f"{self.landing}/"  # plain strings: a pathlib join costs more than the lstat
        if self.mode is not Mode.SIDECAR:
            return [(_lstat_or_error(prefix + rel), None) for rel in rels]
        suffix = self.sidecar_suffix
        return [(_lstat_or_error(prefix + rel), _lstat_or_error(prefix + rel + suffix)) for rel in rels]

    def _judge(
        self, rel: str, p: Pending, st: _Stat, sc: _Stat, now: float
    ) -> tuple[Verdict, float, str | None]:
        """(verdict, re-arm delay, sidecar rel path) for one due path."""
        if isinstance(st, OSError):
            self.reject(rel, None, f"cannot be reached: {st.strerror}")
            return Verdict.DROP, 0.0, None
        if isinstance(sc, OSError):
            sc = None
        if st is not None and not stat_mod.S_ISREG(st.st_mode):
            if self.settle(rel, stat_key(st)):
                self.log.warning("file_rejected", path=str(self.landing / rel), cause=_kind(st.st_mode))
                self.count_problem("bad_input")
                self.on_reject(Rejected(rel, ident_of(st), _kind(st.st_mode), hint_for(st)))
            return Verdict.DROP, 0.0, None
        if st is None:
            self.settled.pop(rel, None)  # gone: nothing to remember about it
            self.writing.discard(rel)
        if self.mode is Mode.SIDECAR:
            if sc is None or not stat_mod.S_ISREG(sc.st_mode):
                self.orphans.discard(rel + self.sidecar_suffix)
                return Verdict.DROP, 0.0, None
            if st is None:
                return self._orphan(rel, p, sc)
            if st.st_mtime_ns <= sc.st_mtime_ns and rel not in self.writing:
                return Verdict.READY, 0.0, rel + self.sidecar_suffix
        if st is None:
            return Verdict.DROP, 0.0, None
        verdict, delay = self._judge_stability(rel, p, st, now)
        return verdict, delay, (rel + self.sidecar_suffix) if sc is not None else None

    def _apply(
        self, rel: str, p: Pending, verdict: Verdict, delay: float, size: int = 0, sidecar: str | None = None
    ) -> None:
        if verdict is Verdict.READY:
            del self.pending[rel]
            if self.one_shot and rel not in self.judged_ready:  # a daemon would grow it forever
                self.judged_ready.add(rel)
                self.admitted_files += 1
                self.admitted_bytes += size
            detected = time.time_ns() - int((self.clock() - p.seen_at) * 1e9)  # the wall clock then
            self.ready[rel] = Candidate(rel, size, p.seen_at, sidecar, detected)
            self.ready_event.set()
        elif verdict is Verdict.DROP:
            del self.pending[rel]
        elif self.one_shot:
            del self.pending[rel]
            self.not_ready.append(rel)
        else:
            p.waits += 1
            p.due = self.clock() + delay
            heapq.heappush(self._heap, (p.due, rel))
            self._wake.set()  # the timer task may be asleep with an empty heap

    # ------------------------------------------------------------ the timer task

    def idle(self) -> bool:
        return not self.pending and not self.ready and not self.busy

    async def run(self) -> None:
        """Judge paths as they fall due; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = self.clock()
            due: list[tuple[str, Pending]] = []
            while self._heap and self._heap[0][0] <= now and len(due) < CHECK_BATCH:
                when, rel = heapq.heappop(self._heap)
                p = self.pending.get(rel)
                if p is not None and p.due == when and rel not in self.busy:
                    due.append((rel, p))
            if due:
                checked_due = {rel: p.due for rel, p in due}
                stats = await loop.run_in_executor(None, self._stat_many, [rel for rel, _ in due])
                now = self.clock()
                for (rel, checked), (st, sc) in zip(due, stats, strict=True):
                    p = self.pending.get(rel)
                    if p is not checked or rel in self.busy:
                        continue
                    if p.due != checked_due[rel]:
                        # re-armed by an event while it was being stat'ed (the .ok appeared):
                        # this verdict is stale; its newer heap entry judges it again
                        continue
                    verdict, delay, sidecar = self._judge(rel, p, st, sc, now)
                    if rel in self.pending:
                        size = st.st_size if isinstance(st, os.stat_result) else 0
                        self._apply(rel, p, verdict, delay, size, sidecar)
                self.progress.set()
                continue
            timeout = self._heap[0][0] - now if self._heap else None
            await wait_event(self._wake, timeout)

    def _orphan(self, rel: str, p: Pending, sc_st: os.stat_result) -> tuple[Verdict, float, str | None]:
        """A sidecar with no data file: report it once it has waited a window, never ingest it."""
        sc = rel + self.sidecar_suffix
        if (self.one_shot or p.waits >= 1) and sc not in self.orphans:
            self.orphans.add(sc)
            self.count_problem("sidecar_orphan")
            self.log.warning(
                "sidecar_orphan",
                path=str(self.landing / sc),
                cause="sidecar without its data file; it is never ingested as data",
            )
            self.on_reject(Rejected(sc, ident_of(sc_st), "a sidecar without its data file", ORPHAN_HINT))
        if self.one_shot or p.waits >= 10:
            # stop polling; a data file that comes later brings it back by event or scan
            return Verdict.DROP, 0.0, None
        return Verdict.REARM, max(self.window, 1.0), None

    def take(self, max_files: int, max_bytes: int) -> list[Candidate]:
        """Up to ``max_files`` ready candidates (at least one), at most ``max_bytes`` in all."""
        batch: list[Candidate] = []
        total = 0
        ready = self.ready
        while ready:
            cand = ready[next(iter(ready))]
            if batch and (len(batch) >= max_files or total + cand.size > max_bytes):
                break
            ready.popitem(last=False)
            self.busy.add(cand.rel)
            batch.append(cand)
            total += cand.size
        if not self.ready:
            self.ready_event.clear()
        return batch

    def release(self, rels: Iterable[str]) -> None:
        for rel in rels:
            self.busy.discard(rel)
            if rel in self.hinted_busy:
                self.hinted_busy.discard(rel)
                self.hint(rel)
        self._wake.set()
        self.progress.set()


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True if it was set.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a ``cancel()`` that
    arrives as the inner wait completes, and a loop that lost its cancellation
    runs on and hangs shutdown. ``asyncio.timeout`` does not.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False


_Stat = os.stat_result | OSError | None


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _lstat_or_error(path: str) -> _Stat:
    """``_lstat``, with any other error (a directory not searchable) as its value: bad input, not a crash."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return exc
