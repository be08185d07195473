"""``ingestor status``: what the ledger says, read-only, fast on a million rows.

Input: the ledger (opened ``mode=ro``: it never blocks or changes the running
daemon; WAL readers see one consistent snapshot) and, optionally, a running
daemon's ``/metrics`` endpoint. Output: one report (``--json``: one object).

Cost on a ledger of 1,000,000 rows: every query uses an index: the primary
key (ids are ULIDs, so an id range is a time range), the partial index of open
rows, or the ledger's partial index ``files_problem`` of duplicates and
abandoned rows (0.45 s per million rows without it, ~40 ms with it).

Files waiting for stability or a sidecar are not in the ledger (it records a
file once it is hashed): only the daemon knows them, through its
``ingestor_files_waiting`` gauge, which ``--metrics-port`` reads.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

import orjson
import ulid
from prometheus_client.parser import text_string_to_metric_families

from ingestor.ledger_db import connect
from ingestor.manifest import encode_path, rfc3339
from ingestor.records import OPEN_SQL, State, Status
from ingestor.settings import SettingsError
from ingestor.units import human_bytes

WINDOWS = (("last_minute", 60), ("last_hour", 3600))
# a literal, as in the index's WHERE: a partial index is used only when the planner sees the same terms
WAITING_NOTE = (
    "files waiting for stability or a sidecar are not in the ledger; "
    "a running daemon reports them (ingestor_files_waiting, `status --metrics-port`)"
)
_GAUGES = {
    "ingestor_queue_depth": "queue_depth",
    "ingestor_files_waiting": "files_waiting",
    "ingestor_files_in_flight": "files_in_flight",
    "ingestor_records_retrying": "records_retrying",
}


class StatusError(SettingsError):
    """The ledger cannot be read: one line, exit 2 (as a bad setting)."""


def _min_ulid(ns: int) -> str:
    """The smallest ULID of the millisecond ``ns`` falls in: ``id >= it`` is a time bound."""
    ms = max(ns // 1_000_000, 0)
    return str(ulid.ULID.from_bytes(ms.to_bytes(6, "big") + bytes(10)))


def _path(root: str | None, rel: bytes | None) -> str | None:
    if rel is None:
        return None
    path = os.path.join(root, os.fsdecode(rel)) if root else os.fsdecode(rel)
    return encode_path(path)[0]  # invalid UTF-8 shown as U+FFFD: a report, not the record


def read_ledger(state_path: Path, *, now_ns: int | None = None) -> dict[str, Any]:
    """The report's ledger part; raises ``StatusError`` if there is no readable ledger."""
    if not state_path.is_file():
        what = "is not a file" if state_path.exists() else "does not exist"
        raise StatusError(f"no ledger at {state_path}: it {what} (give --state-path of `ingestor run`)")
    now = time.time_ns() if now_ns is None else now_ns
    try:
        conn = connect(state_path, readonly=True)
    except sqlite3.Error as exc:
        raise StatusError(f"cannot open the ledger {state_path}: {exc}") from None
    try:
        conn.execute("BEGIN")  # one snapshot for every count below
        out = _read(conn, now)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StatusError(f"cannot read the ledger {state_path}: {exc} (is it an ingestor ledger?)") from None
    finally:
        conn.close()
    return {"ledger": str(state_path), **out}


def _sites(conn: sqlite3.Connection) -> dict[int, tuple[str, str, str]]:
    """Landing dirs the ledger knows: id → (landing, warehouse, source); {} for an older ledger."""
    try:
        rows = conn.execute("SELECT id, landing, warehouse, source FROM sites").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _by_source(conn: sqlite3.Connection, sites: dict[int, tuple[str, str, str]]) -> dict[str, Any]:
    """Counts per source (one pass over the records)."""
    out: dict[str, dict[str, Any]] = {}
    for _, (_, _, source) in sorted(sites.items()):
        out.setdefault(source, {"landing_dirs": 0, "ingested": 0, "duplicates": 0, "open": 0, "abandoned": 0,
                                "bytes": 0, "last_landed_at": None})  # fmt: skip
        out[source]["landing_dirs"] += 1
    rows = conn.execute(
        "SELECT site, state, status, count(*), coalesce(sum(size), 0), max(ingested_ns) FROM files "
        "GROUP BY site, state, status"
    )
    for site, state, status, n, nbytes, last in rows:
        source = sites.get(site, ("", "", "(unknown landing dir)"))[2]
        c = out.setdefault(source, {"landing_dirs": 0, "ingested": 0, "duplicates": 0, "open": 0,
                                    "abandoned": 0, "bytes": 0, "last_landed_at": None})  # fmt: skip
        if state == State.ABANDONED:
            c["abandoned"] += n
        elif state != State.MANIFESTED:
            c["open"] += n
        elif status == Status.DUPLICATE:
            c["duplicates"] += n
        else:
            c["ingested"] += n
            c["bytes"] += nbytes
            at = rfc3339(last)
            c["last_landed_at"] = max(c["last_landed_at"] or at, at)
    return out


