"""The ledger's SQLite file: schema, connections, migrations, its id, and the scan's lookup.

``ledger.py`` owns the writer; this is what every process that opens the
file needs, the scan helpers (read-only) included. Durability: WAL with
``synchronous=FULL`` (set on every connection: it does not persist; WAL
does), and a bounded WAL (``WAL_PAGES``, ``WAL_LIMIT``).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingestor.errors import Retryable
from ingestor.records import OPEN_SQL, Action, Identity, Record, State, Status

# SQLite checkpoints the WAL past WAL_PAGES pages (1 MiB; its default, 4 MiB, was never
# reached on a small ledger volume, which the WAL then filled for good) and a
# checkpointed WAL is cut back to WAL_LIMIT bytes
WAL_PAGES = 256
WAL_LIMIT = 1 << 20

TABLES = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    action TEXT NOT NULL,
    owner TEXT NOT NULL,
    source_rel BLOB NOT NULL,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    dest_rel BLOB,
    manifest_rel TEXT NOT NULL,
    manifest_floor INTEGER,
    ingested_ns INTEGER NOT NULL,
    duplicate_of TEXT,
    sidecar_rel BLOB,
    note TEXT,
    updated_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL DEFAULT 0,  -- the columns from here on: where ALTER TABLE puts them
    site INTEGER NOT NULL DEFAULT 0,  -- sites.id: the landing dir source_rel is relative to
    wh INTEGER NOT NULL DEFAULT 0,  -- the warehouse dest_rel is relative to (the id of its first site)
    detected_ns INTEGER NOT NULL DEFAULT 0  -- the first event or scan that saw the file; 0: not known
);
-- one row per landing dir served; 0: the landing dir of a ledger of one (meta 'landing')
CREATE TABLE IF NOT EXISTS sites(
    id INTEGER PRIMARY KEY,
    landing TEXT NOT NULL UNIQUE,
    warehouse TEXT NOT NULL,
    manifests TEXT NOT NULL,
    source TEXT NOT NULL,
    dataset TEXT NOT NULL,  -- the placeholder values, a JSON object
    wh INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS content(key BLOB PRIMARY KEY, id TEXT NOT NULL) WITHOUT ROWID;
-- files that will not land as they are, once per file identity (a manifest line each, status
-- rejected); -1: not known (the file could not be stat'ed)
CREATE TABLE IF NOT EXISTS rejections(
    id TEXT PRIMARY KEY,
    site INTEGER NOT NULL,
    source_rel BLOB NOT NULL,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    hint TEXT,
    at_ns INTEGER NOT NULL,
    manifest_rel TEXT NOT NULL,
    manifest_floor INTEGER,
    written INTEGER NOT NULL DEFAULT 0,  -- 1 once its manifest line is written and fsynced
    owner TEXT NOT NULL,
    run_id TEXT
);
-- every daemon from start to stop, every replay (runs.py)
CREATE TABLE IF NOT EXISTS runs(
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    owner TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    finished_ns INTEGER,
    status TEXT NOT NULL,
    landed INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    error_summary TEXT
);
"""
INDEXES = f"""
CREATE UNIQUE INDEX IF NOT EXISTS files_dest_wh ON files(wh, dest_rel)
    WHERE dest_rel IS NOT NULL AND state != '{State.ABANDONED}';
-- one live row per identity: the insert of a plan is itself the claim
CREATE UNIQUE INDEX IF NOT EXISTS files_live ON files(inode, device, size, mtime_ns)
    WHERE state IN {OPEN_SQL} OR action = '{Action.KEPT}';
CREATE INDEX IF NOT EXISTS files_open ON files(owner) WHERE state IN {OPEN_SQL};
CREATE INDEX IF NOT EXISTS files_problem ON files(state, status, note)
    WHERE state = '{State.ABANDONED}' OR status = '{Status.DUPLICATE}';
-- ingestor lookup: by source path, by content (a sha256 or a prefix of one)
CREATE INDEX IF NOT EXISTS files_source ON files(source_rel, site);
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE UNIQUE INDEX IF NOT EXISTS rejections_once ON rejections(source_rel, site, inode, device, size, mtime_ns);
CREATE INDEX IF NOT EXISTS rejections_unwritten ON rejections(owner) WHERE written = 0;
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_ns);
"""

