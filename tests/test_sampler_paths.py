"""Sample naming and safe access to both trees (symlinks, FIFOs, escapes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sampler.limits import ErrorKind, SampleError
from sampler.paths import (
    Kind,
    PathRejected,
    detect,
    open_dir,
    open_source,
    sample_names,
    tmp_name,
    warehouse_parts,
    warehouse_roots,
    write_atomic,
)


@pytest.mark.parametrize(
    ("name", "kind", "sample"),
    [
        ("b.csv", Kind.CSV, "b_sample.csv"),
        ("B.CSV", Kind.CSV, "B_sample.CSV"),
        ("a.b.tsv", Kind.TSV, "a.b_sample.tsv"),
        ("x.csv.gz", Kind.GZIP, "x_sample.csv.gz"),
        ("x.jsonl.gz", Kind.GZIP, "x_sample.jsonl.gz"),
        ("x.log.gz", Kind.GZIP, "x.log_sample.gz"),
        ("x.tar.gz", Kind.TAR_GZ, "x_sample.tar.gz.txt"),
        ("x.tgz", Kind.TAR_GZ, "x_sample.tgz.txt"),
        ("x.tar", Kind.TAR, "x_sample.tar.txt"),
        ("x.zip", Kind.ZIP, "x_sample.zip"),
        ("x.parquet", Kind.PARQUET, "x_sample.parquet"),
        ("x.json", Kind.JSON, "x_sample.json"),
        ("x.ndjson", Kind.JSONL, "x_sample.ndjson"),
        ("x.bin", Kind.META, "x_sample.bin.meta.json"),
        ("README", Kind.META, "README_sample.meta.json"),
        (".hidden", Kind.META, ".hidden_sample.meta.json"),
    ],
)
def test_naming(name: str, kind: Kind, sample: str) -> None:
    fmt = detect(name)
    names = sample_names(name, fmt)
    assert fmt.kind is kind
    assert names.sample == sample
    assert names.sidecar == names.base + ".source.json"
    assert names.meta == names.base + ".meta.json"


def test_gzip_inner_format() -> None:
    assert detect("a.csv.gz").inner is Kind.CSV
    assert detect("a.tsv.gz").inner is Kind.TSV
    assert detect("a.ndjson.gz").inner is Kind.JSONL
    assert detect("a.gz").inner is None


def test_names_never_collide_across_sources() -> None:
    names = ["a.csv", "a.csv.meta", "a.csv.meta.json", "a_sample.csv", "a.tar", "a.tar.txt", "a"]
    produced: set[str] = set()
    for n in names:
        s = sample_names(n, detect(n))
        mine = {s.sample, s.meta, s.sidecar}
        assert not mine & produced, n
        produced |= mine


def test_overlong_sample_name_is_rejected() -> None:
    with pytest.raises(PathRejected):
        sample_names("x" * 250 + ".csv", detect("x.csv"))


@pytest.mark.parametrize(
    "path",
    [
        "/elsewhere/a.csv",
        "/wh/../etc/passwd",
        "/wh/a/./b.csv",
        "/wh//a.csv",
        "/wh/a\x00.csv",
        "/wh",
    ],
)
def test_paths_outside_or_odd_are_rejected(path: str) -> None:
    with pytest.raises(PathRejected):
        warehouse_parts(path, ("/wh",))


def test_paths_under_the_root_or_its_realpath(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    roots = warehouse_roots(str(tmp_path / "link"))
    assert warehouse_parts(f"{real}/d/x.csv", roots) == ["d", "x.csv"]
    assert warehouse_parts(f"{tmp_path}/link/d/x.csv", roots) == ["d", "x.csv"]


def _root_fd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def test_open_source_refuses_symlinks_fifos_and_reports_missing(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    (wh / "d").mkdir(parents=True)
    (wh / "d" / "ok.csv").write_bytes(b"a\n")
    (tmp_path / "secret").write_bytes(b"s\n")
    (wh / "d" / "link.csv").symlink_to(tmp_path / "secret")
    (wh / "dirlink").symlink_to(tmp_path)
    os.mkfifo(wh / "d" / "pipe.csv")
    root = _root_fd(wh)
    try:
        fd, st = open_source(root, ["d", "ok.csv"])
        os.close(fd)
        assert st.st_size == 2
        for parts, kind in [
            (["d", "link.csv"], ErrorKind.NOT_REGULAR),
            (["dirlink", "secret"], ErrorKind.NOT_REGULAR),
            (["d", "pipe.csv"], ErrorKind.NOT_REGULAR),  # and it does not block
            (["d", "gone.csv"], ErrorKind.MISSING),
            (["nodir", "x.csv"], ErrorKind.MISSING),
        ]:
            with pytest.raises(SampleError) as err:
                open_source(root, parts)
            assert err.value.kind is kind, parts
    finally:
        os.close(root)


def test_open_dir_never_creates_through_a_symlink(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (samples / "evil").symlink_to(outside)
    root = _root_fd(samples)
    try:
        with pytest.raises(NotADirectoryError):
            open_dir(root, ["evil", "sub"], create=True)
        fd = open_dir(root, ["a", "b"], create=True)
        os.close(fd)
    finally:
        os.close(root)
    assert list(outside.iterdir()) == []
    assert (samples / "a" / "b").is_dir()


def test_write_atomic_replaces_and_cleans_up(tmp_path: Path) -> None:
    root = _root_fd(tmp_path)
    try:
        write_atomic(root, "out.txt", lambda f: f.write(b"one"))
        with pytest.raises(RuntimeError):

            def boom(f: object) -> None:
                f.write(b"partial")
                raise RuntimeError("sampler failed midway")

            write_atomic(root, "out.txt", boom)
    finally:
        os.close(root)
    assert (tmp_path / "out.txt").read_bytes() == b"one"
    assert not (tmp_path / tmp_name("out.txt")).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
