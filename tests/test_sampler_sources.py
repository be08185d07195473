"""``sampler run --config``: every source's manifests dirs, each sample in its own samples dir.

Real processes on real trees: warehouse files and manifest lines are written
the way the ingestor writes them (the file first, then its line, with the
``source`` and ``dataset`` keys of a source's line).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestor.manifest import ManifestRecord
from tests.sampler_helpers import append_lines, current_rel, events, named, record
from tests.waiting import wait_for

SAMPLE = "2026/01/18/143000--data_sample.csv"  # the same relative path in every dataset


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sampler.cli", "run", *args]


def run_once(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cli("--once", *args), capture_output=True, timeout=120, env=env)


def land(
    warehouse: Path,
    rel: str,
    data: bytes,
    manifests: Path,
    *,
    source: str | None = None,
    dataset: dict[str, str] | None = None,
    with_keys: bool = True,
    named_as: Path | None = None,
) -> ManifestRecord:
    """A warehouse file, then its manifest line (as the ingestor: file first, line after).

    ``named_as``: the warehouse dir the line names, when the tree is built elsewhere and moved there.
    """
    path = warehouse / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    rec = record(path)
    if named_as is not None:
        rec = dataclasses.replace(rec, warehouse_path=str(named_as / rel))
    line = rec.to_json()
    if with_keys:
        rec = dataclasses.replace(rec, source_name=source, dataset=dataset or {})
        line = rec.to_json()
    else:  # a line of an ingestor before sources: no source or dataset key at all
        obj = json.loads(line)
        del obj["source"], obj["dataset"]
        line = json.dumps(obj).encode() + b"\n"
    append_lines(manifests, current_rel(), line)
    return rec


def tree_paths(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


class Sites:
    """Three sources: ``tree`` (placeholders, datasets under data/), two literal ones."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "ingestor.toml"
        self.state = root / "state" / "sampler"
        for d in ("drop/acme/orders", "drop/beta/events"):
            (root / d).mkdir(parents=True)

    def ds(self, vendor: str, dataset: str, version: str) -> Path:
        base = self.root / "data" / vendor / dataset / version
        (base / "raw" / "env0").mkdir(parents=True, exist_ok=True)
        return base

    def literal(self, name: str) -> dict[str, Path]:
        return {k: self.root / k / name for k in ("warehouse", "manifests", "samples")}

    def write_config(self, extra: str = "") -> Path:
        r = self.root
        self.config.write_text(
            f"""
state_path = "{r}/state/ledger.sqlite"
scan_interval = 5.0
concurrency = 2

[[source]]
name = "tree"
path = "{r}/data/{{vendor}}/{{dataset}}/{{version}}/raw"
include = ["env*/**"]
exclude = ["**/temp_*", "**/*.tmp"]
mode = "stability"
stability_seconds = 0.5
layout = "{{yyyy}}/{{mm}}/{{dd}}/{{hhmmss}}--{{name}}"
warehouse = "{r}/data/{{vendor}}/{{dataset}}/{{version}}/bronze"
manifests = "{r}/data/{{vendor}}/{{dataset}}/{{version}}/manifests"
samples = "{r}/data/{{vendor}}/{{dataset}}/{{version}}/samples"

[[source]]
name = "acme-orders"
path = "{r}/drop/acme/orders"
mode = "sidecar"
warehouse = "{r}/warehouse/acme/orders"
manifests = "{r}/manifests/acme/orders"
samples = "{r}/samples/acme/orders"

[[source]]
name = "beta-events"
path = "{r}/drop/beta/events"
dedup_scope = "global"
warehouse = "{r}/warehouse/beta/events"
manifests = "{r}/manifests/beta/events"
samples = "{r}/samples/beta/events"
{extra}
"""
        )
        return self.config

    def land_tree(self, vendor: str, dataset: str, version: str, data: bytes) -> ManifestRecord:
        base = self.ds(vendor, dataset, version)
        values = {"vendor": vendor, "dataset": dataset, "version": version}
        return land(
            base / "bronze",
            "2026/01/18/143000--data.csv",
            data,
            base / "manifests",
            source="tree",
            dataset=values,
        )

    def land_literal(self, name: str, rel: str, data: bytes, *, with_keys: bool = True) -> ManifestRecord:
        d = self.literal(name)
        source = name.replace("/", "-")
        return land(d["warehouse"], rel, data, d["manifests"], source=source, with_keys=with_keys)


