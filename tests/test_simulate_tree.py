"""``simulate.tree`` and ``ingestor simulate tree``: the tree's shape, its writers, its listing, its refusals."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from simulate import tree as tree_mod
from simulate.tree import TEMP_PREFIX, TreeError, Writer, parse_mix, tree
from tests.conftest import Env, ingestor_cmd, run_ingestor, sha256_file
from tests.waiting import wait_for

LINE = re.compile(
    r"^tree: (?P<files>\d+) files, [\d.]+ (?:B|KiB|MiB|GiB) \((?P<bytes>\d+) bytes\) in \d+\.\d{3} s "
    r"into (?P<root>\S+) \((?P<datasets>\d+) datasets, (?P<new>\d+) made while writing, "
    r"(?P<temp>\d+) temp, (?P<slow>\d+) slow, (?P<direct>\d+) direct, (?P<dups>\d+) duplicates, "
    r"seed (?P<seed>\d+)\)$"
)


def on_disk(root: Path) -> dict[str, str]:
    """Every file below ``root``: its path relative to root → sha256."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()}


def listed(rep: tree_mod.TreeReport) -> dict[str, str]:
    paths = [f.path for f in rep.written]
    assert len(paths) == len(set(paths))  # every path once
    return {f.path: f.sha256 for f in rep.written}


def simulate_tree(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_ingestor("simulate", "tree", *args, timeout=60, cwd=cwd)


def test_tree_shape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rep = tree(root, vendors=2, datasets=3, versions=2, envs=2, files=2, seed=1, interval=0)
    want_ds = [f"vendor{v:02d}/dataset{d:02d}" for v in range(2) for d in range(3)]
    assert list(rep.dataset_dirs) == want_ds and rep.new_dataset_dirs == ()
    envs = {f"{ds}/{ver}/raw/env{e}" for ds in want_ds for ver in ("1.0", "2.0") for e in (0, 1)}
    assert {p.relative_to(root).as_posix() for p in root.glob("*/*/*/raw/*")} == envs
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()} == {
        "/".join(e.split("/")[:k]) for e in envs for k in range(1, 6)
    }
    files = on_disk(root)
    assert len(files) == rep.files == 6 * 2 * 2 * 2 and rep.bytes == rep.files * 4096
    assert Counter(p.rsplit("/", 1)[0] for p in files) == dict.fromkeys(envs, 2)
    assert files == listed(rep) and len(set(files.values())) == rep.files  # every content unique
    assert rep.writers() == {"temp": 16, "slow": 16, "direct": 16}  # an even mix by default
    assert all(os.path.getsize(root / p) == 4096 for p in files)


def test_total_spreads_over_env_dirs_new_ones_first(tmp_path: Path) -> None:
    rep = tree(tmp_path, vendors=1, datasets=2, envs=3, total=8, new_dirs=2, seed=2, interval=0)
    per_dir = Counter(f.path.rsplit("/", 1)[0] for f in rep.written)
    assert rep.files == 8 and sum(per_dir.values()) == 8
    assert len(per_dir) == 8  # 6 + 2 env dirs, one file each
    assert all(f"{ds}/1.0/raw/env0" in per_dir for ds in rep.new_dataset_dirs)


def test_temp_files_are_renamed_when_complete(tmp_path: Path) -> None:
    """While a temp_ file is written its final name is absent; at the end only final names are left."""
    root = tmp_path / "root"
    seen: list[tuple[Path, int]] = []

    def look(_: float) -> None:
        for p in root.rglob(f"{TEMP_PREFIX}*"):
            assert not p.with_name(p.name.removeprefix(TEMP_PREFIX)).exists()
            seen.append((p, p.stat().st_size))

    rep = tree(root, total=12, size=5000, chunk=1000, mix={Writer.TEMP: 1}, seed=3, sleep=look)
    assert any(size < 5000 for _, size in seen)  # incomplete temp_ files were visible
    assert not list(root.rglob(f"{TEMP_PREFIX}*"))
    assert rep.writers() == {"temp": 12, "slow": 0, "direct": 0} and rep.vanished == ()
    assert {p.name.removeprefix(TEMP_PREFIX) for p, _ in seen} <= {Path(f.path).name for f in rep.written}
    assert on_disk(root) == listed(rep)


def test_slow_files_grow_under_their_final_name(tmp_path: Path) -> None:
    root = tmp_path / "root"
    sizes: dict[str, set[int]] = {}

    def look(_: float) -> None:
        for p in root.rglob("*.dat"):
            sizes.setdefault(p.name, set()).add(p.stat().st_size)

    rep = tree(root, total=6, size=4000, chunk=1000, mix={Writer.SLOW: 1}, parallel=2, seed=4, sleep=look)
    assert len(sizes) == 6 and all({1000, 2000, 3000} <= s for s in sizes.values())
    assert not list(root.rglob(f"{TEMP_PREFIX}*"))
    assert on_disk(root) == listed(rep)


