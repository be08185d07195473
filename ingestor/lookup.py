"""``ingestor lookup`` and ``ingestor runs``: the record of a file, and the runs, read-only.

Input: the ledger (opened ``mode=ro`` as ``status`` does: it never blocks or
changes a running daemon), the queried path itself (one ``lstat``: never
followed, never opened) and the manifests (read from a record's floor to its
line, never a whole file). Output: one report per QUERY, every match newest
first (``--json``: one object).

A QUERY is

- a path, relative to the working directory or absolute: a source path (a
  file landed, still in its landing dir, or rejected) or a warehouse path.
  Its last component is not followed (``replay PATHS`` resolves a path so);
  the landing dir or warehouse that holds it is the longest prefix among the
  ledger's landing dirs and warehouses (symlinked prefixes resolved);
- a sha256, or a prefix of it of at least ``MIN_PREFIX`` hex digits;
- a record id (a ULID: 26 characters of Crockford's base32).

A query that is all hex digits and shorter than ``MIN_PREFIX`` is refused
(exit 2); a file named like a sha256 or an id is asked for as ``./NAME``.

What a match is (``Found``): ``waiting`` (a file in a landing dir the ledger
has no row for yet: it lands when a daemon or replay sees it complete),
``ignored`` (such a file that the landing dir's rules never land: a hidden
name, an ignored suffix, a sidecar, outside ``include``; known only from
``--input`` / ``--config``), ``in_flight`` (hashed or moved, not yet
manifested), ``ingested``, ``duplicate``, ``abandoned`` (vanished or changed
before it moved) and ``rejected`` (will not land as it is). A path has as
many matches as it had records: landed twice as different contents, rejected
then fixed and landed.

Cost: a handful of indexed statements per query, each named where it is
made; a test holds every statement to an index (no table scan), and
``bench/bench_lookup.py`` times them on 1,000,000 records.
"""

from __future__ import annotations

import enum
import os
import re
import sqlite3
import stat as stat_mod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ingestor import runs
from ingestor.ledger_db import connect
from ingestor.manifest import encode_path, line_start_at_or_before, rfc3339
from ingestor.records import OPEN_SQL, OPEN_STATES, Action, State, Status
from ingestor.settings import Settings, SettingsError
from ingestor.sources import Config

MIN_PREFIX = 8  # hex digits of a sha256 prefix: fewer match too much to be a question
DEFAULT_LIMIT = 100  # matches shown per query (newest first)
DUPLICATES_SHOWN = 20  # ids of the records that duplicate one, newest first (all are counted)
_CHUNK = 64 << 10  # manifest bytes read at a time on the way from a floor to a line
_HEX = re.compile(r"[0-9a-fA-F]+")
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}")

_FILE_COLS = (
    "id, state, status, action, source_rel, device, inode, size, mtime_ns, sha256, dest_rel, "
    "manifest_rel, manifest_floor, ingested_ns, duplicate_of, note, site, wh, detected_ns"
)
_REJ_COLS = (
    "id, site, source_rel, inode, device, size, mtime_ns, reason, hint, at_ns, manifest_rel, "
    "manifest_floor, written, run_id"
)
# the WHERE of the partial index files_live, word for word: the planner uses it only then
_LIVE = f"(state IN {OPEN_SQL} OR action = '{Action.KEPT}')"
# the WHERE of the partial index files_dest_wh, word for word
_LANDED = f"dest_rel IS NOT NULL AND state != '{State.ABANDONED}'"


class LookupRefused(SettingsError):
    """A query or a ledger it cannot take: one line, exit 2 (as a bad setting)."""


class Found(enum.StrEnum):
    """What a match is."""

    WAITING = "waiting"
    IGNORED = "ignored"
    IN_FLIGHT = "in_flight"
    INGESTED = "ingested"
    DUPLICATE = "duplicate"
    ABANDONED = "abandoned"
    REJECTED = "rejected"


