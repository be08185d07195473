"""Rebuild: a lost ledger → a new one, from the manifests and the warehouse.

Every landed file has a manifest line, and a line holds what its record
held: id, status, what happened to the source, identity, content, where it
landed, which manifest file and where in it. ``rebuild`` reads every line (in
manifest path order, streamed) into a new ledger:

- one ``manifested`` record per line (a later line with an id already seen is
  reported, not recorded);
- the content claim of every ``ingested`` line (dedup: a resend of that
  content is a duplicate again; within the ``dedup`` scope of the settings);
- its destination (the unique index of destinations: nothing lands over it);
- a duplicate ``kept`` in the landing dir with its identity, completed from
  the file itself (the line has its mtime to the microsecond only), so the
  scan knows it again.

Then it walks the warehouse: a file that no line names (a landing cut off
between the move and its line, with the ledger that knew it) is reported,
not adopted: nothing says where it came from. ``ingestor verify`` lists it.

The new ledger takes the id of the ledger that wrote the manifests (from
``.ingestor-ledger``), is written beside the target and renamed into place,
and the three directories are bound to it. It refuses to run while any
ingestor uses one of the directories, and over a ledger that holds records.
"""

from __future__ import annotations

import calendar
import dataclasses
import os
import sqlite3
import stat as stat_mod
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import ulid

from ingestor import binding, manifest
from ingestor.errors import Refused
from ingestor.fsops import OPEN_DIR, TempDir, fsync_dir, open_beneath
from ingestor.ledger import Ledger
from ingestor.manifest import ManifestError, ManifestRecord, iter_lines
from ingestor.plan import content_key, scope_of
from ingestor.records import Action, State, Status
from ingestor.settings import DedupScope, Settings
from ingestor.sources import Config, Site, plain_config

MAX_EXAMPLES = 5
_BATCH = 5000


@dataclass
class RebuildReport:
    records: int = 0
    rejected: int = 0  # rejected files' lines: on record again
    manifest_files: int = 0
    claims: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example)


def parse_rfc3339(text: str) -> int:
    """Nanoseconds of ``manifest.rfc3339``'s ``2026-11-23T15:01:02.123456Z``."""
    if not (isinstance(text, str) and text.endswith("Z") and "T" in text):
        raise ValueError(f"{text!r} is not an RFC 3339 UTC time")
    date, _, clock = text[:-1].partition("T")
    whole, _, frac = clock.partition(".")
    y, mo, d = (int(p) for p in date.split("-"))
    h, mi, se = (int(p) for p in whole.split(":"))
    ns = int((frac + "000000000")[:9]) if frac else 0
    return calendar.timegm((y, mo, d, h, mi, se, 0, 0, 0)) * 1_000_000_000 + ns


