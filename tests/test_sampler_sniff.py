"""Content first, name second: misnamed files, CSV dialects, and the names the .meta.json gives."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import openpyxl
import orjson
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
import structlog

from sampler.formats import sample_csv, sample_jsonl, sniff_dialect
from sampler.limits import Limits
from sampler.paths import CsvDialect, Kind
from sampler.sample import Event, Sampler
from sampler.sniff import guess_type, magic_kind
from tests.sampler_helpers import Layout, new_format_hostile_files, record, sample_path


@pytest.fixture
def lay(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path)
    lay.samples.mkdir()
    return lay


@pytest.fixture
def sampler(lay: Layout) -> Iterator[Sampler]:
    log = structlog.wrap_logger(None, processors=[structlog.testing.LogCapture()])
    s = Sampler(lay.warehouse, lay.samples, Limits(rows=3, max_bytes=8 << 20), log=log)
    yield s
    s.close()


def sidecar(lay: Layout, base: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((lay.samples / f"{base}.source.json").read_bytes())
    return data


SEMICOLON = b'id;text;n\r\n1;"line one\nline two; still one";3\r\n2;"say ""hi""";4\r\n3;plain;5\r\n4;x;6\r\n'


def test_semicolon_csv_with_a_quoted_newline_is_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(SEMICOLON)
    out, result, _ = sample_path(path, lambda f, o, lim: sample_csv(f, o, lim, sniff=True), Limits(rows=2))
    assert out == SEMICOLON.split(b"\r\n3;")[0] + b"\r\n"
    assert result.rows == 2
    rows = list(csv.reader(io.StringIO(out.decode(), newline=""), delimiter=";"))
    assert rows[1] == ["1", "line one\nline two; still one", "3"]


@pytest.mark.parametrize(
    ("text", "dialect"),
    [
        (b"a,b,c\n1,2,3\n4,5,6\n", CsvDialect(b",")),
        (b"a;b;c\n1;2,5;3\n4;5,1;6\n", CsvDialect(b";")),
        (b"a|b\n1|2\n", CsvDialect(b"|")),
        (b"a\tb\n1\t2\n3\t4\n", CsvDialect(b"\t")),
        (b"a;'b;c'\n1;'x;y'\n2;'z;w'\n", CsvDialect(b";", b"'")),
    ],
)
def test_sniff_dialect(text: bytes, dialect: CsvDialect) -> None:
    assert sniff_dialect(text, complete=True, default=None) == dialect


def test_sniff_dialect_fallbacks() -> None:
    prose = b"It was a dark and stormy night\nand the rain fell in torrents\n"
    assert sniff_dialect(prose, complete=True, default=None) is None  # not CSV: .txt keeps its .meta.json
    assert sniff_dialect(prose, complete=True, default=b",") == CsvDialect(b",")  # .csv: the default
    assert sniff_dialect(b"a;b\n", complete=True, default=b",") == CsvDialect(
        b";"
    )  # one line: first-line count


def test_sniffing_a_hostile_head_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(b',"' * 400_000)  # quotes everywhere, no line end: the sniffer's regexes at their worst
    out, result, _ = sample_path(path, lambda f, o, lim: sample_csv(f, o, lim, sniff=True), Limits(rows=2))
    assert result.rows == 0 and out == path.read_bytes()  # one unterminated record, the whole file


def test_blank_jsonl_lines_are_not_records(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"a":1}\n\n  \n{"a":2}\r\n\r\n{"a":3}\n\n\n')
    out, result, _ = sample_path(path, sample_jsonl, Limits(rows=10))
    assert out == b'{"a":1}\n{"a":2}\r\n{"a":3}\n' and (result.rows, result.truncated) == (3, False)
    out, result, _ = sample_path(path, sample_jsonl, Limits(rows=2))
    assert [json.loads(x) for x in out.splitlines()] == [{"a": 1}, {"a": 2}] and result.rows == 2


def _parquet() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"a": list(range(10))}).replace_schema_metadata({b"k": b"v"}), buf)
    return buf.getvalue()


def _ipc(stream: bool) -> bytes:
    sink = pa.BufferOutputStream()
    t = pa.table({"a": list(range(10))})
    with (ipc.new_stream if stream else ipc.new_file)(sink, t.schema) as w:
        w.write_table(t)
    return bytes(sink.getvalue().to_pybytes())


def _orc() -> bytes:
    buf = io.BytesIO()
    orc.write_table(pa.table({"a": list(range(10))}), buf)
    return buf.getvalue()


def _avro() -> bytes:
    buf = io.BytesIO()
    schema = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}
    fastavro.writer(buf, schema, [{"a": i} for i in range(10)])
    return buf.getvalue()


