"""binding.py and rebuild.py: each directory belongs to one ledger; a lost ledger is refused, then rebuilt.

Real daemons, real ledgers, real locks: a second daemon with another ledger
on the same landing dir used to land every file a second time, and a daemon
whose ledger was deleted re-landed every resend without a word.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from ingestor.binding import NAME, Binding, check_history, newest_line_id
from ingestor.errors import Refused
from simulate import traffic
from tests import invariants
from tests.conftest import Env, run_ingestor
from tests.waiting import wait_for


def refused(res: object, *words: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)  # type: ignore[attr-defined]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("ingestor: error: "), lines
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


def other_ledger(env: Env) -> str:
    return str(env.root / "other-state" / "ledger.sqlite")


# ---------------------------------------------------------------- Binding, in process


def test_a_directory_is_bound_once_and_shared_by_its_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    first = Binding(tmp_path, "input")
    first.acquire(None, ledger)  # a new ledger: bound once it exists
    first.commit("id-1", ledger)
    second = Binding(tmp_path, "input")
    second.acquire("id-1", ledger)  # the same ledger (a replay beside the daemon): shared
    second.commit("id-1", ledger)
    third = Binding(tmp_path, "input")
    with pytest.raises(Refused, match="in use by another ingestor with the ledger"):
        third.acquire("id-2", tmp_path / "other.sqlite")
    first.release()
    second.release()
    with pytest.raises(Refused, match="was written by the ledger"):  # nobody alive: the file still says
        third.acquire("id-2", tmp_path / "other.sqlite")
    assert third.fd == -1


def test_a_garbled_binding_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / NAME).write_bytes(b"not json at all")
    b = Binding(tmp_path, "warehouse")
    with pytest.raises(Refused, match="not an ingestor ledger binding"):
        b.acquire("id", tmp_path / "l.sqlite")
    assert (tmp_path / NAME).read_bytes() == b"not json at all"


def test_newest_line_id_finds_the_last_line_of_the_newest_hour(tmp_path: Path) -> None:
    for rel, body in {
        "2026/11/30/23/manifest.jsonl": b'{"id":"old"}\n',
        "2026/12/01/09/manifest.jsonl": b'{"id":"a"}\n{"id":"b"}\n{"id":"torn',
        "2026/12/01/10/manifest.jsonl": b"",  # created, no line yet
    }.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
    assert newest_line_id(tmp_path) == ("2026/12/01/09/manifest.jsonl", "b")
    assert newest_line_id(tmp_path / "absent") is None
    check_history(tmp_path, tmp_path / "l.sqlite", lambda i: i == "b")
    with pytest.raises(Refused, match="id b, has no record"):
        check_history(tmp_path, tmp_path / "l.sqlite", lambda i: False)


# ---------------------------------------------------------------- a second daemon, a replay


def test_a_second_daemon_with_another_ledger_on_the_landing_dir_is_refused(env: Env, daemon) -> None:
    d = daemon()
    res = run_ingestor(
        "run", "--input", str(env.landing), "--state-path", other_ledger(env), timeout=60, cwd=env.root
    )
    refused(res, "landing dir", str(env.landing), str(env.state))
    rep = traffic.rename_tmp(env.landing, count=20, size=200)
    wait_for(lambda: len(env.records()) >= 20, 30, "20 files")
    d.stop()
    assert len(env.records()) == 20
    invariants.check(env, invariants.expected_of(rep))


@pytest.mark.parametrize("shared", ["warehouse", "manifests"])
def test_another_ledger_on_a_shared_output_dir_is_refused(env: Env, daemon, shared: str) -> None:
    daemon()
    other = env.root / "other"
    (other / "landing").mkdir(parents=True)
    args = {
        "--input": str(other / "landing"),
        "--warehouse": str(other / "warehouse"),
        "--manifests": str(other / "manifests"),
        "--state-path": str(other / "state" / "ledger.sqlite"),
    }
    args[f"--{shared}"] = str(getattr(env, shared))
    res = run_ingestor("run", *[x for kv in args.items() for x in kv], timeout=60, cwd=env.root)
    refused(res, str(getattr(env, shared)), str(env.state))


def test_replay_with_another_ledger_is_refused_and_with_the_same_one_allowed(env: Env, daemon) -> None:
    daemon()
    res = run_ingestor("replay", "--input", str(env.landing), "--state-path", other_ledger(env), timeout=60)
    refused(res, "in use by another ingestor")
    (env.landing / "a.csv").write_bytes(b"a")
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "0", timeout=60)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: len(env.records()) == 1, 20)


def test_a_killed_daemons_directories_stay_bound_to_its_ledger(env: Env, daemon) -> None:
    d = daemon()
    d.kill()
    res = run_ingestor("run", "--input", str(env.landing), "--state-path", other_ledger(env), timeout=60)
    refused(res, "was written by the ledger", str(env.state), "rebuild-ledger")
    daemon()  # its own ledger is welcome back


# ---------------------------------------------------------------- a lost ledger


def land_some(env: Env, daemon, count: int = 5) -> dict[str, int]:
    before = len(env.records())
    d = daemon()
    rep = traffic.rename_tmp(env.landing, count=count, size=300)
    wait_for(lambda: len(env.records()) >= before + count, 30, f"{count} files")
    assert d.stop() == 0
    return invariants.expected_of(rep)


def ledger_files(env: Env) -> list[Path]:
    return [p for p in env.state.parent.iterdir() if p.name.startswith(env.state.name)]


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_a_lost_ledger_is_refused_then_rebuilt(env: Env, daemon, how: str) -> None:
    expected = land_some(env, daemon)
    for p in ledger_files(env):
        if how == "deleted" or p == env.state:
            p.unlink() if how == "deleted" else p.write_bytes(b"")
    res = run_ingestor("run", *env.args(), timeout=60, cwd=env.root)
    refused(res, "rebuild-ledger")
    res = run_ingestor("rebuild-ledger", *env.args(), timeout=60, cwd=env.root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "5 records" in res.stdout and "5 content claims" in res.stdout
    res = run_ingestor("verify", *env.args(), timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    # a resend of what landed before the loss is a duplicate again, not a second landing
    first = env.records()[0]
    assert first.warehouse is not None
    shutil.copyfile(first.warehouse, env.landing / "resend.csv")
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "0", timeout=60)
    assert res.returncode == 0, res.stderr
    resend = [r for r in env.records() if r.source.endswith("resend.csv")]
    assert [r.status for r in resend] == ["duplicate"] and resend[0].duplicate_of == first.id
    invariants.check(env, expected)


def test_after_a_clean_stop_the_wal_holds_nothing_to_lose(env: Env, daemon) -> None:
    land_some(env, daemon)
    wal = env.state.with_name(env.state.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    wal.unlink(missing_ok=True)
    first = env.records()[0]
    assert first.warehouse is not None
    shutil.copyfile(first.warehouse, env.landing / "resend.csv")
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "0", timeout=60)
    assert res.returncode == 0, res.stderr
    assert [r.status for r in env.records() if r.source.endswith("resend.csv")] == ["duplicate"]


def test_a_ledger_restored_from_an_older_backup_is_refused(env: Env, daemon, tmp_path: Path) -> None:
    land_some(env, daemon, 3)
    backup = tmp_path / "backup.sqlite"
    shutil.copyfile(env.state, backup)  # a clean stop left everything in the main file
    land_some(env, daemon, 3)
    shutil.copyfile(backup, env.state)
    res = run_ingestor("run", *env.args(), timeout=60)
    refused(res, "older backup", "rebuild-ledger")


def test_manifests_of_an_older_version_without_binding_files_are_recognised(env: Env, daemon) -> None:
    land_some(env, daemon)
    for d in (env.landing, env.warehouse, env.manifests):
        (d / NAME).unlink()
    for p in ledger_files(env):
        p.unlink()
    res = run_ingestor("run", *env.args(), timeout=60)
    refused(res, "has no record", "rebuild-ledger")
    assert not env.state.exists()  # nothing created for a refused start


def test_rebuild_refuses_a_live_daemon_and_a_ledger_with_records(env: Env, daemon) -> None:
    d = daemon()
    (env.landing / "x.csv").write_bytes(b"x")
    wait_for(lambda: len(env.records()) == 1, 20)
    res = run_ingestor("rebuild-ledger", *env.args(), timeout=60)
    refused(res, "stop it first")
    d.stop()
    res = run_ingestor("rebuild-ledger", *env.args(), timeout=60)
    refused(res, "holds 1 records")


def test_rebuild_keeps_kept_duplicates_known_and_reports_orphans(env: Env, daemon) -> None:
    d = daemon("--on-duplicate", "keep")
    (env.landing / "a.csv").write_bytes(b"same")
    wait_for(lambda: len(env.records()) == 1, 20)
    (env.landing / "b.csv").write_bytes(b"same")
    wait_for(lambda: len(env.records()) == 2, 20)
    d.stop()
    (env.warehouse / "placed-by-hand.csv").write_bytes(b"orphan")
    for p in ledger_files(env):
        p.unlink()
    res = run_ingestor("rebuild-ledger", *env.args(), timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "orphan_file: 1" in res.stdout and "placed-by-hand.csv" in res.stdout
    (env.warehouse / "placed-by-hand.csv").unlink()
    # the kept duplicate is known by its identity: a scan does not record it a second time
    res = run_ingestor(
        "replay", *env.args(), "--on-duplicate", "keep", "--stability-seconds", "0", timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert len(env.records()) == 2
    conn = sqlite3.connect(env.state)
    try:
        kept = conn.execute("SELECT mtime_ns FROM files WHERE action = 'kept'").fetchall()
    finally:
        conn.close()
    assert kept == [(os.stat(env.landing / "b.csv").st_mtime_ns,)]
