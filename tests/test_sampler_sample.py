"""One record -> sample + sidecar, or an error .meta.json; currency; hostile files."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import structlog

from sampler.limits import ErrorKind, Limits
from sampler.sample import Event, Sampler
from tests.sampler_helpers import Layout, hostile_files, parquet_bytes, record

DAY = "ingest_date=2026-11-23"


@pytest.fixture
def lay(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path)
    lay.samples.mkdir()
    return lay


@pytest.fixture
def sampler(lay: Layout) -> Iterator[Sampler]:
    log = structlog.wrap_logger(None, processors=[structlog.testing.LogCapture()])
    s = Sampler(lay.warehouse, lay.samples, Limits(rows=2, max_bytes=8 << 20), log=log)
    yield s
    s.close()


def _sidecar(lay: Layout, rel: str) -> dict[str, object]:
    data: dict[str, object] = orjson.loads((lay.samples / rel).read_bytes())
    return data


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m.txt", b"member\n")
    return buf.getvalue()


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("f.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


FORMATS = [
    ("a/b.csv", b'h\n"1\n1"\n2\n3\n', "a/b_sample.csv", lambda d: d == b'h\n"1\n1"\n2\n'),
    ("b.tsv", b"h\tx\n1\t2\n3\t4\n5\t6\n", "b_sample.tsv", lambda d: d.count(b"\n") == 3),
    ("c.json", b'[{"a":1},{"a":2},{"a":3}]', "c_sample.json", lambda d: json.loads(d) == [{"a": 1}, {"a": 2}]),
    ("d.jsonl", b"1\n2\n3\n", "d_sample.jsonl", lambda d: d == b"1\n2\n"),
    ("e.ndjson", b"1\n2\n3\n", "e_sample.ndjson", lambda d: d == b"1\n2\n"),
    ("f.log.gz", gzip.compress(b"1\n2\n3\n"), "f.log_sample.gz", lambda d: gzip.decompress(d) == b"1\n2\n"),
    ("g.csv.gz", gzip.compress(b"h\n1\n2\n3\n"), "g_sample.csv.gz", lambda d: gzip.decompress(d) == b"h\n1\n2\n"),
    ("h.jsonl.gz", gzip.compress(b"1\n2\n3\n"), "h_sample.jsonl.gz", lambda d: gzip.decompress(d) == b"1\n2\n"),
    ("i.parquet", parquet_bytes(), "i_sample.parquet",
     lambda d: pq.read_table(io.BytesIO(d)).column("a").to_pylist() == [0, 1]
     and pq.read_schema(io.BytesIO(d)).metadata[b"k"] == b"v"),
    ("j.zip", _zip_bytes(), "j_sample.zip",
     lambda d: zipfile.ZipFile(io.BytesIO(d)).read("first_member/m.txt") == b"member\n"),
    ("k.tar", _tar_bytes(), "k_sample.tar.txt", lambda d: d.splitlines()[1].endswith(b'"f.txt"')),
    ("l.tgz", gzip.compress(_tar_bytes()), "l_sample.tgz.txt", lambda d: b'"f.txt"' in d),
    ("m.pdf", b"%PDF-1.4\n...", "m_sample.pdf.meta.json",
     lambda d: json.loads(d)["type_guess"]["mime"] == "application/pdf"),
]  # fmt: skip


@pytest.mark.parametrize(("rel", "data", "sample", "check"), FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_and_rerun_does_no_work(
    lay: Layout, sampler: Sampler, rel: str, data: bytes, sample: str, check: object
) -> None:
    rec = record(lay.file(f"{DAY}/{rel}", data))
    out = sampler.sample(rec)
    assert out.event is Event.WRITTEN, out
    path = lay.samples / DAY / sample
    assert out.sample == f"{DAY}/{sample}"
    assert check(path.read_bytes()), path.read_bytes()  # type: ignore[operator]
    base = sample.removesuffix(".meta.json").removesuffix(".txt")
    side = _sidecar(lay, f"{DAY}/{base}.source.json")
    assert side["sha256"] == rec.sha256 and side["id"] == rec.id and side["outcome"] == "sample"
    before = path.stat().st_mtime_ns
    assert sampler.sample(rec).event is Event.CURRENT
    assert path.stat().st_mtime_ns == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".sampler-tmp")]


def test_meta_for_unknown_format_has_size_mtime_sha(lay: Layout, sampler: Sampler) -> None:
    path = lay.file("x.bin", b"\x00\x01binary")
    rec = record(path)
    sampler.sample(rec)
    meta = json.loads((lay.samples / "x_sample.bin.meta.json").read_bytes())
    assert meta["size"] == 8 and meta["sha256"] == rec.sha256 and meta["error"] is None
    assert meta["mtime"].endswith("Z") and meta["type_guess"]["mime"] == "application/octet-stream"


HOSTILE = list(hostile_files().items())


@pytest.mark.parametrize(("name", "case"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_files_give_an_error_meta(
    lay: Layout, sampler: Sampler, name: str, case: tuple[bytes, ErrorKind]
) -> None:
    data, kind = case
    rec = record(lay.file(name, data))
    out = sampler.sample(rec)
    assert out.event is Event.ERROR and out.error_kind is kind, out
    meta_name = out.sample
    assert meta_name is not None and meta_name.endswith(".meta.json")
    meta = json.loads((lay.samples / meta_name).read_bytes())
    assert meta["error"]["kind"] == str(kind) and meta["sha256"] == rec.sha256
    assert sampler.sample(rec).event is Event.CURRENT  # an error is recorded once too


@pytest.mark.parametrize("name", ["huge.csv", "huge.jsonl"])
def test_single_1gb_line_is_an_error(lay: Layout, sampler: Sampler, name: str) -> None:
    path = lay.warehouse / name
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # sparse: one 1 GiB line
    rec = record(path, sha256="0" * 64)
    out = sampler.sample(rec)
    assert out.event is Event.ERROR and out.error_kind is ErrorKind.TOO_LARGE


def test_missing_file_gives_an_error_meta(lay: Layout, sampler: Sampler) -> None:
    rec = record(lay.warehouse / DAY / "gone.csv", sha256="a" * 64, size=10)
    out = sampler.sample(rec)
    assert out.event is Event.ERROR and out.error_kind is ErrorKind.MISSING
    meta = json.loads((lay.samples / DAY / "gone_sample.csv.meta.json").read_bytes())
    assert meta["error"]["kind"] == "missing" and meta["size"] == 10


def test_file_that_changed_since_the_manifest(lay: Layout, sampler: Sampler) -> None:
    path = lay.file("c.csv", b"a\n1\n")
    rec = record(path)
    path.write_bytes(b"a\n1\n2\n")
    out = sampler.sample(rec)
    assert out.error_kind is ErrorKind.CHANGED


def test_paths_outside_the_warehouse_are_rejected(lay: Layout, sampler: Sampler) -> None:
    outside = lay.root / "outside.csv"
    outside.write_bytes(b"a\n")
    for path in (outside, lay.warehouse / ".." / "outside.csv"):
        rec = record(outside)
        rec = type(rec)(**{**{f: getattr(rec, f) for f in rec.__dataclass_fields__},
                           "warehouse_path": str(path)})  # fmt: skip
        assert sampler.sample(rec).event is Event.REJECTED
    assert sorted(p.name for p in lay.samples.rglob("*")) == []


def test_symlink_in_warehouse_is_not_followed(lay: Layout, sampler: Sampler) -> None:
    secret = lay.root / "secret.csv"
    secret.write_bytes(b"password\n")
    link = lay.warehouse / "leak.csv"
    link.symlink_to(secret)
    out = sampler.sample(record(link, sha256="b" * 64, size=9))
    assert out.error_kind is ErrorKind.NOT_REGULAR
    assert b"password" not in (lay.samples / "leak_sample.csv.meta.json").read_bytes()


def test_non_utf8_names_round_trip(lay: Layout, sampler: Sampler) -> None:
    name = os.fsdecode(b"caf\xe9.csv")
    rec = record(lay.file(name, b"h\n1\n"))
    assert rec.warehouse_path_b64 is not None
    assert sampler.sample(rec).event is Event.WRITTEN
    assert (lay.samples / os.fsdecode(b"caf\xe9_sample.csv")).read_bytes() == b"h\n1\n"


def test_new_outcome_replaces_the_stale_one(lay: Layout, sampler: Sampler) -> None:
    rec = record(lay.warehouse / "late.csv", sha256="c" * 64, size=4)
    assert sampler.sample(rec).event is Event.ERROR
    path = lay.file("late.csv", b"h\n1\n")
    rec2 = record(path)
    assert sampler.sample(rec2).event is Event.WRITTEN
    assert sorted(p.name for p in lay.samples.iterdir()) == [
        "late_sample.csv",
        "late_sample.csv.source.json",
    ]