SCHEMA = TABLES + INDEXES  # a new ledger's (tests and benchmarks build one directly)

COLUMNS = (
    "id, state, status, action, source_rel, device, inode, size, mtime_ns, sha256, dest_rel, "
    "manifest_rel, manifest_floor, ingested_ns, duplicate_of, sidecar_rel, ctime_ns, site, detected_ns"
)


def _s(blob: bytes | None) -> str | None:
    return None if blob is None else os.fsdecode(blob)


def record_of(row: Sequence[Any]) -> Record:
    return Record(
        id=row[0],
        state=State(row[1]),
        status=Status(row[2]),
        action=Action(row[3]),
        source_rel=os.fsdecode(row[4]),
        identity=Identity(row[5], row[6], row[7], row[8], row[16]),
        sha256=row[9],
        dest_rel=_s(row[10]),
        manifest_rel=row[11],
        manifest_floor=row[12],
        ingested_ns=row[13],
        duplicate_of=row[14],
        sidecar_rel=_s(row[15]),
        site=row[17],
        detected_ns=row[18],
    )


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"  # '#' and '?' are legal in paths
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    if not readonly:
        conn.execute("PRAGMA synchronous=FULL")
        # a bounded WAL: checkpointed past WAL_PAGES, cut back to WAL_LIMIT after a checkpoint
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
    return conn


def create(conn: sqlite3.Connection) -> None:
    """The schema, on a new ledger or (migrated) on one written by an earlier version."""
    conn.executescript(TABLES)
    migrate(conn)
    conn.executescript(INDEXES)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a ledger written by an earlier version up to this schema."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(files)")}
    if "ctime_ns" not in columns:  # 0: unknown, not compared
        conn.execute("ALTER TABLE files ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0")
    if "site" not in columns:  # every row of a ledger of one landing dir: site 0, its warehouse 0
        conn.execute("ALTER TABLE files ADD COLUMN site INTEGER NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE files ADD COLUMN wh INTEGER NOT NULL DEFAULT 0")
    if "detected_ns" not in columns:  # 0: not known
        conn.execute("ALTER TABLE files ADD COLUMN detected_ns INTEGER NOT NULL DEFAULT 0")
    conn.execute("DROP INDEX IF EXISTS files_dest")  # unique per warehouse now: files_dest_wh


def peek_id(path: Path) -> str | None:
    """The id of the ledger at ``path`` without creating or changing anything; None if there is none."""
    if not path.is_file():
        return None
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()
    except sqlite3.Error:
        return None  # empty, truncated, not a ledger yet: open() says which
    finally:
        conn.close()
    return None if row is None else str(row[0])


def unknown_keys(
    conn: sqlite3.Connection, keys: Sequence[tuple[int, int, int, int]], path: Path
) -> list[int]:
    """``Ledger.unknown_keys`` on a given connection (a scan helper process has its own)."""
    out: list[int] = []
    try:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            marks = ",".join(["(?,?,?,?,?)"] * len(chunk))
            params = [v for j, k in enumerate(chunk, start) for v in (j, k[1], k[0], k[2], k[3])]
            # the values drive the lookup: one seek each in files_live, whose
            # condition is the subquery's ("(cols) IN (VALUES ...)" scanned the index)
            rows = conn.execute(
                f"WITH v(j, i, d, s, m) AS (VALUES {marks}) SELECT v.j FROM v WHERE NOT EXISTS ("
                "SELECT 1 FROM files f WHERE f.inode = v.i AND f.device = v.d "
                "AND f.size = v.s AND f.mtime_ns = v.m "
                f"AND (f.state IN {OPEN_SQL} OR f.action = '{Action.KEPT}'))",
                params,
            ).fetchall()
            out.extend(r[0] for r in rows)
    except sqlite3.Error as exc:
        raise Retryable("read ledger", str(path), str(exc), "retried") from exc
    return out
