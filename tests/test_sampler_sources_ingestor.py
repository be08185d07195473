"""The sampler and the real ingestor on one config with ``[[source]]`` tables.

The ingestor lands (``replay``, then a running daemon), the sampler reads the
same file: every sample in its own source's samples dir, with the
``[sampler]`` table's settings; a dataset made while both run is sampled
without a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sampler_helpers import events, named
from tests.waiting import wait_for

OLD = time.time() - 3600  # mtimes long settled: replay lands at once


def config(root: Path) -> Path:
    cfg = root / "ingestor.toml"
    cfg.write_text(
        f"""
state_path = "{root}/state/ledger.sqlite"
stability_seconds = 0.2
scan_interval = 30

[[source]]
name = "sp"
path = "{root}/data/{{vendor}}/{{dataset}}/{{version}}/raw"
include = ["env*/**"]
exclude = ["**/temp_*"]
warehouse = "{root}/data/{{vendor}}/{{dataset}}/{{version}}/bronze"
manifests = "{root}/data/{{vendor}}/{{dataset}}/{{version}}/manifests"
samples = "{root}/data/{{vendor}}/{{dataset}}/{{version}}/samples"
layout = "{{yyyy}}/{{mm}}/{{dd}}/{{hhmmss}}--{{name}}"

[[source]]
name = "acme-orders"
path = "{root}/drop/acme/orders"
mode = "sidecar"
warehouse = "{root}/warehouse/acme/orders"
manifests = "{root}/manifests/acme/orders"
samples = "{root}/samples/acme/orders"

[[source]]
name = "beta"
path = "{root}/drop/beta"
warehouse = "{root}/warehouse/beta"
manifests = "{root}/manifests/beta"
samples = "{root}/samples/beta"

[sampler]
rows = 1
poll_interval = 600
"""
    )
    return cfg


def put(path: Path, data: bytes, *, old: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if old:
        os.utime(path, (OLD, OLD))


def samples_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "samples" in p.relative_to(root).parts and not p.name.endswith(".source.json")
    }


def test_replay_then_sampler_once(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    put(tmp_path / "data/sp/gics/1.0/raw/env0/data.csv", b"a,b\n1,2\n3,4\n")
    put(tmp_path / "data/acme/px/2/raw/env0/data.csv", b"x\n9\n8\n")
    put(tmp_path / "data/acme/px/2/raw/env0/temp_data.csv", b"x\n7\n")  # excluded: never landed
    put(tmp_path / "drop/acme/orders/o.csv", b"o\n1\n2\n")
    put(tmp_path / "drop/acme/orders/o.csv.ok", b"")
    put(tmp_path / "drop/beta/e.jsonl", b'{"e":1}\n{"e":2}\n')
    replay = subprocess.run(
        [sys.executable, "-m", "ingestor.cli", "replay", "--config", str(cfg)],
        capture_output=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr[-3000:]

    result = subprocess.run(
        [sys.executable, "-m", "sampler.cli", "run", "--config", str(cfg), "--once"],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    written = named(events(result.stderr), "sample_written")
    assert sorted(str(e["source"]) for e in written) == ["acme-orders", "beta", "sp", "sp"]
    expected = {  # rows = 1, from [sampler]
        "data/sp/gics/1.0/samples": b"a,b\n1,2\n",
        "data/acme/px/2/samples": b"x\n9\n",
        "samples/acme/orders": b"o\n1\n",
        "samples/beta": b'{"e":1}\n',
    }
    got = samples_under(tmp_path)

    def where(key: str) -> str:
        return next(d for d in expected if key.startswith(d + "/"))

    assert sorted(where(k) for k in got) == sorted(expected)  # one each, nothing anywhere else
    assert {where(k): v for k, v in got.items()} == expected


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_daemon_and_sampler_follow_a_dataset_made_while_running(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    cfg = config(tmp_path)
    (tmp_path / "drop/acme/orders").mkdir(parents=True)
    (tmp_path / "drop/beta").mkdir(parents=True)
    put(tmp_path / "data/sp/gics/1.0/raw/env0/data.csv", b"a\n1\n2\n")
    dlog, slog = tmp_path / "daemon.log", tmp_path / "sampler.log"
    with open(dlog, "wb") as d, open(slog, "wb") as s:
        procs.append(
            subprocess.Popen([sys.executable, "-m", "ingestor.cli", "run", "--config", str(cfg)], stderr=d)
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "sampler.cli", "run", "--config", str(cfg), "--follow"], stderr=s
            )
        )
    daemon, sampler = procs

    def sampled() -> set[str]:
        return {str(e["path"]) for e in named(events(slog.read_bytes()), "sample_written")}

    first = tmp_path / "data/sp/gics/1.0/samples"
    wait_for(lambda: first.is_dir() and any(first.rglob("*_sample.csv")), 60, "the first dataset sampled")
    # a vendor, dataset and version made and filled in one go while both run
    put(tmp_path / "data/zeta/fx/3/raw/env0/rates.csv", b"r\n5\n6\n", old=False)
    new = tmp_path / "data/zeta/fx/3/samples"
    wait_for(lambda: new.is_dir() and any(new.rglob("*--rates_sample.csv")), 60, "the new dataset sampled")
    (sample,) = new.rglob("*--rates_sample.csv")
    assert sample.read_bytes() == b"r\n5\n"
    put(tmp_path / "drop/beta/late.jsonl", b"{}\n", old=False)
    wait_for(lambda: any(p.endswith("late.jsonl") for p in sampled()), 60, "a literal source's file")

    for proc in (sampler, daemon):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert all(p.startswith(str(tmp_path)) for p in sampled())
    assert len(sampled()) == 3
