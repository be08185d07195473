"""``ingestor lookup`` on a ledger of 1,000,000 records (issue 14): every kind of QUERY, timed.

    .venv/bin/python bench/bench_lookup.py            # 1,000,000 records (about a minute)
    .venv/bin/python bench/bench_lookup.py --quick    # 10,000 (seconds)
    .venv/bin/python bench/bench_lookup.py --record   # and append its section to bench/RESULTS.md

The ledger is built directly with sqlite3 from ``ingestor.ledger_db``'s
``TABLES`` and ``INDEXES`` (the rows first, the indexes after: a bulk load;
the column layout is checked against the schema, so a schema change breaks
this script rather than skewing it): a ledger of one landing dir (site 0)
whose records landed over ``records / 1,000`` hours, 1,000 an hour, in
batches of 100 (one run each); every 20th record a quarantined duplicate of
the one before it, every 200th abandoned (no line), and one rejection (a
FIFO) per 100 records. Each hour has its manifest file with every line of
that hour, as the writer makes them (orjson, every key), so a record's
``manifest_floor`` is its batch's first byte and a lookup reads real bytes
from there to its line. The ``content`` table stays empty (no daemon runs
on this ledger).

Each kind of QUERY is asked ``--queries`` times (1,000; quick 100) of
records drawn at random, in one process with one read-only connection (as
the command opens it), each query timed alone (``Lookup.query``: its
statements, the ``lstat`` of a path, the manifest read, the run): a source
path (the file is gone from the landing dir, as a landed file is), a
warehouse path, a full sha256, an 8-hex-digit prefix, a record id, the path
of a rejected file, a file waiting in the landing dir (no record: the
``lstat`` and the live-identity seek), and a path nothing knows. Target: under
50 ms per query. Then each kind once through the real CLI (``ingestor lookup
--state-path L QUERY --json``, a new process: its start included).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import random
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import common as c
import orjson
import ulid

from ingestor import __version__
from ingestor import lookup as lookup_mod
from ingestor.ledger_db import INDEXES, TABLES
from ingestor.manifest import KEYS, rfc3339

COLUMNS = (
    "id", "state", "status", "action", "owner", "source_rel", "device", "inode", "size", "mtime_ns",
    "sha256", "dest_rel", "manifest_rel", "manifest_floor", "ingested_ns", "duplicate_of",
    "sidecar_rel", "note", "updated_ns", "ctime_ns", "site", "wh", "detected_ns",
)  # fmt: skip
PER_HOUR = 1000
BATCH = 100
KINDS = ("source path", "warehouse path", "sha256", "8-char prefix", "id", "rejected path", "waiting file",
         "not found")  # fmt: skip
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DEVICE = 64769


_PAIRS = [a + b for a in _B32 for b in _B32]  # 10 bits -> two characters


def _ulid(ms: int, counter: int) -> str:
    """A valid ULID of millisecond ``ms`` whose random part is ``counter``: sortable, fast (its 130
    bits, ten at a time)."""
    value = ms << 80 | counter
    return "".join([_PAIRS[value >> shift & 1023] for shift in range(120, -1, -10)])


@functools.lru_cache(maxsize=64)
def _hour_text(hour: int) -> str:
    t = time.gmtime(hour * 3600)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:"


def _rfc3339(ns: int) -> str:
    """``manifest.rfc3339`` without a ``gmtime`` per call (the manifest's is checked against it)."""
    secs, rem = divmod(ns, 1_000_000_000)
    return f"{_hour_text(secs // 3600)}{secs // 60 % 60:02d}:{secs % 60:02d}.{rem // 1000:06d}Z"


def _hour_rel(hour_ns: int) -> str:
    t = time.gmtime(hour_ns // 1_000_000_000)
    return f"{t.tm_year:04d}/{t.tm_mon:02d}/{t.tm_mday:02d}/{t.tm_hour:02d}/manifest.jsonl"


def build(root: Path, n: int) -> dict[str, Any]:
    """The ledger and its manifests under ``root``; returns what the queries draw from."""
    t0 = time.monotonic()
    landing, warehouse, manifests = root / "landing", root / "warehouse", root / "manifests"
    for d in (landing, warehouse, manifests, root / "state"):
        d.mkdir(parents=True, exist_ok=True)
    state = root / "state" / "ledger.sqlite"
    conn = sqlite3.connect(state, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")  # building a fixture, not measuring (WAL once built)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.executescript(TABLES)
    now = time.time_ns()
    if _rfc3339(now) != rfc3339(now) or _ulid(now // 10**6, 7) != str(
        ulid.ULID.from_bytes(((now // 10**6) << 80 | 7).to_bytes(16, "big"))
    ):
        raise c.BenchError("the fast time stamps or ids differ from the manifest's")
    have = tuple(r[1] for r in conn.execute("PRAGMA table_info(files)"))
    if have != COLUMNS:
        raise c.BenchError(f"ledger schema changed: files has {have}; update COLUMNS and the rows here")
    hours = (n + PER_HOUR - 1) // PER_HOUR
    first_hour = (time.time_ns() // 3_600_000_000_000 - hours - 1) * 3_600_000_000_000
    owner = _ulid(first_hour // 1_000_000, 1)
    run_ids = [f"00000000-0000-4000-8000-{h:012d}" for h in range(hours)]
    sample: dict[str, list[Any]] = {"records": [], "rejections": []}
    rng = random.Random(14)
    keep = set(rng.sample(range(n), min(n, 20_000)))  # records the queries may draw from
    files_sql = f"INSERT INTO files({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    rej_sql = (
        "INSERT INTO rejections(id, site, source_rel, inode, device, size, mtime_ns, reason, hint, at_ns, "
        "manifest_rel, manifest_floor, written, owner, run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1,?,?)"
    )
    tail = {"source": "default", "dataset": {}, "host": "bench"}
    line_bytes = 0
    conn.execute("BEGIN")
    for h in range(hours):
        hour_ns = first_hour + h * 3_600_000_000_000
        rel = _hour_rel(hour_ns)
        date = datetime.datetime.fromtimestamp(hour_ns / 1e9, datetime.UTC).strftime("%Y-%m-%d")
        lines: list[bytes] = []
        files: list[tuple[Any, ...]] = []
        rejs: list[tuple[Any, ...]] = []
        offset = floor = 0
        prev: tuple[str, str] | None = None  # the last record landed: (id, sha256)
        for j in range(min(PER_HOUR, n - h * PER_HOUR)):
            i = h * PER_HOUR + j
            if j % BATCH == 0:
                floor = offset
            ns = hour_ns + j * 3_000_000_000 + 1
            rec_id = _ulid(ns // 1_000_000, i)
            src = f"vendor{i % 50:02d}/d{i % 1000:04d}/f{i:07d}.csv"
            dup = i % 20 == 19 and prev is not None
            abandoned = i % 200 == 7
            sha = prev[1] if dup and prev is not None else hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
            dest = ("_duplicates/" if dup else "") + f"ingest_date={date}/{src}"
            original = prev[0] if dup and prev is not None else None
            row_state = "abandoned" if abandoned else "manifested"
            status = "duplicate" if dup else "ingested"
            action = "quarantined" if dup else "landed"
            files.append((
                rec_id, row_state, status, action, owner, src.encode(), DEVICE, 10**8 + i, 4096 + i % 4096,
                ns - 5_000_000_000, sha, dest.encode(), rel, floor, ns, original, None,
                "vanished before it moved" if abandoned else None, ns, ns - 4_000_000_000, 0, 0, ns - 2_000_000_000,
            ))  # fmt: skip
            if i in keep:
                sample["records"].append((rec_id, src, dest, sha, abandoned))
            if not abandoned:
                line = dict(zip(KEYS, (
                    rec_id, status, action, f"{landing}/{src}", None, f"{warehouse}/{dest}", None, sha,
                    4096 + i % 4096, _rfc3339(ns - 5_000_000_000), DEVICE, 10**8 + i, _rfc3339(ns), original,
                    __version__, _rfc3339(ns - 2_000_000_000), src, dest, None, None,
                    tail["source"], tail["dataset"], tail["host"], run_ids[h],
                ), strict=True))  # fmt: skip
                data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
                lines.append(data)
                offset += len(data)
                if not dup:
                    prev = (rec_id, sha)
            if i % 100 == 50:  # a FIFO put on record beside the files of the batch
                rej_id = _ulid(ns // 1_000_000, n + i)
                rsrc = f"vendor{i % 50:02d}/pipes/p{i:07d}.csv"
                rejs.append((rej_id, 0, rsrc.encode(), 2 * 10**8 + i, DEVICE, 0, ns, "a FIFO: never opened",
                             "deliver a regular file", ns, rel, floor, owner, run_ids[h]))  # fmt: skip
                line = dict(zip(KEYS, (
                    rej_id, "rejected", "none", f"{landing}/{rsrc}", None, None, None, None, 0, _rfc3339(ns),
                    DEVICE, 2 * 10**8 + i, _rfc3339(ns), None, __version__, None, rsrc, None,
                    "a FIFO: never opened", "deliver a regular file", *tail.values(), run_ids[h],
                ), strict=True))  # fmt: skip
                data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
                lines.append(data)
                offset += len(data)
                if i in keep:
                    sample["rejections"].append((rej_id, rsrc))
        path = manifests / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(lines))
        line_bytes += offset
        conn.executemany(files_sql, files)
        conn.executemany(rej_sql, rejs)
        conn.execute(
            "INSERT INTO runs(run_id, kind, host, pid, owner, started_ns, finished_ns, status, landed) "
            "VALUES (?, 'daemon', 'bench', 1, ?, ?, ?, 'success', ?)",
            (run_ids[h], owner, hour_ns, hour_ns + 3_599_000_000_000, len(files)),
        )
    conn.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?)",
        [("landing", str(landing)), ("warehouse", str(warehouse)), ("manifests", str(manifests)),
         ("ledger_id", "bench-lookup")],
    )  # fmt: skip
    conn.execute(
        "INSERT INTO sites(id, landing, warehouse, manifests, source, dataset, wh) VALUES (0, ?, ?, ?, 'default', '{}', 0)",
        (str(landing), str(warehouse), str(manifests)),
    )
    conn.execute("COMMIT")
    loaded = time.monotonic() - t0
    conn.executescript(INDEXES)
    conn.execute("PRAGMA journal_mode=WAL")  # as a ledger is
    conn.close()
    return {
        "state": state, "landing": landing, "warehouse": warehouse, "hours": hours, "sample": sample,
        "load_s": loaded, "build_s": time.monotonic() - t0, "ledger_mb": state.stat().st_size / c.MB,
        "manifest_mb": line_bytes / c.MB,
    }  # fmt: skip


def queries(fx: dict[str, Any], count: int, rng: random.Random) -> dict[str, list[str]]:
    landed = [r for r in fx["sample"]["records"] if not r[4]]
    recs = rng.sample(landed, min(count, len(landed)))
    rejs = rng.choices(fx["sample"]["rejections"], k=count)
    landing, warehouse = fx["landing"], fx["warehouse"]
    waiting = []
    for k in range(count):
        p = landing / f"vendor{k % 50:02d}" / "incoming" / f"w{k:05d}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not yet\n")
        waiting.append(str(p))
    return {
        "source path": [str(landing / r[1]) for r in recs],
        "warehouse path": [str(warehouse / r[2]) for r in recs],
        "sha256": [r[3] for r in recs],
        "8-char prefix": [r[3][:8] for r in recs],
        "id": [r[0] for r in recs],
        "rejected path": [str(landing / r[1]) for r in rejs],
        "waiting file": waiting,
        "not found": [str(landing / f"vendor{k % 50:02d}" / "none" / f"n{k:05d}.csv") for k in range(count)],
    }


def time_queries(state: Path, asked: dict[str, list[str]]) -> tuple[dict[str, dict[str, Any]], float]:
    """Each query timed alone, in one process with one connection, as the command asks them."""
    t0 = time.perf_counter()
    conn = lookup_mod.open_ledger(state)
    finder = lookup_mod.Lookup(conn, lookup_mod.read_sites(conn))
    opened_ms = (time.perf_counter() - t0) * 1000
    out: dict[str, dict[str, Any]] = {}
    try:
        for kind in KINDS:
            ms, matches = [], 0
            for q in asked[kind]:
                t = time.perf_counter()
                answer = finder.query(q)
                ms.append((time.perf_counter() - t) * 1000)
                matches += len(answer["matches"])
                if (kind == "not found") == bool(answer["matches"]):
                    raise c.BenchError(f"{kind} {q}: {answer}")
            out[kind] = {"queries": len(ms), "matches_per_query": matches / len(ms), "p50_ms": c.percentile(ms, 50),
                         "p99_ms": c.percentile(ms, 99), "max_ms": max(ms), "mean_ms": sum(ms) / len(ms), "over_50ms": sum(1 for x in ms if x >= 50)}  # fmt: skip
    finally:
        conn.close()
    return out, opened_ms


def time_cli(state: Path, asked: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Each kind once through the real command: a new process, its start included."""
    out = {}
    exe = c.ingestor_executable()
    for kind in KINDS:
        t = time.perf_counter()
        r = subprocess.run([*exe, "lookup", "--state-path", str(state), asked[kind][0], "--json"],
                           capture_output=True, text=True, check=False)  # fmt: skip
        wall = (time.perf_counter() - t) * 1000
        want = 1 if kind == "not found" else 0
        if r.returncode != want:
            raise c.BenchError(f"ingestor lookup ({kind}) exited {r.returncode}: {r.stderr[-500:]}")
        out[kind] = {"wall_ms": wall, "exit": r.returncode, "bytes_out": len(r.stdout)}
    t = time.perf_counter()
    r = subprocess.run([*exe, "--version"], capture_output=True, check=False)
    out["(ingestor --version)"] = {
        "wall_ms": (time.perf_counter() - t) * 1000,
        "exit": r.returncode,
        "bytes_out": 0,
    }
    return out


def _record(body: str, meta: dict[str, Any]) -> None:
    """This benchmark's section of RESULTS.md, appended (or replaced where it is); nothing else changes."""
    section = f"## 8. Lookup (issue 14)\n\n```\n{c.command_line()}\n```\n\n{c.machine_md(meta)}\n\n{body.rstrip()}\n"
    begin, end = "<!-- begin lookup -->", "<!-- end lookup -->"
    text = c.RESULTS_MD.read_text()
    block = f"{begin}\n{section.rstrip()}\n{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    c.RESULTS_MD.write_text(text)


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument(
        "--records", type=int, default=None, help="records in the ledger (default 1,000,000; quick 10,000)"
    )
    p.add_argument(
        "--queries", type=int, default=None, help="queries of each kind (default 1,000; quick 100)"
    )
    args = c.parse(p)
    n = args.records or (10_000 if args.quick else 1_000_000)
    count = args.queries or (100 if args.quick else 1000)
    root = c.workdir(args.dir, "bench-lookup-")
    meta = c.machine({"ledger, manifests, landing dir": root})
    print(f"lookup: {n:,} records, {count:,} queries of each kind; in {root}")
    try:
        with c.Neighbours() as nb:
            fx = build(root, n)
            print(f"  built in {fx['build_s']:.1f} s (rows {fx['load_s']:.1f} s, then the indexes): ledger "
                  f"{fx['ledger_mb']:.0f} MB, {fx['hours']:,} manifest files, {fx['manifest_mb']:.0f} MB of lines")  # fmt: skip
            asked = queries(fx, count, random.Random(6))
            timed, opened_ms = time_queries(fx["state"], asked)
            cli = time_cli(fx["state"], asked)
        neighbours = nb.describe()
    finally:
        if not args.keep:
            c.remove_tree(root)
    rows = [[k, v["queries"], v["matches_per_query"], v["p50_ms"], v["p99_ms"], v["max_ms"], v["mean_ms"]]
            for k, v in timed.items()]  # fmt: skip
    tab = c.table(["QUERY", "queries", "matches each", "p50 ms", "p99 ms", "max ms", "mean ms"], rows)
    cli_tab = c.table(
        ["QUERY, once through the CLI", "wall ms (process start included)", "exit", "JSON bytes"],
        [[k, v["wall_ms"], v["exit"], v["bytes_out"]] for k, v in cli.items()],
    )
    print()
    print(tab)
    print()
    print(cli_tab)
    print(f"\nopening the ledger (read-only connection, sites): {opened_ms:.1f} ms")
    print(f"during the run: {neighbours}")
    over = sum(v["over_50ms"] for v in timed.values())
    worst = max(timed.values(), key=lambda v: v["p99_ms"])
    worst_kind = next(k for k, v in timed.items() if v is worst)
    target = c.Target(
        f"lookup, {n:,} records", "< 50 ms per query",
        f"p99 {worst['p99_ms']:.2f} ms at worst ({worst_kind}); max {max(v['max_ms'] for v in timed.values()):.1f} ms",
        all(v["p99_ms"] < 50 for v in timed.values()),
    )  # fmt: skip
    body = (
        f"A ledger of {n:,} records built directly (rows, then the indexes: {fx['build_s']:.1f} s; "
        f"{fx['ledger_mb']:.0f} MB) with {fx['hours']:,} hourly manifest files of their lines "
        f"({fx['manifest_mb']:.0f} MB): 1,000 records an hour in batches of 100, every 20th a quarantined "
        "duplicate, every 200th abandoned, a rejected FIFO per 100. "
        f"{count:,} queries of each kind, records drawn at random, each timed alone in one process on one "
        "read-only connection (`Lookup.query`: its indexed statements, the `lstat` of a path, the manifest "
        "read from the record's floor to its line, its run). The page cache is warm (the ledger was just "
        f"built). Opening the ledger and reading its landing dirs: {opened_ms:.1f} ms.\n\n"
        f"{tab}\n\nEach kind once through the real command (`ingestor lookup --state-path L QUERY --json`, a new "
        f"process; `ingestor --version` beside it is the interpreter and CLI start alone):\n\n{cli_tab}\n\n"
        f"The start of the process is most of a lookup's wall time: `ingestor --version` alone took "
        f"{cli['(ingestor --version)']['wall_ms']:.0f} ms.\n\n"
        f"Target < 50 ms per query: {'met' if target.met else 'NOT met'} at p99 ({target.figure}); "
        f"{over} of the {count * len(KINDS):,} queries took longer.\n\n"
        f"During the run: {neighbours}.\n"
    )
    data = {"records": n, "queries": count, "build_s": fx["build_s"], "opened_ms": opened_ms, "timed": timed,
            "cli": cli, "neighbours": neighbours}  # fmt: skip
    print()
    print(c.table(["what", "target", "this run", "verdict"], [target.row()]))
    if args.record:
        _record(body, meta)
        print(f"\nappended to {os.path.relpath(c.RESULTS_MD)}")
    if args.json:
        payload = {"name": "lookup", "machine": meta, "data": data, "targets": [target.__dict__]}
        print(orjson.dumps(payload, default=str).decode())


if __name__ == "__main__":
    c.main_guard(main)
