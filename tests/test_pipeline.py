"""The two processes together: the daemon lands files, the sampler follows its manifests."""

from __future__ import annotations

import csv
import gzip
import io
import json
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import Env
from tests.waiting import wait_for


def _drop_formats(landing: Path, tag: str) -> dict[str, bytes]:
    rows = "".join(f'{i},"name {tag} {i}","multi\nline {i}"\n' for i in range(500))
    csv_bytes = f"id,name,note\n{rows}".encode()
    files: dict[str, bytes] = {
        f"{tag}/data.csv": csv_bytes,
        f"{tag}/events.jsonl": "".join(json.dumps({"i": i, "tag": tag}) + "\n" for i in range(500)).encode(),
        f"{tag}/array.json": json.dumps([{"i": i} for i in range(500)]).encode(),
        f"{tag}/data.csv.gz": gzip.compress(csv_bytes),
        f"{tag}/blob.bin": b"\x00\x01binary " + tag.encode(),
    }
    table = pa.table({"i": list(range(1000)), "s": [f"{tag}-{i}" for i in range(1000)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=100)
    files[f"{tag}/table.parquet"] = buf.getvalue()
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("first.txt", f"hello {tag}\n")
        z.writestr("second.txt", "world\n")
    files[f"{tag}/bundle.zip"] = zbuf.getvalue()
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as t:
        info = tarfile.TarInfo("member.txt")
        info.size = 4
        t.addfile(info, io.BytesIO(b"data"))
    files[f"{tag}/archive.tar"] = tbuf.getvalue()
    staging = landing.parent / f"staging-{tag}"
    for rel, data in files.items():
        p = staging / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (staging / tag).rename(landing / tag)  # arrives at once, like an rsync of a directory
    return files


def sampler(env: Env, samples: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "sampler.cli", "run",
        "--manifests", str(env.manifests), "--warehouse", str(env.warehouse),
        "--samples", str(samples), "--checkpoint", str(env.root / "sampler.checkpoint"),
        "--rows", "10", *args,
    ]  # fmt: skip


def test_daemon_then_sampler_once_then_follow(env: Env, daemon) -> None:
    samples = env.root / "samples"
    daemon(stability="0.2")
    first = _drop_formats(env.landing, "a")
    wait_for(lambda: len(env.records()) == len(first), 30, "the first drop")
    # a resend after the original landed: a duplicate, never sampled (sent together,
    # either name may win the race to be the original)
    (env.landing / "a-dup.csv").write_bytes(first["a/data.csv"])
    wait_for(lambda: len(env.records()) == len(first) + 1, 30, "the resend")

    res = subprocess.run(sampler(env, samples, "--once"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    day = next(p for p in samples.iterdir() if p.name.startswith("ingest_date="))
    got = sorted(str(p.relative_to(day)) for p in day.rglob("*") if p.is_file() and ".source" not in p.name)
    assert "a/data_sample.csv" in got and "a/table_sample.parquet" in got and "a/events_sample.jsonl" in got
    assert "a/data_sample.csv.gz" in got and "a/bundle_sample.zip" in got and "a/array_sample.json" in got
    assert any(g.startswith("a/archive_sample.tar") for g in got) and any(
        g.startswith("a/blob_sample.bin") for g in got
    )
    assert not any("dup" in g for g in got)
    # same formats as the sources, openable by the same tools
    with open(day / "a/data_sample.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "name", "note"] and len(rows) == 11 and rows[1][2] == "multi\nline 0"
    assert pq.read_table(day / "a/table_sample.parquet").num_rows == 10
    assert len(gzip.decompress((day / "a/data_sample.csv.gz").read_bytes()).splitlines()) >= 10
    assert len(json.loads((day / "a/array_sample.json").read_text())) == 10

    # a second --once does no work: every sample is current
    again = subprocess.run(sampler(env, samples, "--once"), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and '"sample_written"' not in again.stderr

    # --follow picks up what lands next
    log = open(env.root / "sampler.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        sampler(env, samples, "--follow", "--poll-interval", "0.5"), stderr=log, stdout=log
    )
    try:
        _drop_formats(env.landing, "b")
        wait_for(
            lambda: (day / "b/table_sample.parquet").exists() and (day / "b/data_sample.csv").exists(), 60
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