def _xlsx() -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    for i in range(10):
        ws.append([i])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _zst(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as z:
        z.write(data)
    return bytes(sink.getvalue().to_pybytes())


def _ints(kind: str, data: bytes) -> list[int]:
    """The sample's first column, read back by the format's reader."""
    if kind == "parquet":
        return pq.read_table(io.BytesIO(data)).column("a").to_pylist()
    if kind == "arrow":
        return ipc.open_file(pa.BufferReader(data)).read_all().column("a").to_pylist()
    if kind == "arrow_stream":
        return ipc.open_stream(pa.BufferReader(data)).read_all().column("a").to_pylist()
    if kind == "orc":
        return orc.ORCFile(io.BytesIO(data)).read().column("a").to_pylist()
    if kind == "avro":
        return [r["a"] for r in fastavro.reader(io.BytesIO(data))]  # type: ignore[call-overload,index]
    wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    try:
        return [r[0] for r in wb.active.iter_rows(values_only=True)]  # type: ignore[union-attr,misc]
    finally:
        wb.close()


MISNAMED = [
    ("part-00000", _parquet(), "parquet"),
    ("data.csv", _parquet(), "parquet"),
    ("table.bin", _ipc(False), "arrow"),
    ("events.dat", _ipc(True), "arrow_stream"),
    ("export", _orc(), "orc"),
    ("records.json", _avro(), "avro"),
    ("report.zip", _xlsx(), "xlsx"),
    ("report.bin", _xlsx(), "xlsx"),
]


@pytest.mark.parametrize(("name", "data", "kind"), MISNAMED, ids=[m[0] for m in MISNAMED])
def test_binary_formats_are_found_by_content(
    lay: Layout, sampler: Sampler, name: str, data: bytes, kind: str
) -> None:
    out = sampler.sample(record(lay.file(name, data)))
    assert out.event is Event.WRITTEN and out.format == kind, out
    dot = name.rfind(".")
    sample = name[:dot] + "_sample" + name[dot:] if dot > 0 else name + "_sample"
    assert out.sample == sample
    assert _ints(kind, (lay.samples / sample).read_bytes()) == [0, 1, 2]
    assert sidecar(lay, sample)["format"] == kind and sidecar(lay, sample)["file_suffix"] == ""


TEXT = [
    ("semi.txt", SEMICOLON, "csv", lambda d: d == SEMICOLON.split(b"\r\n4;")[0] + b"\r\n"),
    ("pipes.dat", b"a|b\n1|2\n3|4\n5|6\n7|8\n", "csv", lambda d: d == b"a|b\n1|2\n3|4\n5|6\n"),
    ("csv-in-gzip", gzip.compress(b"a,b\n1,2\n3,4\n5,6\n7,8\n"), "gzip",
     lambda d: gzip.decompress(d) == b"a,b\n1,2\n3,4\n5,6\n"),
    ("x.csv", gzip.compress(b'a;b\n1;"2\n2"\n3;4\n5;6\n7;8\n'), "gzip",
     lambda d: gzip.decompress(d) == b'a;b\n1;"2\n2"\n3;4\n5;6\n'),
    ("logs.jsonl", _zst(b'{"a":1}\n\n{"a":2}\n{"a":3}\n{"a":4}\n'), "zstd",
     lambda d: d.startswith(b"\x28\xb5\x2f\xfd")),
    ("x.tar", gzip.compress(b"not really a tar"), "tar_gz", None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "kind", "check"), TEXT, ids=[t[0] for t in TEXT])
def test_text_and_compression_are_found_by_content(
    lay: Layout, sampler: Sampler, name: str, data: bytes, kind: str, check: Any
) -> None:
    out = sampler.sample(record(lay.file(name, data)))
    assert out.format == kind, out
    if check is None:
        return
    assert out.event is Event.WRITTEN and out.sample is not None, out
    assert check((lay.samples / out.sample).read_bytes())


def test_prose_txt_keeps_its_meta(lay: Layout, sampler: Sampler) -> None:
    out = sampler.sample(record(lay.file("notes.txt", b"Dear reader,\nthis is not a table.\n")))
    assert out.event is Event.WRITTEN and out.format == "meta" and out.sample == "notes_sample.txt.meta.json"
    meta = json.loads((lay.samples / out.sample).read_bytes())
    assert meta["type_guess"]["text"] is True and meta["format"] == "meta"


@pytest.mark.parametrize("name", sorted(new_format_hostile_files()))
def test_error_meta_names_the_detected_format(lay: Layout, sampler: Sampler, name: str) -> None:
    data, kind = new_format_hostile_files()[name]
    stem = name.split(".")[0]
    out = sampler.sample(record(lay.file(stem + ".bin", data)))  # misnamed: the content must tell
    assert out.event is Event.ERROR and out.error_kind is kind, out
    meta = json.loads((lay.samples / f"{stem}_sample.bin.meta.json").read_bytes())
    expected = {"bomb": ("zstd", "application/zstd"),
                "liar": ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                "huge-block": ("avro", "application/avro"),
                "corrupt": ("orc", "application/x-orc"),
                "truncated": ("arrow_stream", "application/vnd.apache.arrow.stream")}[stem]  # fmt: skip
    assert (meta["format"], meta["type_guess"]["mime"]) == expected
    assert meta["error"]["kind"] == str(kind)


def test_guess_type_prefers_our_names() -> None:
    assert guess_type(_ipc(True)[:4096])["name"] == "Apache Arrow IPC stream"  # puremagic: a DOS driver
    assert guess_type(b"BZh91AY&SY" + b"\0" * 20)["mime"] == "application/x-bzip2"
    assert magic_kind(b"\x04\x22\x4d\x18rest") is Kind.LZ4
    assert magic_kind(b"\xfd7zXZ\x00rest") is Kind.XZ
    assert magic_kind(b"just text") is None


def test_printable_magic_does_not_overrule_a_text_name_without_its_trailer(
    lay: Layout, sampler: Sampler
) -> None:
    data = b"ORCID,name\n0000-0001,Ada\n0000-0002,Grace\n0000-0003,Edsger\n0000-0004,Barbara\n"
    out = sampler.sample(record(lay.file("people.csv", data)))
    assert out.event is Event.WRITTEN and out.format == "csv"
    assert (lay.samples / "people_sample.csv").read_bytes() == b"".join(data.splitlines(keepends=True)[:4])
    out = sampler.sample(record(lay.file("people.bin", _orc())))
    assert out.format == "orc"
