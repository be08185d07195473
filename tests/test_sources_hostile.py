"""A hostile operator or upstream against a running daemon with a placeholder source.

Each test builds a ``ROOT/data/{vendor}/{dataset}/{version}/raw`` tree under
``tmp_path``, runs a real daemon on a ``[[source]]`` config and does what a
careless or hostile neighbour does to the tree: names that are not UTF-8,
datasets removed and made again, mkdir/rmdir churn, a vendor renamed, the
prefix missing at start, symlinks at placeholder levels and in landing dirs,
FIFOs, hundreds of datasets under a low descriptor limit, overlapping sources
through a symlinked prefix. The daemon must stay up, refuse what it cannot
serve with a line that names it, and keep landing everything else.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestor.manifest import ManifestRecord
from tests.conftest import DaemonProc, _blocked_loop, ingestor_cmd
from tests.waiting import wait_for

CHURN = 300  # mkdir/rmdir rounds of dataset dirs
SOURCE = """
[[source]]
name = "sp"
path = "ROOT/data/{vendor}/{dataset}/{version}/raw"
include = ["env*/**"]
warehouse = "ROOT/data/{vendor}/{dataset}/{version}/bronze"
manifests = "ROOT/data/{vendor}/{dataset}/{version}/manifests"
layout = "{yyyy}/{mm}/{dd}/{hhmmss}--{name}"
"""


class Tree:
    """A config with one placeholder source below ``root/data``; ``args`` is what the daemon runs."""

    def __init__(self, root: Path, body: str = SOURCE, top: str = "") -> None:
        self.root = root
        self.data = root / "data"
        self.state = root / "state" / "ledger.sqlite"
        self.config = root / "ingestor.toml"
        self.config.write_text(
            f'state_path = "{self.state}"\nstability_seconds = 0.2\nscan_interval = 30\n'
            f'log_level = "debug"\n{top}\n' + body.replace("ROOT", str(root))
        )

    def args(self) -> list[str]:
        return ["--config", str(self.config)]

    def env0(self, dataset: str) -> Path:
        """``data/VENDOR/DATASET/VERSION/raw/env0`` of ``dataset`` ("v/ds/1"), made."""
        d = self.data / dataset / "raw" / "env0"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def records(self) -> list[ManifestRecord]:
        """Every complete manifest line below the root (every dataset's manifests dir)."""
        out = []
        for path in sorted(self.root.rglob("manifest.jsonl")):
            out += _lines(path)
        return out

    def landed(self, name: str) -> list[ManifestRecord]:
        return [r for r in self.records() if Path(r.source).name == name]


def _lines(path: Path) -> list[ManifestRecord]:
    lines = [ManifestRecord.from_json(line) for line in path.read_bytes().split(b"\n")[:-1]]
    return [r for r in lines if r.status != "rejected"]


def _met(predicate: Any, timeout: float) -> bool:
    """``wait_for`` that returns False at the deadline instead of failing."""
    try:
        wait_for(predicate, timeout)
        return True
    except AssertionError:
        return False


def put(directory: Path, name: str, data: bytes | None = None) -> Path:
    """A complete file, renamed into place as upstreams do."""
    tmp = directory / (name + ".tmp")
    tmp.write_bytes(data if data is not None else f"{directory}/{name}\n".encode())
    os.rename(tmp, directory / name)
    return directory / name


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Any]:
    started: list[DaemonProc] = []

    def start(tree: Tree, *, wait: bool = True) -> DaemonProc:
        d = DaemonProc(tree, [], tmp_path / f"daemon-{len(started)}.log")  # type: ignore[arg-type]
        started.append(d)
        return d.start(wait=wait)

    yield start
    for d in started:
        if d.proc is not None:  # running, or dead and not waited for: reaped, its log closed
            d.kill()


def healthy(d: DaemonProc) -> None:
    """Alive, and nothing in its log is an internal error, a line that is not JSON or a blocked loop."""
    bad = [e for e in d.logs() if e.get("event") in ("internal_error", "<not json>") or _blocked_loop(e)]
    assert not bad, f"the daemon logged {bad[:3]}"
    assert d.alive(), d.log_text()[-3000:]


def stop(d: DaemonProc) -> None:
    healthy(d)
    assert d.stop() == 0, d.log_text()[-3000:]


# ------------------------------------------------------------------ names and directories


