"""``ingestor lookup`` and ``ingestor runs``: the record of a file, and the runs (issue 14).

Real ledgers made by real runs of ``ingestor replay`` and the daemon on
directories under ``tmp_path``; the commands run as processes, as an
operator runs them, and their answers are checked against the manifests.
"""

from __future__ import annotations

import base64
import os
import socket
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestor import lookup as lookup_mod
from ingestor.rejections import VANISHED
from tests.conftest import Env, ingestor_cmd, run_ingestor
from tests.waiting import wait_for

REPLAY = ("--stability-seconds", "0")
QUERY_KEYS = {"query", "query_b64", "kind", "resolved_path", "resolved_path_b64", "inside", "truncated",
              "matches", "note"}  # fmt: skip
MATCH_KEYS = {
    "id", "state", "ledger_state", "status", "action", "source", "dataset", "landing_dir", "site",
    "source_path", "source_path_b64", "source_relpath", "warehouse_path", "warehouse_path_b64",
    "warehouse_relpath", "sha256", "size", "mtime", "device", "inode", "detected_at", "ingested_at",
    "duplicate_of", "duplicated_by", "duplicated_by_count", "note", "reason", "hint", "manifest", "run",
}  # fmt: skip


def replay(env: Env, *extra: str, faults: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "INGESTOR_FAULTS": faults} if faults else None
    return subprocess.run(
        ingestor_cmd("replay", *env.args(), *REPLAY, *extra),
        capture_output=True, text=True, timeout=120, cwd=env.root, env=environ,
    )  # fmt: skip


