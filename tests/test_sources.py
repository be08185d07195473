"""Many sources on one daemon: ``[[source]]`` tables, placeholder paths, per-source policy.

Real daemons on real directories: every test writes its own config under
``tmp_path`` and waits on conditions with deadlines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestor.manifest import ManifestRecord
from ingestor.scanhelpers import default_workers
from tests.conftest import DaemonProc, ingestor_cmd, sha256_file
from tests.data_fs import tiny_tmpfs
from tests.test_daemon import _spawned
from tests.test_metrics import free_port, scrape, value
from tests.waiting import wait_for

OLD = time.time() - 3600


class Tree:
    """A config with sources under one root, and what landed from it."""

    def __init__(self, root: Path, body: str, top: str = "") -> None:
        self.root = root
        self.data = root / "data"
        self.state = root / "state" / "ledger.sqlite"
        self.config = root / "ingestor.toml"
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'state_path = "{self.state}"\nstability_seconds = 0.3\nscan_interval = 30\n{top}\n'
            + body.replace("ROOT", str(root))
        )

    def args(self) -> list[str]:
        return ["--config", str(self.config)]

    def records(self, manifests: Path) -> list[ManifestRecord]:
        out = []
        for path in sorted(manifests.rglob("manifest.jsonl")):
            lines = [ManifestRecord.from_json(line) for line in path.read_bytes().split(b"\n")[:-1]]
            out += [r for r in lines if r.status != "rejected"]
        return out

    def all_records(self) -> list[ManifestRecord]:
        return [r for m in sorted(self.root.rglob("manifests")) if m.is_dir() for r in self.records(m)]


SP = """
[[source]]
name = "sp"
path = "ROOT/data/{vendor}/{dataset}/{version}/raw"
include = ["env*/**"]
exclude = ["**/temp_*"]
warehouse = "ROOT/data/{vendor}/{dataset}/{version}/bronze"
manifests = "ROOT/data/{vendor}/{dataset}/{version}/manifests"
samples = "ROOT/data/{vendor}/{dataset}/{version}/samples"
layout = "{yyyy}/{mm}/{dd}/{hhmmss}--{name}"
"""
ACME = """
[[source]]
name = "acme-orders"
path = "ROOT/drop/acme/orders"
mode = "sidecar"
warehouse = "ROOT/warehouse/acme/orders"
manifests = "ROOT/manifests/acme/orders"
samples = "ROOT/samples/acme/orders"
"""
GLOBS = """
[[source]]
name = "reports"
path = "ROOT/drop/reports"
include = ["**/*.csv"]
exclude = ["drafts/**"]
warehouse = "ROOT/warehouse/reports"
manifests = "ROOT/manifests/reports"
layout = "{source}/{date}/{relpath}"
"""


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Any]:
    started: list[DaemonProc] = []

    def start(tree: Tree, *extra: str) -> DaemonProc:
        d = DaemonProc(tree, list(extra), tmp_path / f"daemon-{len(started)}.log")  # type: ignore[arg-type]
        d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        if d.alive():
            d.stop()


def write(path: Path, data: bytes, *, old: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if old:
        os.utime(path, (OLD, OLD))
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ingestor_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=120)


def test_three_sources_land_each_file_in_its_own_dataset_with_its_own_policy(
    tmp_path: Path, run_daemon: Any
) -> None:
    tree = Tree(tmp_path, SP + ACME + GLOBS)
    for v in ("gics/1.0", "gics/2.0", "ratings/1.0"):
        (tree.data / "sp" / v / "raw" / "env0").mkdir(parents=True)
    (tmp_path / "drop" / "acme" / "orders").mkdir(parents=True)
    port = free_port()
    d = run_daemon(tree, "--metrics-port", str(port))
    assert d.event("started")[0]["landing_dirs"] == 5
    # simultaneous traffic into every source
    sp_files = {}
    for v in ("gics/1.0", "gics/2.0", "ratings/1.0"):
        raw = tree.data / "sp" / v / "raw"
        for i in range(5):
            sp_files[f"{v}/{i}"] = write(raw / "env0" / f"part-{i}.csv", f"{v},{i}\n".encode())
        write(raw / "env0" / "temp_part-9.csv", b"half")  # excluded: written under a temp name
        write(raw / "loose.csv", f"{v} loose\n".encode())  # not below env*: not included
    orders = tmp_path / "drop" / "acme" / "orders"
    write(orders / "o1.json", b'{"order": 1}\n')
    write(orders / "o2.json", b'{"order": 2}\n')  # no sidecar: never lands
    write(orders / "o1.json.ok", b"")
    reports = tmp_path / "drop" / "reports"
    write(reports / "q1" / "sales.csv", b"a,b\n1,2\n")
    write(reports / "drafts" / "next.csv", b"draft\n")
    write(reports / "notes.txt", b"not csv\n")

    wait_for(lambda: len(tree.all_records()) == 17, 30, "17 files landed")
    # sp: each dataset in its own bronze, env0 dropped by the layout, its own manifests
    for v in ("gics/1.0", "gics/2.0", "ratings/1.0"):
        base = tree.data / "sp" / v
        recs = tree.records(base / "manifests")
        assert len(recs) == 5
        vendor, dataset, version = ("sp", *v.split("/"))
        for r in recs:
            assert r.source_name == "sp"
            assert r.dataset == {"vendor": vendor, "dataset": dataset, "version": version}
            w = Path(r.warehouse or "")
            assert w.parent.parent.parent.parent == base / "bronze"  # bronze/YYYY/MM/DD/HHMMSS--name
            assert w.name.endswith("--" + Path(r.source).name)
            assert sha256_file(w) == r.sha256
        assert (base / "raw" / "env0" / "temp_part-9.csv").exists()
        assert (base / "raw" / "loose.csv").exists()
    # sidecar source: only the announced file
    acme = tree.records(tmp_path / "manifests" / "acme" / "orders")
    assert [Path(r.source).name for r in acme] == ["o1.json"]
    assert acme[0].source_name == "acme-orders" and acme[0].dataset == {}
    assert Path(acme[0].warehouse or "").is_relative_to(tmp_path / "warehouse" / "acme" / "orders")
    assert (orders / "o2.json").exists()
    # globs: only csv outside drafts/, laid out under the source's name
    rep = tree.records(tmp_path / "manifests" / "reports")
    assert [Path(r.source).name for r in rep] == ["sales.csv"]
    assert Path(rep[0].warehouse or "").relative_to(tmp_path / "warehouse" / "reports").parts[0] == "reports"
    assert (reports / "drafts" / "next.csv").exists() and (reports / "notes.txt").exists()
    # every line in its own manifests: no line of one source in another's
    assert len(tree.all_records()) == 17
    v = cli("verify", "--config", str(tree.config), cwd=tmp_path)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "OK: 5 warehouses of 3 sources audited" in v.stdout
    # the metrics and status, per source
    m = scrape(port)
    assert value(m, "ingestor_files_total", source="sp", status="ingested") == 15
    assert value(m, "ingestor_files_total", source="acme-orders", status="ingested") == 1
    assert value(m, "ingestor_files_total", source="reports", status="ingested") == 1
    for source in ("sp", "acme-orders", "reports"):  # the gauges, one series per source
        for gauge in ("ingestor_files_waiting", "ingestor_queue_depth", "ingestor_files_in_flight"):
            assert (gauge, (("source", source),)) in m["samples"], (gauge, source)
    st = cli("status", "--config", str(tree.config), "--json", cwd=tmp_path)
    assert st.returncode == 0, st.stderr
    by_source = orjson.loads(st.stdout)["sources"]
    assert {k: (c["landing_dirs"], c["ingested"]) for k, c in by_source.items()} == {
        "sp": (3, 15), "acme-orders": (1, 1), "reports": (1, 1),
    }  # fmt: skip
    text = cli("status", "--config", str(tree.config), cwd=tmp_path).stdout
    assert "source       sp: 3 landing dirs, 15 ingested" in text
    assert d.stop() == 0
    # the sampler on the same config: each sample in its own source's samples dir
    sampler = subprocess.run(
        [sys.executable, "-m", "sampler.cli", "run", "--config", str(tree.config), "--once"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert sampler.returncode == 0, sampler.stderr[-2000:]
    for v in ("gics/1.0", "gics/2.0", "ratings/1.0"):
        base = tree.data / "sp" / v
        for r in tree.records(base / "manifests"):
            rel = Path(r.warehouse or "").relative_to(base / "bronze")
            sample = base / "samples" / rel.parent / rel.name.replace(".csv", "_sample.csv")
            assert sample.read_bytes() == Path(r.warehouse or "").read_bytes()  # one record: all of it
    acme_rel = Path(acme[0].warehouse or "").relative_to(tmp_path / "warehouse" / "acme" / "orders")
    assert (tmp_path / "samples" / "acme" / "orders" / acme_rel.parent / "o1_sample.json").is_file()
    assert not (tmp_path / "samples" / "reports").exists()  # that source has no samples dir


def test_a_dataset_made_and_filled_in_one_go_while_running_loses_nothing(
    tmp_path: Path, run_daemon: Any
) -> None:
    tree = Tree(tmp_path, SP)
    tree.data.mkdir()
    d = run_daemon(tree)
    expected = {}
    for k in range(6):
        raw = tree.data / f"vendor{k % 2}" / f"ds{k}" / "1.0" / "raw" / "env0"
        raw.mkdir(parents=True)  # the whole chain in one go, files right after the mkdir
        for i in range(3):
            p = write(raw / f"f{i}.csv", f"{k}-{i}\n".encode(), old=False)
            expected[str(p)] = sha256_file(p)
    wait_for(lambda: len(tree.all_records()) == len(expected), 30, "every file of the new datasets")
    got = {r.source: r.sha256 for r in tree.all_records()}
    assert got == expected
    found = d.event("landing_dir_found")
    assert len(found) == 6
    assert {f["dataset"]["dataset"] for f in found} == {f"ds{k}" for k in range(6)}


def test_same_content_in_two_datasets_is_two_files_unless_dedup_scope_is_global(
    tmp_path: Path, run_daemon: Any
) -> None:
    for scope, want in (("dataset", ["ingested", "ingested"]), ("global", ["duplicate", "ingested"])):
        root = tmp_path / scope
        tree = Tree(root, SP, top=f'dedup_scope = "{scope}"')
        for ds in ("a", "b"):
            (tree.data / "v" / ds / "1" / "raw" / "env0").mkdir(parents=True)
        d = run_daemon(tree)
        write(tree.data / "v" / "a" / "1" / "raw" / "env0" / "x.csv", b"same bytes\n")
        wait_for(lambda t=tree: len(t.all_records()) == 1, 30, "first copy")  # type: ignore[misc]
        write(tree.data / "v" / "b" / "1" / "raw" / "env0" / "y.csv", b"same bytes\n")
        wait_for(lambda t=tree: len(t.all_records()) == 2, 30, "second copy")  # type: ignore[misc]
        assert sorted(r.status for r in tree.all_records()) == want
        d.stop()
        v = cli("verify", "--config", str(tree.config), cwd=root)
        assert v.returncode == 0, v.stdout + v.stderr


def test_replay_of_one_source_or_of_paths_lands_only_those(tmp_path: Path) -> None:
    tree = Tree(tmp_path, SP + GLOBS)
    for ds in ("a", "b"):
        write(tree.data / "v" / ds / "1" / "raw" / "env0" / "x.csv", f"{ds}\n".encode())
    write(tmp_path / "drop" / "reports" / "r.csv", b"r\n")
    # paths: one dataset's landing dir only
    r = cli("replay", "--config", str(tree.config), str(tree.data / "v" / "a" / "1" / "raw"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [Path(x.source).parent.parent.parent.parent.name for x in tree.all_records()] == ["a"]
    # one source: everything of it, nothing of the other
    r = cli("replay", "--config", str(tree.config), "--source", "reports", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(x.source_name or "" for x in tree.all_records()) == ["reports", "sp"]
    # a path above landing dirs: every landing dir below it
    r = cli("replay", "--config", str(tree.config), str(tree.data / "v"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(tree.all_records()) == 3
    r = cli("replay", "--config", str(tree.config), str(tmp_path / "elsewhere"), cwd=tmp_path)
    assert r.returncode == 2 and "is not inside" in r.stderr
    r = cli("replay", "--config", str(tree.config), "--source", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "no source named 'nope'" in r.stderr


def test_config_show_prints_each_source_with_its_landing_dirs_now(tmp_path: Path) -> None:
    tree = Tree(tmp_path, SP + ACME)
    for ds in ("a", "b"):
        (tree.data / "v" / ds / "1" / "raw").mkdir(parents=True)
    r = cli("config", "show", "--config", str(tree.config), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout)
    by_name = {s["name"]: s for s in doc["sources"]}
    assert by_name["sp"]["landing_dirs"] == [str(tree.data / "v" / ds / "1" / "raw") for ds in ("a", "b")]
    assert by_name["acme-orders"]["mode"] == "sidecar" and by_name["sp"]["mode"] == "stability"
    text = cli("config", "show", "--config", str(tree.config), cwd=tmp_path).stdout
    assert "[[source]]" in text and "# landing dirs matched now: 2" in text


BAD = [
    (
        '[[source]]\nname = "a"\npath = "ROOT/d/{x}"\n[[source]]\nname = "b"\npath = "ROOT/d/fixed"\n',
        "could both match",
    ),
    ('[[source]]\nname = "a"\npath = "ROOT/d/{x}"\n[[source]]\nname = "a"\npath = "ROOT/e"\n', "named 'a'"),
    (
        '[[source]]\nname = "a"\npath = "ROOT/d/{x}/raw"\nwarehouse = "ROOT/d/{y}/bronze"\n',
        "unknown placeholder",
    ),
    (
        '[[source]]\nname = "a"\npath = "ROOT/d/{x}"\nwarehouse = "ROOT/d/{x}/bronze"\n',
        "could overlap the landing",
    ),
    ('[[source]]\nname = "a"\npath = "ROOT/d/../{x}"\n', "'..'"),
    ('[[source]]\nname = "a"\npath = "ROOT/d/{x}"\nlayout = "/abs/{name}"\n', "relative"),
    ('[[source]]\nname = "a"\npath = "ROOT/d/{x}"\nlayout = "{vendor}/{name}"\n', "unknown placeholder"),
    ('[[source]]\nname = "a"\npath = "ROOT/d/{x}"\nconcurrency = 3\n', "daemon-wide"),
    ('[[source]]\nname = "a"\npath = "ROOT/d/{x}/{x}"\n', "twice"),
    ('[[source]]\nname = "a"\npath = "ROOT/d/{x"\n', "unbalanced"),
    ('[[source]]\nname = "a"\npath = "ROOT/d/{x}"\ninclude = ["[abc"]\n', "glob"),
    ('[[source]]\nname = "a b"\npath = "ROOT/d"\n', "give a name"),
    ('[[source]]\nname = "a"\n', "give its path"),
    ('[[source]]\nname = "a"\npath = "ROOT/d"\nmanifests = "ROOT/w/m"\nwarehouse = "ROOT/w"\n', "overlap"),
    ('[[source]]\nname = "a"\npath = "/{x}"\n', "cannot be /"),
    ('[[source]]\nname = "a"\npath = "ROOT/d"\nbogus = 1\n', "unknown setting"),
    ('[[source]]\nname = "a"\npath = "ROOT/d/{name}/raw"\n', "layout fields"),
]


@pytest.mark.parametrize(("body", "said"), BAD)
def test_a_bad_source_is_refused_with_one_line_before_anything_is_touched(
    tmp_path: Path, body: str, said: str
) -> None:
    tree = Tree(tmp_path, body)
    r = cli("run", "--config", str(tree.config), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], r.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "d").exists()


def test_input_beside_sources_and_a_missing_state_path_are_refused(tmp_path: Path) -> None:
    tree = Tree(tmp_path, SP)
    r = cli("run", "--config", str(tree.config), "--input", str(tmp_path / "x"), cwd=tmp_path)
    assert r.returncode == 2 and "cannot be given with them" in r.stderr
    cfg = tmp_path / "nostate.toml"
    cfg.write_text(SP.replace("ROOT", str(tmp_path)))
    r = cli("run", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2 and "state_path" in r.stderr


def test_a_lost_ledger_of_sources_is_rebuilt_from_every_datasets_manifests(tmp_path: Path) -> None:
    tree = Tree(tmp_path, SP + GLOBS)
    for ds in ("a", "b", "retired"):
        write(tree.data / "v" / ds / "1" / "raw" / "env0" / "x.csv", f"{ds}\n".encode())
    write(tmp_path / "drop" / "reports" / "r.csv", b"r\n")
    assert cli("replay", "--config", str(tree.config), cwd=tmp_path).returncode == 0
    assert len(tree.all_records()) == 4
    # a dataset retired: its landing dir removed, its bronze and manifests kept
    shutil.rmtree(tree.data / "v" / "retired" / "1" / "raw")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tree.state}{suffix}").unlink(missing_ok=True)
    r = cli("rebuild-ledger", "--config", str(tree.config), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert orjson.loads(r.stdout)["records"] == 4
    v = cli("verify", "--config", str(tree.config), cwd=tmp_path)
    assert v.returncode == 0, v.stdout + v.stderr
    # the content claims are each dataset's again: a resend in dataset a is a duplicate there
    write(tree.data / "v" / "a" / "1" / "raw" / "env0" / "again.csv", b"a\n")
    write(tree.data / "v" / "b" / "1" / "raw" / "env0" / "new.csv", b"a\n")
    assert cli("replay", "--config", str(tree.config), cwd=tmp_path).returncode == 0
    got = sorted((Path(x.source).name, x.status) for x in tree.all_records())
    assert ("again.csv", "duplicate") in got and ("new.csv", "ingested") in got


def test_a_source_whose_warehouse_is_full_does_not_hold_the_others_back(
    tmp_path: Path, run_daemon: Any
) -> None:
    full = tmp_path / "full"
    with tiny_tmpfs(full, "96k"):
        body = SP + GLOBS.replace('warehouse = "ROOT/warehouse/reports"', f'warehouse = "{full}/reports"')
        tree = Tree(tmp_path, body)
        (tree.data / "v" / "a" / "1" / "raw" / "env0").mkdir(parents=True)
        (tmp_path / "drop" / "reports").mkdir(parents=True)
        d = run_daemon(tree)
        big = write(tmp_path / "drop" / "reports" / "big.csv", os.urandom(256 << 10))  # larger than the disk
        wait_for(lambda: d.event("step_failed"), 30, "the full warehouse's retries")
        for i in range(20):  # meanwhile the other source lands everything
            write(tree.data / "v" / "a" / "1" / "raw" / "env0" / f"f{i}.csv", f"{i}\n".encode())
        wait_for(
            lambda: len(tree.records(tree.data / "v" / "a" / "1" / "manifests")) == 20, 30, "the other source"
        )
        assert big.exists() and tree.records(tmp_path / "manifests" / "reports") == []
        assert d.alive()
        d.stop()


@pytest.mark.skipif(default_workers() == 0, reason="no scan helpers on one core")
def test_a_pass_over_many_landing_dirs_shares_one_set_of_scan_helpers(
    tmp_path: Path, run_daemon: Any
) -> None:
    tree = Tree(tmp_path, SP)
    datasets = [tree.data / "v" / f"d{k}" / "1" / "raw" / "env0" for k in range(4)]
    for raw in datasets:  # excluded names: walked and checked by every scan, never landed
        raw.mkdir(parents=True)
        for i in range(1300):
            (raw / f"temp_{i}.csv").write_bytes(b"t")
    d = run_daemon(tree)
    wait_for(lambda: len(d.event("scan_done")) == 4, 60, "the first scans")
    # 1,300 names a landing dir: no scan is large alone, and no pass size is known yet
    assert [e["helpers"] for e in d.event("scan_done")] == [0] * 4
    assert not d.event("scan_helpers_started")
    assert d.stop() == 0
    expected = {}
    for raw in datasets:
        for i in range(3):
            p = write(raw / f"f{i}.csv", f"{raw} {i}\n".encode())
            expected[str(p)] = sha256_file(p)
    d2 = run_daemon(tree)
    # together the last scans were large (5,200 names): one pool for the pass, ready before it
    started = d2.event("scan_helpers_started")
    assert [(e["landing_dirs"], e["last_pass_files"]) for e in started] == [(4, 5200)]
    wait_for(lambda: len(d2.event("scan_done")) == 4, 60, "the first pass")
    assert [(e["files"], e["helpers"]) for e in d2.event("scan_done")] == [(1303, default_workers())] * 4
    wait_for(lambda: len(tree.all_records()) == len(expected), 30, "the files found by the helpers")
    assert {r.source: r.sha256 for r in tree.all_records()} == expected
    assert d2.proc is not None
    pid = d2.proc.pid
    wait_for(lambda: not _spawned(pid), 20, "the pass's helpers to exit")
    assert d2.stop() == 0
