"""xlsx_write against openpyxl and pandas reading its output back."""

from __future__ import annotations

import datetime as dt
import io
import math

import openpyxl
import pandas as pd

from sampler.xlsx_write import column_name, write_xlsx

ROWS = [
    ("id", "text", "when", "day", "at", "took", "ok", "gap", "last"),
    (1, "  spaced\tand\nlines  ", dt.datetime(2026, 11, 23, 10, 5, 7), dt.datetime(1900, 1, 15), dt.time(6, 30),
     dt.timedelta(hours=30, minutes=5), True, None, 2.5),
    (2, "=1+1 stays text", dt.datetime(1999, 12, 31, 23, 59, 59), None, None, None, False, None, -0.125),
    (3, "<&>\"' and \x01 bell", None, None, None, None, None, None, 10**15),
    (),
    (5, "café ünïcode ☃", float("nan"), float("inf")),
]  # fmt: skip


def test_values_read_back_as_written() -> None:
    out = io.BytesIO()
    write_xlsx(out, [("data", "visible", ROWS), ("hidden one", "hidden", [("x",)]), ("empty", "visible", [])])
    wb = openpyxl.load_workbook(io.BytesIO(out.getvalue()), data_only=True)
    assert wb.sheetnames == ["data", "hidden one", "empty"]
    assert [ws.sheet_state for ws in wb.worksheets] == ["visible", "hidden", "visible"]
    got = [tuple(r) for r in wb["data"].iter_rows(values_only=True)]
    assert got[0] == ROWS[0]
    assert got[1][:3] == ROWS[1][:3] and got[1][3] == dt.datetime(1900, 1, 15) and got[1][4] == dt.time(6, 30)
    assert got[1][5] == dt.timedelta(hours=30, minutes=5) and got[1][6:] == (True, None, 2.5)
    assert got[2][:3] == ROWS[2][:3] and got[2][6] is False and got[2][8] == -0.125
    assert got[3][1] == "<&>\"' and _x0001_ bell" and got[3][8] == 10**15  # XML 1.0 cannot hold \x01
    assert all(v is None for v in got[4])
    assert got[5][:4] == (5, "café ünïcode ☃", "nan", "inf")  # a cell cannot hold a NaN: its text
    assert wb["data"]["B3"].data_type == "s" and wb["hidden one"]["A1"].value == "x"
    assert wb["empty"].max_row == 1 and wb["empty"]["A1"].value is None
    frame = pd.read_excel(io.BytesIO(out.getvalue()), sheet_name="data")
    assert list(frame.columns) == list(ROWS[0]) and frame["id"].tolist()[:3] == [1, 2, 3]
    assert math.isclose(frame["last"][0], 2.5)


def test_no_sheet_is_one_empty_sheet() -> None:
    out = io.BytesIO()
    write_xlsx(out, [])
    assert openpyxl.load_workbook(io.BytesIO(out.getvalue())).sheetnames == ["Sheet1"]


def test_column_names() -> None:
    assert [column_name(i) for i in (1, 26, 27, 52, 53, 702, 703, 16384)] == [
        "A", "Z", "AA", "AZ", "BA", "ZZ", "AAA", "XFD"]  # fmt: skip