def test_new_dirs_are_made_while_the_traffic_runs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    new_dirs = [f"late{k:02d}-5/dataset00" for k in range(2)]
    snapshots: list[tuple[int, bool]] = []  # (files in the first datasets, new dirs there)

    def look(_: float) -> None:
        old = sum(1 for p in root.glob("vendor*/*/*/raw/*/*") if p.is_file())
        snapshots.append((old, all((root / d).exists() for d in new_dirs)))

    rep = tree(root, files=3, new_dirs=2, seed=5, sleep=look)
    assert list(rep.new_dataset_dirs) == new_dirs
    assert not snapshots[0][1]
    assert any(old > 0 and not made for old, made in snapshots)  # traffic before the new dirs
    assert snapshots[-1][1]
    for d in new_dirs:
        assert (root / d / "1.0" / "raw" / "env0").is_dir()
        assert len(list((root / d / "1.0" / "raw" / "env0").iterdir())) == 3
    assert set(rep.dataset_dirs) == {f"vendor{v:02d}/dataset{d:02d}" for v in (0, 1) for d in (0, 1)} | set(
        new_dirs
    )


def test_duplicates_land_in_two_datasets(tmp_path: Path) -> None:
    rep = tree(tmp_path, files=2, duplicates=3, seed=6, interval=0)
    by_sha: dict[str, list[str]] = {}
    for f in rep.written:
        by_sha.setdefault(f.sha256, []).append(f.path)
    pairs = [paths for paths in by_sha.values() if len(paths) > 1]
    assert rep.duplicates == 3 and len(pairs) == 3 and all(len(p) == 2 for p in pairs)
    for a, b in pairs:
        assert a.split("/")[:2] != b.split("/")[:2]  # two datasets
        dup, orig = sorted([Path(a).name, Path(b).name])
        assert dup == "dup-" + orig
    assert rep.files == 4 * 2 * 2 + 3 and rep.summary()["distinct_contents"] == rep.files - 3
    assert on_disk(tmp_path) == listed(rep)


def test_same_seed_same_tree(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"versions": 2, "files": 2, "new_dirs": 1, "duplicates": 2, "interval": 0}
    a = tree(tmp_path / "a", seed=7, **kwargs)
    b = tree(tmp_path / "b", seed=7, **kwargs)
    c = tree(tmp_path / "c", seed=8, **kwargs)
    assert listed(a) == listed(b) == on_disk(tmp_path / "a") == on_disk(tmp_path / "b")
    assert [f.writer for f in a.written] == [f.writer for f in b.written]
    assert a.dataset_dirs == b.dataset_dirs
    assert not set(listed(a)) & set(listed(c)) and not set(listed(a).values()) & set(listed(c).values())


def test_rate_limits_the_files_started(tmp_path: Path) -> None:
    rep = tree(tmp_path, total=10, rate=50.0, mix={Writer.DIRECT: 1}, parallel=1, seed=9)
    assert rep.files == 10 and rep.seconds >= 9 / 50 * 0.9


def test_a_temp_file_taken_before_its_rename_is_reported(tmp_path: Path) -> None:
    root, away = tmp_path / "root", tmp_path / "away"
    away.mkdir()
    taken: list[str] = []

    def take(_: float) -> None:
        for p in root.rglob(f"{TEMP_PREFIX}*"):
            if not taken:
                taken.append(p.relative_to(root).as_posix())
                os.rename(p, away / p.name)

    rep = tree(root, total=4, size=3000, chunk=1000, mix={Writer.TEMP: 1}, seed=10, sleep=take)
    assert len(taken) == 1 and [f.path for f in rep.vanished] == [taken[0].replace(TEMP_PREFIX, "")]
    assert rep.files == 3 and on_disk(root) == listed(rep)
    assert sha256_file(away / Path(taken[0]).name) == rep.vanished[0].sha256  # written to the end


# ----------------------------------------------------------------- refusals: nothing written outside root


def test_a_symlink_on_the_way_is_refused_before_writing(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "vendor01").symlink_to(outside)
    with pytest.raises(TreeError, match="not a directory"):
        tree(root, seed=11)
    assert list(outside.iterdir()) == [] and [p.name for p in root.iterdir()] == ["vendor01"]


