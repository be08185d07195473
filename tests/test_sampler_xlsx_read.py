"""xlsx_read.first_rows against openpyxl's own read-only iter_rows, on sheets of every cell kind."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import openpyxl
import pytest

from sampler.xlsx_read import first_rows

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"

# styles: xf 1 is a date (numFmt 14), xf 2 a duration ([h]:mm:ss, 46)
STYLES = (
    f'<styleSheet xmlns="{MAIN}"><fonts count="1"><font><sz val="11"/></font></fonts><fills count="1">'
    '<fill><patternFill patternType="none"/></fill></fills><borders count="1"><border><left/><right/><top/>'
    '<bottom/><diagonal/></border></borders><cellStyleXfs count="1"><xf/></cellStyleXfs><cellXfs count="3">'
    '<xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/><xf numFmtId="46" applyNumberFormat="1"/>'
    '</cellXfs><cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>'
)
SHARED = f'<sst xmlns="{MAIN}" count="2"><si><t>shared zero</t></si><si><r><t>sha</t></r><r><t>red</t></r></si></sst>'
SHEET = (
    f'<worksheet xmlns="{MAIN}"><dimension ref="A1:F9"/><sheetData>'
    '<row r="1"><c r="A1" t="inlineStr"><is><t>plain</t></is></c><c r="C1" t="inlineStr"><is><r><t>ri</t></r>'
    '<r><rPr><b/></rPr><t xml:space="preserve">ch </t></r><rPh sb="0" eb="1"><t>PHON</t></rPh></is></c>'
    '<c r="D1" t="inlineStr"><is><t>lead</t><r><t>+run</t></r></is></c><c r="E1" t="inlineStr"><is><t/></is></c>'
    '<c r="F1" t="inlineStr"/></row>'
    '<row r="2"><c r="A2"><v>42</v></c><c r="B2"><v>2.5</v></c><c r="C2" t="b"><v>1</v></c>'
    '<c r="D2" t="s"><v>0</v></c><c r="E2" t="s"><v>1</v></c><c r="F2" t="e"><v>#N/A</v></c></row>'
    '<row r="4"><c r="A4" s="1"><v>46349</v></c><c r="B4" s="2"><v>1.25</v></c><c r="C4" t="str"><f>A1</f>'
    '<v>plain</v></c><c r="D4"><f>1+1</f><v>2</v></c><c r="E4" t="d"><v>2026-11-23T10:00:00</v></c></row>'
    '<row><c t="inlineStr"><is><t>no refs</t></is></c><c><v>7</v></c></row>'
    '<row r="6" s="1"/>'
    '<row r="9"><c r="B9" t="inlineStr"><is><t>far</t></is></c></row>'
    "</sheetData></worksheet>"
)


def xlsx(path: Path, sheet: str = SHEET) -> None:
    parts = {
        "[Content_Types].xml": '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{CT}.sheet.main+xml"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{CT}.styles+xml"/>'
        f'<Override PartName="/xl/sharedStrings.xml" ContentType="{CT}.sharedStrings+xml"/>'
        f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{CT}.worksheet+xml"/></Types>',
        "_rels/.rels": '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets>'
        '<sheet name="data" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{REL}/styles" Target="styles.xml"/>'
        f'<Relationship Id="rId3" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>',
        "xl/styles.xml": STYLES,
        "xl/sharedStrings.xml": SHARED,
        "xl/worksheets/sheet1.xml": sheet,
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, '<?xml version="1.0" encoding="UTF-8"?>' + text)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 9, 20])
def test_same_rows_as_openpyxl(tmp_path: Path, n: int) -> None:
    path = tmp_path / "kinds.xlsx"
    xlsx(path)
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        ws = wb["data"]
        ws.reset_dimensions()  # type: ignore[union-attr]
        expected = [tuple(r) for r in ws.iter_rows(max_row=n, values_only=True)]
        assert [tuple(r) for r in first_rows(ws, n)] == expected
    finally:
        wb.close()
    if n >= 2:  # the cell kinds read as openpyxl reads them
        assert expected[0] == ("plain", None, "rich ", "lead+run", "", None)
        assert expected[1] == (42, 2.5, True, "shared zero", "shared", "#N/A")


def test_rows_of_a_big_sheet_as_openpyxl(tmp_path: Path) -> None:
    rows = "".join(
        f'<row r="{r}">'
        + "".join(f'<c r="{c}{r}" t="inlineStr"><is><t>{c}{r}</t></is></c>' for c in "ABCDEFGH")
        + f'<c r="J{r}"><v>{r / 3}</v></c></row>'
        for r in range(1, 3000)
    )
    path = tmp_path / "big.xlsx"
    xlsx(path, f'<worksheet xmlns="{MAIN}"><sheetData>{rows}</sheetData></worksheet>')
    wb = openpyxl.load_workbook(io.BytesIO(path.read_bytes()), read_only=True, data_only=True)
    try:
        ws = wb["data"]
        ws.reset_dimensions()  # type: ignore[union-attr]
        assert first_rows(ws, 100) == [tuple(r) for r in ws.iter_rows(max_row=100, values_only=True)]
    finally:
        wb.close()