@pytest.fixture
def sites(tmp_path: Path) -> Sites:
    return Sites(tmp_path)


def _written(stderr: bytes) -> list[dict[str, object]]:
    return named(events(stderr), "sample_written")


def test_once_writes_each_sample_into_its_own_samples_dir_and_nothing_elsewhere(sites: Sites) -> None:
    sites.write_config()
    sp = sites.land_tree("sp", "gics", "1.0", b"sector,code\nEnergy,10\n")
    acme = sites.land_tree("acme", "prices", "2.1", b"px,qty\n1.5,3\n")
    orders = sites.land_literal("acme/orders", "ingest_date=2026-01-18/orders.csv", b"o,n\n1,2\n")
    # a line from an ingestor before sources (no source or dataset key) is fine
    beta = sites.land_literal("beta/events", "x/events.jsonl", b'{"e":1}\n{"e":2}\n', with_keys=False)
    before = tree_paths(sites.root)

    result = run_once("--config", str(sites.config))
    assert result.returncode == 0, result.stderr
    evs = events(result.stderr)
    assert sorted(e["id"] for e in named(evs, "sample_written")) == sorted(
        r.id for r in (sp, acme, orders, beta)
    )
    by_id = {e["id"]: e for e in named(evs, "sample_written")}
    assert by_id[sp.id]["source"] == "tree" and by_id[orders.id]["source"] == "acme-orders"
    data = sites.root / "data"
    assert (data / "sp/gics/1.0/samples" / SAMPLE).read_bytes() == b"sector,code\nEnergy,10\n"
    assert (data / "acme/prices/2.1/samples" / SAMPLE).read_bytes() == b"px,qty\n1.5,3\n"
    orders_sample = sites.root / "samples/acme/orders/ingest_date=2026-01-18/orders_sample.csv"
    assert orders_sample.read_bytes() == b"o,n\n1,2\n"
    assert (sites.root / "samples/beta/events/x/events_sample.jsonl").read_bytes() == b'{"e":1}\n{"e":2}\n'

    # nothing outside the samples dirs and the sampler's state dir
    allowed = [
        data / "sp/gics/1.0/samples",
        data / "acme/prices/2.1/samples",
        sites.root / "samples",
        sites.root / "state",
    ]
    new = tree_paths(sites.root) - before
    stray = [p for p in new if not any(p == a or a in p.parents for a in allowed)]
    assert stray == []

    # one checkpoint per manifests dir, each naming its dir, in <state_path dir>/sampler
    ckpts = {json.loads(p.read_bytes())["manifests"]: p for p in sites.state.glob("*.json")}
    assert set(ckpts) == {
        str(data / "sp/gics/1.0/manifests"),
        str(data / "acme/prices/2.1/manifests"),
        str(sites.root / "manifests/acme/orders"),
        str(sites.root / "manifests/beta/events"),
    }
    assert ckpts[str(data / "sp/gics/1.0/manifests")].name.startswith("sp-gics-1.0-manifests.")
    assert (sites.state / "sampler.lock").exists()

    again = run_once("--config", str(sites.config))
    assert again.returncode == 0, again.stderr
    assert _written(again.stderr) == []
    assert named(events(again.stderr), "sampler_stopped")[0]["records_read"] == 0


