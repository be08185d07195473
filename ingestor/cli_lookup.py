"""Command line: ``ingestor lookup QUERY...`` and ``ingestor runs`` (registered on ``cli.app`` when
``cli`` imports this module).

Thin: the queries and the reports live in ``lookup.py``. Both find the ledger
as ``verify`` does (``--state-path``, or ``--input`` / ``--config`` for the
one beside the landing dir or the config's ``state_path``), read it
read-only (safe beside a running daemon) and print a report, or one JSON
object with ``--json``. ``lookup`` exits 0 when every QUERY matched, 1 when
one did not; both exit 2 on bad usage or a ledger they cannot read (one
``ingestor: error:`` line).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ingestor import lookup as lookup_mod
from ingestor import lookup_report
from ingestor.cli import ConfigOpt, JsonOpt, SourceOpt, _load, app, with_flags
from ingestor.settings import SettingsError, parse_path
from ingestor.sources import Config

_LOCATION = ["warehouse", "manifests", "state_path", "input"]  # verify's


def _ledger(
    flags: dict[str, Any], config: str | None, source: str | None, command: str
) -> tuple[Path, Config | None, dict[str, str]]:
    """The ledger's path, the config (if given) and, beside --state-path alone, the plain landing
    dir's --warehouse / --manifests where they are now."""
    if flags["input"] is None and config is None:
        if flags["state_path"] is None:
            raise SettingsError(f"{command} needs --state-path FILE (or --input / --config)")
        overrides = {
            k: str(parse_path(k, flags[k])) for k in ("warehouse", "manifests") if flags[k] is not None
        }
        return parse_path("state_path", flags["state_path"]), None, overrides
    cfg = _load(flags, config, source)
    return cfg.settings.state_path, cfg, {}


def lookup(
    flags: dict[str, Any],
    query: Annotated[
        list[str],
        typer.Argument(
            metavar="QUERY",
            help="A path (source or warehouse, relative to here or absolute), a sha256 or 8+ of its "
            "first hex digits, or a record id.",
            show_default=False,
        ),
    ],
    config: ConfigOpt = None,
    source: SourceOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Matches shown per QUERY, newest first.")
    ] = lookup_mod.DEFAULT_LIMIT,
    json: JsonOpt = False,
) -> None:
    """Where a file is and what happened to it: every record of each QUERY, newest first.

    A QUERY is a path (a source path: landed, still in its landing dir, or
    rejected; or a warehouse path), a sha256 or a prefix of at least 8 hex
    digits, or a record id (a file named like one: ./NAME). Each match says
    its state (waiting, ignored, in flight, ingested, duplicate, abandoned,
    rejected), source and warehouse paths, sha256, size, times, the record
    it duplicates and those that duplicate it, its run, and its manifest file
    and byte offset. Read-only; safe beside a running daemon. Exit 0 when every
    QUERY matched, 1 when one did not, 2 on bad usage.

    Give --state-path, or --input / --config (as for verify); with --config
    the landing dirs' rules tell a waiting file from an ignored one.

    --json prints {"queries": [{"query", "query_b64", "kind" (path, sha256,
    sha256_prefix, id), "resolved_path", "inside" ({what, root, source}: a
    path's landing dir or warehouse), "matches", "truncated", "note" (why
    nothing matched)}]}; each match has "id" (null: waiting or ignored),
    "state", "ledger_state" (hashed, moved, manifested, abandoned), "status",
    "action", "source", "dataset", "landing_dir", "site", "source_path",
    "source_path_b64", "source_relpath", "warehouse_path",
    "warehouse_path_b64", "warehouse_relpath", "sha256", "size", "mtime",
    "device", "inode", "detected_at", "ingested_at" (rejected: when),
    "duplicate_of" ({id, source_path, warehouse_path}), "duplicated_by" (the
    newest 20 ids), "duplicated_by_count", "note" (why abandoned, or of a
    file not in the ledger), "reason" and "hint" (rejected), "manifest"
    ({path, relpath, offset, found, error}) and "run" ({run_id, kind, host, status,
    started_at}: the run that wrote its line). Paths as in the manifest: text,
    and *_b64 of the exact bytes when not UTF-8.
    """
    state_path, cfg, overrides = _ledger(flags, config, source, "lookup")
    for q in query:
        lookup_mod.kinds_of(q)  # a bad QUERY is refused before the ledger is opened
    conn = lookup_mod.open_ledger(state_path)
    try:
        sites = lookup_mod.read_sites(conn, overrides, cfg)
        report = lookup_mod.lookup(conn, query, sites=sites, limit=limit, only=source, config=cfg)
    finally:
        conn.close()
    report = {"ledger": str(state_path), **report}
    if json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        sys.stdout.write(lookup_report.render(report) + "\n")
    raise typer.Exit(0 if all(q["matches"] for q in report["queries"]) else 1)


def runs(
    flags: dict[str, Any],
    config: ConfigOpt = None,
    last: Annotated[
        int | None,
        typer.Option("--last", min=1, help="Only the last N runs. [default: all]", show_default=False),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """The runs on record, newest first: every daemon from start to stop and every replay.

    Each: run_id, kind (daemon, replay), host, pid, started_at, finished_at,
    seconds, status (running, success, failure: a run killed is marked
    failure by the next start), landed, duplicates, rejected, errors and
    error_summary (the first error). Read-only. Give --state-path, or
    --input / --config (as for verify). --json prints {"ledger", "runs": [...]}
    with those keys.
    """
    state_path, _, _ = _ledger(flags, config, None, "runs")
    conn = lookup_mod.open_ledger(state_path)
    try:
        report = {"ledger": str(state_path), **lookup_mod.runs_report(conn, last)}
    finally:
        conn.close()
    if json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        sys.stdout.write(lookup_report.render_runs(report) + "\n")


def _register(target: typer.Typer) -> None:
    commands: list[tuple[str, Callable[..., None]]] = [("lookup", lookup), ("runs", runs)]
    for name, fn in commands:
        target.command(name)(with_flags(_LOCATION)(fn))


_register(app)
