"""Runs: every daemon from start to stop, and every replay, on record in the ledger.

A run is one process's work on a ledger: ``run_id`` (a UUID, on every log
line and every manifest line the run writes), its kind (``daemon`` or
``replay``), host, pid, start and finish, ``status`` (running, success,
failure), its counts and the first error. The row is written when the
ledger is open and finished at the end; a run that never got to its end (kill
-9, a power cut) is still ``running`` in the ledger, and the next run to
start on the ledger marks it ``failure``: its owner lock (``owners.py``) is
free, which the kernel guarantees only once the process is gone.

``RUN_ID`` and ``HOST`` are this process's: set once at the start of a run
(in lander processes from the daemon's), read by the manifest's lines and the
log's processor.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ingestor.errors import Fatal, Retryable

if TYPE_CHECKING:  # the ledger imports the manifest, which reads RUN_ID and HOST here
    from ingestor.ledger import Ledger

HOST = socket.gethostname()
RUN_ID: str | None = None  # this process's run; None outside one (verify, status...)

DIED = (
    "ended without a clean stop (killed, crashed or a power cut): found by the next start, "
    "which finished what it left in flight"
)


class Kind(StrEnum):
    DAEMON = "daemon"
    REPLAY = "replay"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(slots=True)
class Counts:
    """What a run did: files landed, duplicates, files rejected, errors (retryable ones included)."""

    landed: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    kind: str
    host: str
    pid: int
    started_ns: int
    finished_ns: int | None
    status: str
    landed: int
    duplicates: int
    rejected: int
    errors: int
    error_summary: str | None

    def view(self) -> dict[str, Any]:
        """The run for people and JSON: times as RFC 3339, the duration in seconds."""
        from ingestor.manifest import rfc3339  # the manifest imports this module

        out = asdict(self)
        out["started_at"] = rfc3339(out.pop("started_ns"))
        finished = out.pop("finished_ns")
        out["finished_at"] = rfc3339(finished) if finished is not None else None
        end = finished if finished is not None else time.time_ns()
        out["seconds"] = round((end - self.started_ns) / 1e9, 3)
        return out


_COLUMNS = (
    "run_id, kind, host, pid, started_ns, finished_ns, status, landed, duplicates, rejected, errors, "
    "error_summary"
)


def set_current(run_id: str | None, host: str | None = None) -> None:
    """This process's run (a lander process takes the daemon's)."""
    global RUN_ID, HOST
    RUN_ID = run_id
    if host is not None:
        HOST = host


def new_id() -> str:
    return str(uuid.uuid4())


def begin(ledger: Ledger, run_id: str, kind: Kind) -> None:
    """Record the run as running (its owner is the ledger's: alive while this process is)."""
    now = time.time_ns()

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO runs(run_id, kind, host, pid, owner, started_ns, status) VALUES (?,?,?,?,?,?,?)",
            (run_id, kind, HOST, os.getpid(), ledger.owner, now, RunStatus.RUNNING),
        )

    ledger.call(op)


def close_dead(ledger: Ledger) -> list[str]:
    """Mark ``failure`` the running runs whose process is gone; returns their ids."""
    rows = ledger.reader().execute(
        "SELECT run_id, owner FROM runs WHERE status=? AND owner != ?", (RunStatus.RUNNING, ledger.owner)
    )
    dead = []
    for run_id, owner in rows.fetchall():
        if not ledger.owners.try_take(owner):
            continue  # alive: a replay beside the daemon, or the daemon beside a replay
        dead.append(run_id)
        ledger.owners.release(owner, remove=not ledger.holds_open(owner))
    if dead:
        now = time.time_ns()

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE runs SET status=?, finished_ns=?, error_summary=? WHERE run_id=? AND status=?",
                [(RunStatus.FAILURE, now, DIED, r, RunStatus.RUNNING) for r in dead],
            )

        ledger.call(op)
    return dead


def progress(ledger: Ledger, run_id: str, counts: Counts) -> None:
    """The counts so far, for ``ingestor runs`` while the run goes on."""

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE runs SET landed=?, duplicates=?, rejected=?, errors=? WHERE run_id=?",
            (counts.landed, counts.duplicates, counts.rejected, counts.errors, run_id),
        )

    ledger.call(op)


def finish(ledger: Ledger, run_id: str, counts: Counts, summary: str | None) -> None:
    """The run's end: ``success`` without ``summary``, else ``failure`` with it."""
    status = RunStatus.SUCCESS if summary is None else RunStatus.FAILURE
    now = time.time_ns()

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE runs SET status=?, finished_ns=?, landed=?, duplicates=?, rejected=?, errors=?, "
            "error_summary=? WHERE run_id=?",
            (status, now, counts.landed, counts.duplicates, counts.rejected, counts.errors, summary, run_id),
        )

    ledger.call(op)


def try_finish(ledger: Ledger, run_id: str, counts: Counts, summary: str | None, log: Any) -> None:
    """``finish``, said and left to the next start if the ledger cannot take it now."""
    try:
        finish(ledger, run_id, counts, summary)
    except (Retryable, Fatal, sqlite3.Error) as exc:
        log.warning("run_not_finished", error=str(exc), hint="the next start marks it failure")


def listed(conn: sqlite3.Connection, last: int | None) -> list[Run]:
    """The last ``last`` runs (all with None), newest first."""
    sql = f"SELECT {_COLUMNS} FROM runs ORDER BY started_ns DESC, run_id"
    rows = conn.execute(sql + (" LIMIT ?" if last is not None else ""), (last,) if last is not None else ())
    return [Run(*r) for r in rows.fetchall()]


def of_id(conn: sqlite3.Connection, run_id: str) -> Run | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE run_id=?", (run_id,)).fetchone()
    return Run(*row) if row is not None else None
