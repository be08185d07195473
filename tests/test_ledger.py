"""ledger.py: exactly-once decisions in SQLite, group commit, owners and adoption."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestor.errors import Fatal, Retryable
from ingestor.layout import DEFAULT_LAYOUT, LayoutError, render
from ingestor.ledger import Ledger, MovedUpdate
from ingestor.ledger_db import WAL_PAGES
from ingestor.manifest import manifest_rel_for
from ingestor.owners import OwnerLocks
from ingestor.plan import DUPLICATES_DIR, Defer, Dests, PlanPolicy, PlanResult, Skip, plan_one
from ingestor.records import Action, Candidate, Hashed, Identity, Record, State, Status
from ingestor.settings import Dedup, OnDuplicate
from tests.data_fs import tiny_tmpfs
from tests.waiting import wait_for

NON_UTF8 = os.fsdecode(b"in/caf\xe9\xff.csv")
LONG = "d/" + "é" * 120 + "n" * 11 + ".csv"  # a 255-byte name
_inodes = itertools.count(1000)


def sha(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def hashed(rel: str, content: str = "c", *, ident: Identity | None = None, temp: str | None = None) -> Hashed:
    """A hashed candidate with a fresh identity (or the one given)."""
    ident = ident or Identity(7, next(_inodes), len(content), 1_700_000_000_000_000_000)
    return Hashed(Candidate(rel, ident.size, 12.5, sidecar=None), ident, sha(content), temp)


def today(rel: str) -> str:
    return render(DEFAULT_LAYOUT, rel, time.time_ns(), "0" * 64)


def one(ledger: Ledger, h: Hashed, policy: PlanPolicy) -> PlanResult:
    (res,) = ledger.plan([h], policy)
    return res


def rec_of(ledger: Ledger, h: Hashed, policy: PlanPolicy) -> Record:
    res = one(ledger, h, policy)
    assert isinstance(res, Record), res
    return res


def finish(ledger: Ledger, *recs: Record) -> None:
    ledger.moved([MovedUpdate(r.id, 0) for r in recs])
    ledger.manifested([r.id for r in recs])


def rows(ledger: Ledger) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(ledger.path)
    try:
        conn.row_factory = sqlite3.Row
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM files")}
    finally:
        conn.close()


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    wh = tmp_path / "warehouse"
    wh.mkdir()
    return wh


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, str]:
    return {
        "landing": str(tmp_path / "landing"),
        "warehouse": str(tmp_path / "warehouse"),
        "manifests": str(tmp_path / "manifests"),
    }


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite"


@pytest.fixture
def ledger(state: Path, roots: dict[str, str]) -> Iterator[Ledger]:
    led = Ledger(state, "01OWNERAAAAAAAAAAAAAAAAAAA")
    led.open(roots)
    yield led
    led.close()


@pytest.fixture
def make_policy(warehouse: Path) -> Callable[..., PlanPolicy]:
    def make(
        layout: str = DEFAULT_LAYOUT,
        dedup: Dedup = Dedup.CONTENT,
        on_duplicate: OnDuplicate = OnDuplicate.QUARANTINE,
    ) -> PlanPolicy:
        return PlanPolicy(layout, dedup, on_duplicate, warehouse)

    return make


@pytest.fixture
def policy(make_policy: Callable[..., PlanPolicy]) -> PlanPolicy:
    return make_policy()


# ---------------------------------------------------------------- opening


def test_open_creates_a_wal_ledger_and_an_owner_lock(ledger: Ledger, state: Path) -> None:
    assert state.is_file()
    conn = sqlite3.connect(state)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    lock = state.parent / "owners" / f"{ledger.owner}.lock"
    assert lock.exists()
    ledger.close()
    assert not lock.exists()  # a clean exit leaves no owner behind
    ledger.close()  # idempotent


def test_reopen_with_the_same_roots(state: Path, roots: dict[str, str]) -> None:
    for owner in ("01A", "01B"):
        led = Ledger(state, owner)
        led.open(roots)
        led.close()
    led = Ledger(state, "01C")
    led.open({**roots, "extra": "/x"})  # a new key is recorded, not refused
    led.close()


@pytest.mark.parametrize("key", ["landing", "warehouse", "manifests"])
def test_open_with_other_roots_is_fatal(ledger: Ledger, state: Path, roots: dict[str, str], key: str) -> None:
    other = Ledger(state, "01OTHER")
    with pytest.raises(Fatal) as info:
        other.open({**roots, key: "/somewhere/else"})
    assert key in str(info.value) and "/somewhere/else" in str(info.value)
    other.close()
    ledger.close()
    later = Ledger(state, "01LATER")  # also once the first one is gone
    with pytest.raises(Fatal):
        later.open({**roots, key: "/somewhere/else"})
    later.close()


def test_open_a_file_that_is_not_a_ledger_is_fatal(tmp_path: Path, roots: dict[str, str]) -> None:
    path = tmp_path / "state" / "ledger.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"this is not a database, it is a text file of sufficient length" * 100)
    led = Ledger(path, "01X")
    with pytest.raises(Fatal, match="open ledger"):
        led.open(roots)
    led.close()


# ---------------------------------------------------------------- planning


def test_plan_a_new_file(ledger: Ledger, policy: PlanPolicy) -> None:
    h = hashed("a/data.csv", "hello", temp="01OWNER-3")
    before = time.time_ns()
    rec = rec_of(ledger, h, policy)
    assert (rec.state, rec.status, rec.action) == (State.HASHED, Status.INGESTED, Action.LANDED)
    assert rec.source_rel == "a/data.csv" and rec.identity == h.identity and rec.sha256 == sha("hello")
    assert rec.dest_rel == today("a/data.csv")
    assert rec.manifest_rel == manifest_rel_for(rec.ingested_ns)
    assert before <= rec.ingested_ns <= time.time_ns()
    assert rec.manifest_floor is None and rec.duplicate_of is None
    assert rec.temp == "01OWNER-3" and rec.seen_at == 12.5  # this process only
    stored = ledger.unfinished()
    assert [r.id for r in stored] == [rec.id]
    assert stored[0].dest_rel == rec.dest_rel and stored[0].temp is None


def test_same_identity_in_flight_is_skipped(ledger: Ledger, policy: PlanPolicy) -> None:
    h = hashed("a.csv", "x")
    rec_of(ledger, h, policy)
    assert isinstance(one(ledger, h, policy), Skip)
    assert isinstance(one(ledger, hashed("renamed.csv", "other", ident=h.identity), policy), Skip)
    assert ledger.live_identities([h.identity, hashed("b", "y").identity]) == {h.identity}


def test_same_content_is_deferred_while_the_original_is_in_flight(ledger: Ledger, policy: PlanPolicy) -> None:
    orig = rec_of(ledger, hashed("a.csv", "same"), policy)
    res = one(ledger, hashed("b.csv", "same"), policy)
    assert res == Defer(orig.id)
    ledger.moved([MovedUpdate(orig.id, 0)])
    assert one(ledger, hashed("c.csv", "same"), policy) == Defer(orig.id)
    ledger.manifested([orig.id])
    dup = rec_of(ledger, hashed("d.csv", "same"), policy)
    assert dup.status is Status.DUPLICATE and dup.duplicate_of == orig.id


def test_same_content_twice_in_one_plan(ledger: Ledger, policy: PlanPolicy) -> None:
    a, b = ledger.plan([hashed("a.csv", "same"), hashed("b.csv", "same")], policy)
    assert isinstance(a, Record) and b == Defer(a.id)


@pytest.mark.parametrize(
    ("mode", "action", "quarantined"),
    [
        (OnDuplicate.QUARANTINE, Action.QUARANTINED, True),
        (OnDuplicate.DELETE, Action.DELETED, False),
        (OnDuplicate.KEEP, Action.KEPT, False),
    ],
)
def test_duplicate_actions(
    ledger: Ledger,
    make_policy: Callable[..., PlanPolicy],
    mode: OnDuplicate,
    action: Action,
    quarantined: bool,
) -> None:
    policy = make_policy(on_duplicate=mode)
    orig = rec_of(ledger, hashed("a.csv", "same"), policy)
    finish(ledger, orig)
    dup = rec_of(ledger, hashed("x/b.csv", "same"), policy)
    assert (dup.status, dup.action, dup.duplicate_of) == (Status.DUPLICATE, action, orig.id)
    if quarantined:
        assert dup.dest_rel == f"{DUPLICATES_DIR}/{today('x/b.csv')}"
    else:
        assert dup.dest_rel is None


def test_kept_duplicate_is_remembered(ledger: Ledger, make_policy: Callable[..., PlanPolicy]) -> None:
    policy = make_policy(on_duplicate=OnDuplicate.KEEP)
    finish(ledger, rec_of(ledger, hashed("a.csv", "same"), policy))
    h = hashed("b.csv", "same")
    finish(ledger, rec_of(ledger, h, policy))
    assert ledger.unfinished() == []
    assert ledger.live_identities([h.identity]) == {h.identity}  # scans do not look at it again
    assert isinstance(one(ledger, h, policy), Skip)


def test_quarantine_path_collides_like_any_other(ledger: Ledger, policy: PlanPolicy) -> None:
    finish(ledger, rec_of(ledger, hashed("a.csv", "same"), policy))
    d1 = rec_of(ledger, hashed("b.csv", "same"), policy)
    d2 = rec_of(ledger, hashed("b.csv", "same"), policy)
    assert d1.dest_rel == f"{DUPLICATES_DIR}/{today('b.csv')}"
    assert d2.dest_rel == f"{DUPLICATES_DIR}/{today('b~' + sha('same')[:8] + '.csv')}"


def test_dedup_path_and_content(ledger: Ledger, make_policy: Callable[..., PlanPolicy]) -> None:
    policy = make_policy(layout="{name}", dedup=Dedup.PATH_CONTENT)
    s8 = sha("same")[:8]
    a = rec_of(ledger, hashed("a/x.csv", "same"), policy)
    b = rec_of(ledger, hashed("b/x.csv", "same"), policy)  # same content, other path: ingested
    c = rec_of(ledger, hashed("c/x.csv", "same"), policy)
    assert [r.status for r in (a, b, c)] == [Status.INGESTED] * 3
    assert [r.dest_rel for r in (a, b, c)] == ["x.csv", f"x~{s8}.csv", f"x~{s8}-2.csv"]
    assert one(ledger, hashed("a/x.csv", "same"), policy) == Defer(a.id)
    finish(ledger, a)
    dup = rec_of(ledger, hashed("a/x.csv", "same"), policy)
    assert dup.status is Status.DUPLICATE and dup.duplicate_of == a.id


def test_dedup_content_ignores_the_path(ledger: Ledger, policy: PlanPolicy) -> None:
    a = rec_of(ledger, hashed("a/x.csv", "same"), policy)
    assert one(ledger, hashed("b/x.csv", "same"), policy) == Defer(a.id)


def test_abandon_frees_the_content_identity_and_destination(ledger: Ledger, policy: PlanPolicy) -> None:
    h = hashed("a.csv", "same")
    first = rec_of(ledger, h, policy)
    ledger.abandon(first.id, "vanished before it moved")
    assert ledger.unfinished() == []
    assert ledger.live_identities([h.identity]) == set()
    again = rec_of(ledger, h, policy)  # the same file seen again (it had changed back, say)
    assert again.status is Status.INGESTED  # not a duplicate of a file that never landed
    assert again.dest_rel == first.dest_rel  # nor pushed aside by it
    row = rows(ledger)[first.id]
    assert (row["state"], row["note"]) == ("abandoned", "vanished before it moved")


def test_collision_with_a_file_already_in_the_warehouse(
    ledger: Ledger, policy: PlanPolicy, warehouse: Path
) -> None:
    """Planning does not look at the disk (the move refuses to replace and reports a
    collision); the re-plan after that collision does."""
    planned = warehouse / today("d/data.csv")
    planned.parent.mkdir(parents=True)
    planned.write_bytes(b"landed by someone else")
    rec = rec_of(ledger, hashed("d/data.csv", "mine"), policy)
    assert rec.dest_rel == today("d/data.csv")
    assert ledger.replan_dest(rec, policy).dest_rel == today(f"d/data~{sha('mine')[:8]}.csv")


def test_collision_with_a_dangling_symlink_in_the_warehouse(
    ledger: Ledger, policy: PlanPolicy, warehouse: Path
) -> None:
    planned = warehouse / today("data.csv")
    planned.parent.mkdir(parents=True)
    planned.symlink_to("/nonexistent")
    rec = rec_of(ledger, hashed("data.csv", "mine"), policy)
    assert ledger.replan_dest(rec, policy).dest_rel != today("data.csv")


def test_collision_with_a_planned_record_and_then_a_file(
    ledger: Ledger, policy: PlanPolicy, warehouse: Path
) -> None:
    first = rec_of(ledger, hashed("data.csv", "one"), policy)
    s8 = sha("two")[:8]
    taken = warehouse / today(f"data~{s8}.csv")  # the first suffix is taken on disk
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"")
    second = rec_of(ledger, hashed("data.csv", "two"), policy)
    assert first.dest_rel == today("data.csv")
    assert second.dest_rel == today(f"data~{s8}.csv")  # planned against the ledger only
    assert ledger.replan_dest(second, policy).dest_rel == today(f"data~{s8}-2.csv")


def test_a_file_where_a_planned_directory_goes(ledger: Ledger, policy: PlanPolicy, warehouse: Path) -> None:
    """``reports`` (a file) landed today; later ``reports/q1.csv`` arrives: its planned path
    must be one the mover can create, or every retry fails in makedirs with ENOTDIR."""
    blocker = warehouse / today("reports")
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"an earlier file named reports")
    rec = rec_of(ledger, hashed("reports/q1.csv", "q1"), policy)
    parents = (warehouse / (rec.dest_rel or "")).parents
    assert all(p.is_dir() and not p.is_symlink() for p in parents if os.path.lexists(p))


def test_finished_records_keep_their_destination(ledger: Ledger, policy: PlanPolicy) -> None:
    first = rec_of(ledger, hashed("data.csv", "one"), policy)
    finish(ledger, first)
    second = rec_of(ledger, hashed("data.csv", "two"), policy)
    assert second.dest_rel != first.dest_rel


def test_hostile_names_roundtrip(ledger: Ledger, policy: PlanPolicy) -> None:
    a = rec_of(ledger, hashed(NON_UTF8, "one"), policy)
    b = rec_of(ledger, hashed(LONG, "two"), policy)
    c = rec_of(ledger, hashed(LONG, "three"), policy)  # collides with b: suffixed within NAME_MAX
    assert os.fsencode(a.dest_rel or "") == os.fsencode(today(NON_UTF8))
    assert len(os.fsencode(os.path.basename(c.dest_rel or ""))) <= 255
    assert c.dest_rel != b.dest_rel
    stored = {r.id: r for r in ledger.unfinished()}
    assert os.fsencode(stored[a.id].source_rel) == b"in/caf\xe9\xff.csv"
    assert stored[b.id].source_rel == LONG
    assert stored[c.id].dest_rel == c.dest_rel


def test_plan_keeps_the_sidecar(ledger: Ledger, policy: PlanPolicy) -> None:
    h = hashed("a.csv", "x")
    h = Hashed(Candidate("a.csv", 1, 0.0, sidecar="a.csv.ok"), h.identity, h.sha256, None)
    rec = rec_of(ledger, h, policy)
    assert rec.sidecar_rel == "a.csv.ok"
    assert ledger.unfinished()[0].sidecar_rel == "a.csv.ok"


def test_concurrent_plans_of_one_content_give_one_original(ledger: Ledger, policy: PlanPolicy) -> None:
    results: list[PlanResult] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        res = ledger.plan([hashed(f"copy-{i}.csv", "same")], policy)
        with lock:
            results.extend(res)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recs = [r for r in results if isinstance(r, Record)]
    assert len(recs) == 1
    assert all(r == Defer(recs[0].id) for r in results if not isinstance(r, Record))


# ---------------------------------------------------------------- later steps


def test_moved_and_manifested(ledger: Ledger, policy: PlanPolicy) -> None:
    a = rec_of(ledger, hashed("a.csv", "a"), policy)
    b = rec_of(ledger, hashed("b.csv", "b"), policy)
    new = Identity(a.identity.device, a.identity.inode, 99, 5)
    ledger.moved([MovedUpdate(a.id, 123, (new, sha("a+"))), MovedUpdate(b.id, 456)])
    got = {r.id: r for r in ledger.unfinished()}
    assert got[a.id].state is State.MOVED and got[a.id].manifest_floor == 123
    assert got[a.id].identity == new and got[a.id].sha256 == sha("a+")
    assert got[b.id].manifest_floor == 456 and got[b.id].sha256 == sha("b")
    assert rows(ledger)[a.id]["note"] == "changed during landing"
    ledger.manifested([a.id, b.id])
    assert ledger.unfinished() == []
    assert {r["state"] for r in rows(ledger).values()} == {"manifested"}


def test_replan_dest(ledger: Ledger, policy: PlanPolicy, warehouse: Path) -> None:
    rec = rec_of(ledger, hashed("d/data.csv", "x"), policy)
    other = rec_of(ledger, hashed("d/other.csv", "y"), policy)
    (warehouse / (rec.dest_rel or "")).parent.mkdir(parents=True)
    (warehouse / (rec.dest_rel or "")).write_bytes(b"taken meanwhile")
    new = ledger.replan_dest(rec, policy)
    assert new.dest_rel == today(f"d/data~{sha('x')[:8]}.csv")
    assert new.id == rec.id and new.sha256 == rec.sha256
    stored = {r.id: r for r in ledger.unfinished()}
    assert stored[rec.id].dest_rel == new.dest_rel
    assert stored[other.id].dest_rel == other.dest_rel
    (warehouse / (new.dest_rel or "")).write_bytes(b"taken again")
    again = ledger.replan_dest(new, policy)
    assert again.dest_rel not in (rec.dest_rel, new.dest_rel)
    assert not (warehouse / (again.dest_rel or "")).exists()


def test_replan_manifest_moves_records_to_the_current_hour(ledger: Ledger, policy: PlanPolicy) -> None:
    a = rec_of(ledger, hashed("a.csv", "a"), policy)
    b = rec_of(ledger, hashed("b.csv", "b"), policy)
    old = [
        Record(
            **{
                **{f: getattr(r, f) for f in Record.__dataclass_fields__},
                "manifest_rel": "2001/01/01/00/manifest.jsonl",
                "ingested_ns": 978307200 * 10**9,
            }
        )
        for r in (a, b)
    ]
    asked: list[str] = []

    def floors(rel: str) -> int:
        asked.append(rel)
        return 777

    out = ledger.replan_manifest(old, floors)
    now_rel = manifest_rel_for(time.time_ns())
    assert asked == [out[0].manifest_rel]
    assert out[0].manifest_rel in (now_rel, manifest_rel_for(time.time_ns() - 10**9))
    assert all(r.manifest_floor == 777 and r.ingested_ns > old[0].ingested_ns for r in out)
    stored = {r.id: r for r in ledger.unfinished()}
    assert stored[a.id].manifest_rel == out[0].manifest_rel == stored[b.id].manifest_rel
    assert stored[a.id].ingested_ns == out[0].ingested_ns


# ---------------------------------------------------------------- owners and adoption


def test_adopt_moves_the_open_rows_of_a_dead_owner(
    state: Path, roots: dict[str, str], ledger: Ledger, policy: PlanPolicy
) -> None:
    dead = Ledger(state, "01DEAD")
    dead.open(roots)
    a = rec_of(dead, hashed("a.csv", "a"), policy)
    b = rec_of(dead, hashed("b.csv", "b"), policy)
    c = rec_of(dead, hashed("c.csv", "c"), policy)
    dead.moved([MovedUpdate(b.id, 10)])
    finish(dead, c)
    dead.close()
    assert ledger.open_owners() == {"01DEAD"}
    adopted = ledger.adopt("01DEAD")
    assert [r.id for r in adopted] == sorted([a.id, b.id])
    assert {r.id: r.state for r in adopted} == {a.id: State.HASHED, b.id: State.MOVED}
    assert sorted(r.id for r in ledger.unfinished()) == sorted([a.id, b.id])
    assert ledger.open_owners() == {ledger.owner}
    assert ledger.adopt("01DEAD") == []
    assert rows(ledger)[c.id]["owner"] == "01DEAD"  # final rows are history, left alone


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from ingestor.ledger import Ledger
    from ingestor.plan import PlanPolicy
    from ingestor.records import Candidate, Hashed, Identity
    from ingestor.settings import Dedup, OnDuplicate
    state, roots, warehouse = Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
    led = Ledger(state, "01CHILD")
    led.open(roots)
    policy = PlanPolicy("{relpath}", Dedup.CONTENT, OnDuplicate.QUARANTINE, warehouse)
    (rec,) = led.plan([Hashed(Candidate("child.csv", 3, 0.0), Identity(7, 4242, 3, 9), "ab" * 32, None)], policy)
    print(rec.id, flush=True)
    sys.stdin.read()  # until killed
    """
)


