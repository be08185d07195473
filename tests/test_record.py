"""The record of what happened (issue 14): rejected files on record once, runs, run ids, detected_at.

Real daemons and replays on directories under ``tmp_path``; the ledger is
read with SQLite read-only, the manifests as a downstream reader would.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import ulid

from ingestor import runs
from ingestor.rebuild import parse_rfc3339
from tests import invariants
from tests.conftest import Env, ingestor_cmd, run_ingestor
from tests.waiting import wait_for


def query(env: Env, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{env.state}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def runs_of(env: Env) -> list[dict[str, Any]]:
    cols = ("run_id", "kind", "host", "status", "landed", "duplicates", "rejected", "errors", "error_summary")
    try:
        rows = query(env, f"SELECT {', '.join(cols)}, finished_ns FROM runs ORDER BY started_ns")
    except sqlite3.OperationalError:  # the ledger is being made: no table yet
        return []
    return [{**dict(zip(cols, r[:-1], strict=True)), "finished": r[-1] is not None} for r in rows]


def test_a_fifo_is_rejected_once_on_record_then_lands_once_replaced_by_a_file(env: Env, daemon: Any) -> None:
    fifo = env.landing / "orders.csv"
    os.mkfifo(fifo)
    link = env.landing / "passwd.csv"
    link.symlink_to("/etc/passwd")
    d = daemon()
    wait_for(lambda: len(env.rejected()) == 2, 30, "the FIFO and the symlink on record")
    by_name = {Path(r.source).name: r for r in env.rejected()}
    assert by_name["orders.csv"].reason == "a FIFO: never opened"
    assert by_name["passwd.csv"].reason == "a symlink: never followed"
    assert all(r.hint and r.sha256 is None and r.warehouse is None for r in by_name.values())
    assert by_name["orders.csv"].inode == os.lstat(fifo).st_ino
    assert d.stop() == 0
    # a restart scans them again: still on record once each
    d = daemon()
    wait_for(lambda: d.event("scan_done"), 30, "the first scan")
    assert d.event("file_rejected")  # said again in the log...
    assert len(env.rejected()) == 2  # ...not recorded again
    # fixed: the FIFO replaced by a regular file of the same name lands as any file
    fifo.unlink()
    fifo.write_bytes(b"id,qty\n1,2\n")
    wait_for(lambda: len(env.ingested()) == 1, 30, "the fixed file to land")
    assert len(env.rejected()) == 2
    assert Path(env.ingested()[0].source).name == "orders.csv"
    assert query(env, "SELECT count(*), sum(written) FROM rejections") == [(2, 2)]
    res = run_ingestor("status", "--state-path", str(env.state), "--json", cwd=env.root)
    rejected = orjson.loads(res.stdout)["rejected"]
    assert rejected["files"] == 2
    assert {r["reason"] for r in rejected["by_reason"]} == {
        "a FIFO: never opened",
        "a symlink: never followed",
    }
    text = run_ingestor("status", "--state-path", str(env.state), cwd=env.root).stdout
    assert "rejected     2 files that will not land as they are:" in text
    # verify knows them: lines without a warehouse file or a record, not problems
    res = run_ingestor("verify", *env.args(), "--json", cwd=env.root)
    assert res.returncode == 0, res.stdout
    checked = orjson.loads(res.stdout)["checked"]
    assert (checked["lines"], checked["rejected"], checked["records"]) == (3, 2, 1)
    link.unlink()
    invariants.check(env, {env.ingested()[0].sha256: 11})


def test_kill_9_leaves_a_run_that_the_next_start_marks_failure(env: Env, daemon: Any) -> None:
    d1 = daemon()
    (env.landing / "a.csv").write_bytes(b"a\n")
    wait_for(lambda: len(env.ingested()) == 1, 30, "a landing")
    wait_for(lambda: invariants.open_records(env) == 0, 10, "its record final")  # not the next run's
    first = runs_of(env)
    assert [(r["kind"], r["status"], r["finished"]) for r in first] == [("daemon", "running", False)]
    d1.kill()
    assert runs_of(env)[0]["status"] == "running"  # nothing could say otherwise
    d2 = daemon()
    wait_for(lambda: len(runs_of(env)) == 2 and runs_of(env)[0]["status"] == "failure", 30, "the dead run")
    old, new = runs_of(env)
    assert (old["run_id"], old["error_summary"], old["finished"]) == (first[0]["run_id"], runs.DIED, True)
    assert (new["status"], new["finished"]) == ("running", False)
    assert d2.event("run_ended_unclean")[0]["dead_run_id"] == old["run_id"]
    (env.landing / "b.csv").write_bytes(b"b\n")
    (env.landing / "b-again.csv").write_bytes(b"b\n")
    wait_for(lambda: len(env.records()) == 3, 30, "b and its duplicate")
    assert d2.stop() == 0
    done = runs_of(env)[1]
    assert (done["status"], done["landed"], done["duplicates"], done["error_summary"]) == (
        "success",
        1,
        1,
        None,
    )
    assert done["finished"] and done["host"] == socket.gethostname()


def test_every_log_line_and_manifest_line_of_a_run_carries_its_run_id(env: Env, daemon: Any) -> None:
    d = daemon()
    started = time.time()
    (env.landing / "x.csv").write_bytes(b"x\n")
    wait_for(lambda: len(env.ingested()) == 1, 30, "a landing")
    assert d.stop() == 0
    (run_id,) = {r["run_id"] for r in runs_of(env)}
    entries = d.logs()
    assert entries and {e.get("run_id") for e in entries} == {run_id}, [
        e for e in entries if "run_id" not in e
    ][:3]
    rec = env.ingested()[0]
    assert (rec.run_id, rec.host) == (run_id, socket.gethostname())
    assert (rec.source_relpath, rec.warehouse_relpath) == (
        "x.csv",
        os.path.relpath(rec.warehouse, env.warehouse),
    )
    # the event saw it when it was written, before the stability window ended and it landed
    assert rec.detected_at is not None
    detected, ingested = parse_rfc3339(rec.detected_at), parse_rfc3339(rec.ingested_at)
    assert started - 1 <= detected / 1e9 <= ingested / 1e9
    assert ingested - detected >= 0.3e9  # --stability-seconds 0.3


def test_a_replay_is_a_run_whose_failure_says_why(env: Env) -> None:
    (env.landing / "good.csv").write_bytes(b"good\n")
    (env.landing / "good-again.csv").write_bytes(b"good\n")
    os.mkfifo(env.landing / "pipe.csv")
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "0", cwd=env.root)
    assert res.returncode == 1  # the FIFO could not be landed
    (run,) = runs_of(env)
    assert (run["kind"], run["status"], run["landed"], run["duplicates"], run["rejected"]) == (
        "replay", "failure", 1, 1, 1,
    )  # fmt: skip
    assert run["error_summary"] == "1 file could not be landed"
    (env.landing / "pipe.csv").unlink()
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "0", cwd=env.root)
    assert res.returncode == 0, res.stderr
    assert [(r["status"], r["error_summary"]) for r in runs_of(env)][1] == ("success", None)
    assert len(env.rejected()) == 1


def test_a_rejection_committed_by_a_process_that_died_before_its_line_gets_the_line(env: Env) -> None:
    (env.landing / "ok.csv").write_bytes(b"ok\n")
    assert run_ingestor("replay", *env.args(), "--stability-seconds", "0", cwd=env.root).returncode == 0
    # a process that committed its row and died before the line: its owner lock file is free
    dead = str(ulid.ULID())
    (env.state.parent / "owners" / f"{dead}.lock").write_bytes(b"")
    conn = sqlite3.connect(env.state)
    manifest_rel = "2026/01/02/03/manifest.jsonl"
    conn.execute(
        "INSERT INTO rejections(id, site, source_rel, inode, device, size, mtime_ns, reason, hint, at_ns, "
        "manifest_rel, manifest_floor, owner) VALUES ('01DEAD', 0, ?, -1, -1, -1, -1, 'a FIFO: never opened', "
        "'deliver a regular file', 1767322800000000000, ?, 0, ?)",
        (b"gone/pipe.csv", manifest_rel, dead),
    )
    conn.commit()
    conn.close()
    for _ in range(2):  # recovery writes it once; the next start finds nothing to do
        assert run_ingestor("replay", *env.args(), "--stability-seconds", "0", cwd=env.root).returncode == 0
    lines = (env.manifests / manifest_rel).read_bytes().splitlines()
    assert len(lines) == 1 and b'"01DEAD"' in lines[0] and b'"rejected"' in lines[0]
    assert [r.source_relpath for r in env.rejected()] == ["gone/pipe.csv"]
    assert query(env, "SELECT written FROM rejections WHERE id='01DEAD'") == [(1,)]


def test_a_replay_killed_while_running_is_marked_by_the_daemon_that_starts_next(
    env: Env, daemon: Any
) -> None:
    import subprocess

    for i in range(3000):
        (env.landing / f"f{i}.csv").write_bytes(f"{i}\n".encode())
    proc = subprocess.Popen(
        ingestor_cmd("replay", *env.args(), "--stability-seconds", "0"),
        cwd=env.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            lambda: env.state.exists() and any(r["kind"] == "replay" for r in runs_of(env)), 30, "the replay"
        )
    finally:  # never a replay left running behind the test
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    daemon()
    wait_for(lambda: runs_of(env)[0]["status"] == "failure", 30, "the dead replay marked")
    wait_for(lambda: len(env.ingested()) == 3000, 60, "every file")
    assert runs_of(env)[0]["error_summary"] == runs.DIED
