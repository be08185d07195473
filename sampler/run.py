"""The sampler's main loop: startup -> passes over new manifest lines -> shutdown.

Startup: take the lock (``--manifests``: ``<checkpoint>.lock``; ``--config``:
``<state dir>/sampler.lock``), find the manifests dirs and load their
checkpoints (``streams``), set up signals (and inotify in ``--follow``),
tell systemd ``READY=1``.

A pass (``one_pass``): for every manifests dir (a stream), every complete
manifest line not processed yet, in order (``tail``); each record is parsed,
routed to its target (``Stream.route``), sampled if ``ingested``
(``sample``), logged, counted, then committed to the stream's in-memory
position. At most every ``checkpoint_interval`` seconds, and at the end of
each stream's pass, the sample directories are fsynced and then the
checkpoint saved: it never passes a sample that is not durable. After the
pass, old finished hour files are retired.

``--once``: one pass, exit 0. ``--follow``: passes whenever inotify reports a
change (a manifest line, a new hour, a new manifests dir), and every
``poll_interval`` seconds regardless (events are hints: a missed one costs
at most that delay). SIGTERM/SIGINT: the record in hand is finished, the
checkpoints saved, ``STOPPING=1`` sent, exit 0.

Why no asyncio: the sampler is one strictly ordered consumer, and its only
waits are "a manifest changed", "a signal came" and a timer. One ``poll``
over the inotify fd and a signal wakeup pipe expresses exactly that, with no
threads; an event loop would only wrap each blocking sample in a thread
hop, one at a time. The per-file budget bounds how long a record may hold
the loop.

Exit codes: 0 done or stopped by a signal; 1 fatal (``--manifests``:
checkpoint unusable, a samples-side write failing, the warehouse unusable;
either mode: another sampler running): the record in hand is not committed,
and systemd's ``Restart=on-failure`` retries it. In ``--config`` mode such a
failure sets only its manifests dir aside until the next pass
(``streams``); ``--once`` then exits 1 after doing the others.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from ingestor.logs import get_logger
from ingestor.manifest import ManifestError, ManifestRecord
from ingestor.metrics import MetricsServer
from ingestor.records import Status
from ingestor.systemd import notify, watchdog_interval
from sampler import checkpoint
from sampler.metrics import Metrics
from sampler.sample import Event
from sampler.settings import Settings
from sampler.streams import PLAIN_SOURCE, Stream, StreamError, Streams, Unroutable
from sampler.tail import Line
from sampler.watch import Changes, ManifestWatch


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
    """Owns the streams, their samplers and the metrics for one run (one thread)."""

    def __init__(self, settings: Settings, signals: _Signals) -> None:
        self.s = settings
        self.signals = signals
        self.log = get_logger(component="sampler")
        sources = settings.config.sources if settings.config is not None else ()
        self.metrics = Metrics([s.name for s in sources] if sources else [PLAIN_SOURCE])
        self.fail_fast = settings.plain is not None  # one stream: its failure is the run's
        self.streams = Streams(
            sources,
            plain=settings.plain,
            state_dir=settings.state_dir,
            limits=settings.limits,
            log=self.log,
            grace_s=settings.retire_grace,
            on_failure=lambda label: self.metrics.error(label, "stream"),
        )
        self.streams.start()
        now = time.monotonic()
        self.ping = watchdog_interval()
        self.next_ping = now + self.ping if self.ping else float("inf")
        self.next_metrics = now + settings.metrics_interval

    def close(self) -> None:
        self.streams.close()

    def save(self) -> None:
        """Every stream's samples fsynced, then its checkpoint saved (a failing one is set aside)."""
        for stream in list(self.streams.streams.values()):
            self._guarded(stream, functools.partial(self.save_stream, stream))
        self.count_dirs()
        self.metrics.settle()

    def save_stream(self, stream: Stream) -> None:
        stream.save()
        self.metrics.lag(stream, stream.label, stream.tail.lag(), stream.last_ingested_at)

    def count_dirs(self) -> None:
        ok = self.streams.streams.keys() - self.streams.failed.keys()
        self.metrics.dirs_state(len(ok), len(self.streams.failed))

    def _guarded(self, stream: Stream, step: Callable[[], object]) -> bool:
        """Run ``step`` for ``stream``; in ``--config`` mode a failure sets that stream aside."""
        try:
            step()
        except (OSError, StreamError) as exc:
            if self.fail_fast:
                raise
            self.streams.fail(stream.manifests, exc, stream.log, stream.label)
            return False
        return True

    def one_pass(self, *, refresh: bool = True, only: set[Path] | None = None) -> int:
        """Process every new complete line of every stream (or of ``only``); the number of lines processed."""
        if refresh:
            self.streams.refresh()
        self.count_dirs()
        n = 0
        for path in sorted(self.streams.streams if only is None else only):
            if self.signals.stop:
                break
            stream = self.streams.streams[path]
            count = 0

            def step(stream: Stream = stream) -> None:
                nonlocal count
                count = self.stream_pass(stream)

            if self._guarded(stream, step):
                self.streams.recovered(path, stream.log)
            n += count
        self.count_dirs()
        self.metrics.settle()
        return n

    def stream_pass(self, stream: Stream) -> int:
        """One stream's new lines, in order; its checkpoint saved as it goes and at the end."""
        n = 0
        lines = stream.tail.lines(stop=lambda: self.signals.stop)
        try:
            for line in lines:
                self.handle(stream, line)
                stream.tail.commit(line)
                n += 1
                self.tick()
                if time.monotonic() - stream.last_save >= self.s.checkpoint_interval:
                    self.save_stream(stream)
                    self.metrics.settle()
        finally:
            lines.close()  # closes the manifest fd it holds
        if not self.signals.stop:
            for rel in stream.tail.retire():
                stream.log.info("manifest_retired", manifest=rel)
        self.save_stream(stream)
        return n

    def handle(self, stream: Stream, line: Line) -> None:
        m = self.metrics
        label = stream.label
        m.record(label)
        log = stream.log
        try:
            rec = ManifestRecord.from_json(line.data)
        except ManifestError as exc:
            m.error(label, "invalid_line")
            log.error("manifest_line_invalid", manifest=line.rel, offset=line.start, error=str(exc))
            return
        stream.last_ingested_at = rec.ingested_at
        if rec.status is not Status.INGESTED:
            m.skip(label, "rejected" if rec.status is Status.REJECTED else "duplicate")
            log.debug("record_skipped", id=rec.id, status=str(rec.status), reason="status")
            return
        ctx = {"id": rec.id, "path": rec.warehouse, "sha256": rec.sha256}
        try:
            target = stream.route(rec)
        except Unroutable as exc:
            m.error(label, "rejected")
            log.error(str(Event.REJECTED), **ctx, manifest=line.rel, offset=line.start, error=str(exc))
            return
        sampler = self.streams.sampler(stream, target)
        out = sampler.sample(rec)
        log = sampler.log
        if out.event is Event.WRITTEN:
            m.sampled(target.source, str(out.format), None)
            log.info(
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
            m.skip(target.source, "current")
            log.debug(str(out.event), **ctx)
        elif out.event is Event.ERROR:
            m.sampled(target.source, str(out.format), str(out.error_kind))
            log.error(
                str(out.event),
                **ctx,
                format=str(out.format),
                error_kind=str(out.error_kind),
                error=out.message,
                sample=out.sample,
            )
        else:
            m.error(target.source, "rejected")
            log.error(str(out.event), **ctx, error=out.message)

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
        extra = (
            {}
            if self.fail_fast
            else {"streams": len(self.streams.streams), "streams_failed": len(self.streams.failed)}
        )
        self.log.info(event, **self.metrics.as_dict(), **extra)

    def follow(self) -> None:
        """Passes on events and every ``poll_interval``; an event in a manifests tree reads that dir only."""
        watch = ManifestWatch()
        poller = select.poll()
        poller.register(watch.fileno(), select.POLLIN)
        poller.register(self.signals.rfd, select.POLLIN)
        pending = Changes(rediscover=True)
        try:
            while not self.signals.stop:
                self.tick()
                todo, pending = pending, Changes()
                if todo.rediscover:
                    # Watch first, then read: a change after the watch is added
                    # raises an event, one before it is seen by the read.
                    self.streams.refresh(watch)
                early = watch.drain()
                todo.dirs |= early.dirs  # news from before the pass: the pass reads them
                pending.rediscover = early.rediscover  # a new manifests dir: found at the next round
                self.one_pass(refresh=False, only=None if todo.rediscover else self.streams.owners(todo.dirs))
                pending.update(watch.drain())
                if pending:  # changed during the pass: go again at once
                    continue
                next_pass = time.monotonic() + self.s.poll_interval
                while not self.signals.stop:
                    wake_at = min(next_pass, self.tick())
                    now = time.monotonic()
                    if now >= next_pass:
                        pending.rediscover = True  # events are hints: look at everything now and then
                        break
                    events = poller.poll(max(0.0, wake_at - now) * 1000)
                    self.signals.drain()
                    if any(fd == watch.fileno() for fd, _ in events):
                        pending.update(watch.drain())
                        if pending:
                            break
        finally:
            watch.close()


def run(settings: Settings) -> int:
    log = get_logger(component="sampler")
    plain, config = settings.plain, settings.config
    try:
        if plain is not None:
            plain.samples.mkdir(parents=True, exist_ok=True)
            plain.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = checkpoint.lock(plain.checkpoint)
        else:
            assert settings.state_dir is not None
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = checkpoint.lock(settings.state_dir / "sampler")
    except (OSError, checkpoint.CheckpointError) as exc:
        log.error("sampler_failed", error=str(exc))
        return 1
    server: MetricsServer | None = None
    try:
        with _Signals() as signals, _runner(settings, signals) as runner:
            if settings.follow and settings.metrics_port is not None:
                server = runner.metrics.serve(settings.metrics_port)
            if plain is not None:
                only = next(iter(runner.streams.streams.values()))
                started: dict[str, object] = {
                    "manifests": str(plain.manifests),
                    "samples": str(plain.samples),
                    "warehouse": str(plain.warehouse),
                    "retired_through": only.saved.retired_through,
                }
            else:
                assert config is not None
                runner.streams.refresh()
                started = {
                    "config": str(config.path),
                    "sources": [s.name for s in config.sources],
                    "state_dir": str(settings.state_dir),
                    "streams": len(runner.streams.streams),
                }
            log.info(
                "sampler_started",
                **started,
                follow=settings.follow,
                rows=settings.limits.rows,
                max_bytes=settings.limits.max_bytes,
            )
            notify("READY=1")
            try:
                if settings.follow:
                    runner.follow()
                else:
                    runner.one_pass(refresh=plain is not None)
            finally:
                notify("STOPPING=1")
                runner.save()
                runner.log_metrics("sampler_stopped")
            if signals.name:
                log.info("sampler_signalled", signal=signals.name)
            failed = dict(runner.streams.failed)
        if failed and not settings.follow:
            first = next(iter(failed.items()))
            log.error("sampler_failed", error=f"{first[0]}: {first[1]}", streams_failed=len(failed))
            return 1
        return 0
    except checkpoint.CheckpointError as exc:
        log.error("sampler_failed", error=str(exc))
        return 1
    except (OSError, StreamError) as exc:
        log.exception("sampler_failed", error=str(exc))
        return 1
    finally:
        if server is not None:
            server.shutdown()
        os.close(lock_fd)


@contextlib.contextmanager
def _runner(settings: Settings, signals: _Signals) -> Iterator[Runner]:
    runner = Runner(settings, signals)
    try:
        yield runner
    finally:
        runner.close()