def test_a_killed_owner_is_dead_and_its_rows_are_adopted(
    ledger: Ledger, state: Path, roots: dict[str, str], warehouse: Path
) -> None:
    import json

    cmd = [sys.executable, "-c", CHILD, str(state), json.dumps(roots), str(warehouse)]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        rec_id = proc.stdout.readline().strip()
        assert rec_id, "the child did not plan"
        assert ledger.open_owners() == {"01CHILD"}
        assert ledger.owners.dead_owners() == []  # alive: its flock is held
        assert ledger.owners.try_take("01CHILD") is False
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert ledger.owners.dead_owners() == ["01CHILD"]  # the kernel dropped the lock
    assert ledger.owners.try_take("01CHILD") is True  # now held by us
    adopted = ledger.adopt("01CHILD")
    assert [r.id for r in adopted] == [rec_id]
    assert adopted[0].source_rel == "child.csv" and adopted[0].state is State.HASHED
    ledger.owners.release("01CHILD", remove=True)
    assert not (state.parent / "owners" / "01CHILD.lock").exists()
    assert ledger.owners.dead_owners() == []


def test_owner_locks_in_one_process(tmp_path: Path) -> None:
    a, b = OwnerLocks(tmp_path), OwnerLocks(tmp_path)
    try:
        assert a.dead_owners() == []  # no owners dir yet
        a.acquire("01A")
        assert b.try_take("01A") is False  # a separate open file description: excluded
        assert b.dead_owners() == []
        a.release("01A", remove=False)  # like a crash: the lock file stays, unlocked
        assert b.dead_owners() == ["01A"]
        assert b.dead_owners() == []  # b holds it now
        assert a.try_take("01A") is False
    finally:
        a.close()
        b.close()
    assert (tmp_path / "owners" / "01A.lock").exists()