def _read(conn: sqlite3.Connection, now: int) -> dict[str, Any]:
    roots = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    landing, warehouse = roots.get("landing"), roots.get("warehouse")
    sites = _sites(conn)
    many = any(src != "default" for _, _, src in sites.values())

    def site_path(site: int, rel: bytes | None, which: int) -> str | None:
        root = sites[site][which] if site in sites else (landing if which == 0 else warehouse)
        return _path(root, rel)

    # primary key, covering: ~30 ms per million rows
    total = conn.execute("SELECT count(*) FROM files").fetchone()[0]
    # the partial index files_open: open rows only
    by_state = {s.value: 0 for s in State}
    for state, n in conn.execute(
        f"SELECT state, count(*) FROM files WHERE state IN {OPEN_SQL} GROUP BY state"
    ):
        by_state[state] = n
    # duplicates and abandoned rows, through the partial index files_problem
    problems = conn.execute(
        "SELECT state, status, note, count(*), max(id) FROM files "
        f"WHERE state = '{State.ABANDONED}' OR status = '{Status.DUPLICATE}' GROUP BY state, status, note"
    ).fetchall()
    manifested_dup = sum(
        n for st, stat, _, n, _ in problems if st == State.MANIFESTED and stat == Status.DUPLICATE
    )
    errors = []
    for st, _, note, n, latest_id in problems:
        if st != State.ABANDONED:
            continue
        by_state[State.ABANDONED] += n
        row = conn.execute(
            "SELECT source_rel, updated_ns, site FROM files WHERE id = ?", (latest_id,)
        ).fetchone()
        errors.append(
            {
                "note": note or "(no note)",
                "count": n,
                "latest_path": site_path(row[2], row[0], 0),
                "latest_at": rfc3339(row[1]),
            }
        )
    errors.sort(key=lambda e: (-e["count"], e["note"]))
    by_state[State.MANIFESTED] = total - sum(v for k, v in by_state.items() if k != State.MANIFESTED)
    # the oldest open row: open rows only (``+id``: sort those few, not walk the primary key)
    oldest = conn.execute(
        f"SELECT id, state, source_rel, ingested_ns, site FROM files WHERE state IN {OPEN_SQL} "
        "ORDER BY +id LIMIT 1"
    ).fetchone()
    # the newest landed row: the primary key backwards, stops at the first match
    last = conn.execute(
        "SELECT id, source_rel, dest_rel, size, sha256, ingested_ns, site FROM files "
        f"WHERE state = '{State.MANIFESTED}' AND status = '{Status.INGESTED}' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    landed = {}
    for name, seconds in WINDOWS:
        cutoff = now - seconds * 1_000_000_000
        n, nbytes = conn.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM files "
            f"WHERE id >= ? AND state = '{State.MANIFESTED}' AND status = '{Status.INGESTED}' AND ingested_ns >= ?",
            (_min_ulid(cutoff), cutoff),
        ).fetchone()
        landed[name] = {"files": n, "bytes": nbytes}
    return {
        "landing": landing,
        "warehouse": warehouse,
        "manifests": roots.get("manifests"),
        "records": total,
        "by_state": by_state,
        "open": by_state[State.HASHED] + by_state[State.MOVED],
        "ingested": by_state[State.MANIFESTED] - manifested_dup,
        "duplicates": manifested_dup,
        "errors": {"abandoned": by_state[State.ABANDONED], "by_note": errors},
        "oldest_open": None
        if oldest is None
        else {
            "id": oldest[0],
            "state": oldest[1],
            "path": site_path(oldest[4], oldest[2], 0),
            "since": rfc3339(oldest[3]),
            "age_seconds": round(max(now - oldest[3], 0) / 1e9, 3),
        },
        "last_landed": None
        if last is None
        else {
            "id": last[0],
            "path": site_path(last[6], last[1], 0),
            "warehouse_path": site_path(last[6], last[2], 1),
            "size": last[3],
            "sha256": last[4],
            "at": rfc3339(last[5]),
            "age_seconds": round(max(now - last[5], 0) / 1e9, 3),
        },
        "landed": landed,
        "rejected": _rejected(conn, site_path),
        "waiting": WAITING_NOTE,
        "sources": _by_source(conn, sites) if many else None,
    }


def _rejected(conn: sqlite3.Connection, site_path: Any) -> dict[str, Any]:
    """Files on record as rejected (they stay where they are): by reason, with the latest path."""
    try:
        rows = conn.execute(
            "SELECT reason, count(*), max(id) FROM rejections GROUP BY reason ORDER BY 2 DESC, 1"
        ).fetchall()
    except sqlite3.OperationalError:  # a ledger of a version before rejections: none on record
        rows = []
    by_reason = []
    for reason, n, latest_id in rows:
        row = conn.execute(
            "SELECT source_rel, at_ns, site FROM rejections WHERE id = ?", (latest_id,)
        ).fetchone()
        by_reason.append(
            {
                "reason": reason,
                "count": n,
                "latest_path": site_path(row[2], row[0], 0),
                "latest_at": rfc3339(row[1]),
            }
        )
    return {"files": sum(r["count"] for r in by_reason), "by_reason": by_reason}


