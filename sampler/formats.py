"""Samplers for row formats: one function per format, input stream -> sample bytes.

Each ``sample_*`` reads through a budgeted source (``limits.BoundedFile`` or
``limits.GzipStream``), writes the sample to ``out`` and returns what it kept.
Contract shared by all of them: at most ``Limits.rows`` records, at most
``Limits.max_bytes`` bytes read; when the byte cap stops a sampler that holds
complete records, the sample keeps those and says ``truncated``; when it holds
none, ``SampleError(TOO_LARGE)`` (a single 1 GB line, a gzip bomb of zeros).

- CSV/TSV: the header record plus N records, copied byte for byte. Record
  boundaries are found by a scanner that follows the csv module's state
  machine for the file's dialect: a quote opens a quoted field only at a
  field's start, a doubled quote inside one is a quote, ``\\n``, ``\\r\\n``
  and a lone ``\\r`` end a record outside quotes. The delimiter (``,`` ``;``
  ``|`` TAB) and the quote character are sniffed from the first
  ``SNIFF_BYTES`` (``csv.Sniffer``; when it cannot tell, the delimiter most
  frequent in the first line, else the name's default). Nothing is decoded
  or re-serialised, so quoting, embedded newlines and encodings survive, and
  no field limit applies (the csv module raises past 131,072 chars).
- JSONL/NDJSON: the first N records, byte for byte; blank lines are not
  records (not kept, not counted).
- Plain lines (a compressed log): the first N lines, byte for byte.
- JSON: see ``formats_json``; Parquet, ORC: ``formats_columnar``; Arrow: ``formats_arrow``;
  Avro: ``formats_avro``; xlsx: ``formats_office``; compressed files:
  ``formats_compressed``; archives: ``formats_archive``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from sampler.limits import CHUNK, CapReached, Limits
from sampler.paths import CsvDialect


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
_NL = ord("\n")
_CR_BYTE = ord("\r")


class CsvScanner:
    """Where CSV records end, by the csv module's rules (see the module docstring).

    State survives between calls, so a record may span any number of chunks.
    """

    def __init__(self, delimiter: bytes, quotechar: bytes = b'"') -> None:
        self._delim = delimiter[0]
        self._quote = quotechar[0]
        self._quote_bytes = quotechar[:1]
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
                    if c == self._quote:
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
                    q = buf.find(self._quote_bytes, pos)
                    if q < 0:
                        pos = n
                        break
                    pos = q + 1
                    st = _QUOTE_IN_QUOTED
                else:  # _QUOTE_IN_QUOTED
                    if c == self._quote:
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


_BLANK = re.compile(rb"[ \t\r\n]*")  # JSON's whitespace


def copy_records(
    src: Source, out: Sink, want: int, scanner: _Scanner, *, skip_blank: bool = False
) -> tuple[int, bool]:
    """Copy the first ``want`` records' bytes; (records copied, stopped by the cap).

    ``skip_blank``: a record of whitespace only is dropped, not counted.
    """
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
            # the last record has no terminator: it ends with the input
            if buf and not (skip_blank and _BLANK.fullmatch(buf)):
                out.write(buf)
                count += 1
            return count, False
        buf += chunk
        done = 0
        for end in scanner.scan(buf, scanned):
            if skip_blank and _BLANK.fullmatch(buf, done, end):
                done = end
                continue
            out.write(buf[done:end])
            done = end
            count += 1
            if count == want:
                break
        del buf[:done]
        scanned = len(buf)
    return count, False


# --- CSV dialects ------------------------------------------------------------

SNIFF_BYTES = 8 << 10  # csv.Sniffer's regexes are quadratic at worst (0.4 s on 8 KiB of ',"'): keep it small
DELIMITERS = ",;|\t"


def sniff_dialect(head: bytes, *, complete: bool, default: bytes | None) -> CsvDialect | None:
    """The CSV dialect of ``head`` (the input's first bytes; ``complete``: all of it).

    ``csv.Sniffer`` on whole lines of at most ``SNIFF_BYTES``, delimiters
    limited to ``DELIMITERS``. When it cannot tell: with a ``default`` (the
    name said CSV or TSV), the delimiter most frequent outside quotes in the
    first line, else the default; without one (the name said TXT or DAT, or
    nothing), None: not CSV. None too when the first line does not hold the
    delimiter (one column of prose is not a table).
    """
    text = head[:SNIFF_BYTES]
    if not complete or len(head) > SNIFF_BYTES:
        cut = text.rfind(b"\n")
        if cut > 0:
            text = text[: cut + 1]
    sample = text.decode("latin-1")  # byte for byte: delimiters and quotes are ASCII
    first = sample.splitlines()[0] if sample else ""
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS)
        delimiter, quotechar = sniffed.delimiter, sniffed.quotechar or '"'
    except csv.Error:
        delimiter, quotechar = "", '"'
    if len(delimiter) != 1 or delimiter not in DELIMITERS or quotechar not in "\"'":
        delimiter, quotechar = "", '"'
    if default is None:
        if not delimiter or delimiter not in first:
            return None
        return CsvDialect(delimiter.encode(), quotechar.encode())
    if not delimiter:
        counts = {d: _unquoted_count(first, d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        delimiter = best if counts[best] else default.decode("latin-1")
    return CsvDialect(delimiter.encode(), quotechar.encode())


def _unquoted_count(line: str, delimiter: str) -> int:
    return sum(part.count(delimiter) for part in line.split('"')[::2])


class Prefixed:
    """A source that yields ``head`` first, then the rest of ``src``."""

    def __init__(self, head: bytes, src: Source) -> None:
        self._head = head
        self._src = src

    def read(self, n: int = CHUNK, /) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._src.read(n)


def read_head(src: Source, size: int = SNIFF_BYTES) -> tuple[bytes, bool]:
    """At least ``size`` bytes of ``src`` unless it ends or the cap stops it; (bytes, ended)."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        try:
            chunk = src.read(CHUNK)
        except CapReached:
            if not parts:
                raise
            return b"".join(parts), False
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts), False


def sample_csv(
    src: Source,
    out: Sink,
    limits: Limits,
    *,
    delimiter: bytes = b",",
    quotechar: bytes = b'"',
    sniff: bool = False,
) -> Sampled:
    """Header + N records. ``sniff``: the dialect from the first bytes, ``delimiter`` the fallback."""
    if sniff:
        head, ended = read_head(src)
        dialect = sniff_dialect(head, complete=ended, default=delimiter)
        assert dialect is not None  # a default was given
        delimiter, quotechar = dialect.delimiter, dialect.quotechar
        src = Prefixed(head, src)
    scanner = CsvScanner(delimiter, quotechar)
    count, capped = copy_records(src, out, limits.rows + 1, scanner)
    return Sampled(rows=max(0, count - 1), truncated=capped)


def sample_lines(src: Source, out: Sink, limits: Limits) -> Sampled:
    count, capped = copy_records(src, out, limits.rows, LineScanner())
    return Sampled(rows=count, truncated=capped)


def sample_jsonl(src: Source, out: Sink, limits: Limits) -> Sampled:
    count, capped = copy_records(src, out, limits.rows, LineScanner(), skip_blank=True)
    return Sampled(rows=count, truncated=capped)
