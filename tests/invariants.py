"""The exactly-once invariant, checked independently of the product's own code paths.

Each distinct content dropped is exactly once in the warehouse and exactly
once as ``ingested`` in the manifest; sizes and SHA-256 match; every manifest
line ends in a newline and parses; ids are unique; no orphan or temporary file
in the warehouse; the landing dir holds only ignored files; no ledger record
is left unfinished.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections import Counter
from pathlib import Path

import orjson

from simulate.traffic import Report
from tests.conftest import Env, sha256_file
from tests.waiting import wait_for


def check(
    env: Env,
    expected: dict[str, int],
    *,
    landing_may_hold: tuple[str, ...] = (".tmp", ".part", ".swp"),
) -> dict[str, int]:
    """Assert the invariant for ``expected`` (sha256 → size); returns counts for reports.

    A line is written before its record is committed MANIFESTED, so the check
    first waits (with a deadline) for the ledger to have no unfinished record.
    """
    if env.state.exists():
        try:
            wait_for(lambda: open_records(env) == 0, 10, "ledger records to finish")
        except AssertionError:
            pass  # reported below with the other problems
    problems: list[str] = []
    # every manifest line is complete JSON, ids unique
    ids: Counter[str] = Counter()
    ingested: dict[str, list[dict[str, object]]] = {}
    duplicates = 0
    for path in sorted(env.manifests.rglob("manifest.jsonl")):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            problems.append(f"{path}: last line has no newline")
        for n, line in enumerate(data.split(b"\n")[:-1], 1):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                problems.append(f"{path}:{n}: not JSON ({exc})")
                continue
            ids[obj["id"]] += 1
            if obj["status"] == "ingested":
                ingested.setdefault(obj["sha256"], []).append(obj)
            elif obj["status"] == "rejected":
                if obj["sha256"] is not None or obj["warehouse_path"] is not None or not obj["reason"]:
                    problems.append(f"{path}:{n}: a rejected line with content or without a reason")
            else:
                duplicates += 1
                if obj["duplicate_of"] is None:
                    problems.append(f"{path}:{n}: duplicate without duplicate_of")
    problems += [f"id {i} appears {c} times" for i, c in ids.items() if c > 1]
    # each expected content exactly once as ingested, and its file is right
    for sha, size in expected.items():
        lines = ingested.get(sha, [])
        if len(lines) != 1:
            problems.append(f"content {sha[:12]} ingested {len(lines)} times")
            continue
        line = lines[0]
        if line["size"] != size:
            problems.append(f"content {sha[:12]}: manifest size {line['size']} != {size}")
        wpath = line["warehouse_path"]
        if line["warehouse_path_b64"] is not None:
            wpath = os.fsdecode(base64.b64decode(str(line["warehouse_path_b64"])))
        p = Path(str(wpath))
        if not p.is_file():
            problems.append(f"content {sha[:12]}: warehouse file {p} missing")
        elif sha256_file(p) != sha:
            problems.append(f"content {sha[:12]}: warehouse file {p} has other content")
    unexpected = set(ingested) - set(expected)
    problems += [f"content {s[:12]} ingested but never dropped" for s in unexpected]
    # the warehouse holds exactly the ingested files (plus quarantined duplicates)
    named = set()
    for lines in ingested.values():
        for line in lines:
            b64 = line["warehouse_path_b64"]
            named.add(os.fsdecode(base64.b64decode(str(b64))) if b64 else str(line["warehouse_path"]))
    for p in env.warehouse_files():
        if str(p) not in named:
            problems.append(f"warehouse file {p} is named by no ingested line")
    tmpdir = env.warehouse / ".ingestor-tmp"
    if tmpdir.exists() and any(tmpdir.iterdir()):
        problems.append(f"temporary files left: {sorted(os.listdir(tmpdir))[:5]}")
    # the landing dir is drained
    for p in env.landing_files():
        if not (p.name.startswith(".") or p.name.endswith(landing_may_hold)):
            problems.append(f"landing still holds {p}")
    # no unfinished ledger record
    if env.state.exists() and (n := open_records(env)):
        problems.append(f"{n} ledger records unfinished")
    # every rejection on record has its line, once
    if env.state.exists() and (n := unwritten_rejections(env)):
        problems.append(f"{n} rejections without their manifest line")
    assert not problems, "invariant violated:\n  " + "\n  ".join(problems[:40])
    return {
        "contents": len(expected),
        "ingested": len(ingested),
        "duplicates": duplicates,
        "lines": sum(ids.values()),
    }


def unwritten_rejections(env: Env) -> int:
    conn = sqlite3.connect(f"file:{env.state}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "rejections" not in tables:
            return 0
        return int(conn.execute("SELECT count(*) FROM rejections WHERE written=0").fetchone()[0])
    finally:
        conn.close()


def open_records(env: Env) -> int:
    conn = sqlite3.connect(f"file:{env.state}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM files WHERE state IN ('hashed','moved')").fetchone()[0])
    finally:
        conn.close()


def expected_of(*reports: Report) -> dict[str, int]:
    """sha256 → size of everything some traffic generators dropped."""
    out: dict[str, int] = {}
    for r in reports:
        out.update(r.contents)
    return out
