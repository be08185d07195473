"""zstd, bzip2, xz and LZ4-frame files wrapping text, against real files read back by pandas and DuckDB."""

from __future__ import annotations

import bz2
import io
import json
import lzma
import os
import tarfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from sampler.formats_compressed import sample_compressed
from sampler.limits import CapReached, ErrorKind, Limits, SampleError
from sampler.paths import Kind
from tests.sampler_helpers import sample_path

CODECS = [Kind.ZSTD, Kind.BZIP2, Kind.XZ, Kind.LZ4]
SUFFIX = {Kind.ZSTD: ".zst", Kind.BZIP2: ".bz2", Kind.XZ: ".xz", Kind.LZ4: ".lz4", Kind.GZIP: ".gz"}
PANDAS_CODEC = {Kind.ZSTD: "zstd", Kind.BZIP2: "bz2", Kind.XZ: "xz", Kind.GZIP: "gzip"}


def compress(kind: Kind, data: bytes) -> bytes:
    """Compressed by an encoder other than the sampler's where there is one (stdlib for bz2/xz)."""
    if kind is Kind.BZIP2:
        return bz2.compress(data)
    if kind is Kind.XZ:
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, {Kind.ZSTD: "zstd", Kind.LZ4: "lz4"}[kind]) as c:
        c.write(data)
    return bytes(sink.getvalue().to_pybytes())


def decompress(kind: Kind, data: bytes) -> bytes:
    if kind is Kind.BZIP2:
        return bz2.decompress(data)
    if kind is Kind.XZ:
        return lzma.decompress(data)
    stream = pa.CompressedInputStream(pa.BufferReader(data), {Kind.ZSTD: "zstd", Kind.LZ4: "lz4"}[kind])
    return bytes(stream.read())


def csv_text(rows: int) -> bytes:
    lines = [b"id,name,note,score"]
    for i in range(rows):
        lines.append(b'%d,name-%d,"two\nlines, and ""quotes""",%d.5' % (i, i, i))
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("kind", CODECS)
def test_csv_round_trip_same_codec_and_first_rows(tmp_path: Path, kind: Kind) -> None:
    data = csv_text(5000)
    path = tmp_path / f"t.csv{SUFFIX[kind]}"
    path.write_bytes(compress(kind, data))
    out, result, _ = sample_path(path, sample_compressed, Limits(rows=25), kind, Kind.CSV)
    sample = tmp_path / f"t_sample.csv{SUFFIX[kind]}"
    sample.write_bytes(out)
    assert decompress(kind, out) == b"".join(data.splitlines(keepends=True)[: 1 + 25 * 2])
    assert result.rows == 25
    original = pd.read_csv(io.BytesIO(data)).head(25)
    if kind in PANDAS_CODEC:  # pandas reads the sample file itself, by its codec
        back = pd.read_csv(sample, compression=PANDAS_CODEC[kind])
    else:
        back = pd.read_csv(io.BytesIO(decompress(kind, out)))
    pd.testing.assert_frame_equal(back, original)
    if kind in (Kind.ZSTD, Kind.GZIP):  # DuckDB reads zstd CSV natively
        con = duckdb.connect()
        got = con.execute(f"SELECT * FROM read_csv('{sample}', header=true) ORDER BY id").fetchall()
        con.close()
        assert [r[0] for r in got] == list(range(25))


@pytest.mark.parametrize("kind", CODECS)
def test_jsonl_and_json_inside(tmp_path: Path, kind: Kind) -> None:
    lines = b"".join(json.dumps({"i": i, "s": "x" * (i % 7)}).encode() + b"\n" for i in range(300))
    path = tmp_path / "e.jsonl"
    path.write_bytes(compress(kind, lines))
    out, result, _ = sample_path(path, sample_compressed, Limits(rows=10), kind, Kind.JSONL)
    assert decompress(kind, out) == b"".join(lines.splitlines(keepends=True)[:10]) and result.rows == 10
    doc = json.dumps([{"i": i} for i in range(300)]).encode()
    path.write_bytes(compress(kind, doc))
    out, result, _ = sample_path(path, sample_compressed, Limits(rows=4), kind, Kind.JSON)
    assert json.loads(decompress(kind, out)) == [{"i": i} for i in range(4)] and result.rows == 4


@pytest.mark.parametrize("kind", CODECS)
def test_unknown_inner_format_is_sniffed(tmp_path: Path, kind: Kind) -> None:
    path = tmp_path / f"data{SUFFIX[kind]}"
    path.write_bytes(compress(kind, b'a;b\n1;"x\ny"\n2;z\n3;w\n'))
    out, result, _ = sample_path(path, sample_compressed, Limits(rows=1), kind, None)
    assert decompress(kind, out) == b'a;b\n1;"x\ny"\n' and result.rows == 1  # CSV with ';', quotes kept
    path.write_bytes(compress(kind, b'{"a": 1}\n\n{"a": 2}\n{"a": 3}\n'))
    out, result, _ = sample_path(path, sample_compressed, Limits(rows=2), kind, None)
    assert decompress(kind, out) == b'{"a": 1}\n{"a": 2}\n' and result.rows == 2  # JSONL, blank line dropped
    path.write_bytes(compress(kind, b"[1, 2, 3, 4]"))
    out, _, _ = sample_path(path, sample_compressed, Limits(rows=2), kind, None)
    assert json.loads(decompress(kind, out)) == [1, 2]
    path.write_bytes(compress(kind, b"[2026-11-23 10:00] started\nplain log line\nthird\n"))
    out, _, _ = sample_path(path, sample_compressed, Limits(rows=2), kind, None)
    assert decompress(kind, out) == b"[2026-11-23 10:00] started\nplain log line\n"  # lines