# ---------------------------------------------------------------- group commit


def _hold_the_writer(ledger: Ledger) -> tuple[threading.Event, Any]:
    """Occupy the writer thread until the returned event is set."""
    gate, entered = threading.Event(), threading.Event()

    def block(conn: sqlite3.Connection) -> str:
        entered.set()
        gate.wait(30)
        return "held"

    fut = ledger.submit(block)
    wait_for(entered.is_set, 10, "the writer to take the blocker")
    return gate, fut


def _queued(ledger: Ledger) -> int:
    return ledger._queue.qsize()


def test_group_commit_shares_one_transaction(ledger: Ledger, policy: PlanPolicy) -> None:
    seen: list[tuple[int, float]] = []
    ledger.commit_observer = lambda n, secs: seen.append((n, secs))
    gate, blocker = _hold_the_writer(ledger)
    commits = ledger.commits
    n = 40
    results: list[PlanResult] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        res = ledger.plan([hashed(f"f{i}.csv", f"content {i}")], policy)
        with lock:
            results.extend(res)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    wait_for(lambda: _queued(ledger) >= n, 10, "every plan to be queued")
    gate.set()
    for t in threads:
        t.join()
    assert blocker.result() == "held"
    assert ledger.commits - commits == 2  # the blocker's group, then all 40 plans in one
    assert ledger.commits - commits < n
    assert ledger.last_group == n
    assert [x for x, _ in seen[-2:]] == [1, n]
    assert len(results) == n and all(isinstance(r, Record) for r in results)
    assert len(ledger.unfinished()) == n


