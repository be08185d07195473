"""Row-format samplers against real files: CSV/TSV, JSONL, Parquet, type guesses."""

from __future__ import annotations

import csv
import io
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sampler.formats import CsvScanner, sample_csv, sample_lines
from sampler.formats_columnar import sample_parquet
from sampler.limits import BoundedFile, Budget, CapReached, ErrorKind, Limits, SampleError
from sampler.sniff import guess_type


def _open(path: Path, limits: Limits, strict: bool = False) -> tuple[int, BoundedFile]:
    fd = os.open(path, os.O_RDONLY)
    return fd, BoundedFile(fd, os.fstat(fd).st_size, Budget(limits), strict=strict)


def run_csv(tmp_path: Path, data: bytes, rows: int, delimiter: bytes = b",", **kw: int) -> bytes:
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    fd, f = _open(path, Limits(rows=rows, **kw))
    try:
        out = io.BytesIO()
        sample_csv(f, out, Limits(rows=rows, **kw), delimiter=delimiter)
        return out.getvalue()
    finally:
        os.close(fd)


def _physical_lines(text: str) -> Iterator[str]:
    """Lines as ``open(newline='')`` yields them: \\r\\n, \\r and \\n all end one."""
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and text[j] not in "\r\n":
            j += 1
        if j < len(text) and text[j] == "\r" and j + 1 < len(text) and text[j + 1] == "\n":
            j += 1
        yield text[i : j + 1]
        i = j + 1


def oracle_records(data: bytes, delimiter: str = ",", quotechar: str = '"') -> list[bytes]:
    """Raw bytes of each record as the csv module reads them (independent of the scanner)."""
    consumed: list[str] = []

    def feed() -> Iterator[str]:
        for line in _physical_lines(data.decode("latin-1")):
            consumed.append(line)
            yield line

    records = []
    old_limit = csv.field_size_limit(1 << 30)
    try:
        for _ in csv.reader(feed(), delimiter=delimiter, quotechar=quotechar, strict=False):
            records.append("".join(consumed).encode("latin-1"))
            consumed.clear()
    finally:
        csv.field_size_limit(old_limit)
    return records


TRICKY = (
    b"id,text,n\r\n"
    b'1,"line one\nline two",3\r\n'
    b'2,"say ""hi""",4\r\n'
    b'3,plain "quotes" inside,5\r\n'
    b'4,"a,b\r\nc",6\r\n'
    b"\r\n"
    b'5,"caf\xc3\xa9 \xff raw bytes",7\r\n'
    b'6,"x"tail,8\n'
    b"7,last,9"
)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 7, 100])
def test_csv_sample_is_header_plus_n_records_byte_for_byte(tmp_path: Path, rows: int) -> None:
    expected = b"".join(oracle_records(TRICKY)[: rows + 1])
    out = run_csv(tmp_path, TRICKY, rows)
    assert out == expected
    assert (
        list(csv.reader(io.StringIO(out.decode("latin-1"), newline="")))
        == list(csv.reader(io.StringIO(TRICKY.decode("latin-1"), newline="")))[: rows + 1]
    )


@pytest.mark.parametrize(("delimiter", "quotechar"), [(",", '"'), (";", "'"), ("|", '"')])
def test_csv_scanner_agrees_with_csv_module_on_random_input(delimiter: str, quotechar: str) -> None:
    rng = random.Random(20261123)
    alphabet = [b"a", b"b", b",", b";", b"|", b'"', b"'", b"\n", b"\r", b"\r\n", b" ", b"\t"]
    for _ in range(400):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))
        want = oracle_records(data, delimiter, quotechar)
        ends, pos = [], 0
        for rec in want:
            pos += len(rec)
            ends.append(pos)
        scanner = CsvScanner(delimiter.encode(), quotechar.encode())
        buf = bytearray()
        got: list[int] = []
        cut = rng.randrange(0, len(data) + 1)  # feed in two chunks: state must carry over
        for chunk in (data[:cut], data[cut:]):
            got.extend(len(buf) + e for e in scanner.scan(bytearray(chunk), 0))
            buf += chunk
        if not got or got[-1] != len(data):
            got.append(len(data))  # the last record ends with the input
        if scanner.pending_cr() and got[-1] != len(data):
            got.append(len(data))
        assert got == ends, (data, got, ends)


def test_tsv_uses_tab(tmp_path: Path) -> None:
    data = b'a\tb\n1\t"x\ny"\n2\tz\n3\tw\n'
    assert run_csv(tmp_path, data, 2, b"\t") == b'a\tb\n1\t"x\ny"\n2\tz\n'


def test_csv_field_over_the_csv_module_limit(tmp_path: Path) -> None:
    big = b"x" * 200_000  # csv.reader raises past 131,072 chars by default
    data = b'h1,h2\n"' + big + b'",1\n2,3\n'
    assert run_csv(tmp_path, data, 1) == b'h1,h2\n"' + big + b'",1\n'


