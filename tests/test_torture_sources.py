"""Crash torture with several sources in one daemon: kill -9 while upstreams drop into many datasets.

One config holds a placeholder source (``ROOT/data/{vendor}/{dataset}/{version}/raw``,
stability mode, ``include = ["env*/**"]``, the seed-001 bronze layout) and a
literal sidecar source. Each dataset has its own ``Upstream`` (the one of
``tests/test_torture.py``) writing under ``raw/env0/``; two datasets get the
same seed, so the same contents arrive in both and must land in both (dedup is
per dataset). A further dataset is made half-way, while a daemon runs.

Each iteration starts a daemon and kills it: SIGKILL from outside once the
manifests of all sources together have grown by a random number of lines, or a
fault point fired inside (``INGESTOR_FAULTS``; with lander processes also
``INGESTOR_LANDER_FAULTS``, which kills a lander: the daemon rebuilds the pool
all landing dirs share and recovers its files). At the end a last daemon drains
every landing dir, and each dataset is checked on its own (``invariants.check``
with an ``Env`` of that dataset's dirs): every content it was sent is ingested
exactly once in its own manifests and warehouse; ``verify --config`` is clean.

CI runs a few iterations; ``INGESTOR_TORTURE_ITERATIONS=100 pytest -s --timeout=0
tests/test_torture_sources.py`` runs a long one. The test prints iterations,
kills, files, seconds and lost/doubled.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import invariants
from tests.conftest import DaemonProc, Env, _blocked_loop, _without_orphaned_spawns, run_ingestor
from tests.test_torture import IGNORED, POINTS, Upstream
from tests.waiting import wait_for

ITERATIONS = int(os.environ.get("INGESTOR_TORTURE_ITERATIONS", "12"))
# vendor/dataset/version of the datasets there from the start; the first two share a seed
DATASETS = ("sp/gics/1.0", "sp/gics/2.0", "moodys/ratings/1.0")
LATE = "sp/esg/1.0"  # made while a daemon runs, half-way through

CONFIG = """\
state_path = "ROOT/state/ledger.sqlite"
stability_seconds = 0.3
scan_interval = 30
log_level = "debug"

[[source]]
name = "sp"
path = "ROOT/data/{vendor}/{dataset}/{version}/raw"
include = ["env*/**"]
warehouse = "ROOT/data/{vendor}/{dataset}/{version}/bronze"
manifests = "ROOT/data/{vendor}/{dataset}/{version}/manifests"
layout = "{yyyy}/{mm}/{dd}/{hhmmss}--{name}"

[[source]]
name = "acme"
path = "ROOT/drop/acme"
mode = "sidecar"
warehouse = "ROOT/warehouse/acme"
manifests = "ROOT/manifests/acme"
"""


class SidecarUpstream(Upstream):
    """The torture's upstream for a sidecar source: every file is announced by ``NAME.ok`` once
    it is complete (renamed into place, written slowly under its name, or in a new subdir)."""

    def _announce(self, path: Path) -> None:
        (path.parent / (path.name + ".ok")).write_bytes(b"")

    def _put(self, directory: Path, name: str, data: bytes) -> None:
        super()._put(directory, name, data)
        self._announce(directory / name)

    def _slow(self) -> None:
        super()._slow()
        self._announce(self.landing / f"f{self._n:06d}.slow")  # the name _slow just used

    def _subdir(self) -> None:
        inner = self.landing / f"d{self._n:05d}" / "inner"  # the dir _subdir is about to make
        super()._subdir()
        for p in inner.iterdir():
            if not p.name.endswith(".ok"):
                self._announce(p)


@dataclass
class Dataset:
    """One landing dir with its upstream and the dirs its files must land in."""

    name: str
    env: Env
    upstream: Upstream


class Tree:
    """The config and the directories of every dataset; ``args`` is what ``DaemonProc`` runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "ingestor.toml"
        self.state = root / "state" / "ledger.sqlite"
        self.config.write_text(CONFIG.replace("ROOT", str(root)))
        self.datasets: list[Dataset] = []

    def args(self) -> list[str]:
        return ["--config", str(self.config)]

    def add_placeholder_dataset(self, name: str, seed: int) -> Dataset:
        base = self.root / "data" / name
        env = Env(base, base / "raw", base / "bronze", base / "manifests", self.state)
        (env.landing / "env0").mkdir(parents=True)  # the whole chain in one go
        return self._add(name, env, Upstream(env.landing / "env0", seed))

    def add_sidecar_source(self, seed: int) -> Dataset:
        r = self.root
        env = Env(r, r / "drop" / "acme", r / "warehouse" / "acme", r / "manifests" / "acme", self.state)
        env.landing.mkdir(parents=True)
        return self._add("acme", env, SidecarUpstream(env.landing, seed))

    def _add(self, name: str, env: Env, upstream: Upstream) -> Dataset:
        ds = Dataset(name, env, upstream)
        self.datasets.append(ds)
        upstream.start()
        return ds

    def lines(self) -> int:
        """Complete manifest lines of every dataset together."""
        return sum(len(ds.env.records()) for ds in self.datasets)

    def drained(self) -> bool:
        return all(
            p.name.endswith(IGNORED) or p.name.startswith(".")
            for ds in self.datasets
            for p in ds.env.landing_files()
        )

    def all_landed(self) -> bool:
        return self.drained() and all(
            set(ds.upstream.expected) <= {r.sha256 for r in ds.env.ingested()} for ds in self.datasets
        )

    def stop_upstreams(self) -> None:
        for ds in self.datasets:
            ds.upstream.stopping.set()
        for ds in self.datasets:
            ds.upstream.join(30)

    def upstream_errors(self) -> list[BaseException]:
        return [ds.upstream.error for ds in self.datasets if ds.upstream.error is not None]


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Any]:
    """``start(tree, flags, environ)``: one daemon on the tree, its log appended to ``daemon.log``;
    any still running at the end is killed (the tests check the log themselves: ``clean_log``)."""
    started: list[DaemonProc] = []

    def start(tree: Tree, flags: list[str], environ: dict[str, str]) -> DaemonProc:
        d = DaemonProc(tree, flags, tmp_path / "daemon.log", environ)  # type: ignore[arg-type]
        started.append(d)
        return d.start(wait=False)

    yield start
    for d in started:
        if d.proc is not None:  # running, or dead and not waited for: reaped, its log closed
            d.kill()


