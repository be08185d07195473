"""procs.py: lander processes land batches with their own ledger connection, and die with the daemon.

End to end (exactly once with ``--processes 2``, a ``kill -9`` of the daemon,
a lander killed by a fault) is in test_daemon.py and test_torture.py; here
the pool itself, in process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ingestor import logs, procs
from ingestor.outcome import Then
from ingestor.records import Candidate
from ingestor.settings import Settings, load
from tests.conftest import REPO, Env
from tests.waiting import wait_for

OLD = 1_700_000_000


@pytest.fixture
def settings(env: Env, tmp_path: Path) -> Settings:
    for d in (env.warehouse, env.manifests):
        d.mkdir(parents=True, exist_ok=True)
    return load(
        {"input": str(env.landing), "warehouse": str(env.warehouse), "manifests": str(env.manifests),
         "state_path": str(env.state), "stability_seconds": 0},
        environ={}, cwd=tmp_path,
    )  # fmt: skip


def put(env: Env, rel: str, data: bytes) -> Candidate:
    p = env.landing / rel
    p.write_bytes(data)
    os.utime(p, (OLD, OLD))
    return Candidate(rel, len(data), 0.0)


def test_batches_land_in_the_children_under_their_own_owners(settings: Settings, env: Env) -> None:
    # the parent's own worker and ledger, as the daemon has them
    _, ledger, tmp, landing_fd = procs.make_worker(
        settings, owner="01PARENT00000000000000000A", stop=threading.Event(), log=logs.get_logger()
    )
    landers = procs.Landers(settings, 2)
    try:
        pids = wait_for(lambda: len(_spawned(os.getpid())) == 2 and _spawned(os.getpid()), 60, "two landers")
        # a child ignores SIGINT once its initializer ran (a spawned child may still be importing)
        wait_for(lambda: all(_ignores_sigint(pid) for pid in pids), 60, "the landers' initializers")
        for pid in pids:  # a terminal's Ctrl-C reaches the whole group: the parent decides
            os.kill(pid, signal.SIGINT)
        out = landers.pool.submit(
            procs.land, [put(env, f"f{i}.csv", f"x{i}".encode()) for i in range(4)]
        ).result(60)
        assert sorted((f.rel, f.then) for f in out.files) == [(f"f{i}.csv", Then.DONE) for i in range(4)]
        owners = {r[0] for r in ledger.reader().execute("SELECT DISTINCT owner FROM files")}
        assert owners and "01PARENT00000000000000000A" not in owners
    finally:
        landers.shutdown()
        ledger.close()
        tmp.close()
        os.close(landing_fd)
    assert len(env.records()) == 4


def test_a_lander_dies_with_its_parent(settings: Settings, tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a kill -9 of the daemon leaves no child landing behind its back."""
    script = textwrap.dedent(
        f"""
        import os, sys, threading
        sys.path.insert(0, {str(REPO)!r})
        from ingestor import procs
        from ingestor.settings import load
        s = load({{"input": {str(settings.input)!r}, "warehouse": {str(settings.warehouse)!r},
                  "manifests": {str(settings.manifests)!r}, "state_path": {str(settings.state_path)!r}}},
                 environ={{}})
        landers = procs.Landers(s, 1)
        print(*[f.result(60) for f in landers._warm()], flush=True)
        threading.Event().wait()
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert Path(f"/proc/{child}").exists()
        parent.kill()
        parent.wait(30)
        wait_for(lambda: not _alive(child), 30, "the lander to die with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(30)
        if parent.stdout is not None:
            parent.stdout.close()


def _ignores_sigint(pid: int) -> bool:
    """Does the process ignore SIGINT (its SigIgn mask in /proc)?"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


def _spawned(pid: int) -> list[int]:
    """The multiprocessing children of ``pid`` (not its resource tracker)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    out.append(int(child))
            except OSError:
                continue
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