class Kind(enum.StrEnum):
    """What a query is taken as."""

    PATH = "path"
    SHA256 = "sha256"
    PREFIX = "sha256_prefix"
    ID = "id"


@dataclass(frozen=True, slots=True)
class Site:
    """One landing dir the ledger knows (``sites``; 0: a ledger of one landing dir, from ``meta``)."""

    id: int
    landing: str
    warehouse: str
    manifests: str
    source: str
    dataset: dict[str, str]
    wh: int  # the id its warehouse is known by in the records (``files.wh``)
    settings: Settings | None = None  # from --input / --config: its rules (what it ignores)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a queried path lies: below a landing dir or a warehouse."""

    what: str  # "landing dir" or "warehouse"
    root: str  # as the ledger has it
    rel: str  # below ``root`` (surrogateescape str)
    sites: tuple[Site, ...]  # a landing dir: its site; a warehouse: every site that lands there


_Root = tuple[str, tuple[Site, ...], str]  # what, its sites, its path as the ledger has it


@dataclass(slots=True)
class Match:
    """One match of a QUERY. Its public fields are the JSON keys, in order (``view``)."""

    id: str | None  # None: a file no record knows (waiting, ignored)
    state: Found
    ledger_state: str | None = None  # hashed, moved, manifested, abandoned
    status: str | None = None  # the manifest's: ingested, duplicate, rejected
    action: str | None = None
    source: str | None = None  # the source's name
    dataset: dict[str, str] | None = None
    landing_dir: str | None = None
    site: int | None = None
    source_path: str | None = None
    source_path_b64: str | None = None
    source_relpath: str | None = None
    warehouse_path: str | None = None
    warehouse_path_b64: str | None = None
    warehouse_relpath: str | None = None
    sha256: str | None = None
    size: int | None = None
    mtime: str | None = None
    device: int | None = None
    inode: int | None = None
    detected_at: str | None = None
    ingested_at: str | None = None  # rejected: when it was put on record
    duplicate_of: dict[str, Any] | None = None  # {id, source_path, warehouse_path}
    duplicated_by: list[str] = field(default_factory=list)  # the newest DUPLICATES_SHOWN ids
    duplicated_by_count: int = 0
    note: str | None = None  # why abandoned; of a file no record knows
    reason: str | None = None  # rejected: why
    hint: str | None = None  # rejected: what to do
    manifest: dict[str, Any] | None = None  # {path, relpath, offset, found, error}
    run: dict[str, Any] | None = None  # {run_id, kind, host, status, started_at}: wrote its line
    # read by ``Lookup._finish``, not shown
    original: str | None = None
    line: tuple[Site | None, str, int | None] | None = None  # (site, manifest_rel, floor) of a line
    run_id: str | None = None  # a rejection's row names its run

    def view(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SHOWN}


SHOWN = tuple(Match.__dataclass_fields__)[: tuple(Match.__dataclass_fields__).index("original")]


# ----------------------------------------------------------------- the ledger


