"""The ORC sampler against real files read back by pyarrow and pandas (Arrow IPC: test_sampler_formats_arrow)."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.orc as orc
import pytest

from sampler.formats_columnar import sample_orc
from sampler.limits import ErrorKind, Limits, SampleError
from tests.sampler_helpers import sample_path


def table(rows: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": pa.array([f"name-{i}" for i in range(rows)], pa.string()),
            "score": pa.array([i / 4 for i in range(rows)], pa.float64()),
            "day": pa.array(
                [dt.date(2026, 1, 1) + dt.timedelta(days=i % 300) for i in range(rows)], pa.date32()
            ),
            "tags": pa.array([[str(i), "t"] for i in range(rows)], pa.list_(pa.string())),
        }
    ).replace_schema_metadata({b"owner": b"data-team", b"source": b"unit-test"})


@pytest.mark.parametrize("codec", ["zstd", "snappy", "uncompressed"])
def test_orc_first_stripe_rows_schema_codec(tmp_path: Path, codec: str) -> None:
    src = table(50_000).append_column("noise", pa.array([os.urandom(16).hex() for _ in range(50_000)]))
    path = tmp_path / "t.orc"
    orc.write_table(src, path, compression=codec, stripe_size=256 << 10)
    assert orc.ORCFile(path).nstripes >= 4
    out, result, spent = sample_path(path, sample_orc, Limits(rows=30), strict=True)
    (tmp_path / "s.orc").write_bytes(out)
    back = orc.ORCFile(tmp_path / "s.orc")
    source = orc.ORCFile(path)
    assert back.schema.equals(source.schema) and back.compression == source.compression
    assert back.read().equals(source.read().slice(0, 30)) and result.rows == 30
    pd.testing.assert_frame_equal(pd.read_orc(tmp_path / "s.orc"), pd.read_orc(path).head(30))
    assert spent < path.stat().st_size / 2


def test_orc_corrupt_footer_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "t.orc"
    orc.write_table(table(1000), path)
    data = bytearray(path.read_bytes())
    ps_len = data[-1]
    data[-1 - ps_len - 200 : -1 - ps_len] = b"\xff" * 200  # the footer before the postscript
    path.write_bytes(bytes(data))
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_orc, Limits(rows=10), strict=True)
    assert err.value.kind is ErrorKind.MALFORMED
    path.write_bytes(b"ORC" + os.urandom(500))
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_orc, Limits(rows=10), strict=True)
    assert err.value.kind is ErrorKind.MALFORMED


def test_orc_empty_file_keeps_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "e.orc"
    src = table(0)
    orc.write_table(src, path)
    out, result, _ = sample_path(path, sample_orc, Limits(rows=10), strict=True)
    back = orc.ORCFile(io.BytesIO(out))
    assert back.schema.equals(orc.ORCFile(path).schema) and back.nrows == 0 and result.rows == 0


@pytest.mark.parametrize("codec", ["zstd", "uncompressed"])
def test_orc_first_rows_of_a_stripe_larger_than_the_cap(tmp_path: Path, codec: str) -> None:
    """The first rows cost the first blocks of each column stream, not the stripe: before, the whole
    stripe was read (a 64 MiB zstd stripe at 2 GB: 67 MB read, 404 MB peak RSS, no sample)."""
    rows = 150_000
    src = pa.table(
        {"id": pa.array(range(rows), pa.int64()), "v": [os.urandom(32).hex() for _ in range(rows)]}
    )
    path = tmp_path / "big.orc"
    orc.write_table(src, path, compression=codec, stripe_size=64 << 20)
    assert orc.ORCFile(path).nstripes == 1 and path.stat().st_size > 4 << 20
    out, result, spent = sample_path(path, sample_orc, Limits(rows=10, max_bytes=1 << 20), strict=True)
    back = orc.ORCFile(io.BytesIO(out))
    assert back.read().equals(src.slice(0, 10)) and result.rows == 10 and result.note == "first rows"
    assert spent < 1 << 20  # the tail read 3 times, 128 KiB of each stream; closing the scan read nothing


@pytest.mark.parametrize("codec", ["zstd", "uncompressed"])
def test_orc_first_rows_over_the_cap_are_too_large_not_malformed(tmp_path: Path, codec: str) -> None:
    """liborc reports the cap's exception as a parse error: it is still too large (found by
    bench_sampler at 2 GB with 64 MiB zstd stripes, reported as malformed)."""
    src = pa.table({f"c{i}": [os.urandom(32).hex() for _ in range(20_000)] for i in range(8)})
    path = tmp_path / "wide.orc"
    orc.write_table(src, path, compression=codec, stripe_size=64 << 20)
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_orc, Limits(rows=10, max_bytes=256 << 10), strict=True)
    assert err.value.kind is ErrorKind.TOO_LARGE


def test_orc_stripes_shorter_than_n_rows(tmp_path: Path) -> None:
    src = table(20_000)
    path = tmp_path / "small-stripes.orc"
    orc.write_table(src, path, stripe_size=16 << 10)
    assert orc.ORCFile(path).nstripes > 5
    first = orc.ORCFile(path).read_stripe(0).num_rows
    out, result, _ = sample_path(path, sample_orc, Limits(rows=first * 3 + 7), strict=True)
    assert orc.ORCFile(io.BytesIO(out)).read().equals(src.slice(0, first * 3 + 7))
    assert result.rows == first * 3 + 7