@pytest.fixture
def follower(sites: Sites) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    sites.write_config()
    log = sites.root / "follow.log"
    with open(log, "wb") as fh:
        # a poll interval far past the test's deadlines: only the watches can make it pass
        proc = subprocess.Popen(
            cli("--config", str(sites.config), "--follow", "--poll-interval", "600"), stderr=fh
        )
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_follow_samples_new_datasets_without_restart_and_restart_redoes_nothing(
    sites: Sites, follower: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, log = follower
    first = sites.land_tree("sp", "gics", "1.0", b"a,b\n1,2\n")

    def written() -> list[str]:
        return [str(e["id"]) for e in _written(log.read_bytes())]

    wait_for(lambda: first.id in written(), 30, "the first sample")
    wait_for(lambda: named(events(log.read_bytes()), "manifests_found"), 30, "discovery logged")

    # a new version of a dataset: its dirs made and filled in one go while running
    v2 = sites.land_tree("sp", "gics", "2.0", b"a,b\n3,4\n")
    wait_for(lambda: v2.id in written(), 30, "the new version's sample")

    # a whole new vendor tree made elsewhere and moved in at once
    staging = sites.root / "staging"
    base = staging / "zeta" / "fx" / "3"
    values = {"vendor": "zeta", "dataset": "fx", "version": "3"}
    (base / "raw").mkdir(parents=True)
    zeta = land(
        base / "bronze",
        "2026/01/18/143000--data.csv",
        b"c\n5\n",
        base / "manifests",
        source="tree",
        dataset=values,
        named_as=sites.root / "data/zeta/fx/3/bronze",
    )
    os.rename(staging / "zeta", sites.root / "data" / "zeta")
    wait_for(lambda: zeta.id in written(), 30, "the moved-in vendor's sample")

    # and the literal sources keep going
    orders = sites.land_literal("acme/orders", "d/o.csv", b"o\n1\n")
    wait_for(lambda: orders.id in written(), 30, "a literal source's sample")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert named(events(log.read_bytes()), "sampler_signalled")[0]["signal"] == "SIGTERM"
    data = sites.root / "data"
    assert (data / "sp/gics/2.0/samples" / SAMPLE).read_bytes() == b"a,b\n3,4\n"
    assert (data / "zeta/fx/3/samples" / SAMPLE).read_bytes() == b"c\n5\n"
    assert sorted(written()) == sorted({first.id, v2.id, zeta.id, orders.id})

    # the checkpoints survive the restart: nothing is sampled again, nothing read again
    again = run_once("--config", str(sites.config))
    assert again.returncode == 0, again.stderr
    assert _written(again.stderr) == []
    assert named(events(again.stderr), "sampler_stopped")[0]["records_read"] == 0
    assert len(list(sites.state.glob("*.json"))) == 4  # the dirs with lines: beta has none yet


def test_a_failing_source_does_not_stop_the_others(sites: Sites) -> None:
    sites.write_config()
    sp = sites.land_tree("sp", "gics", "1.0", b"a\n1\n")
    orders = sites.land_literal("acme/orders", "d/o.csv", b"o\n1\n")
    wh = sites.literal("acme/orders")["warehouse"]
    os.rename(wh, sites.root / "unmounted")  # the orders warehouse is gone

    result = run_once("--config", str(sites.config))
    assert result.returncode == 1
    evs = events(result.stderr)
    assert [e["id"] for e in named(evs, "sample_written")] == [sp.id]
    failed = named(evs, "stream_failed")
    assert len(failed) == 1 and failed[0]["source"] == "acme-orders" and "unusable" in failed[0]["error"]
    assert str(wh) in named(evs, "sampler_failed")[0]["error"]

    os.rename(sites.root / "unmounted", wh)
    again = run_once("--config", str(sites.config))
    assert again.returncode == 0, again.stderr
    assert [e["id"] for e in _written(again.stderr)] == [orders.id]


def test_samples_dir_that_values_put_inside_a_manifests_dir_is_refused_there_only(tmp_path: Path) -> None:
    # The templates alone cannot overlap (one has placeholders), but the value "x"
    # puts a samples dir of "a" around the manifests dir of "b".
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f"""
state_path = "{tmp_path}/state/ledger.sqlite"
[[source]]
name = "a"
path = "{tmp_path}/a/{{v}}/raw"
samples = "{tmp_path}/out/{{v}}"
[[source]]
name = "b"
path = "{tmp_path}/b/raw"
manifests = "{tmp_path}/out/x/m"
"""
    )
    (tmp_path / "a/x/raw").mkdir(parents=True)
    (tmp_path / "a/y/raw").mkdir(parents=True)
    ax = land(tmp_path / "a/x/warehouse", "f.csv", b"h\n1\n", tmp_path / "a/x/manifests", source="a",
              dataset={"v": "x"})  # fmt: skip
    ay = land(tmp_path / "a/y/warehouse", "f.csv", b"h\n2\n", tmp_path / "a/y/manifests", source="a",
              dataset={"v": "y"})  # fmt: skip
    b = land(tmp_path / "b/warehouse", "f.csv", b"h\n3\n", tmp_path / "out/x/m", source="b")
    result = run_once("--config", str(cfg))
    assert result.returncode == 1
    evs = events(result.stderr)
    assert sorted(e["id"] for e in named(evs, "sample_written")) == sorted([ay.id, b.id])
    (failed,) = named(evs, "stream_failed")
    assert failed["manifests"] == str(tmp_path / "a/x/manifests")
    assert "one inside the other" in failed["error"]
    assert ax.id not in {e.get("id") for e in evs}
    assert not (tmp_path / "out/x/f_sample.csv").exists()