def test_csv_cap_keeps_complete_records_and_marks_truncated(tmp_path: Path) -> None:
    rows = b"".join(b"%d,%s\n" % (i, b"v" * 50) for i in range(1000))
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,v\n" + rows)
    limits = Limits(rows=500, max_bytes=1000)
    fd, f = _open(path, limits)
    try:
        out = io.BytesIO()
        result = sample_csv(f, out, limits, delimiter=b",")
    finally:
        os.close(fd)
    assert result.truncated
    assert 0 < result.rows < 500
    assert out.getvalue() == (b"id,v\n" + rows)[: len(out.getvalue())]
    assert out.getvalue().endswith(b"\n") and f.budget.left == 0


def test_single_line_bigger_than_the_cap_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: 1 GiB of NULs, no newline
    limits = Limits(rows=10, max_bytes=4 << 20)
    fd, f = _open(path, limits)
    try:
        with pytest.raises(CapReached):
            sample_lines(f, io.BytesIO(), limits)
        assert f.pos == 4 << 20
    finally:
        os.close(fd)


def test_jsonl_first_n_lines(tmp_path: Path) -> None:
    data = b"".join(b'{"i": %d}\n' % i for i in range(50)) + b'{"torn": '
    path = tmp_path / "x.jsonl"
    path.write_bytes(data)
    limits = Limits(rows=7)
    fd, f = _open(path, limits)
    try:
        out = io.BytesIO()
        result = sample_lines(f, out, limits)
    finally:
        os.close(fd)
    assert out.getvalue() == b"".join(data.splitlines(keepends=True)[:7])
    assert (result.rows, result.truncated) == (7, False)


def _parquet(path: Path, rows: int, row_group_size: int) -> pa.Table:
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": pa.array([f"name-{i}" for i in range(rows)]),
            "score": pa.array([i / 3 for i in range(rows)], pa.float64()),
            "tags": pa.array([[str(i), "t"] for i in range(rows)], pa.list_(pa.string())),
        }
    ).replace_schema_metadata({b"owner": b"data-team", b"source": b"unit-test"})
    pq.write_table(table, path, row_group_size=row_group_size, compression="zstd")
    return table


def run_parquet(path: Path, limits: Limits) -> tuple[pa.Table, BoundedFile]:
    fd, f = _open(path, limits, strict=True)
    try:
        out = io.BytesIO()
        result = sample_parquet(f, out, limits)
    finally:
        os.close(fd)
    sample = pq.read_table(io.BytesIO(out.getvalue()))
    assert result.rows == sample.num_rows
    return sample, f


def test_parquet_first_rows_same_schema_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = _parquet(path, 10_000, 1000)
    sample, _ = run_parquet(path, Limits(rows=25))
    source = pq.read_table(path)
    assert sample.schema.equals(source.schema, check_metadata=True)
    assert sample.schema.metadata[b"owner"] == b"data-team"
    assert sample.equals(source.slice(0, 25))
    assert sample.column("id").to_pylist() == table.column("id").to_pylist()[:25]


def test_parquet_reads_only_the_pages_it_needs(tmp_path: Path) -> None:
    path = tmp_path / "one_group.parquet"
    table = pa.table({"v": pa.array([os.urandom(16).hex() for _ in range(400_000)])})
    pq.write_table(table, path, row_group_size=400_000, compression="none")
    size = path.stat().st_size
    assert size > 10 << 20
    limits = Limits(rows=10)
    sample, f = run_parquet(path, limits)
    assert sample.num_rows == 10
    read = limits.max_bytes - f.budget.left
    assert read < size / 4, f"read {read} of {size} bytes for 10 rows"


def test_parquet_corrupt_footer_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    _parquet(path, 100, 50)
    data = bytearray(path.read_bytes())
    footer_len = int.from_bytes(data[-8:-4], "little")
    data[-8 - footer_len : -8] = os.urandom(footer_len)
    path.write_bytes(bytes(data))
    with pytest.raises(SampleError) as err:
        run_parquet(path, Limits(rows=5))
    assert err.value.kind is ErrorKind.MALFORMED


@pytest.mark.parametrize(
    ("tail", "kind"),
    [(b"\xff\xff\xff\x7fPAR1", ErrorKind.MALFORMED), (b"garbage!", ErrorKind.MALFORMED)],
)
def test_parquet_bad_trailer(tmp_path: Path, tail: bytes, kind: ErrorKind) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 100 + tail)
    with pytest.raises(SampleError) as err:
        run_parquet(path, Limits(rows=5))
    assert err.value.kind is kind


def test_parquet_over_the_cap_is_too_large_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _parquet(path, 50_000, 50_000)
    with pytest.raises(SampleError) as err:
        run_parquet(path, Limits(rows=10, max_bytes=4096))
    assert err.value.kind in (ErrorKind.TOO_LARGE, ErrorKind.MALFORMED)


@pytest.mark.parametrize(
    ("head", "mime", "text"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf", False),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "image/png", False),
        (b"just some words\nand more\n", "text/plain", True),
        (b"\x00\x01\x02\x03\xfe", "application/octet-stream", False),
    ],
)
def test_guess_type(head: bytes, mime: str, text: bool) -> None:
    guess = guess_type(head)
    assert guess["mime"] == mime
    assert guess["text"] is text
