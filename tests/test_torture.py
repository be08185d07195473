"""Crash torture: an upstream keeps dropping files while the daemon is killed, again and again.

Kills come two ways: SIGKILL from outside once the manifest has grown by a
random number of lines, and fault points inside the protocol
(``INGESTOR_FAULTS``: after a rename, between the manifest fsync and the
ledger commit, a torn manifest line, a ledger transaction left open...),
which the process fires on itself at a random pass.

CI runs a bounded number of iterations per filesystem layout;
``INGESTOR_TORTURE_ITERATIONS=500 pytest tests/test_torture.py -s`` runs a long
one. The test prints iterations, kills, files dropped and files verified.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulate.traffic import content
from tests import invariants
from tests.conftest import Env, run_ingestor
from tests.waiting import wait_for

ITERATIONS = int(os.environ.get("INGESTOR_TORTURE_ITERATIONS", "20"))
POINTS = [
    "before_plan",
    "after_plan",
    "after_place",
    "after_dest_sync",
    "after_unlink",
    "after_src_sync",
    "after_moved",
    "manifest_write",
    "after_manifest_fsync",
    "after_manifested",
    "before_commit",
]
IGNORED = (".ok", ".tmp", ".part", ".swp")


class Upstream(threading.Thread):
    """Drops files the ways upstreams do until stopped; remembers every distinct content."""

    def __init__(self, landing: Path, seed: int) -> None:
        super().__init__(name="upstream", daemon=True)
        self.landing = landing
        self.rng = random.Random(seed)
        self.expected: dict[str, int] = {}
        self.pool: list[bytes] = []
        self.files = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._n = 0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                kind = self.rng.choice(["rename", "rename", "resend", "slow", "sidecar", "subdir", "empty"])
                getattr(self, f"_{kind}")()
                self.stopping.wait(self.rng.uniform(0, 0.03))  # the upstream's own pacing
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _new_name(self, ext: str = ".dat") -> str:
        self._n += 1
        return f"f{self._n:06d}{ext}"

    def _body(self) -> bytes:
        data = content(f"torture-{self._n}-{self.rng.random()}", self.rng.choice([10, 500, 4096, 70_000]))
        self._remember(data)
        return data

    def _remember(self, data: bytes) -> None:
        self.expected[hashlib.sha256(data).hexdigest()] = len(data)
        self.pool.append(data)
        del self.pool[:-50]
        self.files += 1

    def _put(self, directory: Path, name: str, data: bytes) -> None:
        tmp = directory / (name + ".tmp")
        tmp.write_bytes(data)
        os.rename(tmp, directory / name)

    def _rename(self) -> None:
        self._put(self.landing, self._new_name(), self._body())

    def _resend(self) -> None:
        if not self.pool:
            return self._rename()
        data = self.rng.choice(self.pool)
        self.files += 1
        self._put(self.landing, self._new_name(".resend"), data)

    def _empty(self) -> None:
        self._remember(b"")
        self._put(self.landing, self._new_name(".empty"), b"")

    def _slow(self) -> None:
        data = self._body()
        path = self.landing / self._new_name(".slow")
        with open(path, "wb") as fh:
            step = max(1, len(data) // 4)
            for i in range(0, len(data), step):
                fh.write(data[i : i + step])
                fh.flush()
                self.stopping.wait(0.03)  # pauses well inside the stability window

    def _sidecar(self) -> None:
        name = self._new_name(".csv")
        (self.landing / name).write_bytes(self._body())
        (self.landing / (name + ".ok")).write_bytes(b"")

    def _subdir(self) -> None:
        d = self.landing / f"d{self._n:05d}" / "inner"
        d.mkdir(parents=True)
        for _ in range(self.rng.randint(1, 4)):
            (d / self._new_name()).write_bytes(self._body())


def _met(predicate: object, timeout: float) -> bool:
    try:
        wait_for(predicate, timeout)  # type: ignore[arg-type]
        return True
    except AssertionError:
        return False


def _drained(env: Env) -> bool:
    return all(p.name.endswith(IGNORED) or p.name.startswith(".") for p in env.landing_files())


@pytest.fixture(params=["same-fs", "cross-fs"])
def layout(request: pytest.FixtureRequest, env: Env) -> Iterator[Env]:
    if request.param == "cross-fs":
        shm = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="torture-"))
        env.landing = shm / "landing"
        env.landing.mkdir()
        yield env
        shutil.rmtree(shm, ignore_errors=True)
    else:
        yield env


def test_crash_torture(layout: Env, daemon, request: pytest.FixtureRequest) -> None:
    _torture(layout, daemon, request.node.callspec.id, ITERATIONS, [])


def test_crash_torture_with_lander_processes(env: Env, daemon) -> None:
    """Kills land in the daemon (its landers die with it) or in a lander (the daemon
    rebuilds the pool and recovers the lander's files)."""
    _torture(env, daemon, "processes", max(4, ITERATIONS // 2), ["--processes", "2"])


def _torture(env: Env, daemon, name: str, iterations: int, flags: list[str]) -> None:
    seed = int(os.environ.get("INGESTOR_TORTURE_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    upstream = Upstream(env.landing, seed)
    upstream.start()
    kills = fault_kills = 0
    started = time.monotonic()
    try:
        for _ in range(iterations):
            faults = {}
            if rng.random() < 0.5:
                point = rng.choice(POINTS)
                action = "torn" if point == "manifest_write" and rng.random() < 0.7 else "kill"
                faults = {"INGESTOR_FAULTS": f"{point}={action}@{rng.randint(1, 4)}"}
            d = daemon(*flags, stability="0.3", wait=False, environ=faults)
            _met(lambda d=d: d.event("started") or not d.alive(), 30)
            if faults:
                if not _met(lambda d=d: not d.alive(), 3):
                    d.kill()
                    kills += 1
                else:
                    fault_kills += 1
                    d.stop()
            else:
                base = len(env.records())
                k = rng.randint(1, 40)
                target = base + k
                _met(lambda target=target: len(env.records()) >= target, 3)
                d.kill()
                kills += 1
            assert upstream.error is None, upstream.error
    finally:
        upstream.stopping.set()
        upstream.join(30)
    assert upstream.error is None, upstream.error
    final = daemon(*flags, stability="0.3")
    wait_for(
        lambda: _drained(env) and set(upstream.expected) <= {r.sha256 for r in env.ingested()},
        120,
        "all landed",
    )
    assert final.stop(signal.SIGTERM) == 0
    res = run_ingestor("verify", "--warehouse", str(env.warehouse), "--manifests", str(env.manifests),
                       "--state-path", str(env.state))  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    counts = invariants.check(env, upstream.expected, landing_may_hold=IGNORED)
    print(
        f"\ntorture[{name}] seed={seed} iterations={iterations} "
        f"sigkills={kills} fault_kills={fault_kills} files_dropped={upstream.files} "
        f"distinct_contents={len(upstream.expected)} verified={counts} lost=0 doubled=0 "
        f"seconds={time.monotonic() - started:.1f}"
    )
