"""Arrow IPC (file, stream, Feather) samplers against real files read back by pyarrow, pandas, DuckDB."""

from __future__ import annotations

import os
import random
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pytest

from sampler.formats_arrow import sample_arrow_file, sample_arrow_stream
from sampler.limits import ErrorKind, Limits, SampleError
from tests.sampler_helpers import sample_path
from tests.test_sampler_formats_columnar import table


def write_ipc_file(path: Path, t: pa.Table, chunk: int) -> None:
    with ipc.new_file(path, t.schema) as w:
        w.write_table(t, max_chunksize=chunk)


def write_ipc_stream(path: Path, t: pa.Table, chunk: int) -> None:
    with ipc.new_stream(path, t.schema) as w:
        w.write_table(t, max_chunksize=chunk)


def test_arrow_file_first_rows_schema_metadata(tmp_path: Path) -> None:
    src = table(10_000)
    path = tmp_path / "t.arrow"
    write_ipc_file(path, src, 1000)
    out, result, spent = sample_path(path, sample_arrow_file, Limits(rows=25), strict=True)
    sample = ipc.open_file(pa.BufferReader(out)).read_all()
    assert sample.schema.equals(src.schema, check_metadata=True)
    assert sample.equals(src.slice(0, 25)) and result.rows == 25 and result.note == "first rows"
    assert spent < path.stat().st_size / 4  # the first batch and the footer, not the file
    (tmp_path / "s.arrow").write_bytes(out)
    pd.testing.assert_frame_equal(pd.read_feather(tmp_path / "s.arrow"), src.slice(0, 25).to_pandas())


def test_feather_compressed_round_trips_with_pandas_and_duckdb(tmp_path: Path) -> None:
    src = table(5000)
    path = tmp_path / "t.feather"
    feather.write_feather(src, path, compression="zstd", chunksize=700)
    out, result, _ = sample_path(path, sample_arrow_file, Limits(rows=800), strict=True)
    sample_file = tmp_path / "t_sample.feather"
    sample_file.write_bytes(out)
    back = feather.read_table(sample_file)
    assert back.schema.equals(src.schema, check_metadata=True) and back.equals(src.slice(0, 800))
    assert result.rows == 800  # two batches were read (700 + 100)
    pd.testing.assert_frame_equal(pd.read_feather(sample_file), pd.read_feather(path).head(800))
    con = duckdb.connect()
    con.register("sample", back)
    assert con.execute("SELECT count(*), min(id), max(id) FROM sample").fetchall() == [(800, 0, 799)]
    con.close()


def test_arrow_stream_first_rows_and_short_stream(tmp_path: Path) -> None:
    src = table(3000)
    path = tmp_path / "t.arrows"
    write_ipc_stream(path, src, 512)
    out, result, spent = sample_path(path, sample_arrow_stream, Limits(rows=600), strict=True)
    sample = ipc.open_stream(pa.BufferReader(out)).read_all()
    assert sample.schema.equals(src.schema, check_metadata=True) and sample.equals(src.slice(0, 600))
    assert result.rows == 600 and result.note == "first rows"
    assert spent < path.stat().st_size / 2
    out, result, _ = sample_path(path, sample_arrow_stream, Limits(rows=10_000), strict=True)
    assert ipc.open_stream(pa.BufferReader(out)).read_all().equals(src) and result.note is None


def test_truncated_arrow_stream_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "t.arrows"
    write_ipc_stream(path, table(3000), 3000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_arrow_stream, Limits(rows=10), strict=True)
    assert err.value.kind is ErrorKind.MALFORMED


def test_arrow_file_corrupt_or_lying_footer(tmp_path: Path) -> None:
    path = tmp_path / "t.arrow"
    write_ipc_file(path, table(100), 50)
    data = bytearray(path.read_bytes())
    data[-10:-6] = (1 << 30).to_bytes(4, "little")  # a footer length past the file
    path.write_bytes(bytes(data))
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_arrow_file, Limits(rows=10), strict=True)
    assert err.value.kind is ErrorKind.MALFORMED
    write_ipc_file(path, table(100), 50)
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[-10:-6], "little")
    data[-10 - n : -10] = os.urandom(n)
    path.write_bytes(bytes(data))
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_arrow_file, Limits(rows=10), strict=True)
    assert err.value.kind is ErrorKind.MALFORMED