def test_a_failing_op_does_not_roll_back_its_group(
    ledger: Ledger, policy: PlanPolicy, make_policy: Callable[..., PlanPolicy]
) -> None:
    """One SAVEPOINT per request: only the failing one is undone."""
    bad_policy = make_policy(layout="{reldir}")  # renders nothing for a top-level file
    gate, _ = _hold_the_writer(ledger)
    commits = ledger.commits
    out: dict[str, Any] = {}

    def run(key: str, items: list[Hashed], pol: PlanPolicy) -> None:
        try:
            out[key] = ledger.plan(items, pol)
        except Exception as exc:
            out[key] = exc

    threads = [
        threading.Thread(target=run, args=("good1", [hashed("d/a.csv", "a")], policy)),
        threading.Thread(
            target=run, args=("bad", [hashed("d/b.csv", "b"), hashed("top.csv", "t")], bad_policy)
        ),
        threading.Thread(target=run, args=("good2", [hashed("d/c.csv", "c")], policy)),
    ]
    for t in threads:
        t.start()
    wait_for(lambda: _queued(ledger) >= 3, 10, "three requests queued")
    gate.set()
    for t in threads:
        t.join()
    assert ledger.commits - commits == 2 and ledger.last_group == 3
    assert isinstance(out["bad"], LayoutError)
    assert isinstance(out["good1"][0], Record) and isinstance(out["good2"][0], Record)
    assert sorted(r.source_rel for r in ledger.unfinished()) == ["d/a.csv", "d/c.csv"]
    # the failed request's first item was rolled back too: its content is not claimed
    assert rec_of(ledger, hashed("d/b2.csv", "b"), policy).status is Status.INGESTED