def _ledger_records(path: Path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM files").fetchone()[0])
    except sqlite3.Error:
        return 0  # not a ledger yet (empty, truncated): replaced
    finally:
        conn.close()


def rebuild(s: Settings | Config) -> RebuildReport:
    """Rebuild the ledger at ``state_path``; raises ``Refused`` when it must not.

    With sources: every landing dir of every source, those that match now
    and those whose manifests dir is still there (a dataset retired), each
    with its own records, content claims and destinations.
    """
    if isinstance(s, Settings):
        s = plain_config(s)
    state = s.settings.state_path
    sites = _sites(s)
    if s.plain:
        for d in (s.settings.input, s.settings.warehouse, s.settings.manifests):
            if not d.is_dir():
                raise Refused(f"{d} is not a directory: nothing to rebuild from")
    held: list[binding.Binding] = []
    try:
        seen: set[Path] = set()
        for site in sites:
            ss = site.settings
            for role, d in (("input", ss.input), ("warehouse", ss.warehouse), ("manifests", ss.manifests)):
                if d in seen or not d.is_dir():
                    continue
                seen.add(d)
                b = binding.Binding(d, role)
                b.acquire_alone()
                held.append(b)
        if (n := _ledger_records(state)) > 0:
            raise Refused(
                f"the ledger {state} holds {n} records: rebuild only replaces a lost one; "
                "move it away first if it is wrong"
            )
        # the id of the ledger that wrote the manifests: the directories stay bound to it
        found = [b.marker["ledger_id"] for b in reversed(held) if b.marker]
        if len(set(found)) > 1:
            raise Refused(
                f"the directories of these sources are bound to {len(set(found))} different ledgers: "
                "rebuild one ledger's sources at a time"
            )
        ledger_id = found[0] if found else str(uuid.uuid4())
        report = _build(s, sites, ledger_id)
        for b in held:
            b.rebind(ledger_id, state)
        return report
    finally:
        for b in held:
            b.release()


def _sites(cfg: Config) -> list[Site]:
    """Every landing dir to rebuild: matched now, or known by its manifests dir."""
    out: dict[str, Site] = {}
    for src in cfg.sources:
        if src.path.literal:
            site = src.site(src.path.head, {})
            out[site.key] = site
            continue
        for site in src.sites():
            out.setdefault(site.key, site)
        manifests = src.templates["manifests"]
        assert manifests is not None
        if set(manifests.names) == set(src.path.names):
            for _, values in manifests.expand():
                site = src.site(src.path.render(values), values)
                out.setdefault(site.key, site)
    return list(out.values())


def _build(cfg: Config, sites: list[Site], ledger_id: str) -> RebuildReport:
    state = cfg.settings.state_path
    state.parent.mkdir(parents=True, exist_ok=True)
    work = state.with_name(state.name + ".rebuild")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    owner = str(ulid.ULID())
    led = Ledger(work, owner)
    s = cfg.settings
    led.open(
        {"landing": str(s.input), "warehouse": str(s.warehouse), "manifests": str(s.manifests)}
        if cfg.plain
        else None
    )
    try:
        ids = [
            led.site(str(x.landing), str(x.settings.warehouse), str(x.settings.manifests), x.source,
                     orjson.dumps(x.dataset).decode())
            for x in sites
        ]  # fmt: skip
    finally:
        led.close()
    conn = sqlite3.connect(work, isolation_level=None)
    report = RebuildReport()
    try:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'ledger_id'", (ledger_id,))
        conn.execute("BEGIN")
        for site, (site_id, wh) in zip(sites, ids, strict=True):
            if site.settings.manifests.is_dir():
                site = dataclasses.replace(site, site_id=site_id, wh=wh)
                _Lines(conn, site, owner, report).load()
        conn.execute("COMMIT")
        done: set[Path] = set()
        for site, (_, wh) in zip(sites, ids, strict=True):
            if site.settings.warehouse not in done and site.settings.warehouse.is_dir():
                done.add(site.settings.warehouse)
                _orphans(conn, site.settings.warehouse, wh, report)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):  # a lost ledger's leftovers must not be read as the new one's
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    os.replace(work, state)
    fsync_dir(state.parent)
    return report


