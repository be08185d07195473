"""The reports of ``ingestor lookup`` and ``ingestor runs`` for a person (``lookup.py`` reads them).

Input: the report dicts that ``--json`` prints. Output: text, a heading per
QUERY then a few aligned lines per match (only the lines that apply); the
runs as one aligned line each, newest first. Paths that are not UTF-8 are
shown with U+FFFD, as in the manifest's text fields.
"""

from __future__ import annotations

from typing import Any

from ingestor.lookup import Found
from ingestor.units import human_bytes

_LABEL = 11  # the width of a label column: "  warehouse " lines up the values


def _line(label: str, value: str) -> str:
    return f"  {label:<{_LABEL}}{value}"


def render(report: dict[str, Any]) -> str:
    """The report for a person: per query a heading, then a few aligned lines per match."""
    out: list[str] = []
    for q in report["queries"]:
        n = len(q["matches"])
        head = f"{q['query']}  ({q['kind'].replace('_', ' ')}"
        inside = q.get("inside")
        if inside:
            head += f"; in the {inside['what']} {inside['root']}"
        head += ")"
        if n == 0:
            out.append(f"{head}: not found: {q['note']}")
            continue
        out.append(
            f"{head}: {n} match{'es' if n != 1 else ''}"
            + (", more not shown (--limit)" if q["truncated"] else "")
        )
        for m in q["matches"]:
            out += _render_match(m)
    return "\n".join(out)


def _render_match(m: dict[str, Any]) -> list[str]:
    state = str(m["state"]).replace("_", " ")
    detail = f" ({m['ledger_state']})" if m["state"] == Found.IN_FLIGHT else ""
    lines = [
        f"{state + detail:<{_LABEL + 2}}{m['id'] or '(no record yet)'}"
        + (f"  source {m['source']}" if m["source"] else "")
    ]
    lines.append(
        _line("source", m["source_path"] or f"(landing dir {m['site']} unknown) {m['source_relpath']}")
    )
    if m["warehouse_path"]:
        lines.append(_line("warehouse", m["warehouse_path"]))
    if m["sha256"]:
        lines.append(_line("sha256", m["sha256"]))
    if m["size"] is not None:
        size = f"{m['size']:,} bytes" + (f" ({human_bytes(m['size'])})" if m["size"] >= 1024 else "")
        lines.append(_line("file", f"{size}, mtime {m['mtime']}, device {m['device']}, inode {m['inode']}"))
    # ingested_at is when the record was planned: "hashed" for one that has not landed
    landed = m["state"] in (Found.INGESTED, Found.DUPLICATE)
    stamps = (("detected", "detected_at"), ("ingested" if landed else "hashed", "ingested_at"))
    times = [f"{k} {m[key]}" for k, key in stamps if m[key]]
    if m["state"] == Found.REJECTED:
        times = [f"rejected {m['ingested_at']}"]
    if times:
        lines.append(_line("times", ", ".join(times)))
    if m["reason"]:
        lines.append(_line("reason", m["reason"]))
    if m["hint"]:
        lines.append(_line("hint", m["hint"]))
    if m["note"]:
        lines.append(_line("note", m["note"]))
    dup = m["duplicate_of"]
    if dup is not None:
        lines.append(
            _line("original", f"{dup['id']} {dup['warehouse_path'] or dup['source_path'] or ''}".rstrip())
        )
    if m["duplicated_by_count"]:
        ids = ", ".join(m["duplicated_by"])
        more = m["duplicated_by_count"] - len(m["duplicated_by"])
        lines.append(
            _line(
                "duplicates", f"{m['duplicated_by_count']:,}: {ids}" + (f" and {more:,} more" if more else "")
            )
        )
    run = m["run"]
    if run is not None:
        known = (
            f" ({run['kind']} on {run['host']}, {run['status']})"
            if run["kind"]
            else " (not in the runs table)"
        )
        lines.append(_line("run", run["run_id"] + known))
    mf = m["manifest"]
    if mf is not None:
        where = f"byte {mf['offset']:,}" if mf["found"] else f"line not found: {mf.get('error')}"
        lines.append(_line("manifest", f"{mf['path'] or mf['relpath']} at {where}"))
    return lines


_RUN_COLUMNS = (
    ("run_id", "run_id"), ("kind", "kind"), ("host", "host"), ("pid", "pid"), ("started_at", "started"),
    ("finished_at", "finished"), ("seconds", "seconds"), ("status", "status"), ("landed", "landed"),
    ("duplicates", "dups"), ("rejected", "rejected"), ("errors", "errors"),
)  # fmt: skip


def render_runs(report: dict[str, Any]) -> str:
    """One aligned line per run, newest first; the first error of a run on the line below it."""
    rows = report["runs"]
    if not rows:
        return "no runs on record"
    cells = [[label for _, label in _RUN_COLUMNS]]
    for r in rows:
        cells.append([_cell(r[key], key) for key, _ in _RUN_COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(_RUN_COLUMNS))]
    out = []
    for i, row in enumerate(cells):
        out.append(
            "  ".join(
                c.rjust(w) if _numeric(j) else c.ljust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if i and rows[i - 1]["error_summary"]:
            out.append(f"  error: {rows[i - 1]['error_summary']}")
    return "\n".join(out)


def _numeric(column: int) -> bool:
    return _RUN_COLUMNS[column][0] in ("pid", "seconds", "landed", "duplicates", "rejected", "errors")


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "-" if key != "finished_at" else "(running)"
    if key == "seconds":
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}" if key != "pid" else str(value)
    return str(value)