def open_ledger(state_path: Path) -> sqlite3.Connection:
    """A read-only connection; ``LookupRefused`` when there is no readable ledger there."""
    if not state_path.is_file():
        what = "is not a file" if state_path.exists() else "does not exist"
        raise LookupRefused(f"no ledger at {state_path}: it {what} (give --state-path of `ingestor run`)")
    try:
        conn = connect(state_path, readonly=True)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(files)")}
    except sqlite3.Error as exc:
        raise LookupRefused(
            f"cannot read the ledger {state_path}: {exc} (is it an ingestor ledger?)"
        ) from None
    if "files" not in tables or "meta" not in tables:
        conn.close()
        raise LookupRefused(f"{state_path} is not an ingestor ledger (no files table)")
    if "site" not in columns:
        conn.close()
        raise LookupRefused(
            f"the ledger {state_path} was written by an older version: run this version's daemon "
            "or `ingestor replay` once on it (it migrates the ledger), then ask again"
        )
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def read_sites(
    conn: sqlite3.Connection, overrides: dict[str, str] | None = None, config: Config | None = None
) -> dict[int, Site]:
    """Every landing dir of the ledger (one statement), with its rules when ``config`` knows them.

    ``overrides`` (``--warehouse`` / ``--manifests`` beside ``--state-path``)
    replace the plain landing dir's: where its warehouse or manifests are now.
    """
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    out: dict[int, Site] = {}
    for sid, landing, warehouse, manifests, source, dataset, wh in conn.execute(
        "SELECT id, landing, warehouse, manifests, source, dataset, wh FROM sites"
    ):
        try:
            values = orjson.loads(dataset)
        except orjson.JSONDecodeError:
            values = {}
        out[sid] = Site(sid, landing, warehouse, manifests, source, values if isinstance(values, dict) else {},
                        wh if wh >= 0 else sid)  # fmt: skip
    if 0 not in out and "landing" in meta:  # a ledger of one landing dir, before sites were recorded
        out[0] = Site(
            0, meta["landing"], meta.get("warehouse", ""), meta.get("manifests", ""), "default", {}, 0
        )
    if overrides and 0 in out:
        s = out[0]
        out[0] = Site(0, s.landing, overrides.get("warehouse", s.warehouse),
                      overrides.get("manifests", s.manifests), s.source, s.dataset, s.wh)  # fmt: skip
    if config is not None:
        for sid, s in out.items():
            rules = _rules_of(config, s.landing)
            if rules is not None:
                out[sid] = Site(s.id, s.landing, s.warehouse, s.manifests, s.source, s.dataset, s.wh, rules)
    return out


def _rules_of(config: Config, landing: str) -> Settings | None:
    """The settings of the landing dir ``landing`` from the config, if one of its sources matches it."""
    for src in config.sources:
        site = src.site(src.path.head, {}) if src.path.literal else src.match(Path(landing))
        if site is not None and str(site.landing) == landing:
            return site.settings
    return None


# ----------------------------------------------------------------- queries


def kinds_of(query: str) -> list[Kind]:
    """What ``query`` is taken as; ``LookupRefused`` for a hex prefix too short to ask."""
    if not query:
        raise LookupRefused("an empty QUERY: give a path, a sha256 (or 8+ hex digits) or a record id")
    kinds = []
    if _ULID.fullmatch(query):
        kinds.append(Kind.ID)
    if _HEX.fullmatch(query) and len(query) <= 64:
        if len(query) < MIN_PREFIX:
            raise LookupRefused(
                f"{query!r}: a sha256 prefix needs at least {MIN_PREFIX} hex digits "
                f"(a file of that name: ./{query})"
            )
        kinds.append(Kind.SHA256 if len(query) == 64 else Kind.PREFIX)
    return kinds or [Kind.PATH]


def resolve(query: str) -> str:
    """The absolute path, its directories resolved, its last component not followed."""
    absolute = os.path.abspath(query)
    parent, name = os.path.split(absolute)
    return os.path.join(os.path.realpath(parent), name) if name else absolute


def _shown(path: str | None) -> str | None:
    """A path as text (invalid UTF-8 as U+FFFD): for reports and JSON."""
    return None if path is None else encode_path(path)[0]


def _join(root: str, rel: bytes | None) -> str | None:
    return None if rel is None else os.path.join(root, os.fsdecode(rel)) if rel else root


def _encoded(path: str | None) -> tuple[str | None, str | None]:
    """A path as the manifest writes it: text, and base64 of the exact bytes when not UTF-8."""
    return (None, None) if path is None else encode_path(path)


def _ts(ns: int | None) -> str | None:
    return None if ns is None or ns <= 0 else rfc3339(ns)


