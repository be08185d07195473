"""Ledger: the durable exactly-once state, in SQLite.

One thread owns the write connection (``_run``); callers — worker threads or
the event loop — hand it a function and wait on a future. It drains every
request queued at that moment into one ``BEGIN IMMEDIATE`` transaction, one
``SAVEPOINT`` per request so one failing request does not fail the others,
and commits once: thousands of files per second cost a handful of fsyncs.

Durability: WAL with ``synchronous=FULL``, so a committed transaction
survives power loss; the file itself (schema, connections, migrations) is
``ledger_db.py``. Rows carry the owner working on them (``owners.py``): any
process tells a dead owner from a live one and adopts its unfinished rows,
so the daemon and ``ingestor replay`` share one ledger safely.

The decisions taken inside those transactions (duplicate or not, which
destination) are in ``plan.py``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ingestor import faults
from ingestor import layout as layout_mod
from ingestor.errors import Fatal, Retryable
from ingestor.ledger_db import COLUMNS, connect, create, record_of, unknown_keys
from ingestor.manifest import manifest_rel_for
from ingestor.owners import OwnerLocks
from ingestor.plan import Dests, PlanPolicy, PlanResult, content_key, plan_batch
from ingestor.records import OPEN_SQL, Hashed, Identity, Record, State
from ingestor.settings import Dedup

T = TypeVar("T")
MAX_GROUP = 1024


@dataclass(frozen=True, slots=True)
class MovedUpdate:
    id: str
    manifest_floor: int
    # set when the file changed between hashing and the end of its move
    changed: tuple[Identity, str] | None = None


_STOP = object()


class Ledger:
    def __init__(self, path: Path, owner: str) -> None:
        self.path = path
        self.owner = owner
        self.owners = OwnerLocks(path.parent)
        self.id = ""  # the ledger's own id (meta ledger_id), known once open
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # commit statistics, written by the writer thread only
        self.commits = 0
        self.last_group = 0
        self.commit_observer: Callable[[int, float], None] | None = None

    # ------------------------------------------------------------ lifecycle

    def open(self, roots: dict[str, str] | None) -> None:
        """Create or open the ledger; refuse one made for other directories.

        ``roots``: the landing dir, warehouse and manifests dir of a ledger of
        one landing dir (its site 0); None for sources, whose landing dirs are
        registered as they are served (``site``).
        """
        roots = roots or {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = connect(self.path)
            conn.execute("PRAGMA journal_mode=WAL")
            create(conn)
            stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise Fatal(
                "open ledger", str(self.path), str(exc), "is it a ledger file? is the disk full?"
            ) from exc
        for key, value in roots.items():
            if key in stored and stored[key] != value:
                conn.close()
                raise Fatal(
                    "open ledger",
                    str(self.path),
                    f"it belongs to {key} {stored[key]}, not {value}",
                    "use the same directories, or another --state-path",
                )
        missing = {k: v for k, v in roots.items() if k not in stored}
        if "ledger_id" not in stored:
            missing["ledger_id"] = str(uuid.uuid4())
        if missing:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", missing.items())
                conn.execute("COMMIT")
                stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.Error as exc:
                conn.close()
                raise Fatal("open ledger", str(self.path), str(exc), "is the disk full?") from exc
        self.id = str(stored["ledger_id"])
        self.owners.acquire(self.owner)
        self._txn_lock = os.open(
            self.path.parent / "write.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer; leave every committed record in the main file.

        Read-only connections cannot checkpoint, so they are closed first and
        the writer's connection copies the WAL into the main file and empties
        it: after a clean stop ``ledger.sqlite`` alone holds the ledger (a copy
        of it is a backup), and a lost ``-wal`` loses nothing.
        """
        with self._readers_lock:
            for r in self._readers:
                r.close()
            self._readers.clear()
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass  # busy (another process reads) or disk full: the WAL stays, nothing is lost
            self._conn.close()
            os.close(self._txn_lock)
        self.owners.release(self.owner, remove=True)
        self.owners.close()

    # ------------------------------------------------------------ the writer

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, fut))
        return fut

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside the next group transaction; block until it commits."""
        return self.submit(fn).result()

    def _run(self) -> None:
        # Owns self._conn: no other thread touches the write connection.
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            group = [item]
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
            self._commit_group(group)

    def _commit_group(
        self, group: list[tuple[Callable[[sqlite3.Connection], Any], concurrent.futures.Future[Any]]]
    ) -> None:
        """One transaction for the group; every future gets its result or its error.

        Nothing that goes wrong here may end the writer thread: every later
        ledger call would wait for it for ever. An error outside the requests
        (the commit, a fault point) fails the whole group as retryable.
        """
        conn = self._conn
        started = time.monotonic()
        results: list[tuple[bool, Any]] = []
        # Writers of other processes (lander processes, a replay) queue on a flock,
        # woken the moment the holder commits; SQLite's own busy handler would poll
        # its lock with sleeps of 1 to 100 ms. SQLite's lock stays the authority.
        fcntl.flock(self._txn_lock, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _ in group:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, fn(conn)))
                    conn.execute("RELEASE op")
                except Exception as exc:  # handed to the caller through its future
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    if isinstance(exc, sqlite3.Error):
                        exc = Retryable("ledger", str(self.path), str(exc), "retried")
                    results.append((False, exc))
            if faults.ACTIVE:
                faults.ACTIVE.hit("before_commit")
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # rolled back by SQLite itself (a full disk can do that)
            full = isinstance(exc, sqlite3.Error) and "full" in str(exc)
            hint = "ledger disk full: free space; landing resumes by itself" if full else "retried"
            err = Retryable("commit", str(self.path), str(exc), hint)
            for _, fut in group:
                fut.set_exception(err)
            if full:
                self._checkpoint()
            return
        finally:
            fcntl.flock(self._txn_lock, fcntl.LOCK_UN)
        elapsed = time.monotonic() - started
        self.commits += 1
        self.last_group = len(group)
        for (_, fut), (ok, value) in zip(group, results, strict=True):
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if self.commit_observer is not None:
            try:
                self.commit_observer(len(group), elapsed)
            except Exception as exc:  # metrics must never fail committed work
                self._log_observer_error(exc)

    def _checkpoint(self) -> None:
        """After a failed commit: copy what the WAL holds into the main file (writer thread only).

        SQLite checkpoints by itself after a commit that leaves more than
        ``WAL_PAGES`` in the WAL, and the next commit after a complete
        checkpoint writes the WAL from its start; a commit that fails on a
        full disk never gets there, so it is done here (PASSIVE: it never
        waits for readers). Once space returns the WAL is reused, not grown.
        """
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # still full, or busy: tried again after the next failure

    def _log_observer_error(self, exc: Exception) -> None:
        from ingestor import logs

        logs.get_logger().error("commit_observer_failed", error=repr(exc))

    # ------------------------------------------------------------ readers

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (WAL: never blocks the writer)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def live_identities(self, idents: Sequence[Identity]) -> set[Identity]:
        """Which identities are in flight (any owner) or kept as duplicates."""
        keys = self.live_keys([(i.device, i.inode, i.size, i.mtime_ns) for i in idents])
        return {i for i in idents if (i.device, i.inode, i.size, i.mtime_ns) in keys}

    def live_keys(self, keys: Sequence[tuple[int, int, int, int]]) -> set[tuple[int, int, int, int]]:
        """``live_identities`` on plain (device, inode, size, mtime_ns) tuples."""
        unknown = set(self.unknown_keys(keys))
        return {k for i, k in enumerate(keys) if i not in unknown}

    def unknown_keys(self, keys: Sequence[tuple[int, int, int, int]]) -> list[int]:
        """Positions in ``keys`` of the identities that are neither in flight nor kept: for scans.

        One query per 1,000 keys, each key an index seek, and only the unknown
        ones come back: a scan of a million already-seen files costs a thousand
        queries that run inside SQLite (no GIL) and return nothing.
        """
        return unknown_keys(self.reader(), keys, self.path)

    # ------------------------------------------------------------ operations

    def plan(
        self, items: Sequence[Hashed], policy: PlanPolicy, floor_of: Callable[[str], int] | None = None
    ) -> list[PlanResult]:
        """HASHED rows for a batch, in one transaction.

        ``floor_of`` (the manifest writer's ``size``) records each row's manifest
        floor now: its line is appended after this commit, so it cannot start
        before the end of the last complete line seen here. Rows planned with a
        floor need no MOVED commit after their move (see ``worker.py``).
        """
        owner = self.owner

        def op(conn: sqlite3.Connection) -> list[PlanResult]:
            now = time.time_ns()
            dests = Dests(conn, policy.warehouse, wh=policy.wh)
            manifest_rel = manifest_rel_for(now)
            floor = floor_of(manifest_rel) if floor_of is not None else None
            return plan_batch(conn, dests, items, policy, owner, now, manifest_rel, floor)

        return self.call(op)

    def site(
        self, landing: str, warehouse: str, manifests: str, source: str, dataset: str
    ) -> tuple[int, int]:
        """The ids of a landing dir and of its warehouse, registered on first sight.

        The landing dir of a ledger of one (meta ``landing``) is site 0, so a
        config with sources can take over such a ledger's records. A warehouse
        is known by the id of the first site that used it.
        """

        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute("SELECT id FROM sites WHERE landing = ?", (landing,)).fetchone()
            if row is None:
                meta = conn.execute("SELECT value FROM meta WHERE key = 'landing'").fetchone()
                taken = conn.execute("SELECT 1 FROM sites WHERE id = 0").fetchone()
                site_id = 0 if (meta is not None and meta[0] == landing and taken is None) else None
                cur = conn.execute(
                    "INSERT INTO sites(id, landing, warehouse, manifests, source, dataset, wh) "
                    "VALUES (?, ?, ?, ?, ?, ?, -1)",
                    (site_id, landing, warehouse, manifests, source, dataset),
                )
                site_id = cur.lastrowid if site_id is None else site_id
            else:
                site_id = row[0]
                conn.execute(
                    "UPDATE sites SET warehouse=?, manifests=?, source=?, dataset=? WHERE id=?",
                    (warehouse, manifests, source, dataset, site_id),
                )
            (wh,) = conn.execute("SELECT min(id) FROM sites WHERE warehouse = ?", (warehouse,)).fetchone()
            conn.execute("UPDATE sites SET wh = ? WHERE id = ?", (wh, site_id))
            assert site_id is not None
            return int(site_id), int(wh)

        return self.call(op)

    def sites(self) -> dict[int, tuple[str, str, str, str, str]]:
        """Every landing dir the ledger knows: id → (landing, warehouse, manifests, source, dataset)."""
        rows = self.reader().execute("SELECT id, landing, warehouse, manifests, source, dataset FROM sites")
        return {r[0]: tuple(r[1:]) for r in rows}

    def moved(self, updates: Sequence[MovedUpdate], policy: PlanPolicy | None = None) -> None:
        dedup = policy.dedup if policy is not None else Dedup.CONTENT
        scope = policy.scope if policy is not None else b""

        def op(conn: sqlite3.Connection) -> None:
            now = time.time_ns()
            conn.executemany(
                f"UPDATE files SET state='{State.MOVED}', manifest_floor=?, updated_ns=? WHERE id=?",
                [(u.manifest_floor, now, u.id) for u in updates],
            )
            for u in updates:
                if u.changed is not None:
                    ident, sha = u.changed
                    conn.execute(
                        "UPDATE files SET size=?, mtime_ns=?, ctime_ns=?, sha256=?, note='changed during landing' "
                        "WHERE id=?",
                        (ident.size, ident.mtime_ns, ident.ctime_ns, sha, u.id),
                    )
                    # what landed is the new content: claim it, free the content that never landed
                    (source_rel,) = conn.execute(
                        "SELECT source_rel FROM files WHERE id=?", (u.id,)
                    ).fetchone()
                    conn.execute("DELETE FROM content WHERE id=?", (u.id,))
                    conn.execute(
                        "INSERT OR IGNORE INTO content(key, id) VALUES (?, ?)",
                        (content_key(sha, os.fsdecode(source_rel), dedup, scope), u.id),
                    )

        self.call(op)

    def remember(self, key: str, value: str) -> None:
        """Keep a value across restarts (the ``meta`` table)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

        self.call(op)

    def recall(self, key: str) -> str | None:
        try:
            row = self.reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise Retryable("read ledger", str(self.path), str(exc), "retried") from exc
        return None if row is None else str(row[0])

    def manifested(self, ids: Sequence[str]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            now = time.time_ns()
            conn.executemany(
                f"UPDATE files SET state='{State.MANIFESTED}', updated_ns=? WHERE id=?",
                [(now, i) for i in ids],
            )

        self.call(op)

    def abandon(self, rec_id: str, note: str) -> None:
        """Final: the source vanished or changed before it moved; free its claims."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"UPDATE files SET state='{State.ABANDONED}', note=?, updated_ns=? WHERE id=?",
                (note, time.time_ns(), rec_id),
            )
            conn.execute("DELETE FROM content WHERE id=?", (rec_id,))

        self.call(op)

    def replan_dest(self, rec: Record, policy: PlanPolicy) -> Record:
        """A new destination for a record whose planned one was taken meanwhile."""
        assert rec.dest_rel is not None

        def op(conn: sqlite3.Connection) -> Record:
            base = layout_mod.without_suffix(rec.dest_rel or "", rec.sha256)
            dest = Dests(conn, policy.warehouse, check_disk=True, wh=policy.wh).unique(
                base, rec.sha256, first=1
            )
            conn.execute(
                "UPDATE files SET dest_rel=?, updated_ns=? WHERE id=?",
                (os.fsencode(dest), time.time_ns(), rec.id),
            )
            return dataclasses.replace(rec, dest_rel=dest)

        return self.call(op)

    def replan_manifest(self, recs: Sequence[Record], floors: Callable[[str], int]) -> list[Record]:
        """Move records whose hour file is closed into the current hour's file."""

        def op(conn: sqlite3.Connection) -> list[Record]:
            now = time.time_ns()
            rel = manifest_rel_for(now)
            floor = floors(rel)
            out = []
            for r in recs:
                conn.execute(
                    "UPDATE files SET manifest_rel=?, ingested_ns=?, manifest_floor=?, updated_ns=? WHERE id=?",
                    (rel, now, floor, now, r.id),
                )
                out.append(dataclasses.replace(r, manifest_rel=rel, ingested_ns=now, manifest_floor=floor))
            return out

        return self.call(op)

    def adopt(self, dead_owner: str, sites: Sequence[int] | None = None) -> list[Record]:
        """Take over a dead owner's unfinished rows (of the landing dirs served: ``sites``);
        rows of other landing dirs stay the dead owner's until theirs is served."""
        me = self.owner
        where = "" if sites is None else f" AND site IN ({','.join(str(int(i)) for i in sites) or '-1'})"

        def op(conn: sqlite3.Connection) -> list[Record]:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM files WHERE owner=? AND state IN {OPEN_SQL}{where} ORDER BY id",
                (dead_owner,),
            ).fetchall()
            conn.execute(
                f"UPDATE files SET owner=? WHERE owner=? AND state IN {OPEN_SQL}{where}", (me, dead_owner)
            )
            return [record_of(r) for r in rows]

        return self.call(op)

    def knows(self, rec_id: str) -> bool:
        """Does the ledger hold a record (any state) or a rejection with this id?"""
        conn = self.reader()
        if conn.execute("SELECT 1 FROM files WHERE id = ?", (rec_id,)).fetchone() is not None:
            return True
        return conn.execute("SELECT 1 FROM rejections WHERE id = ?", (rec_id,)).fetchone() is not None

    def holds_open(self, owner: str) -> bool:
        """Does ``owner`` still have unfinished rows?"""
        conn = self.reader()
        row = conn.execute(f"SELECT 1 FROM files WHERE owner=? AND state IN {OPEN_SQL} LIMIT 1", (owner,))
        if row.fetchone() is not None:
            return True
        row = conn.execute("SELECT 1 FROM rejections WHERE owner=? AND written=0 LIMIT 1", (owner,))
        return row.fetchone() is not None

    def open_owners(self) -> set[str]:
        """Owners with records in flight, or rejections whose lines they did not write."""
        conn = self.reader()
        rows = conn.execute(f"SELECT DISTINCT owner FROM files WHERE state IN {OPEN_SQL}").fetchall()
        rows += conn.execute("SELECT DISTINCT owner FROM rejections WHERE written=0").fetchall()
        return {r[0] for r in rows}

    def unfinished(self) -> list[Record]:
        """This owner's rows that are not final (after a failed step)."""
        rows = (
            self.reader()
            .execute(
                f"SELECT {COLUMNS} FROM files WHERE owner=? AND state IN {OPEN_SQL} ORDER BY id",
                (self.owner,),
            )
            .fetchall()
        )
        return [record_of(r) for r in rows]
