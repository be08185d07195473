"""The xlsx sampler: the first N rows of each sheet, up to ``Limits.max_sheets`` sheets, as xlsx.

Input: a ``BoundedFile`` of an xlsx (a zip of XML parts). Output: an xlsx
written by ``xlsx_write`` (openpyxl's write-only mode cost as much as the
reading), one sheet per source sheet (same
titles and visibility, in order) holding the cell values of its first N rows
(cached values of formulas: ``data_only``, so the sample reads as the source
does without recalculation). Styles, charts, comments and merged cells are
not kept: the sample is of the data. Rows reported: the rows written, all
sheets together.

Reading is openpyxl's read-only mode, which parses a sheet's XML as a
stream, so N rows cost the XML up to row N, not the sheet. Its bounds:

- the zip is checked first as any zip is (``formats_archive.open_zip``:
  entry count, central directory size, overlapping members, ratio);
- every byte openpyxl decompresses counts against the byte cap: the file it
  reads through (``InflateMeter``) inflates each deflated member's compressed
  bytes a second time as they pass, only to count the output, so the
  shared strings table, the styles and each sheet's XML up to row N are
  paid for as decompressed bytes, and a part that would expand past the cap
  stops the sample (``TOO_LARGE``), as the deadline does (``TIMEOUT``);
- a sheet's ``<dimension>`` past Excel's grid (1,048,576 rows, 16,384
  columns: 10^9 rows, say) is a lying size, ``HOSTILE``; one inside the grid
  is still not trusted (``reset_dimensions``): A1:XFD1048576 on a sheet of
  30 rows makes no row longer and no loop longer. Rows are read with
  ``max_row=N``.

A sheet without a ``<dimension>`` element (Excel, openpyxl and XlsxWriter
all write one) is parsed whole by openpyxl when the workbook opens, to find
its size: that costs the sheet's whole XML, so such a sheet larger than the
cap ends ``TOO_LARGE`` (measured: 26 MB of XML, 2.4 s with a 256 MiB cap).

openpyxl warns about the parts it drops (drawings, extensions); those
warnings are silenced here, they say nothing about the data.
"""

from __future__ import annotations

import struct
import warnings
import zipfile
import zlib
from typing import Any, BinaryIO
from xml.etree.ElementTree import ParseError

from sampler.formats import Sampled
from sampler.formats_archive import open_zip
from sampler.limits import BoundedFile, CapReached, ErrorKind, Limits, SampleError

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # 30 bytes; name and extra lengths last
MAX_ROWS, MAX_COLUMNS = 1_048_576, 16_384  # Excel's grid


class _Inflating:
    """One member's compressed bytes as they are read, inflated to count their output."""

    __slots__ = ("d", "left", "method", "size")

    def __init__(self, info: zipfile.ZipInfo) -> None:
        self.method = info.compress_type
        self.d = zlib.decompressobj(-15) if self.method == zipfile.ZIP_DEFLATED else None
        self.left = info.compress_size  # compressed bytes of this member not seen yet
        self.size = info.file_size


class InflateMeter:
    """The file surface zipfile needs, over a ``BoundedFile``, spending decompressed bytes too.

    zipfile reads a member as: its 30-byte local header at ``header_offset``,
    the name and extra field, then the data from the next offset on, in
    order. A read at a member's header offset announces where its data
    starts; reads that continue a member's data are inflated here to count
    what they expand to. zipfile reads compressed data ahead of what it
    inflates (up to about 16 KiB per call when openpyxl asks for 16 KiB of
    XML), so the count may run a little ahead of what openpyxl parsed, never
    behind. A stored member costs its bytes once (already counted as read);
    another method costs its declared size up front.
    """

    def __init__(self, f: BoundedFile, infos: list[zipfile.ZipInfo]) -> None:
        self.f = f
        self.budget = f.budget
        self._by_header = {i.header_offset: i for i in infos if not i.is_dir()}
        self._starts: dict[int, zipfile.ZipInfo] = {}  # data offset -> member, once its header was read
        self._active: dict[int, _Inflating] = {}  # next expected offset -> member being inflated
        self.closed = False

    def _spend(self, n: int) -> None:
        if n > self.budget.left:
            self.budget.spend(self.budget.left)
            raise CapReached(self.budget.max_bytes)
        self.budget.spend(n)

    def read(self, n: int = -1) -> bytes:
        pos = self.f.tell()
        data = self.f.read(n)
        info = self._by_header.get(pos)
        if info is not None and len(data) >= _LOCAL_HEADER.size and data[:4] == b"PK\x03\x04":
            fields = _LOCAL_HEADER.unpack_from(data)
            self._starts[pos + _LOCAL_HEADER.size + fields[-2] + fields[-1]] = info
        state = self._active.pop(pos, None)
        if state is None and pos in self._starts:
            state = _Inflating(self._starts[pos])
            if state.method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                self._spend(state.size)  # no shadow decoder: pay the declared size once
        if state is not None and data:
            self._count(state, data[: state.left])
            state.left -= min(len(data), state.left)
            if state.left > 0:
                self._active[pos + len(data)] = state
        return data

    def _count(self, state: _Inflating, data: bytes) -> None:
        if state.d is None:
            return
        chunk = 1 << 20
        try:
            out = state.d.decompress(data, chunk)
            while out:
                self._spend(len(out))
                out = state.d.decompress(state.d.unconsumed_tail, chunk) if state.d.unconsumed_tail else b""
        except zlib.error:
            state.d = None  # zipfile reports the corrupt member itself

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def sample_xlsx(f: BoundedFile, out: BinaryIO, limits: Limits) -> Sampled:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    from sampler.xlsx_read import first_rows
    from sampler.xlsx_write import write_xlsx

    with open_zip(f, limits) as zf:
        infos = zf.infolist()
    meter = InflateMeter(f, infos)
    meter.seek(0)
    rows = sheets = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl's notes on parts it drops (see the docstring)
        try:
            wb = openpyxl.load_workbook(meter, read_only=True, data_only=True, keep_links=False)
        except SampleError:
            raise
        except (InvalidFileException, zipfile.BadZipFile, ParseError, KeyError, ValueError, TypeError,
                IndexError, AttributeError, OSError, EOFError) as exc:  # fmt: skip
            raise SampleError(
                ErrorKind.MALFORMED, f"not readable as xlsx: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            taken: list[tuple[str, str, list[tuple[Any, ...]]]] = []
            source_sheets = wb.worksheets
            for ws in source_sheets[: limits.max_sheets]:
                if (ws.max_row or 0) > MAX_ROWS or (ws.max_column or 0) > MAX_COLUMNS:
                    raise SampleError(
                        ErrorKind.HOSTILE,
                        f"sheet {ws.title!r} claims {ws.max_row} rows x {ws.max_column} columns, past Excel's grid",
                    )
                ws.reset_dimensions()  # read-only sheets: a <dimension> inside the grid may still lie
                taken.append((ws.title, ws.sheet_state, first_rows(ws, limits.rows)))
                rows += len(taken[-1][2])
                sheets += 1
            write_xlsx(out, taken)
        except SampleError:
            raise
        except (zipfile.BadZipFile, ParseError, KeyError, ValueError, TypeError, IndexError,
                AttributeError, OSError, EOFError) as exc:  # fmt: skip
            raise SampleError(
                ErrorKind.MALFORMED, f"not readable as xlsx: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            wb.close()
    notes = []
    if len(source_sheets) > sheets:
        notes.append(f"first {sheets} of {len(source_sheets)} sheets")
    return Sampled(rows=rows, truncated=False, note="; ".join(notes) or None)