class _Lines:
    """Manifest lines → ledger rows, in one transaction, in manifest path order."""

    def __init__(self, conn: sqlite3.Connection, site: Site, owner: str, report: RebuildReport) -> None:
        s = site.settings
        self.conn, self.s, self.owner, self.report = conn, s, owner, report
        self.site, self.wh = site.site_id, site.wh
        self.scope = scope_of(site.site_id, s.dedup_scope is DedupScope.DATASET)
        self.landing = os.fsencode(s.input).rstrip(b"/") + b"/"
        self.warehouse = os.fsencode(s.warehouse).rstrip(b"/") + b"/"
        self.now = time.time_ns()

    def load(self) -> None:
        for rel in self._manifest_files():
            self.report.manifest_files += 1
            try:
                fd = os.open(self.s.manifests / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                for line, after in iter_lines(fd, 0):
                    self._line(rel, line, after - len(line))
            finally:
                os.close(fd)

    def _manifest_files(self) -> list[str]:
        out: list[str] = []
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                entries = list(os.scandir(self.s.manifests / rel_dir))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                if e.is_dir(follow_symlinks=False) and not e.name.startswith("."):
                    stack.append(rel)
                elif e.name == manifest.MANIFEST_NAME and e.is_file(follow_symlinks=False):
                    out.append(rel)
        return sorted(out)

    def _line(self, mrel: str, line: bytes, offset: int) -> None:
        where = f"{mrel}:{offset}"
        try:
            rec = ManifestRecord.from_json(line)
            source = os.fsencode(rec.source)
            if not source.startswith(self.landing):
                raise ManifestError(f"source_path is not under the landing dir {self.s.input}")
            dest: bytes | None = None
            if (wpath := rec.warehouse) is not None:
                dest = os.fsencode(wpath)
                if not dest.startswith(self.warehouse):
                    raise ManifestError(f"warehouse_path is not under the warehouse {self.s.warehouse}")
                dest = dest[len(self.warehouse) :]
            if rec.status is Status.REJECTED:  # on record again: not recorded a second time
                self._rejected(rec, source[len(self.landing) :], mrel, offset)
                return
            if rec.mtime is None or rec.sha256 is None:
                raise ManifestError("mtime or sha256 is null")
            mtime_ns = parse_rfc3339(rec.mtime)
            ingested_ns = parse_rfc3339(rec.ingested_at)
            for value in (rec.device, rec.inode):
                if not isinstance(value, int):
                    raise ManifestError("device or inode is not an integer")
        except (ManifestError, ValueError) as exc:
            self.report.add("bad_line", f"{where}: {exc}")
            return
        source_rel = source[len(self.landing) :]
        ctime_ns = 0
        if rec.action is Action.KEPT:
            mtime_ns, ctime_ns = self._kept_times(source, rec, mtime_ns)
        status = Status(rec.status)
        try:
            self.conn.execute(
                "INSERT INTO files(id, state, status, action, owner, source_rel, device, inode, size, "
                "mtime_ns, ctime_ns, sha256, dest_rel, manifest_rel, manifest_floor, ingested_ns, "
                "duplicate_of, sidecar_rel, note, updated_ns, site, wh) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rec.id, State.MANIFESTED, status, Action(rec.action), self.owner, source_rel, rec.device,
                    rec.inode, rec.size, mtime_ns, ctime_ns, rec.sha256, dest, mrel, offset, ingested_ns,
                    rec.duplicate_of, None, "rebuilt from the manifests", self.now, self.site, self.wh,
                ),
            )  # fmt: skip
        except sqlite3.IntegrityError as exc:
            kind = (
                "duplicate_id"
                if "files.id" in str(exc)
                else "shared_path"
                if "dest_rel" in str(exc)
                else "kept_twice"
            )
            self.report.add(kind, f"{where}: id {rec.id}: {exc}")
            return
        self.report.records += 1
        if status is Status.INGESTED:
            assert rec.sha256 is not None
            key = content_key(rec.sha256, os.fsdecode(source_rel), self.s.dedup, self.scope)
            cur = self.conn.execute("INSERT OR IGNORE INTO content(key, id) VALUES (?, ?)", (key, rec.id))
            if cur.rowcount:
                self.report.claims += 1
            else:
                self.report.add(
                    "duplicate_content", f"{where}: id {rec.id}: sha256 {rec.sha256} ingested twice"
                )

    def _rejected(self, rec: ManifestRecord, source_rel: bytes, mrel: str, offset: int) -> None:
        def known(v: int | None) -> int:
            return -1 if v is None else v

        mtime_ns = -1 if rec.mtime is None else parse_rfc3339(rec.mtime)
        self.conn.execute(
            "INSERT OR IGNORE INTO rejections(id, site, source_rel, inode, device, size, mtime_ns, reason, hint, "
            "at_ns, manifest_rel, manifest_floor, written, owner, run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1,?,?)",
            (rec.id, self.site, source_rel, known(rec.inode), known(rec.device), known(rec.size), mtime_ns,
             rec.reason or "", rec.hint, parse_rfc3339(rec.ingested_at), mrel, offset, self.owner, rec.run_id),
        )  # fmt: skip
        self.report.rejected += 1

    def _kept_times(self, source: bytes, rec: ManifestRecord, mtime_ns: int) -> tuple[int, int]:
        """A kept duplicate's exact mtime and ctime, from the file if it is still the one the line names."""
        try:
            st = os.lstat(source)
        except OSError:
            return mtime_ns, 0
        if (
            stat_mod.S_ISREG(st.st_mode)
            and (st.st_dev, st.st_ino, st.st_size) == (rec.device, rec.inode, rec.size)
            and st.st_mtime_ns // 1000 == mtime_ns // 1000
        ):
            return st.st_mtime_ns, st.st_ctime_ns
        return mtime_ns, 0


def _orphans(conn: sqlite3.Connection, warehouse: Path, wh: int, report: RebuildReport) -> None:
    """Report every warehouse file that no line names."""
    root = os.open(warehouse, OPEN_DIR)
    try:
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                fd = open_beneath(root, rel_dir, OPEN_DIR) if rel_dir else os.dup(root)
            except OSError:
                continue
            try:
                with os.scandir(fd) as it:
                    for e in it:
                        rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                        if rel in (TempDir.NAME, binding.NAME):
                            continue
                        if e.is_dir(follow_symlinks=False):
                            stack.append(rel)
                        elif not conn.execute(
                            "SELECT 1 FROM files WHERE wh = ? AND dest_rel = ?", (wh, os.fsencode(rel))
                        ).fetchone():
                            report.add("orphan_file", str(warehouse / rel))
            finally:
                os.close(fd)
    finally:
        os.close(root)


def summary(report: RebuildReport) -> dict[str, Any]:
    return {
        "records": report.records,
        "content_claims": report.claims,
        "manifest_files": report.manifest_files,
        "problems": report.problems,
        "examples": report.examples,
    }
