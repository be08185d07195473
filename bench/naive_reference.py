"""The naive reference: the job as a plain Python script would do it.

    python bench/naive_reference.py --input LANDING --warehouse WH --manifests MF --db LEDGER
        [--interval 1.0] [--stability 0.2] [--once]

Every ``--interval`` seconds: ``os.walk`` the landing dir; for each file whose
mtime is older than ``--stability`` seconds (hidden names and .tmp/.part/.swp
skipped): SHA-256 it, look the hash up in SQLite (a duplicate goes under
``_duplicates/``), ``shutil.move`` it to ``ingest_date=YYYY-MM-DD/<relpath>``
in the warehouse (a name already taken gets ``~<sha8>``), INSERT one row and
commit (WAL, synchronous=FULL: one commit per file), append one JSON line to
``<manifests>/YYYY/MM/DD/HH/manifest.jsonl`` and fsync it.

Written plainly, not deliberately slow: what a careful engineer writes in an
afternoon. What it does not do, by design of "plain": no fsync of directories
after a move (a power cut can lose the rename), no crash recovery (a crash
between move and commit loses the record; between commit and manifest, the
line), no watch (the landing dir is rescanned from the top every interval),
one thread. SIGTERM stops it after the file in hand.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

IGNORED_SUFFIXES = (".tmp", ".part", ".swp")

stopping = False


def _stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def open_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS files(id INTEGER PRIMARY KEY, source TEXT, dest TEXT, "
        "sha256 TEXT, size INTEGER, status TEXT, ingested_at TEXT)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS files_sha ON files(sha256)")
    conn.commit()
    return conn


def land(path: str, rel: str, args: argparse.Namespace, conn: sqlite3.Connection) -> None:
    sha = sha256_of(path)
    size = os.path.getsize(path)
    now = datetime.datetime.now(datetime.UTC)
    seen = conn.execute("SELECT id FROM files WHERE sha256 = ? AND status = 'ingested'", (sha,)).fetchone()
    status = "duplicate" if seen else "ingested"
    dest = os.path.join(args.warehouse, "_duplicates" if seen else "", f"ingest_date={now:%Y-%m-%d}", rel)
    if os.path.exists(dest):
        stem, ext = os.path.splitext(dest)
        dest = f"{stem}~{sha[:8]}{ext}"
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(path, dest)
    conn.execute(
        "INSERT INTO files(source, dest, sha256, size, status, ingested_at) VALUES (?, ?, ?, ?, ?, ?)",
        (path, dest, sha, size, status, now.isoformat()),
    )
    conn.commit()
    manifest = os.path.join(args.manifests, f"{now:%Y/%m/%d/%H}", "manifest.jsonl")
    os.makedirs(os.path.dirname(manifest), exist_ok=True)
    line = {
        "status": status,
        "source_path": path,
        "warehouse_path": dest,
        "sha256": sha,
        "size": size,
        "ingested_at": now.isoformat().replace("+00:00", "Z"),
        "duplicate_of": seen[0] if seen else None,
    }
    with open(manifest, "a") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def scan_once(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    done = 0
    for dirpath, dirnames, filenames in os.walk(args.input):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if stopping:
                return done
            if name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            if time.time() - st.st_mtime < args.stability:
                continue
            land(path, os.path.relpath(path, args.input), args, conn)
            done += 1
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True)
    p.add_argument("--warehouse", required=True)
    p.add_argument("--manifests", required=True)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between scans")
    p.add_argument("--stability", type=float, default=0.2, help="minimum age of a file's mtime, seconds")
    p.add_argument("--once", action="store_true", help="one scan, then exit")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    conn = open_db(args.db)
    print("naive: started", flush=True)
    try:
        while not stopping:
            scan_once(args, conn)
            if args.once:
                break
            deadline = time.monotonic() + args.interval
            while not stopping and time.monotonic() < deadline:
                time.sleep(min(0.1, args.interval))  # the scan interval, wakes for SIGTERM
    finally:
        conn.close()


if __name__ == "__main__":
    main()