def test_a_dataset_dir_whose_name_is_not_utf8_is_refused_by_name_and_the_others_land(
    tmp_path: Path, run_daemon: Any
) -> None:
    tree = Tree(tmp_path)
    good = tree.env0("v/good/1")
    vendor = os.fsencode(tree.data / "v")
    os.makedirs(os.path.join(vendor, b"bad\xff", b"1", b"raw", b"env0"))  # there at start
    with open(os.path.join(vendor, b"bad\xff", b"1", b"raw", b"env0", b"x.csv"), "wb") as fh:
        fh.write(b"never lands\n")
    d = run_daemon(tree)
    put(good, "a.csv")
    wait_for(lambda: tree.landed("a.csv"), 10, "the good dataset's file")
    # one made while the daemon runs, at the vendor level this time
    os.makedirs(os.path.join(os.fsencode(tree.data), b"ven\xfe", b"ds", b"1", b"raw", b"env0"))
    put(good, "b.csv")
    wait_for(lambda: tree.landed("b.csv"), 10, "the good dataset's next file")

    def refused() -> list[str]:
        return [str(e["path"]) for e in d.event("landing_dir_refused")]

    # named as the log can: the byte that is not UTF-8 escaped
    names = {str(tree.data / "v" / "bad") + "\\xff", str(tree.data / "ven") + "\\xfe"}
    wait_for(lambda: set(refused()) == names, 10, "both refused by name")
    assert {e["level"] for e in d.event("landing_dir_refused")} == {"warning"}
    assert {Path(r.source).name for r in tree.records()} == {"a.csv", "b.csv"}
    stop(d)


@pytest.mark.parametrize("removed", ["raw", "dataset"])
def test_a_dataset_dir_removed_and_made_again_lands_its_new_files(
    tmp_path: Path, run_daemon: Any, removed: str
) -> None:
    """``raw``: its landing dir only; ``dataset``: the whole VENDOR/DATASET/VERSION with its
    bronze and manifests (an operator cleaning up by hand)."""
    tree = Tree(tmp_path)
    env0 = tree.env0("v/ds/1")
    other = tree.env0("v/other/1")
    d = run_daemon(tree)
    put(env0, "first.csv")
    wait_for(lambda: tree.landed("first.csv"), 10, "the first file")
    shutil.rmtree(tree.data / "v" / "ds" / "1" / ("raw" if removed == "raw" else ""))
    wait_for(lambda: d.event("landing_dir_gone"), 10, "landing_dir_gone")
    env0 = tree.env0("v/ds/1")
    put(env0, "second.csv")
    wait_for(lambda: tree.landed("second.csv"), 10, "the file of the dir made again")
    assert d.event("landing_dir_found")[-1]["path"] == str(tree.data / "v" / "ds" / "1" / "raw")
    put(other, "third.csv")
    wait_for(lambda: tree.landed("third.csv"), 10, "the other dataset's file")
    rec = tree.landed("second.csv")[0]
    assert Path(rec.warehouse or "").is_relative_to(tree.data / "v" / "ds" / "1" / "bronze")
    stop(d)


def test_mkdir_rmdir_churn_of_dataset_dirs_leaves_the_daemon_up_and_landing(
    tmp_path: Path, run_daemon: Any
) -> None:
    tree = Tree(tmp_path)
    steady = tree.env0("v/steady/1")
    d = run_daemon(tree)
    for i in range(CHURN):
        if not d.alive():
            break
        top = tree.data / "v" / f"churn{i % 7}"
        (top / "1" / "raw" / "env0").mkdir(parents=True, exist_ok=True)
        if i % 3 == 0:
            (top / "1" / "raw" / "env0" / "f.csv").write_bytes(b"churn\n")
        if i % 2 == 0:  # removed while the daemon opens it: it made bronze/ and is binding the dirs
            _met(lambda top=top: (top / "1" / "bronze").exists(), 0.5)
        # the daemon may be binding the dir (bronze, manifests, .ingestor-ledger): what is left
        # goes in a later round
        shutil.rmtree(top, ignore_errors=True)
    healthy(d)
    put(steady, "after.csv")
    late = tree.env0("v/late/1")
    put(late, "late.csv")
    wait_for(lambda: tree.landed("after.csv") and tree.landed("late.csv"), 15, "files after the churn")
    stop(d)


