"""The report of ``ingestor verify``: the kinds of inconsistency, counted with examples, rendered.

Each problem found keeps a count and its first ``MAX_EXAMPLES`` examples, so
a report stays small whatever the warehouse's size. ``render_text`` prints one
line per kind found with its examples and a final ``OK`` / ``FAILED`` line;
``render_json`` prints exactly one object (``ok``, ``counts``, ``problems``,
``checked``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_EXAMPLES = 20

KINDS = {
    "torn_line": "manifest file whose last bytes have no newline",
    "bad_line": "complete manifest line that is not a valid record",
    "duplicate_id": "id on more than one line",
    "missing_file": "line whose warehouse file is absent",
    "sha_mismatch": "warehouse file whose size or SHA-256 differs from its line",
    "unreadable_file": "warehouse file or directory that cannot be read",
    "shared_path": "warehouse file named by more than one record",
    "duplicate_content": "same content ingested more than once",
    "duplicate_mismatch": "duplicate whose duplicate_of is no ingested line of the same content",
    "orphan_file": "warehouse file that no line names",
    "leftover_temporary": "file left in .ingestor-tmp/; the next start removes it",
    "unexpected_entry": "symlink, FIFO, socket or device in the warehouse",
    "unfinished_record": "ledger record still hashed or moved",
    "ledger_without_line": "record manifested in the ledger with no manifest line",
    "line_without_ledger": "line whose id is not in the ledger",
    "ledger_mismatch": "line and its ledger record disagree",
    "manifest_vanished": "manifest file or directory removed during the audit (a retention job?); "
    "its records show as ledger_without_line",
}


@dataclass
class Report:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    problems: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in KINDS})
    checked: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("lines", "rejected", "files", "records", "bytes_hashed", "seconds"), 0
        )
    )

    def add(self, kind: str, **example: Any) -> None:
        self.count(kind, lambda: example)

    def count(self, kind: str, example: Callable[[], dict[str, Any]]) -> None:
        """Count one problem; build its example only while there is room for it."""
        self.counts[kind] += 1
        if len(self.problems[kind]) < MAX_EXAMPLES:
            self.problems[kind].append(example())

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())


def render_json(report: Report) -> str:
    """Exactly one JSON object: ok, counts, problems (kind → examples), checked."""
    doc = {"ok": report.ok, "counts": report.counts, "problems": report.problems, "checked": report.checked}
    return orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE).decode()


def render_text(report: Report) -> str:
    """One line per kind found (count, meaning), its examples, then one OK / FAILED line."""
    out = []
    for kind, n in report.counts.items():
        if not n:
            continue
        out.append(f"{kind}: {n}  ({KINDS[kind]})")
        for ex in report.problems[kind]:
            out.append("  " + " ".join(f"{k}={_text(v)}" for k, v in ex.items()))
        if n > len(report.problems[kind]):
            out.append(f"  ... and {n - len(report.problems[kind])} more")
    c = report.checked
    rejected = f" (of them {c['rejected']} rejected files)" if c["rejected"] else ""
    totals = f"{c['lines']} lines{rejected}, {c['files']} files, {c['records']} records"
    tail = f"({c['bytes_hashed']} bytes hashed in {c['seconds']} s)"
    if report.ok:
        out.append(f"OK: {totals} verified {tail}")
    else:
        found = sum(report.counts.values())
        kinds = ", ".join(f"{k} {n}" for k, n in report.counts.items() if n)
        out.append(f"FAILED: {found} problem{'s' if found > 1 else ''} ({kinds}) in {totals} {tail}")
    return "\n".join(out) + "\n"


def _text(value: Any) -> str:
    if isinstance(value, str) and value and not any(ch in value for ch in ' "\\\n\t'):
        return value
    return orjson.dumps(value).decode()
