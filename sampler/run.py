"""The sampler's main loop: startup -> passes over new manifest lines -> shutdown.

Startup: lock and load the checkpoint, open the roots, set up signals (and
inotify in ``--follow``), tell systemd ``READY=1``.

A pass (``_pass``): every complete manifest line not processed yet, in order
(``tail``); each record is parsed, sampled if ``ingested`` (``sample``),
logged, counted, then committed to the in-memory position. At most every
``checkpoint_interval`` seconds, and at the end of each pass, the sample
directories are fsynced and then the checkpoint saved: it never passes a
sample that is not durable. After the pass, old finished hour files are
retired.

``--once``: one pass, exit 0. ``--follow``: passes whenever inotify reports a
change, and every ``poll_interval`` seconds regardless (events are hints: a
missed one costs at most that delay). SIGTERM/SIGINT: the record in hand is
finished, the checkpoint saved, ``STOPPING=1`` sent, exit 0.

Why no asyncio: the sampler is one strictly ordered consumer, and its only
waits are "a manifest changed", "a signal came" and a timer. One ``poll``
over the inotify fd and a signal wakeup pipe expresses exactly that, with no
threads; an event loop would only wrap each blocking sample in a thread
hop, one at a time. The per-file budget bounds how long a record may hold
the loop.

Exit codes: 0 done or stopped by a signal; 1 fatal (checkpoint unusable,
another sampler running, a samples-side write failing): the record in hand is
not committed, and systemd's ``Restart=on-failure`` retries it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from ingestor.logs import get_logger
from ingestor.manifest import ManifestError, ManifestRecord
from ingestor.records import Status
from ingestor.systemd import notify, watchdog_interval
from sampler import checkpoint
from sampler.sample import Event, Sampler
from sampler.settings import Settings
from sampler.tail import Line, Tail
from sampler.watch import ManifestWatch


@dataclass(slots=True)
class Metrics:
    """Counters since start. Owned by the run loop only (no lock)."""

    records_read: int = 0
    samples_written: int = 0
    skipped: int = 0  # not ingested (duplicates), or sample already current
    errors: int = 0  # error .meta.json written, invalid manifest line, rejected path

    def as_dict(self, lag_bytes: int) -> dict[str, int]:
        return {
            "records_read": self.records_read,
            "samples_written": self.samples_written,
            "skipped": self.skipped,
            "errors": self.errors,
            "lag_bytes": lag_bytes,
        }


class _Signals:
    """SIGTERM/SIGINT set ``stop`` and wake ``poll`` through a pipe; restored on exit."""

    def __init__(self) -> None:
        self.stop = False
        self.name: str | None = None
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old: dict[int, Any] = {}
        self._old_wakeup = -1

    def _handle(self, signum: int, _: FrameType | None) -> None:
        self.stop = True
        self.name = signal.Signals(signum).name

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        self._old_wakeup = signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        return self

    def __exit__(self, *_: object) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, old in self._old.items():
            signal.signal(sig, old)
        os.close(self.rfd)
        os.close(self.wfd)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.rfd, 512):
                pass


class Runner:
    """Owns the tail, the sampler and the metrics for one run (one thread)."""

    def __init__(self, settings: Settings, signals: _Signals) -> None:
        self.s = settings
        self.signals = signals
        self.log = get_logger(component="sampler")
        self.metrics = Metrics()
        self.tail = Tail(
            settings.manifests,
            checkpoint.load(settings.checkpoint),
            log=self.log,
            grace_s=settings.retire_grace,
        )
        self.saved = self.tail.checkpoint()
        self.sampler = Sampler(settings.warehouse, settings.samples, settings.limits, log=self.log)
        now = time.monotonic()
        self.last_save = now
        self.ping = watchdog_interval()
        self.next_ping = now + self.ping if self.ping else float("inf")
        self.next_metrics = now + settings.metrics_interval

    def close(self) -> None:
        self.sampler.close()

    def save(self) -> None:
        """fsync the samples written, then the checkpoint (only when it moved)."""
        self.sampler.sync()
        ckpt = self.tail.checkpoint()
        if ckpt != self.saved:
            checkpoint.save(self.s.checkpoint, ckpt)
            self.saved = ckpt
        self.last_save = time.monotonic()

    def one_pass(self) -> int:
        """Process every new complete line; the number of lines processed."""
        n = 0
        lines = self.tail.lines(stop=lambda: self.signals.stop)
        try:
            for line in lines:
                self.handle(line)
                self.tail.commit(line)
                n += 1
                self.tick()
                if time.monotonic() - self.last_save >= self.s.checkpoint_interval:
                    self.save()
        finally:
            lines.close()  # closes the manifest fd it holds
        if not self.signals.stop:
            for rel in self.tail.retire():
                self.log.info("manifest_retired", manifest=rel)
        self.save()
        return n

    def handle(self, line: Line) -> None:
        m = self.metrics
        m.records_read += 1
        try:
            rec = ManifestRecord.from_json(line.data)
        except ManifestError as exc:
            m.errors += 1
            self.log.error("manifest_line_invalid", manifest=line.rel, offset=line.start, error=str(exc))
            return
        if rec.status is not Status.INGESTED:
            m.skipped += 1
            self.log.debug("record_skipped", id=rec.id, status=str(rec.status), reason="status")
            return
        out = self.sampler.sample(rec)
        ctx = {"id": rec.id, "path": rec.warehouse, "sha256": rec.sha256}
        if out.event is Event.WRITTEN:
            m.samples_written += 1
            self.log.info(
                str(out.event),
                **ctx,
                format=str(out.format),
                sample=out.sample,
                rows=out.rows,
                truncated=out.truncated,
                note=out.note,
                ms=round(out.seconds * 1000, 2),
            )
        elif out.event is Event.CURRENT:
            m.skipped += 1
            self.log.debug(str(out.event), **ctx)
        elif out.event is Event.ERROR:
            m.errors += 1
            self.log.error(
                str(out.event),
                **ctx,
                format=str(out.format),
                error_kind=str(out.error_kind),
                error=out.message,
                sample=out.sample,
            )
        else:
            m.errors += 1
            self.log.error(str(out.event), **ctx, error=out.message)

    def tick(self) -> float:
        """Watchdog ping and metrics line when due; the time of the next one."""
        now = time.monotonic()
        if now >= self.next_ping:
            notify("WATCHDOG=1")
            self.next_ping = now + (self.ping or 0.0)
        if now >= self.next_metrics:
            self.log_metrics()
            self.next_metrics = now + self.s.metrics_interval
        return min(self.next_ping, self.next_metrics)

    def log_metrics(self, event: str = "sampler_metrics") -> None:
        self.log.info(event, **self.metrics.as_dict(self.tail.lag()))

    def follow(self) -> None:
        watch = ManifestWatch()
        poller = select.poll()
        poller.register(watch.fileno(), select.POLLIN)
        poller.register(self.signals.rfd, select.POLLIN)
        try:
            while not self.signals.stop:
                self.tick()
                # Watch first, then read: a change after the watch is added
                # raises an event, one before it is seen by the read.
                self.tail.refresh()
                watch.watch_only(self.tail.dirs)
                watch.drain()  # stale: the pass below reads everything anyway
                self.one_pass()
                if watch.drain():  # changed during the pass: go again at once
                    continue
                next_pass = time.monotonic() + self.s.poll_interval
                while not self.signals.stop:
                    wake_at = min(next_pass, self.tick())
                    now = time.monotonic()
                    if now >= next_pass:
                        break
                    events = poller.poll(max(0.0, wake_at - now) * 1000)
                    self.signals.drain()
                    if any(fd == watch.fileno() for fd, _ in events) and watch.drain():
                        break
        finally:
            watch.close()


def run(settings: Settings) -> int:
    log = get_logger(component="sampler")
    try:
        settings.samples.mkdir(parents=True, exist_ok=True)
        settings.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = checkpoint.lock(settings.checkpoint)
    except (OSError, checkpoint.CheckpointError) as exc:
        log.error("sampler_failed", error=str(exc))
        return 1
    try:
        with _Signals() as signals, _runner(settings, signals) as runner:
            log.info(
                "sampler_started",
                manifests=str(settings.manifests),
                samples=str(settings.samples),
                warehouse=str(settings.warehouse),
                follow=settings.follow,
                rows=settings.limits.rows,
                max_bytes=settings.limits.max_bytes,
                retired_through=runner.saved.retired_through,
            )
            notify("READY=1")
            try:
                if settings.follow:
                    runner.follow()
                else:
                    runner.one_pass()
            finally:
                notify("STOPPING=1")
                runner.save()
                runner.log_metrics("sampler_stopped")
            if signals.name:
                log.info("sampler_signalled", signal=signals.name)
        return 0
    except checkpoint.CheckpointError as exc:
        log.error("sampler_failed", error=str(exc))
        return 1
    except OSError as exc:
        log.exception("sampler_failed", error=str(exc))
        return 1
    finally:
        os.close(lock_fd)


@contextlib.contextmanager
def _runner(settings: Settings, signals: _Signals) -> Iterator[Runner]:
    runner = Runner(settings, signals)
    try:
        yield runner
    finally:
        runner.close()