def test_first_rows_of_a_batch_larger_than_the_cap(tmp_path: Path) -> None:
    """An uncompressed batch is mapped, not read: its first rows cost their own bytes. Before,
    the batch was read whole, and one larger than the cap was too large."""
    src = pa.table(
        {"id": pa.array(range(100_000), pa.int64()), "v": [os.urandom(32).hex() for _ in range(100_000)]}
    )
    for path, fn, read in (
        (tmp_path / "big.arrow", sample_arrow_file, ipc.open_file),
        (tmp_path / "big.arrows", sample_arrow_stream, ipc.open_stream),
    ):
        (write_ipc_file if fn is sample_arrow_file else write_ipc_stream)(path, src, 100_000)
        out, result, spent = sample_path(path, fn, Limits(rows=10, max_bytes=1 << 20), strict=True)
        assert read(pa.BufferReader(out)).read_all().equals(src.slice(0, 10)) and result.rows == 10
        assert (
            result.note == "first rows" and spent < 64 << 10
        )  # the footer or schema, 10 rows, a page a buffer


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compressed_batch_costs_its_body_and_output(tmp_path: Path, compression: str) -> None:
    """Compressed buffers are decompressed whole: the budget pays the body and the declared output
    before pyarrow decompresses, so a batch that expands past the cap is too large, not read."""
    path = tmp_path / "zeros.feather"
    feather.write_feather(
        pa.table({"v": pa.array([0] * 4_000_000, pa.int64())}),
        path,
        compression=compression,
        chunksize=4_000_000,
    )
    assert path.stat().st_size < 1 << 20  # 32 MB of zeros
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_arrow_file, Limits(rows=10, max_bytes=16 << 20), strict=True)
    assert err.value.kind is ErrorKind.TOO_LARGE
    _, result, spent = sample_path(path, sample_arrow_file, Limits(rows=10, max_bytes=64 << 20), strict=True)
    assert result.rows == 10 and spent > 32_000_000  # the whole batch, decompressed


def test_dictionary_columns_file_and_stream(tmp_path: Path) -> None:
    src = pa.table(
        {
            "id": pa.array(range(5000), pa.int64()),
            "kind": pa.array([f"k{i % 7}" for i in range(5000)]).dictionary_encode(),
        }
    )
    write_ipc_file(tmp_path / "d.arrow", src, 1000)
    write_ipc_stream(tmp_path / "d.arrows", src, 1000)
    out, result, _ = sample_path(tmp_path / "d.arrow", sample_arrow_file, Limits(rows=1500), strict=True)
    assert ipc.open_file(pa.BufferReader(out)).read_all().equals(src.slice(0, 1500)) and result.rows == 1500
    out, result, _ = sample_path(tmp_path / "d.arrows", sample_arrow_stream, Limits(rows=1500), strict=True)
    assert ipc.open_stream(pa.BufferReader(out)).read_all().equals(src.slice(0, 1500)) and result.rows == 1500
    path = tmp_path / "delta.arrows"  # a dictionary that grows between batches: delta messages in the stream
    opts = ipc.IpcWriteOptions(emit_dictionary_deltas=True)
    with ipc.new_stream(path, src.schema, options=opts) as w:
        for i in range(5):
            w.write_table(pa.table({"id": pa.array(range(i * 10, i * 10 + 10), pa.int64()),
                                    "kind": pa.array([f"k{j}" for j in range(i * 2)] + ["k0"] * (10 - i * 2))
                                    .dictionary_encode()}))  # fmt: skip
    out, result, _ = sample_path(path, sample_arrow_stream, Limits(rows=35), strict=True)
    full = ipc.open_stream(path).read_all()
    back = ipc.open_stream(pa.BufferReader(out)).read_all()
    assert back.column("kind").to_pylist() == full.column("kind").to_pylist()[:35] and result.rows == 35


def test_stream_of_exactly_n_rows_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "t.arrows"
    write_ipc_stream(path, table(300), 100)
    _, result, _ = sample_path(path, sample_arrow_stream, Limits(rows=300), strict=True)
    assert result.rows == 300 and result.note is None
    _, result, _ = sample_path(path, sample_arrow_stream, Limits(rows=200), strict=True)
    assert result.rows == 200 and result.note == "first rows"


@pytest.mark.parametrize("fmt", ["file", "stream"])
def test_damaged_metadata_is_an_error_never_a_crash(tmp_path: Path, fmt: str) -> None:
    """Bytes flipped anywhere in the metadata (footer, messages' flatbuffers): a sample or a
    ``SampleError``, never another exception, and the mapping never read out of bounds."""
    path = tmp_path / f"t.{fmt}"
    (write_ipc_file if fmt == "file" else write_ipc_stream)(path, table(400), 100)
    clean = path.read_bytes()
    fn = sample_arrow_file if fmt == "file" else sample_arrow_stream
    rnd = random.Random(17)
    kinds = set()
    for _ in range(300):
        data = bytearray(clean)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        path.write_bytes(bytes(data))
        try:
            sample_path(path, fn, Limits(rows=150), strict=True)
            kinds.add("sample")
        except SampleError as exc:
            kinds.add(exc.kind)
    assert kinds <= {"sample", ErrorKind.MALFORMED, ErrorKind.TOO_LARGE}


def test_a_long_first_value_is_paid_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "long.arrow"
    write_ipc_file(path, pa.table({"v": ["x" * (8 << 20)] + ["y"] * 10}), 100)
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_arrow_file, Limits(rows=5, max_bytes=4 << 20), strict=True)
    assert err.value.kind is ErrorKind.TOO_LARGE