@dataclass
class Lookup:
    """The answers of one ledger: its read-only connection and its landing dirs, read once.

    ``only``: the name of one source; matches of other sources are left out.
    """

    conn: sqlite3.Connection
    sites: dict[int, Site]
    limit: int = DEFAULT_LIMIT
    only: str | None = None
    config: Config | None = None  # landing dirs the ledger does not know yet (never served)
    # landing dirs and warehouses: path (as stored, then resolved) -> (what, sites, path as stored)
    _roots: dict[str, _Root] | None = None
    _real_roots: dict[str, _Root] | None = None
    _tables: set[str] = field(default_factory=set)  # the tables this ledger has (rejections, runs)

    def __post_init__(self) -> None:
        self._tables = _tables(self.conn)

    # ------------------------------------------------------------ one query

    def query(self, text: str) -> dict[str, Any]:
        """One QUERY's answer: ``{"query", "kind", "matches", "note", ...}`` (see ``cli_lookup``)."""
        kinds = kinds_of(text)
        shown, b64 = encode_path(text)
        out: dict[str, Any] = {"query": shown, "query_b64": b64, "kind": "/".join(kinds),
                               "resolved_path": None, "resolved_path_b64": None, "inside": None}  # fmt: skip
        self.conn.execute("BEGIN")  # one snapshot for every statement of the query
        try:
            matches, note = self._matches(text, kinds, out)
            out["truncated"] = len(matches) > self.limit
            out["matches"] = [self._finish(m) for m in matches[: self.limit]]
        finally:
            self.conn.execute("COMMIT")
        out["note"] = None if out["matches"] else (note or "no record of it in the ledger")
        return out

    def _matches(self, text: str, kinds: list[Kind], out: dict[str, Any]) -> tuple[list[Match], str | None]:
        """Every match, a file no record knows first, then the records newest first (ids are ULIDs)."""
        matches: list[Match] = []
        note = None
        for kind in kinds:
            if kind is Kind.PATH:
                found, where, note = self._by_path(text)
                out.update(where)
                matches += found
            elif kind is Kind.ID:
                matches += self._by_id(text.upper())
            else:
                matches += self._by_sha(text.lower(), exact=kind is Kind.SHA256)
        if self.only is not None:
            matches = [m for m in matches if m.source in (self.only, None)]
        waiting = [m for m in matches if m.id is None]
        # one id once: a query that is both an id and hex digits may find a record twice
        recorded = sorted({m.id: m for m in matches if m.id is not None}.values(),
                          key=lambda m: str(m.id), reverse=True)  # fmt: skip
        return waiting + recorded, note

    # ------------------------------------------------------------ by kind

    def _by_id(self, rec_id: str) -> list[Match]:
        # the primary keys of files and rejections
        rows = self.conn.execute(f"SELECT {_FILE_COLS} FROM files WHERE id = ?", (rec_id,)).fetchall()
        out = [self._record(r) for r in rows]
        if "rejections" in self._tables:
            rej = self.conn.execute(f"SELECT {_REJ_COLS} FROM rejections WHERE id = ?", (rec_id,)).fetchall()
            out += [self._rejection(r) for r in rej]
        return out

    def _by_sha(self, hexes: str, *, exact: bool) -> list[Match]:
        # files_sha256: one seek, or one range for a prefix ('g' sorts after every hex digit);
        # "+id": order the few matches, never walk the primary key for its order
        where = "sha256 = ?" if exact else "sha256 >= ? AND sha256 < ?"
        params: tuple[str, ...] = (hexes,) if exact else (hexes, hexes + "g")
        rows = self.conn.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE {where} ORDER BY +id DESC LIMIT ?",
            (*params, self.limit + 1),
        ).fetchall()
        return [self._record(r) for r in rows]

    def _by_path(self, text: str) -> tuple[list[Match], dict[str, Any], str | None]:
        full = resolve(text)
        shown, b64 = encode_path(full)
        where: dict[str, Any] = {"resolved_path": shown, "resolved_path_b64": b64}
        place = self._place(full)
        if place is None:
            return [], where, self._outside(full)
        where["inside"] = {"what": place.what, "root": _shown(place.root)}
        if place.what == "warehouse":
            return self._in_warehouse(place), where, None
        where["inside"]["source"] = place.sites[0].source
        matches, note = self._in_landing(place, full)
        return matches, where, note

    def _in_warehouse(self, place: Place) -> list[Match]:
        rel = os.fsencode(place.rel)
        out = []
        for wh in sorted({s.wh for s in place.sites}):
            # files_dest_wh (its WHERE repeated): at most one row per warehouse path
            rows = self.conn.execute(
                f"SELECT {_FILE_COLS} FROM files WHERE wh = ? AND dest_rel = ? AND {_LANDED}", (wh, rel)
            ).fetchall()
            out += [self._record(r) for r in rows]
        return out

    def _in_landing(self, place: Place, full: str) -> tuple[list[Match], str | None]:
        site = place.sites[0]
        rel = os.fsencode(place.rel)
        out: list[Match] = []
        # files_source and rejections_once: every record of the path, newest first
        rows = self.conn.execute(  # (site -1: a landing dir the ledger does not know: none)
            f"SELECT {_FILE_COLS} FROM files WHERE source_rel = ? AND site = ? ORDER BY +id DESC LIMIT ?",
            (rel, site.id, self.limit + 1),
        ).fetchall()
        rejs = []
        if "rejections" in self._tables:
            rejs = self.conn.execute(
                f"SELECT {_REJ_COLS} FROM rejections WHERE source_rel = ? AND site = ? ORDER BY +id DESC LIMIT ?",
                (rel, site.id, self.limit + 1),
            ).fetchall()
        try:
            st: os.stat_result | None = os.lstat(full)
        except OSError:
            st = None
        if st is not None and stat_mod.S_ISDIR(st.st_mode):
            return [], f"{_shown(full)} is a directory (a QUERY names one file)"
        if st is not None:
            key = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
            known = any((r[6], r[5], r[7], r[8]) == key for r in rows) or any(r[3:7] == key for r in rejs)
            if not known:
                # files_live (its WHERE repeated): the file in flight or kept under another path
                live = self.conn.execute(
                    f"SELECT {_FILE_COLS} FROM files WHERE inode = ? AND device = ? AND size = ? "
                    f"AND mtime_ns = ? AND {_LIVE}",
                    key,
                ).fetchall()
                out += [self._record(r) for r in live]
                if not live:
                    out.append(self._waiting(site, place.rel, full, st))
        out += [self._record(r) for r in rows]
        out += [self._rejection(r) for r in rejs]
        if not out:
            return (
                [],
                f"no record of {_shown(place.rel)} in the landing dir {_shown(site.landing)}, and no such file",
            )
        return out, None

    def _place(self, full: str) -> Place | None:
        """The landing dir or warehouse holding ``full``: the longest prefix, as stored, then resolved."""
        if self._roots is None:
            self._roots = _roots(self.sites.values(), self.only)
        hit = _longest(self._roots, full)
        if hit is None:
            if self._real_roots is None:
                self._real_roots = {os.path.realpath(k): v for k, v in self._roots.items()}
            hit = _longest(self._real_roots, full)
        if hit is None and self.config is not None:
            hit = self._unserved(full)
        return hit

    def _outside(self, full: str) -> str:
        """Why a path below no landing dir or warehouse matches nothing."""
        for roots in (self._roots or {}, self._real_roots or {}):
            if full in roots:
                return f"{_shown(roots[full][2])} is a {roots[full][0]} itself (a QUERY names one file)"
        known = len({s.landing for s in self.sites.values()})
        return f"not inside a landing dir or warehouse of this ledger (landing dirs known: {known})"

    def _unserved(self, full: str) -> Place | None:
        """A landing dir of the config that the ledger does not know yet (never served)."""
        assert self.config is not None
        for root in _ancestors(full):
            for src in self.config.sources:
                if self.only is not None and src.name != self.only:
                    continue
                site = src.site(src.path.head, {}) if src.path.literal else src.match(Path(root))
                if site is None or os.path.realpath(site.landing) not in (root, os.path.realpath(root)):
                    continue
                s = site.settings
                placeholder = Site(-1, str(site.landing), str(s.warehouse), str(s.manifests), site.source,
                                   site.dataset, -1, s)  # fmt: skip
                return Place("landing dir", str(site.landing), os.path.relpath(full, root), (placeholder,))
        return None

    # ------------------------------------------------------------ matches

    def _record(self, r: Sequence[Any]) -> Match:
        (rec_id, state, status, action, source_rel, device, inode, size, mtime_ns, sha256, dest_rel,
         manifest_rel, floor, ingested_ns, duplicate_of, note, site_id, wh, detected_ns) = r  # fmt: skip
        site = self.sites.get(site_id)
        whs = self.sites.get(wh, site)
        if state == State.ABANDONED:
            found = Found.ABANDONED
        elif state in OPEN_STATES:
            found = Found.IN_FLIGHT
        else:
            found = Found.DUPLICATE if status == Status.DUPLICATE else Found.INGESTED
        landed = state != State.ABANDONED and dest_rel is not None  # an abandoned one never got there
        src, src_b64 = _encoded(_join(site.landing, source_rel) if site else None)
        dst, dst_b64 = _encoded(_join(whs.warehouse, dest_rel) if landed and whs else None)
        return Match(
            rec_id, found, ledger_state=state, status=status, action=action, **_site_keys(site, site_id),
            source_path=src, source_path_b64=src_b64, source_relpath=_shown(os.fsdecode(source_rel)),
            warehouse_path=dst, warehouse_path_b64=dst_b64,
            warehouse_relpath=_shown(os.fsdecode(dest_rel)) if landed else None,
            sha256=sha256, size=size, mtime=_ts(mtime_ns), device=device, inode=inode,
            detected_at=_ts(detected_ns), ingested_at=_ts(ingested_ns), note=note, original=duplicate_of,
            line=(site, manifest_rel, floor) if state == State.MANIFESTED else None,
        )  # fmt: skip

    def _rejection(self, r: Sequence[Any]) -> Match:
        (rec_id, site_id, source_rel, inode, device, size, mtime_ns, reason, hint, at_ns, manifest_rel,
         floor, written, run_id) = r  # fmt: skip
        site = self.sites.get(site_id)
        src, src_b64 = _encoded(_join(site.landing, source_rel) if site else None)
        m = Match(
            rec_id, Found.REJECTED, status=Status.REJECTED, action=Action.NONE, **_site_keys(site, site_id),
            source_path=src, source_path_b64=src_b64, source_relpath=_shown(os.fsdecode(source_rel)),
            ingested_at=_ts(at_ns), reason=reason, hint=hint,
            line=(site, manifest_rel, floor) if written else None, run_id=run_id,
        )  # fmt: skip
        if inode != -1:  # -1: it could not even be stat'ed
            m.size, m.mtime, m.device, m.inode = size, _ts(mtime_ns), device, inode
        return m

    def _waiting(self, site: Site, rel: str, full: str, st: os.stat_result) -> Match:
        why = _ignored(site.settings, rel) if site.settings is not None else None
        src, src_b64 = _encoded(full)
        return Match(
            None, Found.WAITING if why is None else Found.IGNORED, **_site_keys(site, site.id),
            source_path=src, source_path_b64=src_b64, source_relpath=_shown(rel), size=st.st_size,
            mtime=_ts(st.st_mtime_ns), device=st.st_dev, inode=st.st_ino,
            note=why if why is not None else _file_note(st.st_mode),
        )  # fmt: skip

    def _finish(self, m: Match) -> dict[str, Any]:
        """The keys that cost a statement or a read: the duplicates, the manifest line, the run."""
        if m.original is not None:
            m.duplicate_of = self._original(m.original)
        m.duplicated_by, m.duplicated_by_count = self._duplicates(m)
        run_id = m.run_id
        if m.line is not None:
            site, manifest_rel, floor = m.line
            m.manifest, line_run = _manifest_line(site, manifest_rel, floor, str(m.id))
            run_id = line_run or run_id
        m.run = self._run(run_id)
        return m.view()

    def _original(self, rec_id: str) -> dict[str, Any]:
        # the primary key
        row = self.conn.execute(
            "SELECT source_rel, dest_rel, site, wh, state FROM files WHERE id = ?", (rec_id,)
        ).fetchone()
        if row is None:
            return {"id": rec_id, "source_path": None, "warehouse_path": None}
        site, whs = self.sites.get(row[2]), self.sites.get(row[3], self.sites.get(row[2]))
        dest = _join(whs.warehouse, row[1]) if whs and row[4] != State.ABANDONED else None
        return {"id": rec_id, "source_path": _shown(_join(site.landing, row[0]) if site else None),
                "warehouse_path": _shown(dest)}  # fmt: skip

    def _duplicates(self, m: Match) -> tuple[list[str], int]:
        if m.id is None or m.sha256 is None or m.state not in (Found.INGESTED, Found.IN_FLIGHT):
            return [], 0
        # files_sha256: a duplicate has its original's sha256 (no index on duplicate_of needed)
        ids = [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM files WHERE sha256 = ? AND duplicate_of = ? ORDER BY +id DESC",
                (m.sha256, m.id),
            )
        ]
        return ids[:DUPLICATES_SHOWN], len(ids)

    def _run(self, run_id: str | None) -> dict[str, Any] | None:
        if run_id is None:
            return None
        run = runs.of_id(self.conn, run_id) if "runs" in self._tables else None  # the primary key
        if run is None:
            return {"run_id": run_id, "kind": None, "host": None, "status": None, "started_at": None}
        return {"run_id": run_id, "kind": run.kind, "host": run.host, "status": run.status,
                "started_at": rfc3339(run.started_ns)}  # fmt: skip


