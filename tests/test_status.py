"""``ingestor status``: a read-only report of the ledger, beside a running daemon or not."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ulid

from ingestor import status as status_mod
from ingestor.layout import DEFAULT_LAYOUT
from ingestor.ledger import Ledger, MovedUpdate
from ingestor.ledger_db import connect
from ingestor.plan import PlanPolicy
from ingestor.records import Candidate, Hashed, Identity, Record
from ingestor.settings import Dedup, OnDuplicate
from simulate import traffic
from tests.conftest import Env, run_ingestor
from tests.test_metrics import free_port
from tests.waiting import wait_for

_inodes = itertools.count(5000)


def status_json(*args: str) -> dict[str, Any]:
    res = run_ingestor("status", *args, "--json")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout
    out = json.loads(lines[0])
    assert isinstance(out, dict)
    return out


# ----------------------------------------------------------------- a real daemon's ledger


def test_status_beside_a_running_daemon(env: Env, daemon) -> None:
    port = free_port()
    daemon("--metrics-port", str(port))
    files = traffic.rename_tmp(env.landing, count=5, size=1000)
    dups = traffic.duplicates(env.landing, count=3, size=500)
    wait_for(lambda: len(env.records()) == 8, 20, "8 manifest lines")

    out = status_json("--state-path", str(env.state), "--metrics-port", str(port))
    assert out["ledger"] == str(env.state) and out["landing"] == str(env.landing)
    assert out["records"] == 8
    assert out["by_state"] == {"hashed": 0, "moved": 0, "manifested": 8, "abandoned": 0}
    assert out["ingested"] == 6 and out["duplicates"] == 2 and out["open"] == 0
    assert out["errors"] == {"abandoned": 0, "by_note": []}
    assert out["oldest_open"] is None
    want_bytes = files.bytes + 500
    assert out["landed"]["last_minute"] == {"files": 6, "bytes": want_bytes}
    assert out["landed"]["last_hour"] == {"files": 6, "bytes": want_bytes}
    last = out["last_landed"]
    newest = max((r for r in env.ingested()), key=lambda r: r.id)
    assert last["id"] == newest.id and last["path"] == newest.source_path
    assert last["warehouse_path"] == newest.warehouse_path and last["sha256"] == newest.sha256
    assert 0 <= last["age_seconds"] < 60
    assert "not in the ledger" in out["waiting"]
    d = out["daemon"]
    assert d["url"] == f"http://127.0.0.1:{port}/metrics"
    assert d["files_waiting"] == 0 and d["queue_depth"] == 0 and d["files_in_flight"] == 0
    assert d["errors_by_kind"]["bad_input"] == 0
    assert {r.source for r in env.records()} == {str(p) for p in files.paths + dups.paths}

    # a file still being written waits for stability: it is not in the ledger, only the daemon knows it
    src = env.root / "upload.bin"
    src.write_bytes(traffic.content("upload", 20_000))
    stop = threading.Event()
    writer = threading.Thread(
        target=traffic.slow_copy,
        args=(src, env.landing),
        kwargs={"chunk": 10, "interval": 0.05, "sleep": lambda s: stop.wait(s)},
    )
    writer.start()
    try:

        def one_waiting() -> dict[str, Any] | None:
            o = status_json("--state-path", str(env.state), "--metrics-port", str(port))
            return o if o["daemon"]["files_waiting"] == 1 else None

        out = wait_for(one_waiting, 15, "the daemon to report one file waiting")
        assert out["records"] == 8 and out["open"] == 0
        res = run_ingestor("status", "--state-path", str(env.state), "--metrics-port", str(port))
        assert res.returncode == 0, res.stderr
        assert re.search(r"^daemon +1 waiting for stability or a sidecar, 0 queued", res.stdout, re.M), (
            res.stdout
        )
    finally:
        stop.set()
        writer.join()
    wait_for(lambda: len(env.records()) == 9, 20, "the upload to land once written")
    assert status_json("--state-path", str(env.state))["ingested"] == 7


def test_status_of_a_stopped_daemon_and_by_input(env: Env, daemon) -> None:
    d = daemon()
    traffic.rename_tmp(env.landing, count=3, size=100)
    wait_for(lambda: len(env.ingested()) == 3, 20, "3 landed")
    assert d.stop() == 0
    wal = Path(str(env.state) + "-wal")

    def stamps() -> tuple[int, int]:
        return env.state.stat().st_mtime_ns, env.state.stat().st_size

    # a clean stop leaves everything in the main file and no WAL behind
    assert not wal.exists() or wal.stat().st_size == 0
    before = stamps()
    # --input finds the ledger beside the landing dir, as `run` does
    out = status_json("--input", str(env.landing))
    assert out["records"] == 3 and out["ingested"] == 3
    assert "daemon" not in out
    res = run_ingestor("status", "--state-path", str(env.state), "--metrics-port", str(free_port()))
    assert res.returncode == 0
    assert re.search(r"^waiting +unknown: cannot read http://127\.0\.0\.1:\d+/metrics", res.stdout, re.M)
    # read-only: the ledger did not change, nothing was written to a WAL (SQLite's readers
    # create an empty one, and its index, when the writer left none)
    assert stamps() == before
    assert not wal.exists() or wal.stat().st_size == 0


def test_human_report(env: Env, daemon) -> None:
    daemon()
    traffic.rename_tmp(env.landing, count=2, size=2048)
    wait_for(lambda: len(env.ingested()) == 2, 20, "2 landed")
    res = run_ingestor("status", "--state-path", str(env.state))
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert re.search(
        r"^records +2: 2 manifested \(2 ingested, 0 duplicates\), 0 abandoned, 0 open", text, re.M
    )
    assert re.search(r"^landed +last minute: 2 files, 4\.0 KiB; last hour: 2 files, 4\.0 KiB$", text, re.M)
    assert re.search(r"^last landed +\S+Z \(\d+ s ago\) " + re.escape(str(env.landing)), text, re.M)
    assert re.search(r"^oldest open +none", text, re.M)
    assert re.search(r"^waiting +files waiting for stability or a sidecar are not in the ledger", text, re.M)
    assert re.search(r"^errors +none", text, re.M)


# ----------------------------------------------------------------- no ledger


@pytest.mark.parametrize("what", ["missing", "directory", "garbage", "other-sqlite"])
def test_no_ledger_is_one_line_exit_2(tmp_path: Path, what: str) -> None:
    path = tmp_path / "ledger.sqlite"
    if what == "directory":
        path.mkdir()
    elif what == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    elif what == "other-sqlite":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t(x)")
        conn.close()
    res = run_ingestor("status", "--state-path", str(path))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("ingestor: error:") and str(path) in lines[0]
    assert res.stdout == ""
    if what == "missing":
        assert not path.exists()  # never created by a read


def test_status_needs_a_ledger_path() -> None:
    res = run_ingestor("status")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "ingestor: error: status needs --state-path FILE (or --input / --config)"
    ]


# ----------------------------------------------------------------- open and abandoned rows, windows


def _hashed(rel: str, content: str) -> Hashed:
    ident = Identity(7, next(_inodes), len(content), 1_700_000_000_000_000_000)
    return Hashed(Candidate(rel, ident.size, 1.0), ident, hashlib.sha256(content.encode()).hexdigest(), None)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "state" / "ledger.sqlite", "01TESTOWNER")
    led.open({"landing": "/data/landing", "warehouse": "/data/warehouse", "manifests": "/data/manifests"})
    yield led
    led.close()


def _plan(ledger: Ledger, rel: str, content: str) -> Record:
    policy = PlanPolicy(DEFAULT_LAYOUT, Dedup.CONTENT, OnDuplicate.QUARANTINE, Path("/nonexistent-warehouse"))
    (rec,) = ledger.plan([_hashed(rel, content)], policy)
    assert isinstance(rec, Record)
    return rec


def test_open_and_abandoned_rows(ledger: Ledger) -> None:
    done = [_plan(ledger, f"done/{i}.csv", f"done {i}") for i in range(3)]
    ledger.moved([MovedUpdate(r.id, 0) for r in done])
    ledger.manifested([r.id for r in done])
    oldest = _plan(ledger, "waiting/first.csv", "first")
    moved = _plan(ledger, "waiting/second.csv", "second")
    ledger.moved([MovedUpdate(moved.id, 0)])
    gone = [_plan(ledger, f"gone/{i}.csv", f"gone {i}") for i in range(3)]
    ledger.abandon(gone[0].id, "vanished before it moved")
    ledger.abandon(gone[1].id, "vanished before it moved")
    ledger.abandon(gone[2].id, "changed before it moved")

    out = status_mod.read_ledger(ledger.path)
    assert out["records"] == 8
    assert out["by_state"] == {"hashed": 1, "moved": 1, "manifested": 3, "abandoned": 3}
    assert out["open"] == 2 and out["ingested"] == 3 and out["duplicates"] == 0
    assert out["oldest_open"]["id"] == oldest.id
    assert out["oldest_open"]["state"] == "hashed"
    assert out["oldest_open"]["path"] == "/data/landing/waiting/first.csv"
    assert out["errors"]["abandoned"] == 3
    assert out["errors"]["by_note"] == [
        {
            "note": "vanished before it moved",
            "count": 2,
            "latest_path": "/data/landing/gone/1.csv",
            "latest_at": out["errors"]["by_note"][0]["latest_at"],
        },
        {
            "note": "changed before it moved",
            "count": 1,
            "latest_path": "/data/landing/gone/2.csv",
            "latest_at": out["errors"]["by_note"][1]["latest_at"],
        },
    ]
    assert out["last_landed"]["id"] == done[-1].id
    assert out["last_landed"]["warehouse_path"].startswith("/data/warehouse/ingest_date=")
    assert out["landed"]["last_minute"]["files"] == 3

    text = status_mod.render(out)
    assert re.search(r"^oldest open +\S+Z \(\d+ s ago\) hashed /data/landing/waiting/first\.csv$", text, re.M)
    assert re.search(
        r"^errors +3 abandoned:\n +2 vanished before it moved \(latest \S+ /data/landing/gone/1\.csv\)",
        text,
        re.M,
    )


def test_windows_are_by_landing_time(ledger: Ledger) -> None:
    recs = [_plan(ledger, f"f{i}.csv", f"content {i}") for i in range(4)]
    ledger.moved([MovedUpdate(r.id, 0) for r in recs])
    ledger.manifested([r.id for r in recs])
    now = time.time_ns()
    size = sum(r.identity.size for r in recs)
    assert status_mod.read_ledger(ledger.path, now_ns=now)["landed"]["last_hour"] == {
        "files": 4,
        "bytes": size,
    }
    later = status_mod.read_ledger(ledger.path, now_ns=now + 61 * 10**9)
    assert later["landed"]["last_minute"] == {"files": 0, "bytes": 0}
    assert later["landed"]["last_hour"] == {"files": 4, "bytes": size}
    much_later = status_mod.read_ledger(ledger.path, now_ns=now + 3601 * 10**9)
    assert much_later["landed"]["last_hour"] == {"files": 0, "bytes": 0}
    assert much_later["last_landed"]["age_seconds"] >= 3600
    assert much_later["records"] == 4


def test_an_empty_ledger(ledger: Ledger) -> None:
    out = status_mod.read_ledger(ledger.path)
    assert out["records"] == 0 and out["last_landed"] is None and out["oldest_open"] is None
    assert "last landed  none" in status_mod.render(out)


def test_no_query_scans_the_table(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast on a million rows: every query uses an index (the duplicates/abandoned count
    uses the partial index files_problem)."""
    recs = [_plan(ledger, f"f{i}.csv", f"content {i}") for i in range(3)]
    ledger.manifested([r.id for r in recs])
    statements: list[str] = []

    def traced(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
        conn = connect(path, readonly=readonly)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(status_mod, "connect", traced)
    status_mod.read_ledger(ledger.path)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) >= 7
    conn = sqlite3.connect(f"file:{ledger.path}?mode=ro", uri=True)
    try:
        scans = []
        for sql in selects:
            plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            if re.search(r"\bSCAN files\b(?! USING)", plan):
                scans.append(sql)
    finally:
        conn.close()
    assert scans == [], scans


def test_min_ulid_is_a_time_bound() -> None:
    ns = 1_790_000_000_123_456_789
    low = status_mod._min_ulid(ns)
    assert len(low) == 26 and low.endswith("0" * 16)
    same_ms = str(ulid.ULID.from_timestamp(ns / 1e9))
    assert same_ms >= low
    assert str(ulid.ULID.from_timestamp((ns - 1_000_000) / 1e9)) < low
