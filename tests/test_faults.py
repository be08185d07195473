"""Faults, end to end: the environment misbehaves, nothing is lost or doubled.

Destination disk full and a torn manifest line are also exercised by
test_daemon.py and the crash tests; unit-level variants (file deleted,
truncated or appended to between hashing and moving) are in test_move.py
and test_digest.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from simulate import traffic
from tests import invariants
from tests.conftest import Env, run_ingestor
from tests.waiting import wait_for

ROOT = os.geteuid() == 0


def landed(env: Env, n: int) -> bool:
    return len(env.ingested()) >= n


@pytest.mark.skipif(not ROOT, reason="remounting a tmpfs read-only needs root")
def test_destination_not_writable_then_writable(env: Env, daemon) -> None:
    env.warehouse.mkdir()
    if os.system(f"mount -t tmpfs -o size=8m tmpfs {env.warehouse}") != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        os.system(f"mount -o remount,ro {env.warehouse}")
        d = daemon(stability="0.1")
        rep = traffic.rename_tmp(env.landing, count=5, size=1000)
        wait_for(lambda: d.event("step_failed"), 30, "a failure")
        failure = d.event("step_failed")[0]
        assert "read-only" in failure["cause"].lower() or "read-only" in failure["hint"]
        assert len(env.landing_files()) == 5 and env.records() == []
        os.system(f"mount -o remount,rw {env.warehouse}")
        wait_for(lambda: landed(env, 5), 60, "landing after the fix")
        invariants.check(env, invariants.expected_of(rep))
        d.stop()
    finally:
        os.system(f"umount -l {env.warehouse}")


def test_inotify_queue_overflow_is_caught_by_rescan(env: Env, daemon) -> None:
    """SIGSTOP the daemon, make more events than the queue holds, SIGCONT: it overflows."""
    queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    d = daemon(stability="0.2")
    # idle first: stopped in the middle of a step (the start-up scan), asyncio's debug mode would
    # report that step as a blocked loop
    wait_for(lambda: d.event("scan_done"), 30, "the start-up scan")
    d.send(signal.SIGSTOP)
    expected: dict[str, int] = {}
    try:
        count = queue // 2 + 500  # each file written in place gives CREATE and CLOSE_WRITE
        for i in range(count):
            data = f"overflow {i}\n".encode()
            (env.landing / f"o{i:06d}.dat").write_bytes(data)
            expected[hashlib.sha256(data).hexdigest()] = len(data)
    finally:
        d.send(signal.SIGCONT)
    wait_for(lambda: d.event("inotify_overflow"), 30, "IN_Q_OVERFLOW")
    wait_for(lambda: landed(env, count), 120, f"{count} files after the overflow")
    invariants.check(env, expected)


def test_landing_subdirectory_deleted_and_recreated(env: Env, daemon) -> None:
    d = daemon()
    sub = env.landing / "feed"
    first = traffic.rename_tmp(sub, count=3, size=100)
    wait_for(lambda: landed(env, 3), 20)
    os.rmdir(sub)  # drained, so empty
    sub.mkdir()
    second = traffic.rename_tmp(sub, count=4, size=100, prefix="again")
    wait_for(lambda: landed(env, 7), 20, "files in the recreated dir")
    # and a dir replaced by one of the same name holding files before we could watch it
    staging = env.root / "staging"
    third = traffic.rename_tmp(staging, count=2, size=100, prefix="swapped")
    os.rmdir(sub)
    os.rename(staging, sub)
    wait_for(lambda: landed(env, 9), 20, "files in the swapped-in dir")
    invariants.check(env, invariants.expected_of(first, second, third))
    assert not d.event("internal_error")


def test_ledger_locked_by_another_process(env: Env, daemon) -> None:
    d = daemon(stability="0.1")
    first = traffic.rename_tmp(env.landing, count=2, size=100)
    wait_for(lambda: landed(env, 2), 20)
    locker = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         f"c = sqlite3.connect({str(env.state)!r}, isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        rep = traffic.rename_tmp(env.landing, count=5, size=100, prefix="while-locked")
        # the daemon waits on the lock (busy timeout) or fails and retries: nothing lands meanwhile
        wait_for(lambda: len(d.event("file_ingested")) == 2 and len(env.landing_files()) == 5, 10)
    finally:
        assert locker.stdin is not None and locker.stdout is not None
        locker.stdin.close()
        locker.wait(10)
        locker.stdout.close()
    wait_for(lambda: landed(env, 7), 60, "landing after the lock is released")
    invariants.check(env, invariants.expected_of(first, rep))


def test_torn_manifest_line_from_a_crash_is_repaired(env: Env, daemon) -> None:
    d = daemon(stability="0.1", wait=False, environ={"INGESTOR_FAULTS": "manifest_write=torn@1"})
    rep = traffic.rename_tmp(env.landing, count=4, size=300)
    wait_for(lambda: not d.alive(), 30, "the daemon to die mid-write")
    assert d.stop() == -signal.SIGKILL
    (path,) = env.manifests.rglob("manifest.jsonl")
    assert not path.read_bytes().endswith(b"\n")  # a torn last line
    res = run_ingestor("verify", *_verify_args(env))
    assert res.returncode == 1 and "torn" in res.stdout.lower()
    daemon(stability="0.1")
    wait_for(lambda: landed(env, 4), 30, "recovery")
    invariants.check(env, invariants.expected_of(rep))


def test_kill_between_manifest_fsync_and_commit_writes_no_second_line(env: Env, daemon) -> None:
    d = daemon(stability="0.1", wait=False, environ={"INGESTOR_FAULTS": "after_manifest_fsync=kill@1"})
    rep = traffic.rename_tmp(env.landing, count=3, size=300)
    wait_for(lambda: not d.alive(), 30, "the fault")
    d.stop()
    lines_before = len(env.records())
    assert lines_before >= 1
    # no MOVED commit on the common path: the written rows are still HASHED, with
    # the manifest floor recorded when they were planned
    written = {r.id for r in env.records()}
    with contextlib.closing(sqlite3.connect(f"file:{env.state}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT id, state, manifest_floor FROM files").fetchall()
    assert {(i, st) for i, st, _ in rows if i in written} == {(i, "hashed") for i in written}
    assert all(floor is not None for _, _, floor in rows)
    res = run_ingestor("verify", *_verify_args(env), "--json")
    problems = {k for k, v in json.loads(res.stdout)["problems"].items() if v}
    assert res.returncode == 1 and problems == {"unfinished_record"}, res.stdout
    d2 = daemon(stability="0.1")
    wait_for(lambda: landed(env, 3), 30)
    invariants.check(env, invariants.expected_of(rep))
    assert d2.event("recovered")


def _verify_args(env: Env) -> list[str]:
    return [
        "--warehouse",
        str(env.warehouse),
        "--manifests",
        str(env.manifests),
        "--state-path",
        str(env.state),
    ]


def test_ledger_state_is_durable_wal_full(env: Env, daemon) -> None:
    daemon()
    traffic.rename_tmp(env.landing, count=1, size=10)
    wait_for(lambda: landed(env, 1), 20)
    conn = sqlite3.connect(env.state)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest.mark.skipif(not ROOT, reason="mounting a small tmpfs needs root")
def test_manifests_disk_full_keeps_files_in_the_landing_dir(env: Env, daemon) -> None:
    """Before: each file moved into the warehouse and waited there for its line, while the
    README said it stays in the landing dir. Now a batch is not moved while the manifests
    filesystem has no room for its lines."""
    env.manifests.mkdir()
    if os.system(f"mount -t tmpfs -o size=64k tmpfs {env.manifests}") != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        filler = env.manifests / "filler"
        with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 4096)
        d = daemon(stability="0.1")
        rep = traffic.rename_tmp(env.landing, count=5, size=100)
        wait_for(lambda: d.event("step_failed"), 30, "a disk-full failure")
        assert "disk full" in d.event("step_failed")[0]["hint"]
        assert len(env.landing_files()) == 5 and env.warehouse_files() == []
        filler.unlink()
        wait_for(lambda: landed(env, 5), 60, "all 5 after space came back")
        invariants.check(env, invariants.expected_of(rep))
        d.stop()
    finally:
        os.system(f"umount -l {env.manifests}")