def test_lines_routed_by_their_source_and_dataset_keys(tmp_path: Path) -> None:
    """Two sources share one manifests dir, and samples use a placeholder only the line gives."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f"""
state_path = "{tmp_path}/state/ledger.sqlite"
manifests = "{tmp_path}/manifests"
[[source]]
name = "one"
path = "{tmp_path}/in/one"
warehouse = "{tmp_path}/wh/one"
samples = "{tmp_path}/samples/one"
[[source]]
name = "two"
path = "{tmp_path}/in/{{vendor}}/two"
warehouse = "{tmp_path}/wh/{{vendor}}/two"
samples = "{tmp_path}/samples/{{vendor}}/two"
"""
    )
    m = tmp_path / "manifests"
    one = land(tmp_path / "wh/one", "a.csv", b"h\n1\n", m, source="one")
    two = land(tmp_path / "wh/sp/two", "a.csv", b"h\n2\n", m, source="two", dataset={"vendor": "sp"})
    nameless = land(tmp_path / "wh/one", "b.csv", b"h\n3\n", m, with_keys=False)
    unknown = land(tmp_path / "wh/one", "c.csv", b"h\n4\n", m, source="three")
    no_value = land(tmp_path / "wh/sp/two", "d.csv", b"h\n5\n", m, source="two")
    result = run_once("--config", str(cfg))
    assert result.returncode == 0, result.stderr
    evs = events(result.stderr)
    assert sorted(e["id"] for e in named(evs, "sample_written")) == sorted([one.id, two.id])
    assert (tmp_path / "samples/one/a_sample.csv").read_bytes() == b"h\n1\n"
    assert (tmp_path / "samples/sp/two/a_sample.csv").read_bytes() == b"h\n2\n"
    rejected = {e["id"]: e["error"] for e in named(evs, "sample_path_rejected")}
    assert set(rejected) == {nameless.id, unknown.id, no_value.id}
    assert "names none" in rejected[nameless.id]
    assert "'three'" in rejected[unknown.id]
    assert "{vendor}" in rejected[no_value.id]


def test_config_without_sources_from_the_environment(tmp_path: Path) -> None:
    """Top-level input only: warehouse, manifests, samples and state beside it, as the ingestor's defaults."""
    cfg = tmp_path / "plain.toml"
    cfg.write_text(f'input = "{tmp_path}/landing"\nmode = "stability"\n')
    rec = land(tmp_path / "warehouse", "d/a.csv", b"h\n1\n", tmp_path / "manifests", source="default")
    env = {**os.environ, "SAMPLER_CONFIG": str(cfg)}
    result = run_once(env=env)
    assert result.returncode == 0, result.stderr
    assert [e["id"] for e in _written(result.stderr)] == [rec.id]
    assert (tmp_path / "samples/d/a_sample.csv").read_bytes() == b"h\n1\n"
    assert len(list((tmp_path / "state/sampler").glob("*-manifests.*.json"))) == 1


def test_a_checkpoint_of_another_dir_is_refused_for_that_dir_only(sites: Sites) -> None:
    sites.write_config()
    sites.land_tree("sp", "gics", "1.0", b"a\n1\n")
    orders = sites.land_literal("acme/orders", "d/o.csv", b"o\n1\n")
    assert run_once("--config", str(sites.config)).returncode == 0
    ckpts = {json.loads(p.read_bytes())["manifests"]: p for p in sites.state.glob("*.json")}
    sp_ckpt = ckpts[str(sites.root / "data/sp/gics/1.0/manifests")]
    orders_ckpt = ckpts[str(sites.root / "manifests/acme/orders")]
    sp_ckpt.write_bytes(orders_ckpt.read_bytes())  # a copy gone astray
    late = sites.land_literal("acme/orders", "d/late.csv", b"o\n2\n")
    result = run_once("--config", str(sites.config))
    assert result.returncode == 1
    evs = events(result.stderr)
    (failed,) = named(evs, "stream_failed")
    assert "move it away" in failed["error"] and str(sites.root / "manifests/acme/orders") in failed["error"]
    assert [e["id"] for e in named(evs, "sample_written")] == [late.id]
    assert orders.id not in {e.get("id") for e in evs}