def _site_keys(site: Site | None, site_id: int) -> dict[str, Any]:
    """A Match's source, dataset, landing_dir and site."""
    if site is None:
        return {"source": None, "dataset": None, "landing_dir": None, "site": site_id}
    return {"source": site.source, "dataset": site.dataset, "landing_dir": _shown(site.landing),
            "site": site.id if site.id >= 0 else None}  # fmt: skip


def _roots(sites: Iterable[Site], only: str | None) -> dict[str, _Root]:
    out: dict[str, tuple[str, list[Site]]] = {}
    for s in sites:
        if only is not None and s.source != only:
            continue
        out[s.landing] = ("landing dir", [s])
        if s.warehouse:
            out.setdefault(s.warehouse, ("warehouse", []))[1].append(s)
    return {k: (what, tuple(v), k) for k, (what, v) in out.items()}


def _ancestors(path: str) -> Iterator[str]:
    """``path``'s directories, deepest first."""
    p = os.path.dirname(path)
    while True:
        yield p
        up = os.path.dirname(p)
        if up == p:
            return
        p = up


def _longest(roots: dict[str, _Root], full: str) -> Place | None:
    for d in _ancestors(full):
        hit = roots.get(d)
        if hit is not None:
            return Place(hit[0], hit[2], os.path.relpath(full, d), hit[1])
    return None


