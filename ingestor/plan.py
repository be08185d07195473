"""Plan: a hashed file → its ledger row (HASHED), decided inside one ledger transaction.

Called by the ledger's writer thread, in the group transaction, so every
decision is atomic across threads and processes (a daemon and a replay):

- is this file already in flight elsewhere, or a duplicate kept in place?
  (the insert is the claim: a unique index over live identities refuses it);
- is its content already claimed? By a final record: a duplicate (quarantined
  under ``_duplicates/``, deleted or kept); by one still in flight: wait
  (``Defer``) until that one is final, so that a duplicate is never decided
  against a file that may yet vanish;
- where does it go? The layout's path, unless a directory component is a file
  (suffixed), or another record planned it (the unique index of destinations:
  a content suffix ``~1a2b3c4d``, then a counter). A file already *on disk*
  there is found by the move, which never replaces, and re-planned with
  ``check_disk``.

``plan_batch`` decides a whole batch: new content (the common case) in bulk
— one content lookup for the batch, one multi-row insert that refuses nothing
it cannot also refuse one by one, one multi-row content claim — and everything
else (content already claimed, repeated within the batch, or a row the insert
refused) one by one through ``plan_one``, in batch order, after the bulk rows:
the same decisions a file-by-file pass makes.
"""

from __future__ import annotations

import os
import sqlite3
import stat as stat_mod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ulid

from ingestor import layout as layout_mod
from ingestor.records import OPEN_SQL, Action, Hashed, Identity, Record, State, Status
from ingestor.settings import Dedup, OnDuplicate

DUPLICATES_DIR = "_duplicates"


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    layout: str
    dedup: Dedup
    on_duplicate: OnDuplicate
    warehouse: Path
    site: int = 0  # the landing dir's id (ledger ``sites``)
    wh: int = 0  # the warehouse's id: destinations are unique per warehouse
    scope: bytes = b""  # prefix of the content keys: the dataset's, or none (global)
    fields: tuple[tuple[str, str], ...] = ()  # the layout's placeholders: source name and values

    @property
    def extra(self) -> dict[str, str]:
        return dict(self.fields)


@dataclass(frozen=True, slots=True)
class Skip:
    """Not planned: the identity is already in flight elsewhere, or kept."""

    reason: str


@dataclass(frozen=True, slots=True)
class Defer:
    """Same content as a file still in flight: decide once that one is final."""

    original: str


PlanResult = Record | Skip | Defer


def plan_one(
    conn: sqlite3.Connection,
    dests: Dests,
    h: Hashed,
    policy: PlanPolicy,
    owner: str,
    now: int,
    manifest_rel: str,
    manifest_floor: int | None,
) -> PlanResult:
    """Three statements on the common path: who holds this content; the insert
    (which is the claim: the unique index of live identities refuses a file in
    flight elsewhere or kept, the unique index of destinations a taken path);
    the content claim."""
    ident = h.identity
    rel = h.candidate.rel
    key = content_key(h.sha256, rel, policy.dedup, policy.scope)
    orig = conn.execute(
        "SELECT c.id, f.state FROM content c JOIN files f ON f.id = c.id WHERE c.key=?", (key,)
    ).fetchone()
    rec_id = str(ulid.ULID.from_timestamp(now / 1e9))
    planned = layout_mod.render(policy.layout, rel, now, h.sha256, policy.extra)
    dest: str | None
    if orig is not None:
        if orig[1] in (State.HASHED, State.MOVED):
            if _live(conn, ident):
                return Skip("in flight or kept")
            return Defer(orig[0])
        status, duplicate_of = Status.DUPLICATE, orig[0]
        action = _DUPLICATE_ACTION[policy.on_duplicate]
        dest = f"{DUPLICATES_DIR}/{planned}" if action is Action.QUARANTINED else None
    else:
        status, duplicate_of, action, dest = Status.INGESTED, None, Action.LANDED, planned
    base = dest
    if base is not None:
        base = dest = dests.unique(base, h.sha256, first=0, files=False)
    sidecar = h.candidate.sidecar
    attempt = 0
    while True:
        try:
            conn.execute(
                _INSERT_FILE,
                (
                    rec_id, State.HASHED, status, action, owner, os.fsencode(rel), ident.device, ident.inode,
                    ident.size, ident.mtime_ns, h.sha256, _b(dest), manifest_rel, manifest_floor, now, duplicate_of,
                    _b(sidecar), now, ident.ctime_ns, policy.site, policy.wh, h.candidate.detected_ns,
                ),
            )  # fmt: skip
            break
        except sqlite3.IntegrityError as exc:
            if "files.dest_rel" in str(exc) and base is not None:  # (wh, dest_rel)
                attempt += 1  # planned by another record: a content suffix, then a counter
                dest = dests.unique(
                    layout_mod.with_suffix(base, h.sha256, attempt), h.sha256, first=0, files=False
                )
                continue
            if "files.inode" in str(exc):
                return Skip("in flight or kept")
            raise
    if status is Status.INGESTED:
        conn.execute("INSERT INTO content(key, id) VALUES (?, ?)", (key, rec_id))
    return Record(
        id=rec_id,
        state=State.HASHED,
        status=status,
        action=action,
        source_rel=rel,
        identity=ident,
        sha256=h.sha256,
        dest_rel=dest,
        manifest_rel=manifest_rel,
        manifest_floor=manifest_floor,
        ingested_ns=now,
        duplicate_of=duplicate_of,
        sidecar_rel=sidecar,
        seen_at=h.candidate.seen_at,
        temp=h.temp,
        site=policy.site,
        detected_ns=h.candidate.detected_ns,
    )