def clean_log(d: DaemonProc) -> None:
    """No daemon of the log logged an internal error, a line that is not JSON or a blocked loop
    (the one traceback a kill -9 may leave in a lander being spawned excepted, as in conftest)."""
    entries = _without_orphaned_spawns(d.logs(since_start=False))
    bad = [e for e in entries if e.get("event") in ("internal_error", "<not json>") or _blocked_loop(e)]
    assert not bad, f"a daemon logged {bad[:3]}"


def _met(predicate: Any, timeout: float) -> bool:
    try:
        wait_for(predicate, timeout)
        return True
    except AssertionError:
        return False


@pytest.mark.parametrize("landers", ["threads", "processes"])
def test_crash_torture_with_several_sources(tmp_path: Path, daemons: Any, landers: str) -> None:
    seed = int(os.environ.get("INGESTOR_TORTURE_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    flags = ["--processes", "2"] if landers == "processes" else []
    iterations = ITERATIONS if landers == "threads" else max(4, ITERATIONS // 2)
    tree = Tree(tmp_path)
    kills = fault_kills = 0
    started = time.monotonic()
    try:
        for i, name in enumerate(DATASETS):
            tree.add_placeholder_dataset(name, seed if i < 2 else seed + i)  # same seed: same contents
        tree.add_sidecar_source(seed + 100)
        for it in range(iterations):
            faults = {}
            if flags and it == 0:  # with lander processes, one lander death at least
                faults = {"INGESTOR_LANDER_FAULTS": "after_place=kill@1"}
            elif rng.random() < 0.5:
                point = rng.choice(POINTS)
                action = "torn" if point == "manifest_write" and rng.random() < 0.7 else "kill"
                # INGESTOR_FAULTS arms the daemon and its landers; INGESTOR_LANDER_FAULTS the landers
                # only (each new one re-arms them: the daemon rebuilds its pool again and again)
                lander = flags and rng.random() < 0.3
                var = "INGESTOR_LANDER_FAULTS" if lander else "INGESTOR_FAULTS"
                faults = {var: f"{point}={action}@{rng.randint(1, 4)}"}
            d = daemons(tree, flags, faults)
            _met(lambda d=d: d.event("started") or not d.alive(), 30)
            if it == iterations // 2:
                tree.add_placeholder_dataset(LATE, seed + 200)  # a new dataset while a daemon runs
            if faults:
                if _met(lambda d=d: not d.alive(), 3):
                    fault_kills += 1
                    d.stop()
                else:
                    d.kill()
                    kills += 1
            else:
                target = tree.lines() + rng.randint(1, 40)
                _met(lambda target=target: tree.lines() >= target, 3)
                d.kill()
                kills += 1
            assert not tree.upstream_errors(), tree.upstream_errors()
    finally:
        tree.stop_upstreams()
    assert not tree.upstream_errors(), tree.upstream_errors()

    final = daemons(tree, flags, {})
    wait_for(lambda: final.event("started") or not final.alive(), 30, "the final daemon to start")
    assert final.alive(), final.log_text()[-3000:]
    wait_for(tree.all_landed, 120, "every landing dir drained and every content landed")
    assert final.stop(signal.SIGTERM) == 0
    res = run_ingestor("verify", "--config", str(tree.config))
    assert res.returncode == 0, res.stdout + res.stderr

    # lost and doubled counted first (the figures), then the whole invariant per dataset
    lost = doubled = 0
    for ds in tree.datasets:
        times = {sha: 0 for sha in ds.upstream.expected}
        for r in ds.env.ingested():
            if r.sha256 in times:
                times[r.sha256] += 1
        lost += sum(1 for n in times.values() if n == 0)
        doubled += sum(1 for n in times.values() if n > 1)
    counts = {
        ds.name: invariants.check(ds.env, ds.upstream.expected, landing_may_hold=IGNORED)
        for ds in tree.datasets
    }
    assert (lost, doubled) == (0, 0)
    shared = set(tree.datasets[0].upstream.expected) & set(tree.datasets[1].upstream.expected)
    lander_deaths = sum(1 for e in final.logs(since_start=False) if e.get("event") == "lander_process_died")
    files = sum(ds.upstream.files for ds in tree.datasets)
    print(
        f"\ntorture-sources[{landers}] seed={seed} iterations={iterations} sigkills={kills} "
        f"fault_kills={fault_kills} lander_deaths={lander_deaths} datasets={len(tree.datasets)} files_dropped={files} "
        f"distinct_contents={sum(c['contents'] for c in counts.values())} "
        f"same_in_two_datasets={len(shared)} lines={sum(c['lines'] for c in counts.values())} "
        f"lost={lost} doubled={doubled} seconds={time.monotonic() - started:.1f}"
    )
    clean_log(final)  # after the figures: a slow loop step in a long run must not hide them


def _landers(pid: int) -> list[int]:
    """The daemon's lander processes (multiprocessing ``spawn`` children, not its resource tracker)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # the daemon is gone
        return []
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                out.append(int(child))
    return out


def test_one_lander_death_rebuilds_the_shared_pool_once(tmp_path: Path, daemons: Any) -> None:
    """A lander killed while every landing dir has batches queued in the shared pool breaks them
    all at once: the pool is rebuilt once, its files recovered, and nothing else happens."""
    tree = Tree(tmp_path)
    text = tree.config.read_text().replace("scan_interval = 30", "scan_interval = 30\nbatch_size = 1")
    tree.config.write_text(text)
    per, kills = 600, 8
    envs = []
    for k in range(4):
        base = tmp_path / "data" / f"v{k}" / "ds" / "1.0"
        envs.append(Env(base, base / "raw", base / "bronze", base / "manifests", tree.state))
        (base / "raw" / "env0").mkdir(parents=True)
        for i in range(per):
            p = base / "raw" / "env0" / f"f{i:03d}.csv"
            p.write_bytes(f"{k} {i}\n".encode() * 500)
            os.utime(p, (time.time() - 3600,) * 2)
    d = daemons(tree, ["--processes", "2"], {})
    wait_for(lambda: d.event("started") or not d.alive(), 30, "start")
    assert d.proc is not None
    pid = d.proc.pid
    seen: set[int] = set()

    def progressed(lines: int) -> bool:
        return all(len(e.records()) > lines for e in envs) or not d.alive()

    def fresh() -> list[int] | bool:
        return [p for p in _landers(pid) if p not in seen] or not d.alive()

    for n in range(kills):
        # every landing dir has lines and work left: each has batches queued in the pool
        wait_for(functools.partial(progressed, 20 * (n + 1)), 30, "progress")
        assert all(len(e.records()) < per for e in envs), "too fast: a dataset had nothing left in flight"
        # a lander of the pool now (one of a pool already broken may still be exiting)
        landers = wait_for(fresh, 30, "a lander")
        assert d.alive() and isinstance(landers, list), d.log_text()[-3000:]
        seen.update(_landers(pid))
        os.kill(landers[0], signal.SIGKILL)
        wait_for(lambda: len(d.event("lander_process_died")) > n, 30, "the death noticed")  # noqa: B023
    wait_for(lambda: all(len(e.ingested()) == per for e in envs) or not d.alive(), 120, "all landed")
    died = d.event("lander_process_died")
    clean_log(d)
    assert d.alive()
    assert len(died) == kills, f"{kills} deaths, {len(died)} rebuilds: {[x.get('ts') for x in died]}"
    assert d.stop() == 0