def _ignored(s: Settings, rel: str) -> str | None:
    """Why the landing dir's rules never land ``rel`` (None: they do)."""
    from ingestor.ready import Readiness  # asyncio and the rest: only for a file no row knows

    judge = Readiness(
        landing=s.input, mode=s.mode, stability_seconds=s.stability_seconds, sidecar_suffix=s.sidecar_suffix,
        ignore_suffixes=s.ignore_suffixes, log=None, include=s.include, exclude=s.exclude,
    )  # fmt: skip
    if judge.target(rel) == rel:
        return None
    if rel.endswith(s.sidecar_suffix):
        return f"a sidecar ({s.sidecar_suffix}): never landed as data"
    return "ignored by the landing dir's rules (a hidden name, an ignored suffix, include or exclude)"


def _file_note(mode: int) -> str:
    if stat_mod.S_ISREG(mode):
        return "not in the ledger yet: it lands once complete (a running daemon, or `ingestor replay`)"
    from ingestor.rejections import kind_of

    return f"not a regular file ({kind_of(mode)}); on record as rejected once a daemon or replay sees it"


def _manifest_line(
    site: Site | None, manifest_rel: str, floor: int | None, rec_id: str
) -> tuple[dict[str, Any], str | None]:
    """The manifest file of a record and its line's offset (read from the floor to the line);
    also the ``run_id`` the line carries."""
    if site is None or not site.manifests:
        return {"path": None, "relpath": manifest_rel, "offset": None, "found": False,
                "error": "its landing dir's manifests dir is not known"}, None  # fmt: skip
    path = os.path.join(site.manifests, manifest_rel)
    out: dict[str, Any] = {"path": _shown(path), "relpath": manifest_rel, "offset": None, "found": False,
                           "error": None}  # fmt: skip
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        out["error"] = exc.strerror or str(exc)
        return out, None
    try:
        size = os.fstat(fd).st_size
        start = line_start_at_or_before(fd, min(floor or 0, size))
        hit = _find_line(fd, start, size, b'{"id":"' + rec_id.encode() + b'"')
    finally:
        os.close(fd)
    if hit is None:
        out["error"] = f"no line with this id from byte {start} on"
        return out, None
    offset, line = hit
    out["offset"], out["found"] = offset, True
    try:
        run_id = orjson.loads(line).get("run_id")
    except (orjson.JSONDecodeError, AttributeError):
        run_id = None
    return out, run_id if isinstance(run_id, str) else None


