"""The first rows of a read-only openpyxl sheet, as ``iter_rows(values_only=True)`` gives them, faster.

Input: an openpyxl 3.1 ``ReadOnlyWorksheet`` (its dimensions reset) and N.
Output: the same rows as ``ws.iter_rows(max_row=N, values_only=True)``:
each row a tuple up to its last cell, gaps as None, a missing row as an
empty one, missing rows up to N when the sheet's next row lies past N.

openpyxl reads an inline string cell (``t="inlineStr"``, what most tools but
Excel write) through ``Text.from_tree``, which builds descriptor objects per
cell: 60% of the time of reading a sheet of inline strings (profiled: ~100
ms for 100 rows of 57 columns). ``_Parser`` reads its text runs directly,
the way ``Text.content`` joins them (the plain text, then each run's,
phonetic runs left out); every other cell goes through openpyxl's own
``parse_cell``. ``first_rows`` is openpyxl's ``_cells_by_row`` with that
parser, and uses the sheet's private attributes as it does: openpyxl 3.1's
read-only internals (the tests compare both readers on the same sheets).
Imported by the xlsx sampler when an xlsx comes (it imports openpyxl).
"""

from __future__ import annotations

from typing import Any

from openpyxl.utils.cell import coordinate_to_tuple
from openpyxl.worksheet._reader import INLINE_STRING, WorkSheetParser
from openpyxl.xml.constants import SHEET_MAIN_NS

_T = f"{{{SHEET_MAIN_NS}}}t"
_R = f"{{{SHEET_MAIN_NS}}}r"


class _Parser(WorkSheetParser):
    def parse_cell(self, element: Any) -> dict[str, Any]:
        if element.get("t") != "inlineStr" or not self.data_only or self.rich_text:
            cell: dict[str, Any] = super().parse_cell(element)
            return cell
        coordinate = element.get("r")
        style_id = int(element.get("s", 0) or 0)
        if coordinate:
            row, column = coordinate_to_tuple(coordinate)
            self.col_counter = column
        else:
            self.col_counter += 1
            row, column = self.row_counter, self.col_counter
        value, data_type = None, "inlineStr"
        child = element.find(INLINE_STRING)
        if child is not None:
            data_type = "s"
            parts = []  # the plain text, then each run's (ElementPath's iterfind costs more than this loop)
            for part in child:
                if part.tag == _T:
                    parts.append(part.text or "")
                elif part.tag == _R:
                    parts.extend(t.text or "" for t in part if t.tag == _T)
            value = "".join(parts)
        return {"row": row, "column": column, "value": value, "data_type": data_type, "style_id": style_id}


def first_rows(ws: Any, n: int) -> list[tuple[Any, ...]]:
    """``ws.iter_rows(max_row=n, values_only=True)``, read with ``_Parser`` (see the module docstring)."""
    wb = ws.parent
    rows: list[tuple[Any, ...]] = []
    counter = idx = 1
    with ws._get_source() as src:
        parser = _Parser(
            src,
            ws._shared_strings,
            data_only=wb.data_only,
            epoch=wb.epoch,
            date_formats=wb._date_formats,
            timedelta_formats=wb._timedelta_formats,
        )
        for idx, cells in parser.parse():
            if idx > n:
                break
            while counter < idx:  # rows missing from the XML
                rows.append(())
                counter += 1
            if counter <= idx:
                rows.append(ws._get_row(cells, 1, None, True))
                counter += 1
    if n < idx:
        rows.extend(() for _ in range(counter, n + 1))
    return rows