def test_a_renamed_vendor_dir_lands_under_the_new_paths_values(tmp_path: Path, run_daemon: Any) -> None:
    tree = Tree(tmp_path)
    put(tree.env0("sp/ds/1"), "before.csv")
    d = run_daemon(tree)
    wait_for(lambda: tree.landed("before.csv"), 10, "the file before the rename")
    with open(tree.env0("sp/ds/1") / "open.csv", "wb") as fh:  # a writer across the rename
        fh.write(b"first half,")
        fh.flush()
        os.rename(tree.data / "sp", tree.data / "sp2")
        fh.write(b"second half\n")
    put(tree.data / "sp2" / "ds" / "1" / "raw" / "env0", "after.csv")
    wait_for(
        lambda: tree.landed("after.csv") and tree.landed("open.csv"), 10, "the files in the renamed tree"
    )
    old, new = (str(tree.data / v / "ds" / "1" / "raw") for v in ("sp", "sp2"))
    assert [e["path"] for e in d.event("landing_dir_gone")] == [old]
    assert [e["path"] for e in d.event("landing_dir_found")] == [new]
    (opened,) = tree.landed("open.csv")
    assert opened.size == len(b"first half,second half\n")
    assert opened.dataset == {"vendor": "sp2", "dataset": "ds", "version": "1"}
    rec = tree.landed("after.csv")[0]
    assert rec.dataset == {"vendor": "sp2", "dataset": "ds", "version": "1"}
    base = tree.data / "sp2" / "ds" / "1"
    assert Path(rec.warehouse or "").is_relative_to(base / "bronze")
    assert Path(rec.source) == base / "raw" / "env0" / "after.csv"
    assert len(tree.landed("after.csv")) == 1
    in_its_manifests = [r for m in (base / "manifests").rglob("manifest.jsonl") for r in _lines(m)]
    assert rec.id in {r.id for r in in_its_manifests}
    assert not (tree.data / "sp").exists()  # nothing made at the old path
    stop(d)


def test_the_prefix_missing_at_start_is_found_within_seconds_when_made(
    tmp_path: Path, run_daemon: Any
) -> None:
    tree = Tree(tmp_path)  # scan_interval 30: a find within seconds is the watch, not the scan
    assert not tree.data.exists()
    d = run_daemon(tree)
    env0 = tree.env0("v/ds/1")  # data/ and the whole chain in one go
    put(env0, "x.csv")
    wait_for(lambda: tree.landed("x.csv"), 5, "the file below the new prefix")
    stop(d)


# ------------------------------------------------------------------ symlinks and special files


def test_a_symlink_at_a_placeholder_level_is_never_followed(tmp_path: Path, run_daemon: Any) -> None:
    tree = Tree(tmp_path)
    good = tree.env0("v/ds/1")
    outside = tmp_path / "outside"
    for sub in ("ds/1/raw/env0", "1/raw/env0", "raw/env0"):  # a tree that would match at each level
        (outside / sub).mkdir(parents=True, exist_ok=True)
        put(outside / sub, "secret.csv", f"secret {sub}\n".encode())
    os.symlink(outside, tree.data / "evil")  # vendor level: data/evil/ds/1/raw
    os.symlink(outside, tree.data / "v" / "evil")  # dataset level: data/v/evil/1/raw
    os.symlink(outside, tree.data / "v" / "ds" / "evil-version")  # version level
    (tree.data / "v" / "ds" / "0").mkdir()
    os.symlink(outside / "raw", tree.data / "v" / "ds" / "0" / "raw")  # the landing dir itself
    os.symlink("/etc", tree.data / "etc")
    d = run_daemon(tree)
    assert d.event("started")[0]["landing_dirs"] == 1
    # made while running too: the discovery of new landing dirs must not follow them either
    os.symlink(outside, tree.data / "late-evil")
    (tree.data / "w").mkdir()
    os.symlink(outside / "ds", tree.data / "w" / "late-evil")
    os.symlink(outside, tree.data / "v" / "ds" / "2")  # version level
    (tree.data / "v" / "ds" / "3").mkdir()
    os.symlink(outside / "raw", tree.data / "v" / "ds" / "3" / "raw")  # the landing dir itself
    put(good, "ok.csv")
    late = tree.env0("w/real/1")
    put(late, "ok2.csv")
    wait_for(lambda: tree.landed("ok.csv") and tree.landed("ok2.csv"), 10, "the real datasets' files")
    assert {Path(r.source).name for r in tree.records()} == {"ok.csv", "ok2.csv"}
    for sub in ("ds/1/raw/env0", "1/raw/env0", "raw/env0"):
        assert (outside / sub / "secret.csv").read_bytes() == f"secret {sub}\n".encode()
    assert not [p for p in outside.rglob("*") if p.name in ("bronze", "manifests", ".ingestor-ledger")]
    stop(d)