# ----------------------------------------------------------------- refusals


def _refused(tmp_path: Path, body: str, *extra: str) -> str:
    cfg = tmp_path / "c.toml"
    cfg.write_text(body.replace("ROOT", str(tmp_path)))
    before = tree_paths(tmp_path)
    result = run_once("--config", str(cfg), *extra)
    assert result.returncode == 2, result.stderr
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sampler: error: "), lines
    assert tree_paths(tmp_path) == before  # nothing created
    return lines[0]


SOURCE = """
state_path = "ROOT/state/ledger.sqlite"
[[source]]
name = "s"
path = "ROOT/data/{vendor}/{dataset}/raw"
"""


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (SOURCE + 'samples = "ROOT/data/{vendor}/{version}/samples"\n', "unknown placeholder(s) ['version']"),
        (SOURCE + 'warehouse = "ROOT/w/{region}"\n', "unknown placeholder(s) ['region']"),
        (SOURCE + 'samples = "ROOT/data/{vendor}/{dataset}/manifests"\n', "could be the same directory"),
        (SOURCE + 'samples = "ROOT/data/{vendor}/{dataset}/manifests/s"\n', "one inside the other"),
        (SOURCE + 'samples = "ROOT/data/{vendor}/{dataset}/warehouse/s"\n', "warehouse"),
        (SOURCE + 'samples = "ROOT/data/{vendor}/{dataset}/raw/samples"\n', "path"),
        (SOURCE + 'samples = "ROOT/data/{vendor}/{dataset}"\n', "one inside the other"),
        (SOURCE + 'samples = "ROOT/samples/{vendor}"\n', "lacks the warehouse's placeholder(s) ['dataset']"),
        (
            SOURCE + 'samples = "ROOT/s/{vendor}/{dataset}"\n[[source]]\nname = "s"\npath = "ROOT/x"\n',
            "two sources are named 's'",
        ),
        (SOURCE + '[[source]]\nname = "t"\n', "source 't': no path"),
        (SOURCE + '[[source]]\nname = "bad name"\npath = "ROOT/y"\n', "give a name"),
        (SOURCE + '[[source]]\nname = "t"\npath = "ROOT/y/../z"\n', "'..'"),
        (SOURCE + "samples = 3\n", "samples must be a string"),
        (
            'samples = "ROOT/shared"\n[[source]]\nname = "a"\npath = "ROOT/a"\n'
            '[[source]]\nname = "b"\npath = "ROOT/b"\nstate_path = "ROOT/st/l.db"\n',
            "are the same directory",
        ),
        ('[[source]]\nname = "a"\npath = "ROOT/a"\n', "no state dir"),
        (SOURCE + '[sampler]\nstate_dir = "ROOT/data/sp/gics/manifests/st"\n', "state_dir"),
        ("[[source]\n", "not valid TOML"),
        ('mode = "sidecar"\n', "no input or manifests"),
    ],
)
def test_bad_config_is_refused_with_one_line_and_exit_2(tmp_path: Path, body: str, needle: str) -> None:
    line = _refused(tmp_path, body)
    assert needle in line, line


@pytest.mark.parametrize(
    "flags",
    [
        ["--manifests", "/nonexistent"],
        ["--samples", "/tmp/s"],
        ["--warehouse", "/tmp/w"],
        ["--checkpoint", "/tmp/c.json"],
    ],
)
def test_config_with_a_plain_flag_is_refused(tmp_path: Path, flags: list[str]) -> None:
    line = _refused(tmp_path, SOURCE, *flags)
    assert f"{flags[0]} and --config" in line


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    result = run_once("--config", str(tmp_path / "none.toml"))
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        f"sampler: error: cannot read config file {tmp_path}/none.toml: No such file or directory"
    ]
    assert list(tmp_path.iterdir()) == []


def test_plain_samples_inside_manifests_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    result = run_once("--manifests", str(tmp_path / "manifests"), "--samples", str(tmp_path / "manifests/s"))
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "one inside the other" in lines[0]
    assert not (tmp_path / "manifests/s").exists()