def plan_batch(
    conn: sqlite3.Connection,
    dests: Dests,
    items: Sequence[Hashed],
    policy: PlanPolicy,
    owner: str,
    now: int,
    manifest_rel: str,
    manifest_floor: int | None,
) -> list[PlanResult]:
    """``plan_one`` for every item, in order; new content in bulk (see the module doc)."""
    keys = [content_key(h.sha256, h.candidate.rel, policy.dedup, policy.scope) for h in items]
    extra = policy.extra
    claimed = _claimed(conn, keys)
    results: list[PlanResult | None] = [None] * len(items)
    bulk: list[int] = []
    rows: list[tuple[Any, ...]] = []
    fresh: set[bytes] = set()
    for i, (h, key) in enumerate(zip(items, keys, strict=True)):
        if key in claimed or key in fresh:
            continue  # a duplicate, or content in flight: one by one below
        fresh.add(key)
        ident = h.identity
        rel = h.candidate.rel
        rec_id = str(ulid.ULID.from_timestamp(now / 1e9))
        dest = dests.unique(
            layout_mod.render(policy.layout, rel, now, h.sha256, extra), h.sha256, first=0, files=False
        )
        sidecar = h.candidate.sidecar
        rows.append(
            (
                rec_id, State.HASHED, Status.INGESTED, Action.LANDED, owner, os.fsencode(rel), ident.device,
                ident.inode, ident.size, ident.mtime_ns, h.sha256, os.fsencode(dest), manifest_rel,
                manifest_floor, now, None, _b(sidecar), now, ident.ctime_ns, policy.site, policy.wh,
                h.candidate.detected_ns,
            )
        )  # fmt: skip
        bulk.append(i)
        results[i] = Record(
            rec_id, State.HASHED, Status.INGESTED, Action.LANDED, rel, ident, h.sha256, dest, manifest_rel,
            manifest_floor, now, None, sidecar, h.candidate.seen_at, h.temp, policy.site,
            h.candidate.detected_ns,
        )  # fmt: skip
    if rows:
        before = conn.total_changes
        conn.executemany(_INSERT_FILE + " ON CONFLICT DO NOTHING", rows)
        if conn.total_changes - before != len(rows):
            # refused by a unique index (identity in flight or kept, destination
            # planned): those go one by one, where each refusal has its answer
            ids = [row[0] for row in rows]
            present = _present(conn, ids)
            keep = []
            for i, row in zip(bulk, rows, strict=True):
                if row[0] in present:
                    keep.append(i)
                else:
                    results[i] = None
            bulk = keep
        conn.executemany(
            "INSERT INTO content(key, id) VALUES (?, ?)",
            [(keys[i], results[i].id) for i in bulk],  # type: ignore[union-attr]
        )
    for i, h in enumerate(items):
        if results[i] is None:
            results[i] = plan_one(conn, dests, h, policy, owner, now, manifest_rel, manifest_floor)
    return results  # type: ignore[return-value]


def _claimed(conn: sqlite3.Connection, keys: Sequence[bytes]) -> set[bytes]:
    """Which content keys have a row in ``content`` (one query per 500 keys)."""
    found: set[bytes] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join(["(?)"] * len(chunk))
        found.update(
            r[0]
            for r in conn.execute(
                f"SELECT c.key FROM (VALUES {marks}) v JOIN content c ON c.key = v.column1", chunk
            )
        )
    return found


def _present(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(r[0] for r in conn.execute(f"SELECT id FROM files WHERE id IN ({marks})", chunk))
    return found


def _live(conn: sqlite3.Connection, ident: Identity) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM files WHERE inode=? AND device=? AND size=? AND mtime_ns=? "
            f"AND (state IN {OPEN_SQL} OR action = '{Action.KEPT}')",
            (ident.inode, ident.device, ident.size, ident.mtime_ns),
        ).fetchone()
        is not None
    )


