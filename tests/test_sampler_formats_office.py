"""The xlsx sampler against workbooks written by openpyxl, read back by openpyxl and pandas."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest

from sampler.formats_office import sample_xlsx
from sampler.limits import ErrorKind, Limits, SampleError
from tests.sampler_helpers import sample_path


def workbook(path: Path, sheets: dict[str, int]) -> None:
    wb = openpyxl.Workbook()
    wb.remove(wb.active)  # type: ignore[arg-type]
    for title, n in sheets.items():
        ws = wb.create_sheet(title)
        ws.append(["id", "name", "when", "score", "ok", "empty"])
        for i in range(n):
            ws.append([i, f"{title}-{i}", dt.datetime(2026, 11, 23, 10, i % 60), i / 8, i % 2 == 0, None])
    wb.save(path)


def rows_of(data: bytes | Path, sheet: str, n: int | None = None) -> list[tuple[Any, ...]]:
    """Cell values of the first ``n`` rows, without the empty cells and rows a dimension pads with."""
    src: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    wb = openpyxl.load_workbook(src, read_only=True, data_only=True)
    try:
        ws = wb[sheet]
        ws.reset_dimensions()  # type: ignore[union-attr]
        rows = [tuple(r) for r in ws.iter_rows(max_row=n, values_only=True)]
    finally:
        wb.close()
    rows = [r[: max((i + 1 for i, v in enumerate(r) if v is not None), default=0)] for r in rows]
    while rows and not rows[-1]:
        rows.pop()
    return rows


def rewrite(path: Path, parts: dict[str, bytes]) -> None:
    """Replace members of a zip, keeping the others and their order."""
    with zipfile.ZipFile(path) as z:
        members = [(i, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in members:
            z.writestr(info.filename, parts.get(info.filename, data))


def test_first_rows_of_each_sheet_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    workbook(path, {"orders": 500, "people": 3, "empty": 0})
    out, result, _ = sample_path(path, sample_xlsx, Limits(rows=20))
    sample = tmp_path / "book_sample.xlsx"
    sample.write_bytes(out)
    assert openpyxl.load_workbook(sample, read_only=True).sheetnames == ["orders", "people", "empty"]
    for title in ("orders", "people", "empty"):
        assert rows_of(sample, title) == rows_of(path, title, 20)
    assert result.rows == 20 + 4 + 1 and result.note is None
    frames = pd.read_excel(sample, sheet_name=None)
    originals = pd.read_excel(path, sheet_name=None)
    for title, frame in frames.items():
        pd.testing.assert_frame_equal(frame, originals[title].head(19))  # row 1 is the header


def test_a_big_sheet_is_read_only_up_to_row_n(tmp_path: Path) -> None:
    path = tmp_path / "big.xlsx"
    workbook(path, {"data": 20_000})
    with zipfile.ZipFile(path) as z:
        xml_size = z.getinfo("xl/worksheets/sheet1.xml").file_size
    out, result, spent = sample_path(path, sample_xlsx, Limits(rows=10))
    assert result.rows == 10 and rows_of(out, "data") == rows_of(path, "data", 10)
    assert spent < xml_size / 4, (spent, xml_size)  # decompressed bytes counted, and far from all


def test_sheets_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "many.xlsx"
    workbook(path, {f"s{i}": 2 for i in range(6)})
    out, result, _ = sample_path(path, sample_xlsx, Limits(rows=5, max_sheets=4))
    assert openpyxl.load_workbook(io.BytesIO(out), read_only=True).sheetnames == ["s0", "s1", "s2", "s3"]
    assert result.note == "first 4 of 6 sheets"


def lie_about_dimension(path: Path, ref: bytes) -> None:
    with zipfile.ZipFile(path) as z:
        xml = z.read("xl/worksheets/sheet1.xml")
    lying = re.sub(rb'<dimension ref="[^"]*"', b'<dimension ref="' + ref + b'"', xml)
    assert lying != xml
    rewrite(path, {"xl/worksheets/sheet1.xml": lying})


def test_dimension_claiming_a_billion_rows_is_hostile(tmp_path: Path) -> None:
    path = tmp_path / "liar.xlsx"
    workbook(path, {"data": 30})
    lie_about_dimension(path, b"A1:XFD1000000000")
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_xlsx, Limits(rows=100))
    assert err.value.kind is ErrorKind.HOSTILE


def test_dimension_inside_the_grid_but_wrong_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "liar.xlsx"
    workbook(path, {"data": 30})
    lie_about_dimension(path, b"A1:XFD1048576")
    started = time.monotonic()
    out, result, _ = sample_path(path, sample_xlsx, Limits(rows=100))
    assert time.monotonic() - started < 10
    assert rows_of(out, "data") == rows_of(path, "data", 100)
    assert result.rows == 31  # the real rows, no padding to the claimed dimension


def test_a_sheet_without_dimension_is_read_whole_by_openpyxl_within_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "nodim.xlsx"
    workbook(path, {"data": 20_000})
    with zipfile.ZipFile(path) as z:
        xml = z.read("xl/worksheets/sheet1.xml")
    rewrite(path, {"xl/worksheets/sheet1.xml": re.sub(rb"<dimension [^>]*/>", b"", xml)})
    with pytest.raises(SampleError) as err:  # openpyxl parses it whole to size it: the cap stops that
        sample_path(path, sample_xlsx, Limits(rows=10, max_bytes=len(xml) // 2))
    assert err.value.kind is ErrorKind.TOO_LARGE
    workbook(path, {"data": 20_000})  # the same sheet with its <dimension>: the same cap is plenty
    out, result, _ = sample_path(path, sample_xlsx, Limits(rows=10, max_bytes=len(xml) // 2))
    assert rows_of(out, "data") == rows_of(path, "data", 10)
    assert result.rows == 10


def test_huge_first_row_stops_at_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "wide.xlsx"
    workbook(path, {"data": 3})
    with zipfile.ZipFile(path) as z:
        xml = z.read("xl/worksheets/sheet1.xml")
    block = os.urandom(512).hex().encode()  # repeats: compresses ~100x, under the zip ratio check
    text = block * ((32 << 20) // len(block))  # a 32 MiB inline string in cell A1
    cell = b'<c r="A1" t="inlineStr"><is><t>' + text + b"</t></is></c>"
    huge = re.sub(rb'<c r="A1".*?</c>', lambda _: cell, xml, count=1)
    assert len(huge) > 32 << 20
    rewrite(path, {"xl/worksheets/sheet1.xml": huge})
    assert path.stat().st_size < 2 << 20
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_xlsx, Limits(rows=10, max_bytes=4 << 20))
    assert err.value.kind is ErrorKind.TOO_LARGE


def test_not_a_workbook_and_zip_bomb(tmp_path: Path) -> None:
    path = tmp_path / "x.xlsx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml", b"<Types/>")
        z.writestr("xl/workbook.xml", b"not xml at all <")
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_xlsx, Limits(rows=10))
    assert err.value.kind is ErrorKind.MALFORMED
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("xl/sharedStrings.xml", "w") as m:
        for _ in range(50):  # 50 MiB of zeros: the zip ratio check calls it a bomb before openpyxl reads
            m.write(b"\0" * (1 << 20))
    with pytest.raises(SampleError) as err:
        sample_path(path, sample_xlsx, Limits(rows=10))
    assert err.value.kind is ErrorKind.HOSTILE
