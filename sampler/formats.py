"""Samplers for row formats: one function per format, input stream -> sample bytes.

Each ``sample_*`` reads through a budgeted source (``limits.BoundedFile`` or
``limits.GzipStream``), writes the sample to ``out`` and returns what it kept.
Contract shared by all of them: at most ``Limits.rows`` records, at most
``Limits.max_bytes`` bytes read; when the byte cap stops a sampler that holds
complete records, the sample keeps those and says ``truncated``; when it holds
none, ``SampleError(TOO_LARGE)`` (a single 1 GB line, a gzip bomb of zeros).

- CSV/TSV: the header record plus N records, copied byte for byte. Record
  boundaries are found by a scanner that follows the csv module's (excel
  dialect) state machine: a quote opens a quoted field only at a field's
  start, ``""`` inside one is a quote, ``\\n``, ``\\r\\n`` and a lone ``\\r``
  end a record outside quotes. Nothing is decoded or re-serialised, so
  quoting, embedded newlines and encodings survive, and no field limit
  applies (the csv module raises past 131,072 chars).
- JSONL/NDJSON: the first N lines, byte for byte.
- JSON: see ``formats_json``.
- Parquet: the first N rows, the same Arrow schema with its key-value
  metadata, the source's compression codec; pyarrow reads with a small
  ``buffer_size`` and no pre-buffering, so only the first pages of the
  first row group's column chunks are read, even when that row group is
  gigabytes, and every byte goes through the budget.
- Anything else: ``describe`` -> the ``.meta.json`` document.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import puremagic

from sampler.limits import CHUNK, BoundedFile, CapReached, ErrorKind, Limits, SampleError


class Source(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...


class Sink(Protocol):
    def write(self, data: bytes | bytearray, /) -> int: ...


@dataclass(frozen=True, slots=True)
class Sampled:
    """What a sampler kept."""

    rows: int  # records in the sample (CSV: without the header)
    truncated: bool  # the byte cap, not N or the end of the input, stopped it
    note: str | None = None


class _Scanner(Protocol):
    def scan(self, buf: bytearray, start: int) -> Iterator[int]: ...


class LineScanner:
    """Record ends are newlines."""

    def scan(self, buf: bytearray, start: int) -> Iterator[int]:
        pos = start
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                return
            pos = nl + 1
            yield pos


_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED, _CR = range(5)
_QUOTE = ord('"')
_NL = ord("\n")
_CR_BYTE = ord("\r")


class CsvScanner:
    """Where CSV records end, by the csv module's rules (see the module docstring).

    State survives between calls, so a record may span any number of chunks.
    """

    def __init__(self, delimiter: bytes) -> None:
        self._delim = delimiter[0]
        self._unquoted_stop = re.compile(b"[" + re.escape(delimiter) + b"\r\n]")
        self._state = _FIELD_START

    def scan(self, buf: bytearray, start: int) -> Iterator[int]:
        pos, n, st = start, len(buf), self._state
        try:
            while pos < n:
                c = buf[pos]
                if st == _CR:  # after a lone \r: \n belongs to it, anything else starts a record
                    st = _FIELD_START
                    if c == _NL:
                        pos += 1
                    yield pos
                    continue
                if st == _FIELD_START:
                    if c == _QUOTE:
                        st = _QUOTED
                        pos += 1
                        continue
                    st = _UNQUOTED
                if st == _UNQUOTED:
                    m = self._unquoted_stop.search(buf, pos)
                    if m is None:
                        pos = n
                        break
                    pos = m.end()
                    c = buf[m.start()]
                    if c == self._delim:
                        st = _FIELD_START
                    elif c == _NL:
                        st = _FIELD_START
                        yield pos
                    else:
                        st = _CR
                elif st == _QUOTED:
                    q = buf.find(b'"', pos)
                    if q < 0:
                        pos = n
                        break
                    pos = q + 1
                    st = _QUOTE_IN_QUOTED
                else:  # _QUOTE_IN_QUOTED
                    if c == _QUOTE:
                        st = _QUOTED
                        pos += 1
                    elif c == self._delim:
                        st = _FIELD_START
                        pos += 1
                    elif c == _NL:
                        st = _FIELD_START
                        pos += 1
                        yield pos
                    elif c == _CR_BYTE:
                        st = _CR
                        pos += 1
                    else:  # csv (non-strict) keeps the rest of the field as unquoted text
                        st = _UNQUOTED
        finally:
            self._state = st

    def pending_cr(self) -> bool:
        return self._state == _CR


def copy_records(src: Source, out: Sink, want: int, scanner: _Scanner) -> tuple[int, bool]:
    """Copy the first ``want`` records' bytes; (records copied, stopped by the cap)."""
    buf = bytearray()
    scanned = 0  # buf[:scanned] has been through the scanner
    count = 0
    while count < want:
        try:
            chunk = src.read(CHUNK)
        except CapReached:
            if count == 0:
                raise
            return count, True
        if not chunk:
            if buf:  # the last record has no terminator: it ends with the input
                out.write(buf)
                count += 1
            return count, False
        buf += chunk
        done = 0
        for end in scanner.scan(buf, scanned):
            out.write(buf[done:end])
            done = end
            count += 1
            if count == want:
                break
        del buf[:done]
        scanned = len(buf)
    return count, False