@pytest.mark.parametrize("kind", CODECS)
def test_concatenated_frames_are_read_across(tmp_path: Path, kind: Kind) -> None:
    path = tmp_path / "two.log"
    path.write_bytes(compress(kind, b"a\nb\n") + compress(kind, b"c\nd\ne\n"))
    out, _, _ = sample_path(path, sample_compressed, Limits(rows=4), kind, None)
    assert decompress(kind, out) == b"a\nb\nc\nd\n"


@pytest.mark.parametrize("kind", CODECS)
def test_bomb_stops_at_the_cap(tmp_path: Path, kind: Kind) -> None:
    path = tmp_path / f"bomb{SUFFIX[kind]}"
    zeros = b"\0" * (1 << 20)
    if kind in (Kind.BZIP2, Kind.XZ):  # one-shot compressors: 200 MiB in memory is too much here
        c = bz2.BZ2Compressor(9) if kind is Kind.BZIP2 else lzma.LZMACompressor(format=lzma.FORMAT_XZ)
        path.write_bytes(b"".join([*(c.compress(zeros) for _ in range(200)), c.flush()]))
    else:
        with pa.CompressedOutputStream(str(path), {Kind.ZSTD: "zstd", Kind.LZ4: "lz4"}[kind]) as s:
            for _ in range(200):  # 200 MiB of zeros
                s.write(zeros)
    assert path.stat().st_size < 2 << 20
    limits = Limits(rows=10, max_bytes=16 << 20)
    with pytest.raises(CapReached):
        sample_path(path, sample_compressed, limits, kind, None)


@pytest.mark.parametrize("kind", CODECS)
def test_truncated_and_not_of_the_codec_are_malformed(tmp_path: Path, kind: Kind) -> None:
    data = compress(kind, os.urandom(200_000).hex().encode())  # one long line, no newline
    path = tmp_path / "t.bin"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_compressed, Limits(rows=10), kind, None)
    assert err.value.kind is ErrorKind.MALFORMED
    path.write_bytes(b"this is not compressed\n" * 10)
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_compressed, Limits(rows=10), kind, None)
    assert err.value.kind is ErrorKind.MALFORMED


@pytest.mark.parametrize("kind", CODECS)
def test_tar_inside_is_listed(tmp_path: Path, kind: Kind) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in ("a.csv", "b.csv"):
            info = tarfile.TarInfo(name)
            info.size = 4
            t.addfile(info, io.BytesIO(b"x,y\n"))
    path = tmp_path / f"x.tar{SUFFIX[kind]}"
    path.write_bytes(compress(kind, buf.getvalue()))
    out, result, _ = sample_path(path, sample_compressed, Limits(rows=10), kind, Kind.TAR)
    lines = out.decode().splitlines()
    assert lines[1].endswith('"a.csv"') and lines[2].endswith('"b.csv"') and result.rows == 2


@pytest.mark.parametrize("kind", [Kind.BZIP2, Kind.XZ])
def test_a_few_rows_decode_little(tmp_path: Path, kind: Kind) -> None:
    """bzip2 and xz are asked for 16 KiB of output first: 100 rows of a multi-block bzip2 decode
    its first block only, and of an xz a few KB. Before, 1 MiB was asked at once (two bzip2 blocks,
    1 MiB of xz output) and 1 MiB of the file read: ~2 MB spent."""
    rows = [b"id,payload,n"] + [
        b"%d,%s,%d" % (i, os.urandom(24).hex().encode(), i % 97) for i in range(60_000)
    ]
    data = b"\n".join(rows) + b"\n"
    path = tmp_path / f"t.csv{SUFFIX[kind]}"
    path.write_bytes(compress(kind, data))
    assert path.stat().st_size > 1 << 20  # 2.3 MB of text: three bzip2 blocks
    out, result, spent = sample_path(path, sample_compressed, Limits(rows=100), kind, Kind.CSV)
    assert decompress(kind, out) == b"\n".join(rows[:101]) + b"\n" and result.rows == 100
    assert spent < (600 << 10 if kind is Kind.BZIP2 else 100 << 10)  # bzip2: one block, ~440 KB compressed


def test_xz_sample_is_written_at_a_cheap_preset(tmp_path: Path) -> None:
    """The sample's xz encoder is set up at preset 0 (a 256 KiB dictionary), not 6 (8 MiB)."""
    path = tmp_path / "t.csv.xz"
    path.write_bytes(compress(Kind.XZ, csv_text(100)))
    out, _, _ = sample_path(path, sample_compressed, Limits(rows=10), Kind.XZ, Kind.CSV)
    # the block header after the 12-byte stream header: the LZMA2 filter (id 0x21, 1 byte of
    # properties) and its dictionary size, 0x0c for 256 KiB (preset 6: 0x16, 8 MiB)
    assert out[12 + 2 : 12 + 5] == b"\x21\x01\x0c"