_DUPLICATE_ACTION = {
    OnDuplicate.QUARANTINE: Action.QUARANTINED,
    OnDuplicate.DELETE: Action.DELETED,
    OnDuplicate.KEEP: Action.KEPT,
}
_INSERT_FILE = (
    "INSERT INTO files(id, state, status, action, owner, source_rel, device, inode, size, mtime_ns, "
    "sha256, dest_rel, manifest_rel, manifest_floor, ingested_ns, duplicate_of, sidecar_rel, updated_ns, ctime_ns, "
    "site, wh, detected_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def content_key(sha256: str, rel: str, dedup: Dedup, scope: bytes = b"") -> bytes:
    """The dedup key: the content, or the content at one source path; within a scope
    (a dataset's prefix, or none: everything the ledger holds)."""
    key = scope + bytes.fromhex(sha256)
    return key + b"\0" + os.fsencode(rel) if dedup is Dedup.PATH_CONTENT else key


def scope_of(site: int, dataset_scope: bool) -> bytes:
    """The content key prefix of a site: none for site 0 (a ledger of one landing dir) or
    the global scope; else the site's id (a byte that is not part of a hash: 'd')."""
    return b"d" + site.to_bytes(8, "big") if dataset_scope and site else b""


class Dests:
    """Destination checks inside one transaction (owned by the writer thread).

    ``unique`` gives ``dest`` if nobody planned it and nothing is there, else a
    suffixed variant. Directory components are checked too: a landed or
    planned *file* where the path needs a directory (``reports`` landed, now
    ``reports/q1.csv`` comes) gets that component suffixed, or the landing dir
    would never drain. Directories found usable are remembered for the rest of
    the transaction: the files of a batch mostly share them.
    """

    def __init__(
        self, conn: sqlite3.Connection, warehouse: Path, *, check_disk: bool = False, wh: int = 0
    ) -> None:
        self.conn = conn
        self.root = os.fsencode(warehouse)
        self.wh = wh
        self.check_disk = check_disk  # a re-plan after a collision: look at the disk too
        self.dirs_ok: set[str] = set()

    def unique(self, dest: str, sha: str, *, first: int, files: bool = True) -> str:
        """With ``files=False`` only the directory components are checked: planning
        leaves a taken file path to the unique index of destinations."""
        parts = dest.split("/")
        for i in range(len(parts) - 1):
            prefix = "/".join(parts[: i + 1])
            if prefix in self.dirs_ok:
                continue
            attempt = 0
            while self._dir_blocked(prefix):
                attempt += 1
                prefix = layout_mod.with_suffix("/".join(parts[: i + 1]), sha, attempt)
            parts[i] = prefix.rsplit("/", 1)[-1]
            self.dirs_ok.add(prefix)
        dest = "/".join(parts)
        if not files:
            return dest
        attempt = first
        while True:
            cand = dest if attempt == 0 else layout_mod.with_suffix(dest, sha, attempt)
            if not self._file_blocked(cand):
                return cand
            attempt += 1

    def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(self.root + b"/" + os.fsencode(rel))
        except FileNotFoundError:
            return None

    def _planned_at(self, raw: bytes) -> bool:
        return (
            self.conn.execute(
                f"SELECT 1 FROM files WHERE wh = ? AND dest_rel = ? AND state != '{State.ABANDONED}'",
                (self.wh, raw),
            ).fetchone()
            is not None
        )

    def _dir_blocked(self, rel: str) -> bool:
        """Can ``rel`` not be (or become) a directory: a non-directory there, or a file planned there?"""
        st = self._lstat(rel)
        if st is not None:
            return not stat_mod.S_ISDIR(st.st_mode)
        return self._planned_at(os.fsencode(rel))

    def _planned_at_or_below(self, raw: bytes) -> bool:
        """A file planned at rel or below rel/: two index seeks in one statement."""
        row = self.conn.execute(
            f"SELECT EXISTS(SELECT 1 FROM files WHERE wh = ? AND dest_rel = ? AND state != '{State.ABANDONED}') "
            "OR EXISTS(SELECT 1 FROM files WHERE wh = ? AND dest_rel >= ? AND dest_rel < ? "
            f"AND state != '{State.ABANDONED}')",
            (
                self.wh,
                raw,
                self.wh,
                raw + b"/",
                raw + b"0",
            ),  # "0" is the byte after "/": [rel/, rel0) is what lies below rel
        ).fetchone()
        return bool(row[0])

    def _file_blocked(self, rel: str) -> bool:
        """Is ``rel`` taken: planned, or needed as a directory by a planned file?

        A file already *present* there (put by hand, or by a ledger that was
        reset) is not looked for when planning: the move finds it, never
        replaces it (RENAME_NOREPLACE) and re-plans with ``check_disk``; that
        saves a system call per file on the common path.
        """
        if self.check_disk and self._lstat(rel) is not None:
            return True
        return self._planned_at_or_below(os.fsencode(rel))


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)