def test_a_fifo_and_a_symlink_in_a_landing_dir_are_never_read(tmp_path: Path, run_daemon: Any) -> None:
    tree = Tree(tmp_path)
    env0 = tree.env0("v/ds/1")
    secret = tmp_path / "secret.csv"
    secret.write_bytes(b"outside the landing dir\n")
    os.mkfifo(env0 / "pipe.csv")
    os.symlink(secret, env0 / "link.csv")
    d = run_daemon(tree)
    os.mkfifo(env0 / "pipe2.csv")  # made while running
    os.symlink("/etc/passwd", env0 / "passwd.csv")
    put(env0, "real.csv")
    wait_for(lambda: tree.landed("real.csv"), 10, "the regular file")

    def rejected() -> set[str]:
        return {Path(e["path"]).name for e in d.event("file_rejected")}

    wait_for(lambda: rejected() >= {"pipe.csv", "link.csv", "pipe2.csv", "passwd.csv"}, 10, "each reported")
    assert {Path(r.source).name for r in tree.records()} == {"real.csv"}
    assert (env0 / "pipe.csv").exists() and (env0 / "link.csv").is_symlink() and secret.exists()
    healthy(d)
    put(env0, "after.csv")  # nothing is stuck on the FIFO
    wait_for(lambda: tree.landed("after.csv"), 10, "a file after the FIFOs")
    stop(d)


# ------------------------------------------------------------------ limits


class LimitedDaemon(DaemonProc):
    """``ingestor run`` under a low descriptor limit (soft and hard: it cannot raise it)."""

    nofile = 1024

    def start(self, wait: bool = True) -> DaemonProc:
        limit = self.nofile

        def lower() -> None:  # in the child, before the exec
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            ingestor_cmd("run", *self.env.args(), *self.extra),
            stdout=self.log_file,
            stderr=self.log_file,
            cwd=self.env.root,
            env={**os.environ, "PYTHONASYNCIODEBUG": "1", **self.environ},
            preexec_fn=lower,
        )
        if wait:
            wait_for(lambda: self.event("started") or not self.alive(), 60, "daemon start")
        return self


def test_300_datasets_under_a_1024_descriptor_limit_land_or_say_why(tmp_path: Path) -> None:
    """Each dataset lands, or its landing dir is refused with a line naming it; the daemon keeps
    serving the ones it could open."""
    tree = Tree(tmp_path)
    raws = []
    for k in range(300):
        env0 = tree.env0(f"v{k % 10}/ds{k}/1")
        put(env0, f"f{k}.csv")
        raws.append(str(env0.parent))
    d = LimitedDaemon(tree, [], tmp_path / "daemon.log")  # type: ignore[arg-type]
    try:
        d.start()

        def refused() -> dict[str, str]:
            return {str(e["path"]): str(e["cause"]) for e in d.event("landing_dir_refused")}

        def settled() -> bool:
            landed = {str(Path(r.source).parent.parent) for r in tree.records()}
            return all(raw in landed or raw in refused() for raw in raws) or not d.alive()

        wait_for(settled, 120, "every dataset landed or refused by name")
        healthy(d)
        assert all(
            "no file descriptors left" in cause or "Too many open files" in cause
            for cause in refused().values()
        ), refused()
        served = sorted(set(raws) - set(refused()))
        assert len(served) >= 100, f"only {len(served)} of 300 served under 1024 descriptors"
        later = put(Path(served[0]) / "env0", "later.csv")  # the daemon still lands
        wait_for(lambda: tree.landed(later.name), 20, "a later file")
        stop(d)
    finally:
        if d.proc is not None:
            d.kill()


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("link", ["b", "a"])
def test_two_sources_overlapping_through_a_symlinked_prefix_are_refused(tmp_path: Path, link: str) -> None:
    """Source a is ``ROOT/a/{x}``, source b ``ROOT/b/fixed``; ROOT/b is a link to ROOT/a, or
    ROOT/a a link to ROOT/b: ``fixed`` is a landing dir of both either way."""
    target = "a" if link == "b" else "b"
    (tmp_path / target).mkdir()
    os.symlink(tmp_path / target, tmp_path / link)
    body = (
        '[[source]]\nname = "a"\npath = "ROOT/a/{x}"\n'
        'warehouse = "ROOT/wa/{x}"\nmanifests = "ROOT/ma/{x}"\n'
        '[[source]]\nname = "b"\npath = "ROOT/b/fixed"\nwarehouse = "ROOT/wb"\nmanifests = "ROOT/mb"\n'
    )
    tree = Tree(tmp_path, body)
    r = subprocess.run(
        ingestor_cmd("run", *tree.args()), capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "could both match" in lines[0], r.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / target / "fixed").exists()
