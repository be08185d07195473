"""Rejections: files that will not land as they are, on record once per file identity.

Readiness and the workers find them: a symlink (never followed), a FIFO or a
device (never opened), a path too long for the kernel, a path that cannot be
reached, an unreadable file, a sidecar whose data file never came, a file
that vanished after it was planned and before it moved (its record is
abandoned). Each is
recorded in the ledger (``rejections``: unique per path, landing dir and
identity) and by a manifest line with status ``rejected``, its ``reason`` and
``hint``. The same file seen again (every scan sees it, a restart sees it
again) is not recorded again; a file fixed later is a new identity (replaced)
or simply lands (permissions granted), as any other.

Order, as for landed files: the row names its manifest file and that file's
size (the floor below which its line cannot be), and is committed; the line
is appended and fsynced; the row is marked written. A process that dies
between leaves a row not written: recovery (``finish``) appends its line
unless a line with its id is already there.
"""

from __future__ import annotations

import os
import sqlite3
import stat as stat_mod
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ulid

from ingestor import runs
from ingestor.manifest import ManifestRecord, manifest_rel_for

if TYPE_CHECKING:
    from ingestor.stages import SiteStages


_UNKNOWN = (-1, -1, -1, -1)  # the identity of a file that could not be stat'ed
SHORTEN = "shorten the path: the kernel takes no longer one below the landing dir"
VANISHED = "vanished before it moved: deleted or moved away while it was landing"
VANISHED_HINT = "nothing of it landed: deliver it again if it was meant to land"
ORPHAN_HINT = "write its data file (it then lands), or remove the sidecar"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A file readiness or a worker found will not land, and why."""

    rel: str
    ident: tuple[int, int, int, int] | None  # inode, device, size, mtime when judged; None: not known
    reason: str
    hint: str | None


def ident_of(st: os.stat_result | None) -> tuple[int, int, int, int] | None:
    return None if st is None else (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def kind_of(mode: int) -> str:
    """What a file that is not a regular file is, and what is never done to it."""
    if stat_mod.S_ISLNK(mode):
        return "a symlink: never followed"
    if stat_mod.S_ISFIFO(mode):
        return "a FIFO: never opened"
    if stat_mod.S_ISSOCK(mode):
        return "a socket"
    if stat_mod.S_ISCHR(mode) or stat_mod.S_ISBLK(mode):
        return "a device: never opened"
    return "not a regular file"


def hint_for(st: os.stat_result | None) -> str:
    """What an operator does about a file that is not a regular file."""
    if st is not None and stat_mod.S_ISLNK(st.st_mode):
        return "deliver the file itself, not a symlink to it (symlinks are never followed)"
    if st is not None and not stat_mod.S_ISREG(st.st_mode):
        return "deliver a regular file (FIFOs, sockets and devices are never read)"
    return "fix what the reason says; the file lands once it can"


def record(stages: SiteStages, found: Sequence[Rejected]) -> int:
    """In a thread: record what was not recorded before, line and all; returns how many.

    Raises ``Retryable`` when the ledger or the manifest cannot take them now:
    the rows committed stay not written and recovery writes their lines.
    """
    site = stages.site
    landing = str(stages.s.input)
    now = time.time_ns()
    manifest_rel = manifest_rel_for(now)
    writer = stages.manifest
    floor = writer.size(manifest_rel)
    rows = [(str(ulid.ULID.from_timestamp(now / 1e9)), r) for r in found]
    owner = stages.ledger.owner

    def insert(conn: sqlite3.Connection) -> list[str]:
        new = []
        for rec_id, r in rows:
            cur = conn.execute(
                "INSERT OR IGNORE INTO rejections(id, site, source_rel, inode, device, size, mtime_ns, "
                "reason, hint, at_ns, manifest_rel, manifest_floor, owner, run_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (rec_id, site.site_id, os.fsencode(r.rel), *(r.ident or _UNKNOWN), r.reason, r.hint, now,
                 manifest_rel, floor, owner, runs.RUN_ID),
            )  # fmt: skip
            if cur.rowcount:
                new.append(rec_id)
        return new

    new = set(stages.ledger.call(insert))
    if not new:
        return 0
    lines = [
        ManifestRecord.rejected(
            rec_id,
            landing,
            r.rel,
            r.ident,
            r.reason,
            r.hint,
            at_ns=now,
            source=site.source,
            dataset=site.dataset,
        ).to_json()
        for rec_id, r in rows
        if rec_id in new
    ]
    writer.append(manifest_rel, lines)
    _written(stages, list(new))
    return len(new)


def _written(stages: SiteStages, ids: list[str]) -> None:
    def op(conn: sqlite3.Connection) -> None:
        conn.executemany("UPDATE rejections SET written=1 WHERE id=?", [(i,) for i in ids])

    stages.ledger.call(op)


def finish(stages: SiteStages, owner: str) -> int:
    """In a thread: write the lines ``owner`` (dead, or this process before) did not write for
    this landing dir; returns how many lines were appended."""
    rows = (
        stages.ledger.reader()
        .execute(
            "SELECT id, source_rel, inode, device, size, mtime_ns, reason, hint, at_ns, manifest_rel, "
            "manifest_floor FROM rejections WHERE owner=? AND written=0 AND site=?",
            (owner, stages.site.site_id),
        )
        .fetchall()
    )
    if not rows:
        return 0
    writer = stages.manifest
    site = stages.site
    landing = str(stages.s.input)
    appended = 0
    by_file: dict[str, list[Any]] = {}
    for row in rows:
        by_file.setdefault(row[9], []).append(row)
    for manifest_rel, group in by_file.items():
        floor = min(r[10] or 0 for r in group)
        there = writer.find_ids(manifest_rel, floor, {r[0] for r in group})
        lines = []
        for rec_id, rel, ino, dev, size, mtime_ns, reason, hint, at_ns, _, _ in group:
            if rec_id in there:
                continue
            ident = None if ino == -1 else (ino, dev, size, mtime_ns)
            lines.append(
                ManifestRecord.rejected(
                    rec_id, landing, os.fsdecode(rel), ident, reason, hint,
                    at_ns=at_ns, source=site.source, dataset=site.dataset,
                ).to_json()
            )  # fmt: skip
        if lines:
            writer.append(manifest_rel, lines)
            appended += len(lines)
    _written(stages, [r[0] for r in rows])
    return appended
