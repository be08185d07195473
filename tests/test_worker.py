"""worker.py: one batch through the protocol, in commit order; retries re-enter with what the ledger holds.

In process, on a real ledger, real files and real manifests; a step is made
to fail by replacing one call with one that raises ``Retryable`` once.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ingestor import logs, procs
from ingestor.errors import Retryable
from ingestor.manifest import manifest_rel_for
from ingestor.outcome import Outcome, Then
from ingestor.records import Candidate, Record
from ingestor.settings import Settings, load
from ingestor.worker import Worker
from tests.conftest import Env
from tests.invariants import check, open_records

OLD = 1_700_000_000


@pytest.fixture
def settings(env: Env, tmp_path: Path) -> Settings:
    return load(
        {
            "input": str(env.landing),
            "warehouse": str(env.warehouse),
            "manifests": str(env.manifests),
            "state_path": str(env.state),
            "stability_seconds": 0,
        },
        environ={},
        cwd=tmp_path,
    )


@pytest.fixture
def worker(settings: Settings) -> Iterator[Worker]:
    for d in (settings.input, settings.warehouse, settings.manifests):
        d.mkdir(parents=True, exist_ok=True)
    w, ledger, tmp, landing_fd = procs.make_worker(
        settings, owner="01WORKERTEST0000000000000A", stop=threading.Event(), log=logs.get_logger()
    )
    try:
        yield w
    finally:
        ledger.close()
        tmp.close()
        os.close(landing_fd)


def put(env: Env, rel: str, data: bytes) -> Candidate:
    p = env.landing / rel
    p.write_bytes(data)
    os.utime(p, (OLD, OLD))
    return Candidate(rel, len(data), time.monotonic())


def fail_once(obj: Any, name: str) -> list[int]:
    """Make ``obj.name`` raise Retryable on its first call; returns the call counter."""
    real = getattr(obj, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise Retryable(name, "-", "injected", "retried")
        return real(*args, **kwargs)

    setattr(obj, name, wrapper)
    return calls


def lines(env: Env) -> list[str]:
    return [r.id for r in env.records()]


def planned(worker: Worker, env: Env, rel: str, data: bytes) -> Record:
    """A HASHED record of a new file, not moved yet."""
    cand = put(env, rel, data)
    h = worker._digest(cand)
    assert h is not None
    (rec,) = worker.ledger.plan([h], worker.policy, worker.manifest.size)
    assert isinstance(rec, Record)
    return rec


def test_land_runs_the_protocol_in_commit_order(worker: Worker, env: Env) -> None:
    cands = [put(env, f"f{i}.csv", f"content {i}".encode()) for i in range(3)]
    cands.append(put(env, "dup.csv", b"content 0"))
    out = worker.land(cands)
    # one result per file, in batch order, each saying what comes next
    assert [(f.rel, f.then) for f in out.files] == [
        ("dup.csv", Then.DEFER),  # the same content as a file of the batch: decided once that one is final
        ("f0.csv", Then.DONE),
        ("f1.csv", Then.DONE),
        ("f2.csv", Then.DONE),
    ]
    again = worker.land([c for c in cands if c.rel == "dup.csv"])
    assert [(r.source_rel, r.status) for r in again.done()] == [("dup.csv", "duplicate")]
    check(env, {r.sha256: r.identity.size for r in out.done()})


def test_a_late_record_replanned_into_this_hour_is_retried_as_replanned(worker: Worker, env: Env) -> None:
    """Before: the retry re-entered with the record as first planned (the closed hour's
    file and floor), did not find its line there, re-planned it again and appended a second
    line for it."""
    rec = planned(worker, env, "late.csv", b"late")
    old_hour = manifest_rel_for(time.time_ns() - 3 * 3600 * 10**9)
    conn = sqlite3.connect(env.state)
    conn.execute("UPDATE files SET manifest_rel = ?, manifest_floor = 0 WHERE id = ?", (old_hour, rec.id))
    conn.commit()
    conn.close()
    rec = replace(rec, manifest_rel=old_hour, manifest_floor=0)
    fail_once(worker.ledger, "manifested")  # the line is appended, its commit fails
    out = worker.finish([rec])
    (unfinished,) = out.files
    assert unfinished.then is Then.UNFINISHED and unfinished.error is not None and unfinished.record
    assert unfinished.record.manifest_rel == manifest_rel_for(time.time_ns())
    again = worker.finish(out.unfinished(), recovering=True)
    assert [r.id for r in again.done()] == [rec.id] and again.unfinished() == []
    assert lines(env) == [rec.id]
    assert open_records(env) == 0


def test_a_collision_replan_is_retried_at_its_new_destination(worker: Worker, env: Env) -> None:
    """Before: the move to the re-planned destination succeeded, a later step failed, and
    the retry went to the first destination (taken): re-planned again, found the source gone,
    abandoned the record and left the landed file an orphan in the warehouse."""
    rec = planned(worker, env, "report.csv", b"from upstream")
    assert rec.dest_rel is not None
    taken = env.warehouse / rec.dest_rel
    taken.parent.mkdir(parents=True, exist_ok=True)
    taken.write_bytes(b"placed by hand")
    fail_once(worker.manifest, "append")
    out = worker.finish([rec])
    (unfinished,) = out.unfinished()
    assert unfinished.dest_rel != rec.dest_rel
    again = worker.finish(out.unfinished(), recovering=True)
    assert [r.id for r in again.done()] == [rec.id] and again.unfinished() == []
    (line,) = env.records()
    assert line.warehouse is not None and Path(line.warehouse).read_bytes() == b"from upstream"
    assert taken.read_bytes() == b"placed by hand"
    assert sorted(p.name for p in env.warehouse_files()) == sorted([taken.name, Path(line.warehouse).name])
    assert open_records(env) == 0


def test_a_failed_moved_commit_is_retried_from_the_ledger_state(worker: Worker, env: Env) -> None:
    """A file that changed while it landed needs its MOVED commit (its new hash) before its
    line; if that commit fails, the retry must not write a line with a hash the ledger lacks."""
    rec = planned(worker, env, "grow.csv", b"v1")
    real_check = worker.mover._check_after_rename

    def written_after_the_rename(r: Record, dfd: int, name: str) -> Any:
        with open(name, "ab", opener=lambda p, f: os.open(p, f, dir_fd=dfd)) as fh:
            fh.write(b" and more")  # a writer still holding the file open
        return real_check(r, dfd, name)

    worker.mover._check_after_rename = written_after_the_rename  # type: ignore[method-assign]
    fail_once(worker.ledger, "moved")
    out: Outcome = worker.finish([rec])
    assert [f.then for f in out.files] == [Then.UNFINISHED]
    worker.mover._check_after_rename = real_check  # type: ignore[method-assign]
    again = worker.finish(out.unfinished(), recovering=True)
    assert again.unfinished() == []
    (line,) = env.records()
    assert line.warehouse is not None
    assert line.sha256 == hashlib.sha256(Path(line.warehouse).read_bytes()).hexdigest()
    conn = sqlite3.connect(env.state)
    (sha,) = conn.execute("SELECT sha256 FROM files WHERE id = ?", (rec.id,)).fetchone()
    conn.close()
    assert sha == line.sha256
