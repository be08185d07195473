"""The landing dir deleted, renamed or replaced under a running daemon (daemon.py, watch.py).

Before: after ``mv L L.old; mkdir L`` the daemon went on landing the files of
``L.old`` (outside its input), recorded them under ``L/``, where they never
were, and never saw ``L/new.csv``; after ``rm -rf L; mkdir L`` it never saw
anything again. Now it stops landing from the old directory, says so, and
serves the directory at the path as soon as there is one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.waiting import wait_for

WATCHERS = ["inotify", "poll"]


def sources(env: Env) -> list[str]:
    return sorted(r.source for r in env.records())


def drop(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.utime(tmp, (1_700_000_000, 1_700_000_000))  # complete at once
    tmp.rename(path)


@pytest.mark.parametrize("watcher", WATCHERS)
def test_landing_dir_renamed_away_and_replaced(env: Env, daemon, watcher: str) -> None:
    d = daemon("--watcher", watcher, "--scan-interval", "0.2", stability="0.1")
    drop(env.landing / "before.csv", b"before")
    wait_for(lambda: len(env.records()) == 1, 20, "the first file")
    old = env.root / "landing.old"
    env.landing.rename(old)
    env.landing.mkdir()
    drop(old / "left-behind.csv", b"dropped into the old dir")
    drop(env.landing / "new.csv", b"new")
    wait_for(lambda: d.event("landing_dir_replaced"), 20, "landing_dir_replaced")
    wait_for(lambda: len(env.records()) == 2, 30, "the file in the new dir")
    assert sources(env) == [str(env.landing / "before.csv"), str(env.landing / "new.csv")]
    assert (old / "left-behind.csv").read_bytes() == b"dropped into the old dir"
    # and it stays there: later scans walk the new directory only
    scans = len(d.event("scan_done"))
    wait_for(lambda: len(d.event("scan_done")) >= scans + 3, 20, "three more scans")
    assert (old / "left-behind.csv").exists() and len(env.records()) == 2
    assert d.event("landing_dir_replaced")[0]["level"] == "error"


@pytest.mark.parametrize("watcher", WATCHERS)
def test_landing_dir_deleted_then_created_again(env: Env, daemon, watcher: str) -> None:
    d = daemon("--watcher", watcher, "--scan-interval", "0.2", stability="0.1")
    shutil.rmtree(env.landing)
    wait_for(lambda: d.event("landing_dir_replaced"), 20, "landing_dir_replaced")
    assert d.alive()
    env.landing.mkdir()
    drop(env.landing / "new.csv", b"after the rm -rf")
    wait_for(lambda: len(env.records()) == 1, 30, "the file in the new dir")
    assert sources(env) == [str(env.landing / "new.csv")]
    assert d.event("landing_dir_back")


def test_sigterm_while_waiting_for_the_landing_dir(env: Env, daemon) -> None:
    d = daemon()
    shutil.rmtree(env.landing)
    wait_for(lambda: d.event("landing_dir_replaced"), 20, "landing_dir_replaced")
    assert d.stop() == 0
    assert not env.landing.exists()  # not created behind the operator's back


def test_replay_stops_with_exit_1_when_its_landing_dir_is_replaced(env: Env, tmp_path: Path) -> None:
    """In process: the worker's check before a batch, the path swapped between scan and batch."""
    import asyncio

    from ingestor import worker as worker_mod
    from ingestor.lifecycle import Daemon
    from ingestor.settings import load

    for i in range(3):
        drop(env.landing / f"f{i}.csv", f"file {i}".encode())
    s = load({"input": str(env.landing), "stability_seconds": 0}, environ={}, cwd=tmp_path)
    land = worker_mod.Worker.land
    swapped: list[bool] = []

    def swap_then_land(self: worker_mod.Worker, batch: list) -> worker_mod.Outcome:  # type: ignore[type-arg]
        if not swapped:
            env.landing.rename(tmp_path / "moved-away")
            env.landing.mkdir()
            swapped.append(True)
        return land(self, batch)

    worker_mod.Worker.land = swap_then_land  # type: ignore[method-assign]
    try:
        code = asyncio.run(Daemon(s, one_shot=True).run())
    finally:
        worker_mod.Worker.land = land  # type: ignore[method-assign]
    assert code == 1
    assert env.records() == []
    assert sorted(os.listdir(tmp_path / "moved-away")) == [".ingestor-ledger", "f0.csv", "f1.csv", "f2.csv"]
