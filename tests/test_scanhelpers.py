"""scanhelpers.py: helper processes check names for a scan, read-only, and never outlive the daemon.

Their agreement with the scan in this process, and a helper that dies or
never starts, are in test_rescan.py; here is the helpers' own contract.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from ingestor.fsops import OPEN_DIR
from ingestor.ledger import Ledger
from ingestor.scanhelpers import HelperPool, ScanHelpers, default_workers
from tests.conftest import Env
from tests.waiting import wait_for


@pytest.fixture
def landing(env: Env) -> Path:
    made = Ledger(env.state, "MAKE")
    made.open({})
    made.close()
    for i in range(3):
        (env.landing / f"f{i}.csv").write_bytes(b"x")
    return env.landing


def test_helpers_answer_with_what_the_ledger_does_not_know(env: Env, landing: Path) -> None:
    fd = os.open(landing, OPEN_DIR)
    helpers = ScanHelpers(fd, landing, env.state, 2)
    try:
        wait_for(helpers.ready, 60, "the helpers to start")
        found = helpers.submit("", ["f0.csv", "f1.csv", "f2.csv", "absent.csv"]).result(60)
        assert sorted(rel for rel, _ in found) == ["f0.csv", "f1.csv", "f2.csv"]
        pids = helpers.pids()
        for pid in pids:  # systemd and a terminal send SIGTERM to the whole group: helpers ignore it
            os.kill(pid, signal.SIGTERM)
        assert helpers.submit("", ["f0.csv"]).result(60)
    finally:
        helpers.close()
        os.close(fd)
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), 30, "the helpers to exit")


def test_a_helper_refuses_a_landing_dir_replaced_since_the_daemon_opened_it(
    env: Env, landing: Path, tmp_path: Path
) -> None:
    fd = os.open(landing, OPEN_DIR)
    landing.rename(tmp_path / "moved-away")
    landing.mkdir()
    helpers = ScanHelpers(fd, landing, env.state, 1)
    try:
        with pytest.raises(concurrent.futures.BrokenExecutor):
            wait_for(helpers.ready, 60, "the helpers to start or fail")
    finally:
        helpers.close()
        os.close(fd)


def test_one_pool_serves_every_landing_dir_of_a_pass_and_refuses_one_replaced(
    env: Env, landing: Path, tmp_path: Path
) -> None:
    other, third = tmp_path / "other-landing", tmp_path / "third-landing"
    for d in (other, third):
        d.mkdir()
        (d / "g.csv").write_bytes(b"y")
    fds = [os.open(p, OPEN_DIR) for p in (landing, other, third)]
    pool = HelperPool(env.state, 2)
    try:
        wait_for(pool.ready, 60, "the helpers to start")
        mine, theirs = (
            ScanHelpers(fds[i], p, env.state, 0, pool=pool) for i, p in enumerate((landing, other))
        )
        assert mine.workers == theirs.workers == 2
        for _ in range(3):  # each helper opens each landing dir once and keeps it
            assert [rel for rel, _ in mine.submit("", ["f0.csv", "g.csv"]).result(60)] == ["f0.csv"]
            assert [rel for rel, _ in theirs.submit("", ["f0.csv", "g.csv"]).result(60)] == ["g.csv"]
        mine.close()  # a view: the pass's pool goes on
        # replaced after the daemon opened it and before a helper did: the helper checks nothing
        third.rename(tmp_path / "moved-away")
        third.mkdir()
        (third / "g.csv").write_bytes(b"not the daemon's")
        replaced = ScanHelpers(fds[2], third, env.state, 0, pool=pool)  # the daemon's old descriptor
        with pytest.raises(RuntimeError, match="no longer the daemon's landing dir"):
            replaced.submit("", ["g.csv"]).result(60)
        assert mine.submit("", ["f1.csv"]).result(60)  # a chunk refused breaks nothing
    finally:
        pool.close()
        for fd in fds:
            os.close(fd)


def meta_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM meta").fetchone()[0])
    finally:
        conn.close()


def test_helpers_only_read_the_ledger(env: Env, landing: Path) -> None:
    before = meta_rows(env.state)
    fd = os.open(landing, OPEN_DIR)
    helpers = ScanHelpers(fd, landing, env.state, 1)
    try:
        wait_for(helpers.ready, 60, "the helpers to start")
        helpers.submit("", ["f0.csv"]).result(60)
    finally:
        helpers.close()
        os.close(fd)
    assert meta_rows(env.state) == before


def test_one_helper_per_core_up_to_four() -> None:
    cores = os.cpu_count() or 1
    assert default_workers() == (0 if cores < 2 else min(4, cores))
