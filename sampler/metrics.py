"""The sampler's metrics: Prometheus series (``--metrics-port``) and the ``sampler_metrics`` log line.

One registry per run (nothing happens at import). The run loop alone
updates them; the endpoint's thread only reads (prometheus-client locks each
value, and the lag-seconds function reads one float per source). Every
series has a ``source`` label: the source's name with ``--config``,
``default`` with ``--manifests`` (the ingestor's name for a plain landing
dir). The lines of a manifests dir that sources share count under their
names joined by commas (``records``, ``invalid_line``, ``rejected``,
``stream``, lag); a sample counts under its own source.

- ``sampler_records_total{source}``: manifest lines read;
- ``sampler_samples_total{source,format,outcome}``: files sampled, by the
  format found; ``outcome`` is ``sample`` (a sample written) or ``error``
  (an error ``.meta.json`` written instead);
- ``sampler_skipped_total{source,reason}``: records not sampled:
  ``duplicate`` (not ``ingested``) or ``current`` (its sample is current);
- ``sampler_errors_total{source,kind}``: problems, by kind: a file's
  ``ErrorKind`` (``missing``, ``malformed``, ``hostile``, ``too_large``,
  ``timeout``...), ``invalid_line`` (not a manifest record), ``rejected``
  (a path or route refused), ``stream`` (a manifests dir set aside). Every
  kind is exported from the start at 0, so "no errors" is told from "no
  metric";
- ``sampler_lag_bytes{source}``: manifest bytes written and not processed
  yet, as last seen;
- ``sampler_lag_seconds{source}``: while lines are pending, the seconds
  since the last line processed was written (its ``ingested_at``): the
  oldest such among the source's manifests dirs; with none processed yet
  in this run, since the run started (a lower bound); 0 when caught up;
- ``sampler_manifests_dirs{state}``: manifests dirs followed (``ok``) and
  set aside (``failed``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ingestor.metrics import MetricsServer
from sampler.limits import ErrorKind

OTHER_ERRORS = ("invalid_line", "rejected", "stream")
ERROR_KINDS = (*(str(k) for k in ErrorKind), *OTHER_ERRORS)


def _ns(rfc3339: str) -> int | None:
    try:
        return int(datetime.fromisoformat(rfc3339).timestamp() * 1e9)
    except (TypeError, ValueError):
        return None


class Metrics:
    """Counters since start. Owned by the run loop (the endpoint only reads)."""

    def __init__(self, sources: Iterable[str], *, clock: Any = time.time_ns) -> None:
        r = self.registry = CollectorRegistry()
        self.records = Counter("sampler_records_total", "Manifest lines read", ["source"], registry=r)
        self.samples = Counter(
            "sampler_samples_total",
            "Files sampled, by format; outcome sample or error (.meta.json)",
            ["source", "format", "outcome"],
            registry=r,
        )
        self.skipped = Counter(
            "sampler_skipped_total",
            "Records not sampled: duplicate or current",
            ["source", "reason"],
            registry=r,
        )
        self.errors = Counter("sampler_errors_total", "Problems met, by kind", ["source", "kind"], registry=r)
        self.lag_bytes = Gauge(
            "sampler_lag_bytes", "Manifest bytes not processed yet", ["source"], registry=r
        )
        self.lag_seconds = Gauge(
            "sampler_lag_seconds",
            "While lines are pending: seconds since the last line processed was written",
            ["source"],
            registry=r,
        )
        self.dirs = Gauge(
            "sampler_manifests_dirs", "Manifests dirs followed, by state", ["state"], registry=r
        )
        self.clock = clock
        self.started_ns = clock()
        self._stream_lag: dict[object, tuple[str, int, int | None]] = {}  # stream -> (source, bytes, last ns)
        self._bytes: dict[str, int] = {}
        self._behind_since: dict[str, int | None] = {}  # source -> ns, read by the endpoint's thread
        self._unsettled: set[str] = set()
        self.records_read = self.samples_written = self.skipped_total = self.error_total = 0
        for source in sources:
            self.add_source(source)

    def add_source(self, source: str) -> None:
        if source in self._bytes:
            return
        self._bytes[source] = 0
        self._behind_since[source] = None
        for kind in ERROR_KINDS:
            self.errors.labels(source, kind)
        self.records.labels(source)
        self.lag_bytes.labels(source).set(0)
        self.lag_seconds.labels(source).set_function(functools.partial(self._lag_seconds, source))

    def _lag_seconds(self, source: str) -> float:
        since = self._behind_since.get(source)
        return 0.0 if since is None else max(0.0, (self.clock() - since) / 1e9)

    # ------------------------------------------------------------- events

    def record(self, source: str) -> None:
        self.records.labels(source).inc()
        self.records_read += 1

    def sampled(self, source: str, fmt: str, error_kind: str | None) -> None:
        self.samples.labels(source, fmt, "sample" if error_kind is None else "error").inc()
        if error_kind is None:
            self.samples_written += 1
        else:
            self.error(source, error_kind)

    def skip(self, source: str, reason: str) -> None:
        self.skipped.labels(source, reason).inc()
        self.skipped_total += 1

    def error(self, source: str, kind: str) -> None:
        self.errors.labels(source, kind).inc()
        self.error_total += 1

    def lag(self, stream: object, source: str, pending: int, last_ingested_at: str | None) -> None:
        """A stream's pending bytes and the ``ingested_at`` of its last line processed (``settle`` after)."""
        self.add_source(source)
        old = self._stream_lag.get(stream)
        last = _ns(last_ingested_at) if last_ingested_at else (old[2] if old else None)
        self._stream_lag[stream] = (source, pending, last)
        if old is not None:  # its label may have changed: a source began sharing its dir
            self._bytes[old[0]] -= old[1]
            self.lag_bytes.labels(old[0]).set(self._bytes[old[0]])
            self._unsettled.add(old[0])
        self._bytes[source] += pending
        self.lag_bytes.labels(source).set(self._bytes[source])
        self._unsettled.add(source)

    def settle(self) -> None:
        """Recompute the lag seconds of the sources whose streams moved (one walk over the streams)."""
        if not self._unsettled:
            return
        behind: dict[str, int] = {}
        for source, pending, last in self._stream_lag.values():
            if source in self._unsettled and pending > 0:
                since = last if last is not None else self.started_ns
                behind[source] = min(behind.get(source, since), since)
        for source in self._unsettled:
            self._behind_since[source] = behind.get(source)
        self._unsettled.clear()

    def dirs_state(self, ok: int, failed: int) -> None:
        self.dirs.labels("ok").set(ok)
        self.dirs.labels("failed").set(failed)

    def as_dict(self) -> dict[str, int]:
        """The ``sampler_metrics`` log line's counters."""
        return {
            "records_read": self.records_read,
            "samples_written": self.samples_written,
            "skipped": self.skipped_total,
            "errors": self.error_total,
            "lag_bytes": sum(self._bytes.values()),
        }

    def serve(self, port: int, addr: str = "127.0.0.1") -> MetricsServer:
        """Start the /metrics endpoint in a thread; ``shutdown()`` on the result stops it."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(server, thread)