def read_daemon(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> dict[str, Any]:
    """A running daemon's gauges and error counters; ``{"error": ...}`` if it cannot be read."""
    url = f"http://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as exc:
        return {"url": url, "error": str(getattr(exc, "reason", exc))}
    out: dict[str, Any] = {"url": url, "errors_by_kind": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _GAUGES:  # one sample per source: the daemon's is their sum
                key = _GAUGES[sample.name]
                out[key] = out.get(key, 0) + int(sample.value)
            elif sample.name == "ingestor_errors_total":
                out["errors_by_kind"][sample.labels.get("kind", "?")] = int(sample.value)
    if not any(k in out for k in _GAUGES.values()):
        return {"url": url, "error": "no ingestor gauges there (another service on that port?)"}
    return out


# ----------------------------------------------------------------- rendering


def _n(n: int) -> str:
    return f"{n:,}"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def render(report: dict[str, Any]) -> str:
    """The report for a person, one fact per line."""
    s = report["by_state"]
    lines = [
        f"ledger       {report['ledger']}"
        + (
            f" (landing {report['landing']})"
            if report["landing"]
            else f" ({len(report['sources'] or {})} sources)"
        ),
        f"records      {_n(report['records'])}: {_n(s['manifested'])} manifested "
        f"({_n(report['ingested'])} ingested, {_n(report['duplicates'])} duplicates), "
        f"{_n(s['abandoned'])} abandoned, {_n(report['open'])} open "
        f"({_n(s['hashed'])} hashed, {_n(s['moved'])} moved)",
        "landed       "
        + "; ".join(
            f"{name.replace('_', ' ')}: {_n(w['files'])} files, {human_bytes(w['bytes'])}"
            for name, w in report["landed"].items()
        ),
    ]
    last = report["last_landed"]
    lines.append(
        "last landed  none"
        if last is None
        else f"last landed  {last['at']} ({_age(last['age_seconds'])}) {last['path']} ({human_bytes(last['size'])})"
        + (f" -> {last['warehouse_path']}" if last["warehouse_path"] else "")
    )
    old = report["oldest_open"]
    lines.append(
        "oldest open  none (nothing hashed and not yet manifested)"
        if old is None
        else f"oldest open  {old['since']} ({_age(old['age_seconds'])}) {old['state']} {old['path']}"
    )
    daemon = report.get("daemon")
    if daemon is None:
        lines.append(f"waiting      {report['waiting']}")
    elif "error" in daemon:
        lines.append(f"waiting      unknown: cannot read {daemon['url']}: {daemon['error']}")
    else:
        lines.append(
            f"daemon       {_n(daemon.get('files_waiting', 0))} waiting for stability or a sidecar, "
            f"{_n(daemon.get('queue_depth', 0))} queued, {_n(daemon.get('files_in_flight', 0))} in flight, "
            f"{_n(daemon.get('records_retrying', 0))} retrying ({daemon['url']})"
        )
        kinds = daemon.get("errors_by_kind") or {}
        if kinds:
            lines.append("daemon errs  " + ", ".join(f"{k} {_n(v)}" for k, v in sorted(kinds.items())))
    for name, c in (report.get("sources") or {}).items():
        lines.append(
            f"source       {name}: {_n(c['landing_dirs'])} landing dirs, {_n(c['ingested'])} ingested "
            f"({human_bytes(c['bytes'])}), {_n(c['duplicates'])} duplicates, {_n(c['open'])} open, "
            f"{_n(c['abandoned'])} abandoned; last landed {c['last_landed_at'] or 'never'}"
        )
    rejected = report["rejected"]
    if rejected["files"]:
        lines.append(f"rejected     {_n(rejected['files'])} files that will not land as they are:")
        for r in rejected["by_reason"]:
            lines.append(
                f"               {_n(r['count'])} {r['reason']} (latest {r['latest_at']} {r['latest_path']})"
            )
    errs = report["errors"]
    if not errs["abandoned"]:
        lines.append("errors       none (no abandoned record)")
    else:
        lines.append(f"errors       {_n(errs['abandoned'])} abandoned:")
        for e in errs["by_note"]:
            lines.append(
                f"               {_n(e['count'])} {e['note']} (latest {e['latest_at']} {e['latest_path']})"
            )
    return "\n".join(lines)


def run_status(state_path: Path, *, as_json: bool, out: TextIO, metrics_port: int | None = None) -> int:
    report = read_ledger(state_path)
    if metrics_port is not None:
        report["daemon"] = read_daemon(metrics_port)
    if as_json:
        out.write(orjson.dumps(report).decode() + "\n")
    else:
        out.write(render(report) + "\n")
    out.flush()
    return 0