def lookup(cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = run_ingestor("lookup", *args, "--json", cwd=cwd)
    assert res.returncode in (0, 1), res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout + res.stderr
    out = orjson.loads(lines[0])
    assert isinstance(out, dict)
    return res.returncode, out


def only_match(answer: dict[str, Any]) -> dict[str, Any]:
    assert len(answer["matches"]) == 1, answer
    match: dict[str, Any] = answer["matches"][0]
    return match


def line_at(env: Env, match: dict[str, Any]) -> dict[str, Any]:
    """The manifest line at the match's offset, read as a downstream reader would."""
    mf = match["manifest"]
    assert mf["found"] and mf["path"] == str(env.manifests / mf["relpath"]), mf
    with open(mf["path"], "rb") as fh:
        fh.seek(mf["offset"])
        line: dict[str, Any] = orjson.loads(fh.readline())
    return line


# ----------------------------------------------------------------- every kind of QUERY


def test_every_kind_of_query_on_a_ledger_of_every_kind_of_record(env: Env) -> None:
    # a replay killed once its plan is committed leaves a record in flight...
    (env.landing / "gone.csv").write_bytes(b"gone\n")
    assert replay(env, faults="after_plan=kill@1").returncode == -9
    rc, out = lookup(env.root, "--state-path", str(env.state), "landing/gone.csv")
    gone = only_match(out["queries"][0])
    assert rc == 0 and (gone["state"], gone["ledger_state"]) == ("in_flight", "hashed")
    assert gone["manifest"] is None and gone["run"] is None
    # ...abandoned by the next run's recovery, its file gone meanwhile
    (env.landing / "gone.csv").unlink()
    (env.landing / "orders.csv").write_bytes(b"id,qty\n1,2\n")
    (env.landing / "orders-resend.csv").write_bytes(b"id,qty\n1,2\n")
    os.mkfifo(env.landing / "pipe.csv")
    (env.landing / "passwd.csv").symlink_to("/etc/passwd")
    assert replay(env).returncode == 1  # the FIFO and the symlink will not land
    # the FIFO replaced by a file: it lands, and its path has two records
    (env.landing / "pipe.csv").unlink()
    (env.landing / "pipe.csv").write_bytes(b"fixed\n")
    replay(env)
    (env.landing / "waiting.csv").write_bytes(b"not yet\n")  # no run has seen it

    lines = {r.id: r for r in env.lines()}
    by_status = {(r.status, os.path.basename(r.source)): r for r in lines.values()}
    original = next(
        r for r in lines.values() if r.status == "ingested" and r.source_relpath.startswith("orders")
    )
    dup = next(r for r in lines.values() if r.status == "duplicate")
    fifo = by_status[("rejected", "pipe.csv")]
    link = by_status[("rejected", "passwd.csv")]
    fixed = by_status[("ingested", "pipe.csv")]
    queries = {
        "source": os.path.relpath(original.source, env.root),  # relative to the working directory
        "duplicate": dup.source,  # absolute
        "warehouse": original.warehouse,
        "quarantined": dup.warehouse,
        "abandoned": "landing/gone.csv",
        "symlink": "landing/passwd.csv",
        "fixed": "landing/pipe.csv",
        "waiting": "landing/waiting.csv",
        "sha256": original.sha256,
        "prefix": original.sha256[:8].upper(),
        "id": dup.id,
        "rejection id": fifo.id.lower(),
    }
    rc, out = lookup(env.root, *env.args(), *queries.values())
    assert rc == 0, out
    answers = dict(zip(queries, out["queries"], strict=True))
    assert out["ledger"] == str(env.state)
    for name, a in answers.items():
        assert set(a) == QUERY_KEYS and a["matches"], (name, a)
        assert all(set(m) == MATCH_KEYS for m in a["matches"])
    kinds = {name: a["kind"] for name, a in answers.items()}
    assert kinds["sha256"] == "sha256" and kinds["prefix"] == "sha256_prefix" and kinds["id"] == "id"
    assert kinds["rejection id"] == "id" and kinds["waiting"] == "path"

    src = only_match(answers["source"])
    assert (src["id"], src["state"], src["ledger_state"], src["action"]) == (
        original.id,
        "ingested",
        "manifested",
        "landed",
    )
    assert (src["source_path"], src["warehouse_path"], src["sha256"]) == (
        original.source,
        original.warehouse,
        original.sha256,
    )
    assert (src["size"], src["mtime"], src["inode"], src["device"]) == (
        11,
        original.mtime,
        original.inode,
        original.device,
    )
    assert (src["detected_at"], src["ingested_at"]) == (original.detected_at, original.ingested_at)
    assert (src["source"], src["dataset"], src["landing_dir"], src["site"]) == (
        "default",
        {},
        str(env.landing),
        0,
    )
    assert src["duplicated_by"] == [dup.id] and src["duplicated_by_count"] == 1
    assert line_at(env, src)["id"] == original.id
    assert src["run"]["run_id"] == original.run_id and src["run"]["kind"] == "replay"
    assert answers["source"]["inside"] == {
        "what": "landing dir",
        "root": str(env.landing),
        "source": "default",
    }
    assert answers["warehouse"]["inside"] == {"what": "warehouse", "root": str(env.warehouse)}
    assert only_match(answers["warehouse"]) == src
    # a content: the record that landed it and the one that duplicates it, newest first
    assert answers["sha256"]["matches"] == answers["prefix"]["matches"]
    assert [m["id"] for m in answers["sha256"]["matches"]] == sorted([original.id, dup.id], reverse=True)
    assert src in answers["sha256"]["matches"]

    d = only_match(answers["duplicate"])
    assert (d["id"], d["state"], d["action"], d["warehouse_path"]) == (
        dup.id,
        "duplicate",
        "quarantined",
        dup.warehouse,
    )
    assert d["duplicate_of"] == {
        "id": original.id,
        "source_path": original.source,
        "warehouse_path": original.warehouse,
    }
    assert d["duplicated_by"] == [] and line_at(env, d)["id"] == dup.id
    assert only_match(answers["quarantined"]) == d == only_match(answers["id"])

    # the abandoned record, and the vanished file on record as rejected (newest first)
    vanished, ab = answers["abandoned"]["matches"]
    assert (ab["state"], ab["ledger_state"], ab["note"]) == (
        "abandoned",
        "abandoned",
        "vanished before it moved",
    )
    assert ab["id"] == gone["id"] and ab["warehouse_path"] is None and ab["manifest"] is None
    assert (vanished["state"], vanished["reason"]) == ("rejected", VANISHED)
    assert (vanished["size"], vanished["inode"]) == (ab["size"], ab["inode"])
    assert line_at(env, vanished)["id"] == vanished["id"]

    sym = only_match(answers["symlink"])
    assert (sym["id"], sym["state"], sym["status"], sym["action"]) == (
        link.id,
        "rejected",
        "rejected",
        "none",
    )
    assert (
        (sym["reason"], sym["hint"]) == (link.reason, link.hint) == ("a symlink: never followed", link.hint)
    )
    assert sym["inode"] == os.lstat(env.landing / "passwd.csv").st_ino and sym["sha256"] is None
    assert line_at(env, sym)["id"] == link.id and sym["run"]["run_id"] == link.run_id

    newest, older = answers["fixed"]["matches"]  # newest first
    assert (newest["id"], newest["state"]) == (fixed.id, "ingested")
    assert (older["id"], older["state"], older["reason"]) == (fifo.id, "rejected", "a FIFO: never opened")
    assert only_match(answers["rejection id"]) == older

    w = only_match(answers["waiting"])
    assert (w["id"], w["state"], w["size"]) == (None, "waiting", 8)
    assert w["inode"] == (env.landing / "waiting.csv").stat().st_ino and w["manifest"] is None

    # the run that wrote the line, as the runs table has it (the symlink fails every replay)
    assert {k: src["run"][k] for k in ("kind", "host", "status")} == {
        "kind": "replay", "host": socket.gethostname(), "status": "failure",
    }  # fmt: skip
    assert newest["run"]["run_id"] == fixed.run_id != src["run"]["run_id"]

    # a person's report: a heading per query and a few aligned lines per match
    text = run_ingestor("lookup", "--state-path", str(env.state), "landing/pipe.csv", "landing/gone.csv",
                        cwd=env.root).stdout  # fmt: skip
    assert "landing/pipe.csv  (path; in the landing dir " in text and ": 2 matches" in text
    assert f"\ningested     {fixed.id}  source default\n" in text
    assert f"\nrejected     {fifo.id}  source default\n" in text
    assert "\n  reason     a FIFO: never opened\n" in text
    assert f"\n  manifest   {env.manifests}/" in text
    assert "\nabandoned    " in text and "\n  note       vanished before it moved" in text


def test_not_found_exits_1_and_says_why(env: Env) -> None:
    (env.landing / "a.csv").write_bytes(b"a\n")
    assert replay(env).returncode == 0
    (landed,) = env.ingested()
    (env.landing / "sub").mkdir()
    queries = [landed.id, "landing/nothing.csv", "/etc/passwd", "landing/sub", "landing", "deadbeef",
               "01ARZ3NDEKTSV4RRFFQ69G5FAV"]  # fmt: skip
    rc, out = lookup(env.root, "--state-path", str(env.state), *queries)
    assert rc == 1
    found = [bool(q["matches"]) for q in out["queries"]]
    assert found == [True, False, False, False, False, False, False]
    notes = [q["note"] for q in out["queries"]]
    assert notes[1] == f"no record of nothing.csv in the landing dir {env.landing}, and no such file"
    assert notes[2].startswith("not inside a landing dir or warehouse of this ledger")
    assert notes[3] == f"{env.landing / 'sub'} is a directory (a QUERY names one file)"
    assert notes[4] == f"{env.landing} is a landing dir itself (a QUERY names one file)"
    assert notes[5] == notes[6] == "no record of it in the ledger"
    res = run_ingestor("lookup", "--state-path", str(env.state), "landing/nothing.csv", cwd=env.root)
    assert res.returncode == 1 and "not found: no record of nothing.csv" in res.stdout


def test_bad_usage_exits_2(env: Env, tmp_path: Path) -> None:
    (env.landing / "a.csv").write_bytes(b"a\n")
    assert replay(env).returncode == 0
    cases = {
        ("--state-path", str(env.state), "abcdef1"): "'abcdef1': a sha256 prefix needs at least 8 hex digits",
        ("--state-path", str(tmp_path / "none.sqlite"), "a.csv"): "no ledger at",
        ("a.csv",): "lookup needs --state-path FILE (or --input / --config)",
        ("--state-path", str(env.state)): "Missing argument",
        ("--state-path", str(env.state), "--limit", "0", "a.csv"): "--limit",
    }
    for args, said in cases.items():
        res = run_ingestor("lookup", *args, cwd=env.root)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert res.stderr.startswith("ingestor: error: ") and said in res.stderr, res.stderr
        assert res.stdout == ""
    (tmp_path / "text").write_bytes(b"not a ledger\n" * 100)
    res = run_ingestor("lookup", "--state-path", str(tmp_path / "text"), "a.csv", cwd=env.root)
    assert res.returncode == 2 and "is it an ingestor ledger?" in res.stderr, res.stderr


def test_a_name_that_is_not_utf8(env: Env) -> None:
    raw = os.fsencode(env.landing) + b"/caf\xe9 \xff.csv"
    with open(raw, "wb") as fh:
        fh.write(b"latin-1\n")
    assert replay(env).returncode == 0
    (rec,) = env.ingested()
    name = os.fsdecode(b"landing/caf\xe9 \xff.csv")  # what argv holds (surrogateescape)
    rc, out = lookup(env.root, "--state-path", str(env.state), name, rec.warehouse)
    assert rc == 0
    by_source, by_warehouse = (only_match(q) for q in out["queries"])
    assert by_source == by_warehouse and by_source["id"] == rec.id
    assert base64.b64decode(by_source["source_path_b64"]) == raw
    assert by_source["source_path"] == rec.source_path == raw.decode("utf-8", "replace")
    assert base64.b64decode(by_source["warehouse_path_b64"]) == os.fsencode(rec.warehouse)
    assert base64.b64decode(out["queries"][0]["query_b64"]) == b"landing/caf\xe9 \xff.csv"
    res = run_ingestor("lookup", "--state-path", str(env.state), name, cwd=env.root)
    assert res.returncode == 0 and f"  source     {rec.source_path}\n" in res.stdout


def test_with_a_config_the_landing_dirs_rules_tell_waiting_from_ignored(env: Env) -> None:
    names = ["landing/.hidden.csv", "landing/upload.csv.part", "landing/data.csv", "landing/data.csv.ok"]
    for name in names:
        (env.root / name).write_bytes(b"x\n")
    config = env.root / "ingestor.toml"
    config.write_text(
        f'input = "{env.landing}"\nwarehouse = "{env.warehouse}"\nmanifests = "{env.manifests}"\n'
        f'state_path = "{env.state}"\nmode = "sidecar"\ninclude = ["nothing/**"]\n'
    )
    env.state.parent.mkdir(parents=True)
    sqlite3.connect(env.state).close()  # an empty file: not a ledger yet
    res = run_ingestor("lookup", "--config", str(config), *names, cwd=env.root)
    assert res.returncode == 2 and "is not an ingestor ledger" in res.stderr, res.stderr
    env.state.unlink()
    assert run_ingestor("replay", "--config", str(config), *REPLAY, cwd=env.root).returncode == 0
    assert env.records() == []  # include matches none of them
    rc, out = lookup(env.root, "--config", str(config), *names)
    assert rc == 0 and [only_match(q)["state"] for q in out["queries"]] == ["ignored"] * 4
    config.write_text(config.read_text().replace('["nothing/**"]', '["**"]'))
    rc, out = lookup(env.root, "--config", str(config), *names)
    assert [only_match(q)["state"] for q in out["queries"]] == ["ignored", "ignored", "waiting", "ignored"]
    assert only_match(out["queries"][3])["note"] == "a sidecar (.ok): never landed as data"
    assert only_match(out["queries"][0])["note"].startswith("ignored by the landing dir's rules")
    # --state-path alone: the rules are not known, so a file no record knows is waiting
    rc, out = lookup(env.root, "--state-path", str(env.state), *names)
    assert [only_match(q)["state"] for q in out["queries"]] == ["waiting"] * 4


# ----------------------------------------------------------------- many landing dirs


def test_a_config_of_several_landing_dirs(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state" / "ledger.sqlite"
    config = tmp_path / "ingestor.toml"
    config.write_text(
        f'state_path = "{state}"\nstability_seconds = 0\n'
        f'[[source]]\nname = "vendors"\npath = "{data}/{{vendor}}/raw"\n'
        f'warehouse = "{data}/{{vendor}}/bronze"\nmanifests = "{data}/{{vendor}}/manifests"\n'
        f'[[source]]\nname = "drop"\npath = "{tmp_path}/drop"\nwarehouse = "{tmp_path}/wh"\n'
        f'manifests = "{tmp_path}/mf"\n'
    )
    for vendor in ("acme", "globex"):
        (data / vendor / "raw").mkdir(parents=True)
        (data / vendor / "raw" / "prices.csv").write_bytes(b"same bytes\n")  # one dataset each: no dup
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "prices.csv").write_bytes(b"same bytes\n")
    res = run_ingestor("replay", "--config", str(config), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (data / "initech" / "raw").mkdir(parents=True)  # a landing dir no run has served yet
    (data / "initech" / "raw" / "new.csv").write_bytes(b"new\n")
    landed = {}
    for m in (data / "acme" / "manifests", data / "globex" / "manifests", tmp_path / "mf"):
        for path in m.rglob("manifest.jsonl"):
            for line in path.read_bytes().splitlines():
                rec = orjson.loads(line)
                landed[rec["source_path"]] = rec
    sha = landed[str(data / "acme" / "raw" / "prices.csv")]["sha256"]
    globex = landed[str(data / "globex" / "raw" / "prices.csv")]

    rc, out = lookup(tmp_path, "--config", str(config), sha, globex["warehouse_path"],
                     "data/initech/raw/new.csv", "data/acme/raw/prices.csv")  # fmt: skip
    assert rc == 0
    by_sha, by_wh, waiting, acme = out["queries"]
    assert sorted((m["source"], m["dataset"].get("vendor"), m["state"]) for m in by_sha["matches"]) == [
        ("drop", None, "ingested"), ("vendors", "acme", "ingested"), ("vendors", "globex", "ingested"),
    ]  # fmt: skip
    g = only_match(by_wh)
    assert (g["id"], g["dataset"], g["landing_dir"]) == (
        globex["id"],
        {"vendor": "globex"},
        str(data / "globex" / "raw"),
    )
    assert by_wh["inside"] == {"what": "warehouse", "root": str(data / "globex" / "bronze")}
    assert g["manifest"]["path"].startswith(str(data / "globex" / "manifests"))
    w = only_match(waiting)
    assert (w["state"], w["source"], w["dataset"], w["site"]) == (
        "waiting",
        "vendors",
        {"vendor": "initech"},
        None,
    )
    assert only_match(acme)["source_path"] == str(data / "acme" / "raw" / "prices.csv")
    # --source: only that source's records; a path of another source's landing dir is not inside it
    rc, out = lookup(tmp_path, "--config", str(config), "--source", "drop", sha, "data/acme/raw/prices.csv")
    assert rc == 1
    assert [m["source"] for m in out["queries"][0]["matches"]] == ["drop"]
    assert out["queries"][1]["matches"] == []
    rc, out = lookup(tmp_path, "--state-path", str(state), "--source", "vendors", sha)
    assert sorted(m["dataset"]["vendor"] for m in out["queries"][0]["matches"]) == ["acme", "globex"]


# ----------------------------------------------------------------- runs


def runs_json(env: Env, *args: str) -> list[dict[str, Any]]:
    res = run_ingestor("runs", "--state-path", str(env.state), *args, "--json", cwd=env.root)
    assert res.returncode == 0, res.stderr
    out = orjson.loads(res.stdout)
    assert out["ledger"] == str(env.state)
    rows: list[dict[str, Any]] = out["runs"]
    return rows


def test_runs_after_two_replays_and_a_daemon(env: Env, daemon: Any) -> None:
    (env.landing / "a.csv").write_bytes(b"a\n")
    (env.landing / "a2.csv").write_bytes(b"a\n")
    assert replay(env).returncode == 0
    os.mkfifo(env.landing / "pipe")
    assert replay(env).returncode == 1
    (env.landing / "pipe").unlink()
    d = daemon()
    (env.landing / "b.csv").write_bytes(b"b\n")
    wait_for(lambda: len(env.ingested()) == 2, 30, "b to land")
    running = runs_json(env)
    assert (running[0]["kind"], running[0]["status"], running[0]["finished_at"]) == (
        "daemon",
        "running",
        None,
    )
    assert d.stop() == 0

    rows = runs_json(env)
    assert [(r["kind"], r["status"]) for r in rows] == [
        ("daemon", "success"),
        ("replay", "failure"),
        ("replay", "success"),
    ]
    assert [r["started_at"] for r in rows] == sorted((r["started_at"] for r in rows), reverse=True)
    newest, second, first = rows
    assert set(first) == {"run_id", "kind", "host", "pid", "started_at", "finished_at", "seconds", "status",
                          "landed", "duplicates", "rejected", "errors", "error_summary"}  # fmt: skip
    assert (first["landed"], first["duplicates"], first["rejected"], first["error_summary"]) == (
        1,
        1,
        0,
        None,
    )
    assert (second["landed"], second["rejected"], second["error_summary"]) == (
        0,
        1,
        "1 file could not be landed",
    )
    assert (newest["landed"], newest["status"]) == (1, "success") and newest["seconds"] > 0
    assert newest["pid"] != first["pid"] and newest["host"] == first["host"]
    assert {r.run_id for r in env.ingested()} == {first["run_id"], newest["run_id"]}
    assert runs_json(env, "--last", "1") == [newest]

    text = run_ingestor("runs", "--state-path", str(env.state), cwd=env.root).stdout.splitlines()
    assert text[0].split() == ["run_id", "kind", "host", "pid", "started", "finished", "seconds", "status",
                               "landed", "dups", "rejected", "errors"]  # fmt: skip
    assert text[1].startswith(newest["run_id"] + "  daemon")
    assert (
        text[2].startswith(second["run_id"] + "  replay") and text[3] == "  error: 1 file could not be landed"
    )
    assert text[4].startswith(first["run_id"]) and len(text) == 5
    res = run_ingestor("runs", *env.args(), "--last", "2", cwd=env.root)  # the ledger beside --input
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 4
    for bad in (["--last", "0"], []):
        res = run_ingestor("runs", *(["--state-path", str(env.state)] if bad else []), *bad, cwd=env.root)
        assert res.returncode == 2 and res.stderr.startswith("ingestor: error: "), res.stderr


# ----------------------------------------------------------------- cost


def test_every_statement_uses_an_index(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast on a million records: no statement of a lookup scans a table (bench/bench_lookup.py
    times them)."""
    (env.landing / "a.csv").write_bytes(b"a\n")
    (env.landing / "a2.csv").write_bytes(b"a\n")
    os.mkfifo(env.landing / "p")
    replay(env)
    (env.landing / "w.csv").write_bytes(b"w\n")
    recs = env.lines()
    statements: list[str] = []
    conn = lookup_mod.open_ledger(env.state)
    conn.set_trace_callback(statements.append)
    monkeypatch.chdir(env.root)
    try:
        sites = lookup_mod.read_sites(conn)
        queries = [r.id for r in recs] + [r.source for r in recs] + [r.warehouse for r in env.records()]
        queries += [env.records()[0].sha256, env.records()[0].sha256[:9], "landing/w.csv", "landing/none"]
        report = lookup_mod.lookup(conn, queries, sites=sites)
    finally:
        conn.close()
    assert sum(1 for q in report["queries"] if q["matches"]) == len(queries) - 1
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    plans = sqlite3.connect(f"file:{env.state}?mode=ro", uri=True)
    try:
        scans = []
        for sql in selects:
            plan = " | ".join(row[3] for row in plans.execute("EXPLAIN QUERY PLAN " + sql))
            if any(
                f"SCAN {t}" in plan and f"SCAN {t} USING" not in plan for t in ("files", "rejections", "runs")
            ):
                scans.append((sql, plan))
    finally:
        plans.close()
    assert scans == [] and len(selects) > 20


def test_the_line_is_found_from_its_floor_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    lines = [b'{"id":"%06d","pad":"%s"}\n' % (i, b"x" * (i % 700)) for i in range(600)]
    path.write_bytes(b"".join(lines) + b'{"id":"torn"')
    offsets = [sum(map(len, lines[:i])) for i in range(len(lines))]
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        for i in (0, 1, 299, 599):
            for floor in (0, offsets[i] - 1 if i else 0, offsets[i]):
                start = lookup_mod.line_start_at_or_before(fd, floor)
                hit = lookup_mod._find_line(fd, start, end, b'{"id":"%06d"' % i)
                assert hit == (offsets[i], lines[i]), (i, floor)
        assert lookup_mod._find_line(fd, 0, end, b'{"id":"torn"') is None  # not written yet
        assert lookup_mod._find_line(fd, offsets[10], end, b'{"id":"000009"') is None  # below the floor
    finally:
        os.close(fd)


def test_connect_is_read_only(env: Env) -> None:
    (env.landing / "a.csv").write_bytes(b"a\n")
    assert replay(env).returncode == 0
    conn = lookup_mod.open_ledger(env.state)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM files")
    finally:
        conn.close()