def _find_line(fd: int, start: int, end: int, needle: bytes) -> tuple[int, bytes] | None:
    """(offset, line) of the complete line that starts with ``needle``, reading from ``start`` on.

    ``start`` is a line start; the chunks grow from 64 KiB, so a line near its
    floor (the usual case) costs one small read.
    """
    pos, pending, chunk = start, b"", _CHUNK
    while pos < end:
        data = os.pread(fd, min(chunk, end - pos), pos)
        if not data:
            return None
        base = pos - len(pending)
        buf = pending + data
        pos += len(data)
        at = 0
        while True:
            hit = buf.find(needle, at)
            if hit < 0:
                break
            nl = buf.find(b"\n", hit)
            if (hit == 0 or buf[hit - 1 : hit] == b"\n") and nl >= 0:
                return base + hit, buf[hit : nl + 1]
            if nl < 0:  # its line goes on in the next chunk: read on from its start
                break
            at = hit + 1
        cut = buf.rfind(b"\n") + 1
        pending = buf[cut:]
        chunk = min(chunk * 2, 1 << 20)
    return None


# ----------------------------------------------------------------- reports


def lookup(
    conn: sqlite3.Connection,
    queries: Sequence[str],
    *,
    sites: dict[int, Site],
    limit: int = DEFAULT_LIMIT,
    only: str | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Every query's answer; ``LookupRefused`` for a query it cannot take (checked before any)."""
    for q in queries:
        kinds_of(q)
    finder = Lookup(conn, sites, limit=limit, only=only, config=config)
    try:
        answers = [finder.query(q) for q in queries]
    except sqlite3.Error as exc:
        raise LookupRefused(f"cannot read the ledger: {exc}") from None
    return {"queries": answers}


# ----------------------------------------------------------------- runs


def runs_report(conn: sqlite3.Connection, last: int | None) -> dict[str, Any]:
    """The runs, newest first (the last ``last``); none for a ledger of a version before runs."""
    if "runs" not in _tables(conn):
        return {"runs": []}
    try:
        listed = runs.listed(conn, last)  # runs_started, backwards
    except sqlite3.Error as exc:
        raise LookupRefused(f"cannot read the ledger: {exc}") from None
    return {"runs": [r.view() for r in listed]}
