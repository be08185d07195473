"""The sampler's Prometheus endpoint (``--metrics-port``): counters per source, errors by kind, lag."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sampler.metrics import ERROR_KINDS, Metrics
from tests.sampler_helpers import Layout, append_lines, current_rel, events, hostile_files, named, record
from tests.test_sampler_sources import Sites, land
from tests.waiting import wait_for


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape_or_none(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        return scrape(port)
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_config_mode_counts_per_source(tmp_path: Path, stop: list[subprocess.Popen[bytes]]) -> None:
    sites = Sites(tmp_path)
    sites.write_config()
    port = free_port()
    hour_ago = time.time_ns() - 3600 * 1_000_000_000
    sites.land_tree("sp", "gics", "1.0", b"a,b\n1,2\n")
    orders = sites.literal("acme/orders")
    land(orders["warehouse"], "d/o.csv", b"o\n1\n", orders["manifests"], source="acme-orders")
    data, _ = hostile_files()["bomb.csv.zst"]
    land(orders["warehouse"], "d/bomb.csv.zst", data, orders["manifests"], source="acme-orders")
    append_lines(orders["manifests"], current_rel(), b"not a record\n")
    old_file = orders["warehouse"] / "d" / "old.csv"
    old_file.write_bytes(b"o\n2\n")
    old_line = record(old_file, ns=hour_ago).to_json()  # written an hour ago, by its ingested_at
    append_lines(orders["manifests"], current_rel(), old_line[:25])  # a line still being written

    log = sites.root / "m.log"
    with open(log, "wb") as fh:
        cmd = [sys.executable, "-m", "sampler.cli", "run", "--config", str(sites.config), "--follow",
               "--metrics-port", str(port), "--poll-interval", "600"]  # fmt: skip
        proc = subprocess.Popen(cmd, stderr=fh)
        stop.append(proc)

    def done() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        got = _scrape_or_none(port)
        if not got or value(got, "sampler_records_total", source="acme-orders") < 3:
            return None
        # the lag is set when the dir's lines are done (the torn one left): wait for that too
        return got if value(got, "sampler_lag_bytes", source="acme-orders") == 25 else None

    got = wait_for(done, 30, "the orders lines counted")
    assert value(got, "sampler_samples_total", source="tree", format="csv", outcome="sample") == 1
    assert value(got, "sampler_samples_total", source="acme-orders", format="csv", outcome="sample") == 1
    assert value(got, "sampler_samples_total", source="acme-orders", format="zstd", outcome="error") == 1
    assert value(got, "sampler_errors_total", source="acme-orders", kind="too_large") == 1
    assert value(got, "sampler_errors_total", source="acme-orders", kind="invalid_line") == 1
    for source in ("tree", "acme-orders", "beta-events"):
        for kind in ERROR_KINDS:  # every kind exported from the start
            assert ("sampler_errors_total", (("kind", kind), ("source", source))) in got
    assert value(got, "sampler_errors_total", source="tree", kind="too_large") == 0
    assert value(got, "sampler_lag_bytes", source="acme-orders") == 25  # the torn line
    assert value(got, "sampler_lag_bytes", source="tree") == 0
    assert value(got, "sampler_lag_seconds", source="tree") == 0
    assert value(got, "sampler_manifests_dirs", state="ok") == 2
    assert value(got, "sampler_manifests_dirs", state="failed") == 0

    # the torn line completed: the last line processed was written an hour ago, and one is pending
    append_lines(orders["manifests"], current_rel(), old_line[25:] + b'{"torn": ')

    def caught_up() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        got = _scrape_or_none(port)
        return got if got and value(got, "sampler_lag_bytes", source="acme-orders") == 9 else None

    got = wait_for(caught_up, 30, "the hour-old line processed")
    assert value(got, "sampler_samples_total", source="acme-orders", format="csv", outcome="sample") == 2
    assert value(got, "sampler_lag_seconds", source="acme-orders") >= 3500

    proc.terminate()
    assert proc.wait(30) == 0
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(port)  # the port is closed with the process
    assert named(events(log.read_bytes()), "sampler_stopped")


def test_plain_mode_source_is_default_and_a_taken_port_exits_1(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    lay.land("d/a.csv", b"h\n1\n")
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            lay.cli("--follow", "--metrics-port", str(port)), capture_output=True, timeout=60
        )
    assert result.returncode == 1
    assert "Address already in use" in named(events(result.stderr), "sampler_failed")[0]["error"]

    port = free_port()
    proc = subprocess.Popen(lay.cli("--follow", "--metrics-port", str(port)), stderr=subprocess.DEVNULL)
    try:
        got = wait_for(
            lambda: (
                (g := _scrape_or_none(port))
                and value(g, "sampler_samples_total", source="default", format="csv", outcome="sample") == 1
                and g
            ),
            30,
            "the plain sample counted",
        )
        assert value(got, "sampler_records_total", source="default") == 1
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_metrics_unit_lag_and_totals() -> None:
    now = [10_000_000_000_000]
    m = Metrics(["a"], clock=lambda: now[0])
    m.record("a")
    m.sampled("a", "csv", None)
    m.sampled("a", "json", "malformed")
    m.skip("a", "duplicate")
    s1, s2 = object(), object()
    m.lag(s1, "a", 100, "1970-01-01T02:46:30Z")  # 9990 s
    m.lag(s2, "a", 0, None)
    m.settle()
    assert m.as_dict() == {
        "records_read": 1,
        "samples_written": 1,
        "skipped": 1,
        "errors": 1,
        "lag_bytes": 100,
    }
    assert m._lag_seconds("a") == pytest.approx(10.0)
    m.lag(s1, "a", 0, None)
    m.settle()
    assert m._lag_seconds("a") == 0.0 and m.as_dict()["lag_bytes"] == 0
    m.lag(s2, "b", 5, None)  # pending, none processed: since the start
    m.settle()
    now[0] += 2_000_000_000
    assert m._lag_seconds("b") == pytest.approx(2.0)
    assert m.as_dict()["lag_bytes"] == 5  # s2's bytes moved from "a" to "b"
    assert m.lag_bytes.labels("a")._value.get() == 0
