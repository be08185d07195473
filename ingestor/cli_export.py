"""Command line: ``ingestor manifest export | schema`` (registered on ``cli.app`` when ``cli`` imports this module).

Thin: the schema and the export live in ``export.py``. ``export`` finds the
manifests dirs as ``verify`` does (``--manifests``, or ``--input`` /
``--config`` for the defaults beside each landing dir), prints one summary
line (or ``--json``) and one stderr line per bad manifest line (the first
``SHOWN_BAD``), and exits 0 when every line was exported, 1 when some were
bad (the rest is exported), 2 on bad usage or an input or output it cannot
read or write (one ``ingestor: error:`` line).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from ingestor import command, sources
from ingestor.cli import ConfigOpt, JsonOpt, SourceOpt, _load, app, with_flags
from ingestor.ledger_db import connect
from ingestor.settings import SettingsError, parse_path

if TYPE_CHECKING:
    from ingestor import export

SHOWN_BAD = 20  # bad lines printed one by one; the summary counts them all

manifest_app = command.group("The manifests: their schema, and a typed export to Parquet.")
app.add_typer(manifest_app, name="manifest")


def _hour(option: str, text: str | None, *, end: bool) -> export.Hour | None:
    if text is None:
        return None
    from ingestor import export

    try:
        return export.parse_hour(text, end=end)
    except ValueError as exc:
        raise SettingsError(f"invalid value of {option}: {exc}") from None


def _source_manifests(cfg: sources.Config) -> list[Path]:
    """The manifests dirs of the config's sources: of every landing dir that matches now and
    of every one the ledger has served (a dataset since retired), those that exist, each once."""
    found = []
    for src in cfg.sources:
        sites = [src.site(src.path.head, {})] if src.path.literal else src.sites()
        found += [site.settings.manifests for site in sites]
    state = cfg.settings.state_path
    if state.is_file():
        names = {src.name for src in cfg.sources}
        conn = connect(state, readonly=True)
        try:
            rows = conn.execute("SELECT manifests, source FROM sites").fetchall()
        except sqlite3.Error as exc:
            raise SettingsError(f"manifest export: cannot read the ledger {state}: {exc}") from None
        finally:
            conn.close()
        found += [Path(manifests) for manifests, source in rows if source in names]
    seen: dict[str, Path] = {}
    for path in sorted(found):
        if path.is_dir():
            seen.setdefault(os.path.realpath(path), path)
    return list(seen.values())


def _manifests_dirs(flags: dict[str, Any], config: str | None, source: str | None) -> list[Path]:
    if flags["input"] is None and config is None:
        if flags["manifests"] is None:
            raise SettingsError("manifest export needs --manifests DIR (or --input / --config)")
        dirs = [parse_path("manifests", flags["manifests"])]
    else:
        cfg = _load(flags, config, source)
        dirs = [cfg.settings.manifests] if cfg.plain else _source_manifests(cfg)
        if not dirs:
            raise SettingsError("manifest export: no manifests directory of the sources exists yet")
    for d in dirs:
        if not d.is_dir():
            raise SettingsError(f"manifest export: the manifests directory {d} does not exist")
    return dirs


@manifest_app.command("export")
@with_flags(["manifests", "input", "state_path"])
def export_command(
    flags: dict[str, Any],
    output: Annotated[
        str, typer.Option("--output", "-o", help="The Parquet file to write (replaced atomically).")
    ],
    since: Annotated[
        str | None,
        typer.Option(help="First hour to export (2026-11-23T15, or a date: its first hour), UTC."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Last hour to export, included (2026-11-23T15, or a date: its last hour), UTC."),
    ] = None,
    config: ConfigOpt = None,
    source: SourceOpt = None,
    json: JsonOpt = False,
) -> None:
    """Export the manifests to one Parquet file, every column typed (`ingestor manifest schema`).

    Give --manifests, or --input (or --config) for the manifests dir beside the
    landing dir; with [[source]] tables every landing dir's manifests dir goes
    into the one file (--source: one source's), each row with its source and
    dataset. --since/--until choose hour files by their directory names (a line
    finished late sits in the hour it was written). Only complete lines are
    read; a line that is not a JSON object or whose value does not fit its
    column is reported on stderr with its file and offset and left out.
    Exit 0 when every line was exported, 1 when some were bad, 2 on bad usage.
    """
    from ingestor import export  # pyarrow: loaded by the commands that need it

    first, last = _hour("--since", since, end=False), _hour("--until", until, end=True)
    if first is not None and last is not None and first > last:
        raise SettingsError(f"invalid --since/--until: {since} is after {until}")
    dirs = _manifests_dirs(flags, config, source)
    out = parse_path("output", output)
    if out.is_dir():
        raise SettingsError(f"invalid value of --output: {out} is a directory")
    if not out.parent.is_dir():
        raise SettingsError(f"invalid value of --output: the directory {out.parent} does not exist")
    shown = 0

    def on_bad(line: export.BadLine) -> None:
        nonlocal shown
        if shown < SHOWN_BAD:
            print(f"ingestor: bad manifest line {line}", file=sys.stderr)
        shown += 1

    try:
        report = export.export(dirs, out, since=first, until=last, on_bad=on_bad)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise SettingsError(f"manifest export: {where}{exc.strerror or exc}") from None
    if shown > SHOWN_BAD:
        print(f"ingestor: {shown - SHOWN_BAD} more bad manifest lines not shown", file=sys.stderr)
    if json:
        doc = {**report.as_dict(), "manifests": [str(d) for d in dirs], "since": since, "until": until}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        notes = [f"{report.bad_lines} bad"]
        if report.unfinished:
            notes.append(f"{report.unfinished} unfinished last lines skipped")
        if report.vanished:
            notes.append(f"{report.vanished} files removed before they were read")
        sys.stdout.write(
            f"exported {report.files} manifest files, {report.lines} lines ({', '.join(notes)}): "
            f"{report.rows} rows to {report.output} in {report.seconds} s\n"
        )
    raise typer.Exit(1 if report.bad_lines else 0)


@manifest_app.command("schema")
def schema_command(
    duckdb: Annotated[
        bool,
        typer.Option(
            "--duckdb", help="Print DuckDB's read_json columns={...} struct, to read the JSONL live."
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Print the manifest's columns: name, type, nullable, meaning (the export's Parquet schema).

    --duckdb prints the columns={...} struct of DuckDB's read_json for the same
    types, e.g. duckdb -c "select * from read_json('manifests/*/*/*/*/manifest.jsonl',
    columns=$(ingestor manifest schema --duckdb), format='newline_delimited')".
    """
    from ingestor import export  # pyarrow: loaded by the commands that need it

    if duckdb:
        sys.stdout.write(export.duckdb_columns() + "\n")
        return
    rows = [
        {"column": c.name, "type": str(c.type), "nullable": c.nullable, "meaning": c.meaning}
        for c in export.COLUMNS
    ]
    if json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return
    widths = [max(len(str(r[k])) for r in rows) for k in ("column", "type")]
    lines = []
    for r in rows:
        null = "null" if r["nullable"] else "not null"
        lines.append(f"{r['column']:<{widths[0]}}  {r['type']:<{widths[1]}}  {null:<8}  {r['meaning']}")
    sys.stdout.write("\n".join(lines) + "\n")
