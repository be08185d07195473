"""Metrics: the Prometheus endpoint scraped during a real burst, and the ``metrics`` log line."""

from __future__ import annotations

import itertools
import math
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingestor.metrics import ERROR_KINDS, Metrics
from ingestor.rebuild import parse_rfc3339
from tests.conftest import Env, ingestor_cmd
from tests.waiting import wait_for

COUNTERS = ("ingestor_files_total", "ingestor_bytes_total", "ingestor_errors_total", "ingestor_events_total")
GAUGES = (
    "ingestor_queue_depth",
    "ingestor_files_waiting",
    "ingestor_files_in_flight",
    "ingestor_records_retrying",
)
HISTOGRAMS = (
    "ingestor_event_to_landed_seconds",
    "ingestor_ledger_batch_size",
    "ingestor_ledger_commit_seconds",
)


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, Any]:
    """{family name: family} and {(sample name, labels): value} of one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    return {"families": families, "samples": samples, "types": {n: f.type for n, f in families.items()}}


def value(scraped: dict[str, Any], name: str, **labels: str) -> float:
    return float(scraped["samples"].get((name, tuple(sorted(labels.items()))), 0.0))


@pytest.fixture
def port() -> int:
    return free_port()


def test_endpoint_during_a_burst(env: Env, daemon, port: int) -> None:
    d = daemon("--metrics-port", str(port), "--metrics-interval", "0.5", "--batch-size", "64")
    first = scrape(port)
    for name in COUNTERS:
        # prometheus_client names a counter family without its _total suffix
        assert first["types"].get(name.removesuffix("_total")) == "counter", name
    for name in GAUGES:
        assert first["types"].get(name) == "gauge", name
    for name in HISTOGRAMS:
        assert first["types"].get(name) == "histogram", name
    # every error kind is there from the start, at 0: "no errors" is not "no metric"
    for kind in ERROR_KINDS:
        assert ("ingestor_errors_total", (("kind", kind),)) in first["samples"], kind
    assert value(first, "ingestor_files_total", source="default", status="ingested") == 0

    count, size = 1500, 2048
    burst = subprocess.Popen(
        ingestor_cmd(
            "simulate", "burst", "--into", str(env.landing), "--count", str(count), "--size", "2KiB",
            "--subdirs", "3", "--json",
        ),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    seen: list[dict[str, Any]] = []

    def landed_all() -> bool:
        seen.append(scrape(port))
        return value(seen[-1], "ingestor_files_total", source="default", status="ingested") >= count

    try:
        wait_for(landed_all, 40, "the burst to land")
    finally:
        out, _ = burst.communicate(timeout=30)
    assert burst.returncode == 0 and '"files":1500' in out

    landed = [value(s, "ingestor_files_total", source="default", status="ingested") for s in seen]
    assert landed == sorted(landed), "a counter went down"
    assert any(0 < n < count for n in landed), f"never saw the counter mid-burst: {sorted(set(landed))}"
    assert max(value(s, "ingestor_files_waiting", source="default") for s in seen) > 0, (
        "files never waited for stability"
    )
    last = seen[-1]
    assert value(last, "ingestor_files_total", source="default", status="ingested") == count
    assert value(last, "ingestor_bytes_total", source="default") == count * size
    assert value(last, "ingestor_event_to_landed_seconds_count") == count
    assert value(last, "ingestor_event_to_landed_seconds_bucket", le="+Inf") == count
    # stability is 0.3 s: no file is planned sooner than that after its last write. (Not after
    # it was *seen*: a file written into a new subdirectory before its watch is found by the
    # scan that follows, already still for a while, and lands at once.)
    for rec in env.records():
        assert parse_rfc3339(rec.ingested_at) - parse_rfc3339(rec.mtime) >= 300_000_000, rec
    assert value(last, "ingestor_event_to_landed_seconds_sum") >= 0.3 * count
    commits = value(last, "ingestor_ledger_batch_size_count")
    assert commits > 0 and value(last, "ingestor_ledger_commit_seconds_count") == commits
    # a batch of at most 64 files makes 2 ledger requests (plan, manifested: no MOVED
    # commit when nothing changed); group commit puts several requests in one
    # transaction: fewer commits than files
    requests = value(last, "ingestor_ledger_batch_size_sum")
    assert requests >= 2 * math.ceil(count / 64)
    assert commits <= requests and commits < count
    assert value(last, "ingestor_events_total") > 0
    assert sum(value(last, "ingestor_errors_total", kind=k) for k in ERROR_KINDS) == 0

    # the periodic log line: rates and depth, every 0.5 s
    def metric_lines() -> list[dict[str, Any]]:
        return [e for e in d.event("metrics") if e.get("files_total", 0) >= count]

    wait_for(metric_lines, 10, "a metrics line after the burst")
    lines = d.event("metrics")
    for e in lines:
        for key in ("files_per_s", "bytes_per_s", "queue_depth", "waiting", "in_flight", "files_total"):
            assert key in e, (key, e)
    assert max(e["files_per_s"] for e in lines) > 0
    assert max(e["bytes_per_s"] for e in lines) > 0
    assert sum(e["files_per_s"] * 0.5 for e in lines) == pytest.approx(count, rel=0.5)


def test_duplicates_are_counted_apart(env: Env, daemon, port: int) -> None:
    daemon("--metrics-port", str(port))
    res = subprocess.run(
        ingestor_cmd("simulate", "duplicates", "--into", str(env.landing), "--count", "4", "--size", "1KiB"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr

    def done() -> dict[str, Any] | None:
        s = scrape(port)
        n = value(s, "ingestor_files_total", source="default", status="ingested") + value(
            s, "ingestor_files_total", source="default", status="duplicate"
        )
        return s if n >= 4 else None

    s = wait_for(done, 20, "4 files finished")
    assert value(s, "ingestor_files_total", source="default", status="ingested") == 1
    assert value(s, "ingestor_files_total", source="default", status="duplicate") == 3
    assert (
        value(s, "ingestor_bytes_total", source="default") == 1024
    )  # bytes landed: duplicates are not landed data


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    yield Metrics()


def test_error_kinds_are_one_name_each(metrics: Metrics) -> None:
    """The daemon reports bad input as "bad_input" and failures by exception class: one label each."""
    metrics.error("bad_input")
    metrics.error("badinput")  # BadInput.kind
    metrics.error("retryable")
    metrics.error("something_new")
    kinds = {
        s.labels["kind"]: s.value
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "ingestor_errors_total"
    }
    assert kinds["bad_input"] == 2
    assert "badinput" not in kinds
    assert kinds["retryable"] == 1
    assert kinds["something_new"] == 1
    assert metrics.snapshot()["errors_total"] == 4


def test_serve_stops_and_frees_the_port(metrics: Metrics, port: int) -> None:
    server = metrics.serve(port)
    try:
        assert (
            "ingestor_files_total"
            in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
    finally:
        server.shutdown()
    # the listening socket is closed, not left to the garbage collector: the port can be bound again
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        # SO_REUSEADDR: the served connection may sit in TIME_WAIT; a listener still open refuses the bind
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_metrics_line_keeps_its_interval_under_a_watchdog(env: Env, daemon) -> None:
    # watchdog ticks every 0.4 s; metrics every 0.6 s would need ticks at 0.6, 1.2, ...
    d = daemon("--metrics-interval", "0.6", environ={"WATCHDOG_USEC": "800000"})
    wait_for(lambda: len(d.event("metrics")) >= 4, 10, "four metrics lines")
    stamps = [datetime.fromisoformat(e["ts"]).timestamp() for e in d.event("metrics")]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) < 0.75, gaps