def test_a_name_that_exists_is_refused_before_writing(tmp_path: Path) -> None:
    tree(tmp_path, files=1, seed=12, interval=0)
    before = on_disk(tmp_path)
    with pytest.raises(TreeError, match="exists"):
        tree(tmp_path, files=1, seed=12, interval=0)
    assert on_disk(tmp_path) == before
    tree(tmp_path, files=1, seed=13, interval=0)  # another seed, other names
    assert len(on_disk(tmp_path)) == 2 * len(before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root", ""], "the root is empty"),
        (["--root", "FILE"], "is not a directory"),
        (["--root", "FILE/below"], "cannot make root"),
        (["--root", "R", "--files", "2", "--total", "3"], "--files or --total"),
        (["--root", "R", "--mix", "temp=1,fast=2"], "'fast=2' is not WRITER=WEIGHT"),
        (["--root", "R", "--mix", "temp=0"], "at least one writer"),
        (["--root", "R", "--rate", "0"], "files per second must be > 0"),
        (["--root", "R", "--vendors", "1", "--datasets", "1", "--duplicates", "1"], "two datasets"),
        (["--root", "R", "--total", "1", "--new-dirs", "2"], "each new dir"),
        (["--root", "R", "--size", "0"], "--size"),
        (["--vendors", "1"], "Missing option '--root'"),
    ],
)
def test_refusals_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "FILE").write_text("a file\n")
    res = simulate_tree(*args, cwd=cwd)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ingestor: error: ") and message in lines[0], res.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["FILE"]  # nothing made
    assert (cwd / "FILE").read_text() == "a file\n"


def test_parse_mix() -> None:
    assert parse_mix("temp=2, direct=1") == {Writer.TEMP: 2, Writer.SLOW: 0, Writer.DIRECT: 1}
    for bad in ["temp", "temp=-1", "temp=1.5", "slow=²", "", "temp=0,slow=0"]:
        with pytest.raises(ValueError):
            parse_mix(bad)


# ----------------------------------------------------------------- the command line


def test_json_lists_every_file_on_disk(tmp_path: Path) -> None:
    root = tmp_path / "root"
    args = ["--root", str(root), "--versions", "2", "--files", "2", "--new-dirs", "2", "--duplicates", "3"]
    res = simulate_tree(*args, "--size", "3K", "--seed", "14", "--json")
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.splitlines()
    out = json.loads(line)
    written = {w["path"]: w["sha256"] for w in out["written"]}
    assert len(written) == len(out["written"]) == out["files"] == 4 * 2 * 2 * 2 + 2 * 2 + 3
    assert written == on_disk(root)
    assert all(w["size"] == 3072 and w["writer"] in ("temp", "slow", "direct") for w in out["written"])
    assert out["bytes"] == out["files"] * 3072 and out["seed"] == 14 and out["root"] == str(root)
    assert out["datasets"] == len(out["dataset_dirs"]) == 6 and out["vanished"] == []
    assert out["dataset_dirs"] == sorted({"/".join(p.split("/")[:2]) for p in written})
    assert out["new_dataset_dirs"] == ["late00-14/dataset00", "late01-14/dataset00"]
    assert out["duplicates"] == 3 and out["distinct_contents"] == out["files"] - 3
    assert sum(out["writers"].values()) == out["files"] and isinstance(out["seconds"], float)


def test_summary_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    res = simulate_tree("--root", str(root), "--vendors", "1", "--envs", "1", "--total", "6", "--seed", "15")
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.splitlines()
    m = LINE.match(line)
    assert m, line
    assert m["files"] == "6" and m["bytes"] == str(6 * 4096) and m["root"] == str(root)
    assert (m["datasets"], m["new"], m["dups"], m["seed"]) == ("2", "0", "0", "15")
    assert (m["temp"], m["slow"], m["direct"]) == ("2", "2", "2")
    assert len(on_disk(root)) == 6


def test_temp_files_seen_while_the_command_runs(tmp_path: Path) -> None:
    """A real process, paced by --rate: a temp_ file is seen, and none is left when it exits."""
    root = tmp_path / "root"
    proc = subprocess.Popen(
        ingestor_cmd(
            "simulate", "tree", "--root", str(root), "--total", "30", "--rate", "15", "--size", "8K",
            "--chunk", "1K", "--interval", "0.05", "--mix", "temp=1,direct=1", "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: any(root.rglob(f"{TEMP_PREFIX}*")) or proc.poll() is not None, 30, "a temp_ file")
        assert proc.poll() is None, "the command ended before a temp_ file was seen"
    finally:
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    out = json.loads(stdout)
    assert not list(root.rglob(f"{TEMP_PREFIX}*"))
    assert {w["path"]: w["sha256"] for w in out["written"]} == on_disk(root)


def test_beside_a_running_daemon_every_file_lands_once(env: Env, daemon: Any) -> None:
    """The daemon watches the landing dir while the tree is written into it, new dirs included."""
    daemon()
    rep = tree(env.landing, files=2, new_dirs=1, seed=16)
    want = {str(env.landing / f.path): f.sha256 for f in rep.written}
    wait_for(lambda: len(env.ingested()) >= len(want), 60, "every file ingested")
    got = Counter((r.source_path, r.sha256) for r in env.ingested())
    assert got == Counter(want.items())  # each final name once, with its bytes; no temp_ name
    assert rep.vanished == ()
