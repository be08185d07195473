"""Metrics: Prometheus counters and gauges, and the periodic ``metrics`` log line.

One registry per daemon (no module-level collectors: nothing happens at
import). Counters are incremented from worker threads (prometheus-client
locks them); gauges are read from the loop's state when scraped or logged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ingestor.records import Record, Status

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 5, 10, 30, 60, 300, 1800)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Error kinds exported from the start at 0, so that a dashboard or an alert
# tells "no errors" from "no metric": bad input (refused files) and the
# failure classes of ingestor.errors (``IngestError.kind``).
ERROR_KINDS = ("bad_input", "retryable", "gone", "fatal", "vanished", "sidecar_orphan", "landing_replaced")
# one label per kind: BadInput.kind is "badinput", the daemon also says "bad_input"
_KIND_ALIASES = {"badinput": "bad_input"}


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.files = Counter(
            "ingestor_files_total",
            "Files finished, by source and manifest status",
            ["source", "status"],
            registry=r,
        )
        self.bytes = Counter(
            "ingestor_bytes_total",
            "Bytes of files landed (status ingested), by source",
            ["source"],
            registry=r,
        )
        self.errors = Counter("ingestor_errors_total", "Problems met, by kind", ["kind"], registry=r)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self.events = Counter("ingestor_events_total", "Filesystem events read", registry=r)
        self.scans = Counter("ingestor_scans_total", "Reconciliation scans run", registry=r)
        self.batch = Histogram(
            "ingestor_ledger_batch_size",
            "Requests per ledger transaction",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit = Histogram(
            "ingestor_ledger_commit_seconds",
            "Ledger transaction latency",
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "ingestor_event_to_landed_seconds",
            "From the first event or scan that saw a file to its manifest line",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "ingestor_queue_depth", "Files judged complete, waiting for a worker", ["source"], registry=r
        )
        self.waiting = Gauge(
            "ingestor_files_waiting", "Files waiting for stability or a sidecar", ["source"], registry=r
        )
        self.in_flight = Gauge("ingestor_files_in_flight", "Files handed to workers", ["source"], registry=r)
        self.retrying = Gauge(
            "ingestor_records_retrying", "Records waiting to redo a failed step", ["source"], registry=r
        )
        self._lock = threading.Lock()
        self.landed_files = 0
        self.landed_bytes = 0
        self.duplicate_files = 0
        self.error_count = 0
        self._last = (time.monotonic(), 0, 0)

    def bind_gauges(
        self,
        source: str,
        depth: Callable[[], int],
        waiting: Callable[[], int],
        busy: Callable[[], int],
        retrying: Callable[[], int],
    ) -> None:
        """One source's gauges, read from the loop's state when scraped."""
        self.queue_depth.labels(source).set_function(depth)
        self.waiting.labels(source).set_function(waiting)
        self.in_flight.labels(source).set_function(busy)
        self.retrying.labels(source).set_function(retrying)

    def source_seen(self, source: str) -> None:
        """Export a source's series from the start, at 0 (a dashboard tells 0 from none)."""
        self.files.labels(source, "ingested")
        self.files.labels(source, "duplicate")
        self.bytes.labels(source)

    def on_done(self, records: list[Record], source: str = "default") -> None:
        """Called by a worker thread for each batch of records manifested."""
        now = time.monotonic()
        landed = dup = nbytes = 0
        for r in records:
            if r.status is Status.INGESTED:
                landed += 1
                nbytes += r.identity.size
            else:
                dup += 1
            if r.seen_at:
                self.latency.observe(now - r.seen_at)
        if landed:
            self.files.labels(source, "ingested").inc(landed)
            self.bytes.labels(source).inc(nbytes)
        if dup:
            self.files.labels(source, "duplicate").inc(dup)
        with self._lock:
            self.landed_files += landed
            self.landed_bytes += nbytes
            self.duplicate_files += dup

    def on_commit(self, group: int, seconds: float) -> None:
        self.batch.observe(group)
        self.commit.observe(seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(_KIND_ALIASES.get(kind, kind)).inc()
        with self._lock:
            self.error_count += 1

    def snapshot(self) -> dict[str, Any]:
        """Rates since the previous snapshot, for the periodic log line."""
        now = time.monotonic()
        with self._lock:
            files, nbytes = self.landed_files, self.landed_bytes
            t0, f0, b0 = self._last
            self._last = (now, files, nbytes)
            dup, errs = self.duplicate_files, self.error_count
        dt = max(now - t0, 1e-9)
        return {
            "files_per_s": round((files - f0) / dt, 1),
            "bytes_per_s": round((nbytes - b0) / dt),
            "files_total": files,
            "bytes_total": nbytes,
            "duplicates_total": dup,
            "errors_total": errs,
        }

    def serve(self, port: int, addr: str = "127.0.0.1") -> MetricsServer:
        """Start the /metrics endpoint in a thread; ``shutdown()`` on the result stops it."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(server, thread)


class MetricsServer:
    """The endpoint's HTTP server and its thread."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    def shutdown(self) -> None:
        """Stop serving, close the listening socket (the port is free at once) and join the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