def sample_csv(src: Source, out: Sink, limits: Limits, *, delimiter: bytes) -> Sampled:
    scanner = CsvScanner(delimiter)
    count, capped = copy_records(src, out, limits.rows + 1, scanner)
    return Sampled(rows=max(0, count - 1), truncated=capped)


def sample_lines(src: Source, out: Sink, limits: Limits) -> Sampled:
    count, capped = copy_records(src, out, limits.rows, LineScanner())
    return Sampled(rows=count, truncated=capped)


# --- Parquet ----------------------------------------------------------------


def sample_parquet(f: BoundedFile, out: BinaryIO, limits: Limits) -> Sampled:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if f.size < 12:
        raise SampleError(ErrorKind.MALFORMED, "too short to be Parquet")
    f.seek(f.size - 8)
    tail = f.read(8)
    if tail[4:] != b"PAR1":
        raise SampleError(ErrorKind.MALFORMED, "no Parquet footer (bad magic)")
    footer_len = int.from_bytes(tail[:4], "little")
    if footer_len > f.size - 12:
        raise SampleError(ErrorKind.MALFORMED, f"footer length {footer_len} exceeds the file")
    if footer_len > f.budget.left:
        raise SampleError(ErrorKind.TOO_LARGE, f"footer of {footer_len} bytes exceeds the byte cap")
    f.seek(0)
    try:
        pf = pq.ParquetFile(f, buffer_size=1 << 16, pre_buffer=False)
        schema = pf.schema_arrow
        batches = []
        n = 0
        for batch in pf.iter_batches(batch_size=limits.rows, use_threads=False):
            batches.append(batch)
            n += batch.num_rows
            if n >= limits.rows:
                break
        table = pa.Table.from_batches(batches, schema=schema).slice(0, limits.rows)
        codec = "snappy"
        if pf.metadata.num_row_groups and pf.metadata.num_columns:
            codec = pf.metadata.row_group(0).column(0).compression.lower()
        if codec not in ("none", "snappy", "gzip", "brotli", "zstd", "lz4"):
            codec = "snappy"
        pq.write_table(table, out, compression=codec)
    except SampleError:
        raise
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
        raise SampleError(ErrorKind.MALFORMED, f"not readable as Parquet: {exc}") from exc
    more = n > limits.rows or pf.metadata.num_rows > table.num_rows
    return Sampled(rows=table.num_rows, truncated=False, note="first rows" if more else None)


# --- anything else ------------------------------------------------------------

HEAD_BYTES = 4096


def guess_type(head: bytes) -> dict[str, Any]:
    """puremagic's best match, else text (UTF-8, no NUL) or binary."""
    guess: dict[str, Any] = {"mime": None, "extension": None, "name": None}
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        matches = []
    if matches:
        best = max(matches, key=lambda m: m.confidence)
        guess = {"mime": best.mime_type or None, "extension": best.extension, "name": best.name}
    text = b"\x00" not in head
    if text:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, False)
        except UnicodeDecodeError:
            text = False
    guess["text"] = text
    if guess["mime"] is None:
        guess["mime"] = "text/plain" if text else "application/octet-stream"
    return guess
