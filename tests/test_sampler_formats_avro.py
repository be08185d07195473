"""The Avro sampler against files written and read back by fastavro (an independent implementation)."""

from __future__ import annotations

import datetime as dt
import io
import os
import zlib
from pathlib import Path
from typing import Any

import fastavro
import pytest

from sampler.formats_avro import sample_avro
from sampler.limits import ErrorKind, Limits, SampleError
from tests.sampler_helpers import sample_path

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Event",
    "namespace": "test.ns",
    "doc": "kept byte for byte",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "score", "type": ["null", "double"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
    ],
}


def records(n: int) -> list[dict[str, Any]]:
    t0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    return [
        {"id": i, "name": f"n{i}", "score": None if i % 3 == 0 else i / 2, "tags": [str(i)] * (i % 4),
         "at": t0 + dt.timedelta(seconds=i), "kind": "AB"[i % 2]}
        for i in range(n)
    ]  # fmt: skip


def write(path: Path, n: int, codec: str, sync_interval: int = 2000) -> None:
    with open(path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(SCHEMA), records(n), codec=codec,
                        sync_interval=sync_interval, metadata={"origin": "unit-test"})  # fmt: skip


def header(data: bytes) -> dict[str, Any]:
    r = fastavro.reader(io.BytesIO(data))
    return {"schema": r.writer_schema, "codec": r.codec, "meta": r.metadata}


@pytest.mark.parametrize("codec", ["null", "deflate", "bzip2", "xz", "snappy", "zstandard"])
def test_first_records_same_schema_codec_metadata(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "e.avro"
    write(path, 20_000, codec)
    out, result, spent = sample_path(path, sample_avro, Limits(rows=150), strict=True)
    sample = list(fastavro.reader(io.BytesIO(out)))
    assert sample == list(fastavro.reader(io.BytesIO(path.read_bytes())))[:150]
    assert header(out) == header(path.read_bytes())
    assert header(out)["codec"] == codec and header(out)["meta"]["origin"] == "unit-test"
    assert (result.rows, result.truncated, result.note) == (150, False, "first records")
    assert spent < path.stat().st_size / 2  # the first blocks (decompressed too), not the file


def test_short_file_is_all_records(tmp_path: Path) -> None:
    path = tmp_path / "e.avro"
    write(path, 7, "deflate")
    out, result, _ = sample_path(path, sample_avro, Limits(rows=100), strict=True)
    assert list(fastavro.reader(io.BytesIO(out))) == records(7) and result.note is None


def test_empty_file_keeps_its_header(tmp_path: Path) -> None:
    path = tmp_path / "e.avro"
    write(path, 0, "null")
    out, result, _ = sample_path(path, sample_avro, Limits(rows=100), strict=True)
    assert list(fastavro.reader(io.BytesIO(out))) == [] and result.rows == 0
    assert header(out) == header(path.read_bytes())


def _block_offsets(data: bytes) -> list[int]:
    """Offsets of each block's count varint (after the header)."""
    return [b.offset for b in fastavro.block_reader(io.BytesIO(data))]


def test_huge_block_declared_past_the_end_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "e.avro"
    write(path, 100, "null", sync_interval=10_000)
    data = path.read_bytes()
    at = _block_offsets(data)[0]
    count_len = 1 if data[at] < 0x80 else 2
    lying = bytes([0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])  # zigzag of ~2^55
    start = at + count_len
    end = start + next(i for i, b in enumerate(data[start:]) if b < 0x80) + 1
    path.write_bytes(data[:start] + lying + data[end:])
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_avro, Limits(rows=10), strict=True)
    assert err.value.kind is ErrorKind.MALFORMED


def test_block_that_inflates_past_the_cap_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "bomb.avro"
    schema = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
    with open(path, "wb") as f:  # one record of 64 MiB of 'a': a deflate block of ~64 KB
        fastavro.writer(f, schema, [{"s": "a" * (64 << 20)}], codec="deflate")
    assert path.stat().st_size < 1 << 20
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_avro, Limits(rows=10, max_bytes=8 << 20), strict=True)
    assert err.value.kind is ErrorKind.TOO_LARGE


def test_cap_after_some_blocks_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "e.avro"
    write(path, 5000, "null", sync_interval=4000)
    out, result, _ = sample_path(path, sample_avro, Limits(rows=5000, max_bytes=30_000), strict=True)
    got = list(fastavro.reader(io.BytesIO(out)))
    assert result.truncated and 0 < len(got) < 5000 and got == records(5000)[: len(got)]


def test_hostile_and_broken_headers(tmp_path: Path) -> None:
    path = tmp_path / "x.avro"
    schema = {"type": "record", "name": "R",
              "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}]}  # fmt: skip
    with open(path, "wb") as f:
        fastavro.writer(f, schema, [{"a": [None] * 3}])
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_avro, Limits(rows=10), strict=True)
    assert err.value.kind is ErrorKind.HOSTILE
    write(path, 100, "deflate")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last sync marker
    path.write_bytes(bytes(data))
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_avro, Limits(rows=1000), strict=True)
    assert err.value.kind is ErrorKind.MALFORMED
    path.write_bytes(b"Obj\x01" + os.urandom(64))
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_avro, Limits(rows=10), strict=True)
    assert err.value.kind in (ErrorKind.MALFORMED, ErrorKind.TOO_LARGE)


def test_corrupt_deflate_block_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "e.avro"
    write(path, 200, "deflate", sync_interval=100_000)
    data = bytearray(path.read_bytes())
    at = _block_offsets(bytes(data))[0]
    data[at + 8 : at + 40] = zlib.compress(b"x")[:32]
    path.write_bytes(bytes(data))
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_avro, Limits(rows=10), strict=True)
    assert err.value.kind is ErrorKind.MALFORMED
