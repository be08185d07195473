"""A minimal xlsx writer for samples: sheets of rows of cell values -> a valid xlsx, in one pass.

Input: ``(title, state, rows)`` per sheet, rows being the tuples openpyxl's
read-only ``iter_rows(values_only=True)`` yields (None, bool, int, float,
str, datetime, date, time, timedelta). Output: an xlsx (zip, deflate level
1) of the parts a spreadsheet reader needs: content types, relationships,
the workbook (sheet titles and visibility, in order), a style sheet with
the four number formats dates need, and one worksheet per sheet (a
``<dimension>``, then the cells, strings inline).

Why not openpyxl's write-only mode: without lxml, openpyxl serialises each
cell through ``et_xmlfile`` (~14 us a cell, measured): a 100-row sample of
a 57-column sheet took ~80 ms to write, as long as reading it. Here a cell
is one formatted string.

Values as openpyxl writes them: booleans ``t="b"``; numbers as ``repr``
(a NaN or an infinity, which a cell cannot hold, as its text); strings
inline, whitespace kept, characters XML 1.0 forbids written ``_xHHHH_`` as
Excel does; a string that starts with ``=`` stays a string (never a
formula); dates and times as serial numbers of the 1900 date system
(openpyxl's ``to_excel``) with a date, date-time, time or duration format.
A workbook without a sheet gets one empty sheet (a workbook needs one).
Imported by the xlsx sampler when an xlsx comes (it imports openpyxl).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zipfile
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO
from xml.sax.saxutils import escape, quoteattr

from openpyxl.utils.datetime import to_excel

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"
HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
# cellXfs indexes: 0 general, then the formats of datetime, date, time, timedelta values
_STYLE = {dt.datetime: 1, dt.date: 2, dt.time: 3, dt.timedelta: 4}
_STYLES = (
    f'{HEAD}<styleSheet xmlns="{MAIN}"><numFmts count="1"><numFmt numFmtId="164" formatCode="[hh]:mm:ss"/>'
    '</numFmts><fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/>'
    '</fill></fills><borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="5"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    + "".join(
        f'<xf numFmtId="{n}" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        for n in (22, 14, 21, 164)
    )
    + '</cellXfs><cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def column_name(i: int) -> str:
    """1 -> A, 27 -> AA."""
    name = ""
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(65 + r) + name
    return name


def _text(value: str) -> str:
    if not (value.isascii() and value.isprintable()):  # the regex only where it may find something
        value = _ILLEGAL.sub(lambda m: f"_x{ord(m.group()):04X}_", value)
    return escape(value)


def _cell(ref: str, value: Any) -> str:
    if isinstance(value, bool):
        return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return f'<c r="{ref}" t="inlineStr"><is><t>{value!r}</t></is></c>'
        return f'<c r="{ref}"><v>{value!r}</v></c>'
    if isinstance(value, dt.date | dt.time | dt.timedelta):
        style = _STYLE[dt.datetime if isinstance(value, dt.datetime) else type(value)]
        serial: float = to_excel(value)  # type: ignore[no-untyped-call]
        return f'<c r="{ref}" s="{style}"><v>{serial!r}</v></c>'
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{_text(str(value))}</t></is></c>'


def _sheet_xml(rows: Sequence[Sequence[Any]]) -> str:
    width = max((len(r) for r in rows), default=0)
    names = [column_name(i + 1) for i in range(width)]
    ref = f"A1:{names[-1]}{len(rows)}" if width else "A1"
    out = [f'{HEAD}<worksheet xmlns="{MAIN}"><dimension ref="{ref}"/><sheetData>']
    for r, row in enumerate(rows, 1):
        cells = "".join(_cell(f"{names[c]}{r}", v) for c, v in enumerate(row) if v is not None)
        out.append(f'<row r="{r}">{cells}</row>')
    out.append("</sheetData></worksheet>")
    return "".join(out)


def write_xlsx(out: BinaryIO, sheets: Iterable[tuple[str, str, Sequence[Sequence[Any]]]]) -> None:
    """Write ``(title, state, rows)`` sheets as an xlsx to ``out`` (state: visible, hidden, veryHidden)."""
    sheets = list(sheets) or [("Sheet1", "visible", [])]
    entries, rels, types = [], [], []
    for i, (title, state, _) in enumerate(sheets, 1):
        hidden = f' state="{state}"' if state in ("hidden", "veryHidden") else ""
        entries.append(f'<sheet name={quoteattr(title)} sheetId="{i}"{hidden} r:id="rId{i}"/>')
        rels.append(f'<Relationship Id="rId{i}" Type="{REL}/worksheet" Target="worksheets/sheet{i}.xml"/>')
        types.append(f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{CT}.worksheet+xml"/>')
    styles_id = f"rId{len(sheets) + 1}"
    parts = {
        "[Content_Types].xml": f'{HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        f'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        f'<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{CT}.sheet.main+xml"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{CT}.styles+xml"/>{"".join(types)}</Types>',
        "_rels/.rels": f'{HEAD}<Relationships xmlns="{PKG_REL}"><Relationship Id="rId1" '
        f'Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'{HEAD}<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets>{"".join(entries)}'
        "</sheets></workbook>",
        "xl/_rels/workbook.xml.rels": f'{HEAD}<Relationships xmlns="{PKG_REL}">{"".join(rels)}'
        f'<Relationship Id="{styles_id}" Type="{REL}/styles" Target="styles.xml"/></Relationships>',
        "xl/styles.xml": _STYLES,
    }
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, text in parts.items():
            z.writestr(name, text)
        for i, (_, _, rows) in enumerate(sheets, 1):
            z.writestr(f"xl/worksheets/sheet{i}.xml", _sheet_xml(rows))