def test_an_exception_reaches_its_caller_and_the_writer_goes_on(ledger: Ledger, policy: PlanPolicy) -> None:
    def boom(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta(key, value) VALUES ('boom', 'x')")
        raise KeyError("boom")

    with pytest.raises(KeyError):
        ledger.call(boom)
    assert ledger.call(lambda c: c.execute("SELECT count(*) FROM meta WHERE key='boom'").fetchone()[0]) == 0
    assert isinstance(one(ledger, hashed("a.csv"), policy), Record)


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    with tiny_tmpfs(tmp_path / "smallstate", "512k") as d:
        yield d / "ledger.sqlite"


def test_disk_full_fails_the_group_as_retryable_then_recovers(
    small_state: Path, roots: dict[str, str], policy: PlanPolicy
) -> None:
    led = Ledger(small_state, "01SMALL")
    led.open(roots)
    filler = small_state.parent / "filler"
    try:
        rec_of(led, hashed("first.csv", "first"), policy)
        with open(filler, "wb", buffering=0) as fh:  # take every free block
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        big = [hashed(f"{'x' * 200}/{i}.csv", f"content {i}") for i in range(2000)]
        with pytest.raises(Retryable):
            led.plan(big, policy)
        filler.unlink()
        rec = rec_of(led, hashed("after.csv", "after"), policy)  # the writer is still alive
        assert sorted(r.source_rel for r in led.unfinished()) == ["after.csv", "first.csv"]
        assert rec.status is Status.INGESTED
    finally:
        led.close()


def test_close_stops_the_writer_and_closes_readers(ledger: Ledger, policy: PlanPolicy) -> None:
    rec_of(ledger, hashed("a.csv"), policy)
    t = threading.Thread(target=lambda: ledger.unfinished())  # a reader connection in another thread
    t.start()
    t.join()
    assert any(th.name == "ledger-writer" for th in threading.enumerate())
    ledger.close()
    assert not any(th.name == "ledger-writer" for th in threading.enumerate())


def test_live_identity_lookup_seeks_the_index_per_identity(ledger: Ledger) -> None:
    """A scan over a million already-seen files asks for them 1,000 at a time; each must be an
    index seek (a row-value IN list scanned the whole live index per chunk: 487 s for 1M)."""
    statements: list[str] = []
    conn = ledger.reader()
    conn.set_trace_callback(statements.append)
    try:
        ledger.live_identities([Identity(1, i, 10, i) for i in range(3)])
    finally:
        conn.set_trace_callback(None)
    (sql,) = [s for s in statements if s.lstrip().startswith("WITH")]
    plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert "SEARCH f USING INDEX files_live" in plan and "SCAN f" not in plan, plan


def test_unknown_keys_gives_positions_across_query_chunks(ledger: Ledger, policy: PlanPolicy) -> None:
    """A scan asks 1,000 keys per query; positions past the first chunk must stay positions."""
    h = hashed("a.csv", "x")
    rec_of(ledger, h, policy)
    i = h.identity
    known = (i.device, i.inode, i.size, i.mtime_ns)
    keys = [(i.device, 10_000 + n, 1, n) for n in range(2500)]
    keys[3] = known
    keys[1500] = known
    unknown = ledger.unknown_keys(keys)
    assert sorted(unknown) == [n for n in range(2500) if n not in (3, 1500)]
    assert ledger.unknown_keys([]) == []


# ---------------------------------------------------------------- bulk planning


def _decisions(results: list[PlanResult], items: list[Hashed]) -> list[tuple[Any, ...]]:
    """Each result with record ids replaced by the position of the item planned under them."""
    pos = {r.id: i for i, r in enumerate(results) if isinstance(r, Record)}
    out: list[tuple[Any, ...]] = []
    for r in results:
        if isinstance(r, Record):
            dup = pos.get(r.duplicate_of or "", r.duplicate_of and "earlier")
            out.append(("record", r.status, r.action, r.dest_rel, dup, r.source_rel))
        elif isinstance(r, Defer):
            out.append(("defer", pos.get(r.original, "earlier")))
        else:
            out.append(("skip",))
    return out


def test_a_mixed_batch_is_decided_as_one_by_one(
    tmp_path: Path, roots: dict[str, str], make_policy: Callable[..., PlanPolicy]
) -> None:
    """New content in bulk, everything else one by one: the decisions of a file-by-file pass.

    The batch holds new files, a content repeated within the batch, a content
    already landed (a duplicate), one in flight (deferred), an identity in
    flight (skipped), a destination planned by an earlier record (suffixed)
    and a hard link of a new file (same identity twice in the batch).
    """
    policy = make_policy()
    landed_ident = Identity(7, 1, 4, 1)
    flying_ident = Identity(7, 2, 4, 1)
    link_ident = Identity(7, 3, 4, 1)
    before = [hashed("old/landed.csv", "landed", ident=landed_ident), hashed("old/flying.csv", "flying", ident=flying_ident), hashed("taken.csv", "taken")]  # fmt: skip
    batch = [
        hashed("new/a.csv", "a"),
        hashed("new/b.csv", "b"),
        hashed("new/a-again.csv", "a"),  # repeated in the batch: deferred behind new/a.csv
        hashed("dup-of-landed.csv", "landed"),  # a duplicate, quarantined
        hashed("same-as-flying.csv", "flying"),  # the original is in flight: deferred
        hashed("renamed-flying.csv", "other", ident=flying_ident),  # identity in flight: skipped
        hashed("taken.csv", "not the taken content"),  # destination planned: suffixed
        hashed("link-1.csv", "linked", ident=link_ident),
        hashed("link-2.csv", "linked", ident=link_ident),  # the same file twice: skipped
        hashed("new/c.csv", "c"),
    ]
    decided = []
    for name, one_by_one in (("bulk", False), ("file by file", True)):
        led = Ledger(tmp_path / name / "ledger.sqlite", "01OWNERAAAAAAAAAAAAAAAAAAA")
        led.open(roots)
        try:
            landed, _flying, _taken = led.plan(before, policy)
            assert isinstance(landed, Record)
            finish(led, landed)
            if one_by_one:  # plan_one over the batch in one transaction: what planning was

                def op(conn: sqlite3.Connection) -> list[PlanResult]:
                    now = time.time_ns()
                    dests = Dests(conn, policy.warehouse)
                    return [
                        plan_one(
                            conn,
                            dests,
                            h,
                            policy,
                            "01OWNERAAAAAAAAAAAAAAAAAAA",
                            now,
                            manifest_rel_for(now),
                            None,
                        )
                        for h in batch
                    ]

                results = led.call(op)
            else:
                results = led.plan(batch, policy)
        finally:
            led.close()
        decided.append(_decisions(results, batch))
    assert decided[0] == decided[1]
    kinds = [d[0] if d[0] != "record" else d[1].value for d in decided[0]]
    assert kinds == [
        "ingested", "ingested", "defer", "duplicate", "defer", "skip", "ingested", "ingested", "skip", "ingested",
    ]  # fmt: skip
    assert decided[0][6][3] == today(f"taken~{sha('not the taken content')[:8]}.csv")


def test_a_batch_planned_in_bulk_records_its_manifest_floor(ledger: Ledger, policy: PlanPolicy) -> None:
    res = ledger.plan([hashed(f"f{i}.csv", f"content {i}") for i in range(3)], policy, lambda rel: 4242)
    assert [r.manifest_floor for r in res if isinstance(r, Record)] == [4242] * 3
    assert {row["manifest_floor"] for row in rows(ledger).values()} == {4242}


# ---------------------------------------------------------------- the writer never dies; the WAL stays bounded


def test_a_non_sqlite_error_in_a_commit_fails_its_group_and_the_writer_goes_on(
    ledger: Ledger, policy: PlanPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer caught only sqlite3.Error: a fault at before_commit killed the thread,
    and every later ledger call waited for ever."""
    from ingestor import faults

    monkeypatch.setattr(faults, "ACTIVE", faults.parse("before_commit=eio@1"))
    with pytest.raises(Retryable):
        ledger.submit(lambda c: c.execute("SELECT 1").fetchone()).result(timeout=10)
    assert isinstance(ledger.submit(lambda c: one_plan(c, ledger, policy)).result(timeout=10), list)
    assert any(th.name == "ledger-writer" for th in threading.enumerate())


def one_plan(conn: sqlite3.Connection, ledger: Ledger, policy: PlanPolicy) -> list[Any]:
    return conn.execute("SELECT count(*) FROM files").fetchall()


def test_a_raising_commit_observer_does_not_fail_committed_work(ledger: Ledger, policy: PlanPolicy) -> None:
    def observer(size: int, seconds: float) -> None:
        raise RuntimeError("observer bug")

    ledger.commit_observer = observer
    res = ledger.submit(lambda c: c.execute("INSERT INTO meta(key, value) VALUES ('k', 'v')").rowcount)
    assert res.result(timeout=10) == 1
    assert (
        ledger.submit(lambda c: c.execute("SELECT value FROM meta WHERE key='k'").fetchone()[0]).result(
            timeout=10
        )
        == "v"
    )


def test_a_clean_close_leaves_everything_in_the_main_file(
    state: Path, roots: dict[str, str], policy: PlanPolicy, tmp_path: Path
) -> None:
    """After a clean stop all records sat in the -wal: a backup of ledger.sqlite alone was empty."""
    led = Ledger(state, "01CLOSE")
    led.open(roots)
    recs = [rec_of(led, hashed(f"f{i}.csv", f"content {i}"), policy) for i in range(20)]
    finish(led, *recs)
    led.unfinished()  # a reader connection too
    led.close()
    wal = state.with_name(state.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "backup.sqlite"
    copy.write_bytes(state.read_bytes())  # the main file alone, as a naive backup takes it
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("SELECT count(*) FROM files WHERE state = 'manifested'").fetchone()[0] == 20
    finally:
        conn.close()


@pytest.fixture
def two_mib_state(tmp_path: Path) -> Iterator[Path]:
    with tiny_tmpfs(tmp_path / "twomib", "2m") as d:
        yield d / "ledger.sqlite"


def test_a_full_ledger_volume_recovers_and_the_wal_stays_bounded(
    two_mib_state: Path, roots: dict[str, str], policy: PlanPolicy
) -> None:
    """On a 2 MB volume that was full and then freed, the WAL filled it again and was never
    checkpointed: `database or disk is full` for ever, one file in three landed."""
    led = Ledger(two_mib_state, "01TWOMIB")
    led.open(roots)
    filler = two_mib_state.parent / "filler"
    try:
        finish(led, rec_of(led, hashed("first.csv", "first"), policy))
        with open(filler, "wb", buffering=0) as fh:  # the volume fills up
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        with pytest.raises(Retryable):
            for i in range(50):
                finish(led, rec_of(led, hashed(f"full/{i}.csv", f"full {i}"), policy))
        filler.unlink()  # space comes back
        wal = two_mib_state.with_name(two_mib_state.name + "-wal")
        biggest = 0
        for i in range(400):  # one file at a time: two commits each, the worst case for the WAL
            deadline = time.monotonic() + 10
            while True:
                try:
                    finish(led, rec_of(led, hashed(f"after/{i}.csv", f"after {i}"), policy))
                    break
                except Retryable:
                    assert time.monotonic() < deadline, f"file {i}: the ledger did not recover"
            biggest = max(biggest, wal.stat().st_size if wal.exists() else 0)
        # what SQLite lets it grow to before its checkpoint, plus one commit
        assert biggest <= (WAL_PAGES + 64) * (4096 + 24), f"the WAL grew to {biggest} bytes"
    finally:
        led.close()
