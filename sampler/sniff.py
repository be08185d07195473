"""What a file is: its content first (magic bytes), its name second.

Input: the warehouse file (a ``BoundedFile``, its reads spending the file's
budget) and the ``Format`` its name suggests (``paths.detect``). Output: the
``Format`` the sampler dispatches on.

- Magic bytes at the start decide: Parquet ``PAR1``, Arrow IPC file
  ``ARROW1``, Arrow IPC stream (continuation marker ``FF FF FF FF`` and a
  plausible metadata length), ORC ``ORC``, Avro ``Obj\\x01``, gzip, zstd,
  bzip2 (``BZh1``..``BZh9``), xz, LZ4 frame, tar (``ustar`` at 257) and zip,
  an xlsx being a zip whose central directory holds ``[Content_Types].xml``
  and ``xl/`` parts. The printable magics (``PAR1``, ``ARROW1``, ``ORC``)
  overrule a text name only when the file's trailer matches too: a CSV whose
  header starts ``ORCID,`` stays CSV. So a Parquet file without an extension, a gzip without
  ``.gz`` or an ``.arrows`` file are sampled as what they are. A compressed
  file's inner format comes from its name (``x.csv`` holding gzip is gzipped
  CSV), else from its decompressed content (``formats_compressed``).
- No magic: the name decides, for text. A name saying CSV/TSV is CSV (its
  dialect sniffed when sampled); one saying TXT/DAT is CSV when a dialect is
  sniffed from the first bytes and the first line holds its delimiter, else
  a ``.meta.json``; JSON and JSONL names are JSON and JSONL.
- Anything else: ``META``, and ``guess_type`` for its ``.meta.json``, which
  names our own detection first (puremagic calls an xlsx "docx" and an Arrow
  stream a "DOS system driver") and puremagic's best match otherwise.

Reading the head costs ``HEAD_BYTES`` (``formats.SNIFF_BYTES`` for a TXT/DAT
name) of the budget; a zip's central directory is read, within the zip
checks of ``formats_archive.open_zip``, to tell an xlsx from a zip.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

import orjson
import puremagic

from sampler.formats import SNIFF_BYTES, sniff_dialect
from sampler.formats_archive import open_zip
from sampler.limits import BoundedFile, ErrorKind, Limits, SampleError
from sampler.paths import COMPRESSED, TEXT_KINDS, CsvDialect, Format, Kind, name_inner

HEAD_BYTES = 4096

# (mime, extension, name) of what this module recognises, for the .meta.json
DESCRIPTIONS: dict[Kind, tuple[str, str, str]] = {
    Kind.CSV: ("text/csv", ".csv", "CSV text"),
    Kind.TSV: ("text/tab-separated-values", ".tsv", "tab-separated text"),
    Kind.JSON: ("application/json", ".json", "JSON document"),
    Kind.JSONL: ("application/jsonl", ".jsonl", "JSON lines"),
    Kind.PARQUET: ("application/vnd.apache.parquet", ".parquet", "Apache Parquet"),
    Kind.ARROW: ("application/vnd.apache.arrow.file", ".arrow", "Apache Arrow IPC file (Feather v2)"),
    Kind.ARROW_STREAM: ("application/vnd.apache.arrow.stream", ".arrows", "Apache Arrow IPC stream"),
    Kind.ORC: ("application/x-orc", ".orc", "Apache ORC"),
    Kind.AVRO: ("application/avro", ".avro", "Apache Avro object container file"),
    Kind.XLSX: (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ".xlsx",
        "Office Open XML spreadsheet (xlsx)",
    ),
    Kind.GZIP: ("application/gzip", ".gz", "gzip compressed data"),
    Kind.TAR_GZ: ("application/gzip", ".tar.gz", "gzip compressed tar archive"),
    Kind.ZSTD: ("application/zstd", ".zst", "Zstandard compressed data"),
    Kind.BZIP2: ("application/x-bzip2", ".bz2", "bzip2 compressed data"),
    Kind.XZ: ("application/x-xz", ".xz", "xz compressed data"),
    Kind.LZ4: ("application/x-lz4", ".lz4", "LZ4 frame compressed data"),
    Kind.ZIP: ("application/zip", ".zip", "zip archive"),
    Kind.TAR: ("application/x-tar", ".tar", "tar archive"),
}

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_XZ_MAGIC = b"\xfd7zXZ\x00"


def magic_kind(head: bytes) -> Kind | None:
    """The format the first bytes announce (a zip is ``ZIP`` here, xlsx or not)."""
    if head.startswith(b"PAR1"):
        return Kind.PARQUET
    if head.startswith(b"ARROW1"):
        return Kind.ARROW
    if head.startswith(b"\xff\xff\xff\xff") and len(head) >= 8:
        length = int.from_bytes(head[4:8], "little", signed=True)
        if 0 < length < 1 << 30:  # a flatbuffer Message: the schema comes first
            return Kind.ARROW_STREAM
    if head.startswith(b"ORC"):
        return Kind.ORC
    if head.startswith(b"Obj\x01"):
        return Kind.AVRO
    if head.startswith(b"\x1f\x8b"):
        return Kind.GZIP
    if head.startswith(_ZSTD_MAGIC):
        return Kind.ZSTD
    if head.startswith(b"BZh") and head[3:4].isdigit() and head[3:4] != b"0":
        return Kind.BZIP2
    if head.startswith(_XZ_MAGIC):
        return Kind.XZ
    if head.startswith(_LZ4_MAGIC):
        return Kind.LZ4
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return Kind.ZIP
    if head[257:262] == b"ustar":
        return Kind.TAR
    return None


def is_xlsx(names: list[str]) -> bool:
    return "[Content_Types].xml" in names and any(n.startswith("xl/") for n in names)


def sniff_format(f: BoundedFile, hint: Format, limits: Limits, name: str) -> Format:
    """The format of ``f`` by content, then by ``hint`` (its name's format); ``f`` is left at 0.

    Raises ``SampleError`` only when the file cannot be read (unreadable,
    time limit): a file the content checks find broken goes to the sampler
    its name or magic suggests, which reports it.
    """
    f.seek(0)
    head = f.read(HEAD_BYTES)
    f.seek(0)
    kind = magic_kind(head)
    if kind in _TRAILERS and hint.kind in TEXT_KINDS and not _trailer_matches(f, kind):
        kind = None  # "ORCID,name" or "PAR1,..." as a CSV header: printable magic, no trailer
    if kind is Kind.ZIP:
        if _zip_is_xlsx(f, limits, hint):
            return Format(Kind.XLSX, hint.suffix)
        return Format(Kind.ZIP, hint.suffix)
    if kind in COMPRESSED:
        inner = hint.inner if hint.kind in COMPRESSED or hint.kind is Kind.TAR_GZ else name_inner(name)
        if hint.kind is Kind.TAR_GZ:
            inner = Kind.TAR
        if kind is Kind.GZIP and inner is Kind.TAR:
            return Format(Kind.TAR_GZ, hint.suffix)
        return Format(kind, hint.suffix, inner)
    if kind is not None:
        return Format(kind, hint.suffix)
    if hint.kind is Kind.TEXT:
        if len(head) == HEAD_BYTES and SNIFF_BYTES > HEAD_BYTES:
            head += f.read(SNIFF_BYTES - HEAD_BYTES)
            f.seek(0)
        if _is_text(head):
            dialect = sniff_dialect(head, complete=len(head) == f.size, default=None)
            if dialect is not None:
                return Format(Kind.CSV, hint.suffix, dialect=dialect)
        return Format(Kind.META, hint.suffix)
    return hint


# formats whose magic is printable text: their trailer must match too before a text name is overruled
_TRAILERS = {Kind.PARQUET: b"PAR1", Kind.ARROW: b"ARROW1", Kind.ORC: b"ORC"}


def _trailer_matches(f: BoundedFile, kind: Kind) -> bool:
    if f.size < 12:
        return False
    f.seek(f.size - 8)
    tail = f.read(8)
    f.seek(0)
    if kind is Kind.ORC:  # the postscript ends with its magic, then one byte: its length
        return tail[-4:-1] == b"ORC"
    return tail.endswith(_TRAILERS[kind])


def _zip_is_xlsx(f: BoundedFile, limits: Limits, hint: Format) -> bool:
    try:
        with open_zip(f, limits) as zf:
            return is_xlsx(zf.namelist())
    except SampleError as exc:
        if exc.kind in (ErrorKind.TIMEOUT, ErrorKind.UNREADABLE):
            raise
        return hint.kind is Kind.XLSX  # the sampler of its name reports what is wrong
    finally:
        f.seek(0)


# --- text: the inner format of a compressed stream ------------------------------

_JSON_START = re.compile(
    rb'\s*(?:\{\s*(?:"|\})|\[\s*(?:[\[{"\]]|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\s*[,\]]|true|false|null))'
)


def sniff_text(head: bytes, *, complete: bool, csv_only: bool) -> tuple[Kind | None, CsvDialect | None]:
    """The text format of a decompressed head: JSONL, JSON, CSV (with its dialect) or None (lines).

    ``csv_only``: the name said TXT/DAT, so only CSV or lines.
    """
    if not csv_only and _JSON_START.match(head):
        # JSONL: a first line that is JSON by itself, and another record line after it
        first, _, rest = head.partition(b"\n")
        second = rest.lstrip()
        try:
            orjson.loads(first)
        except orjson.JSONDecodeError:
            return Kind.JSON, None
        return (Kind.JSONL if second.startswith((b"{", b"[")) else Kind.JSON), None
    dialect = sniff_dialect(head, complete=complete, default=None)
    if dialect is not None:
        return Kind.CSV, dialect
    return None, None


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, False)
    except UnicodeDecodeError:
        return False
    return True


# --- the .meta.json's type guess --------------------------------------------------


def guess_type(head: bytes, detected: Format | None = None) -> dict[str, Any]:
    """Our own detection's name when it knows the format, else puremagic's best match; text or not."""
    guess: dict[str, Any] = {"mime": None, "extension": None, "name": None}
    kind = detected.kind if detected is not None else None
    if kind not in DESCRIPTIONS:
        kind = magic_kind(head)
    if kind in DESCRIPTIONS:
        assert kind is not None
        mime, ext, name = DESCRIPTIONS[kind]
        guess = {"mime": mime, "extension": ext, "name": name}
    else:
        try:
            matches = puremagic.magic_string(head)
        except (puremagic.PureError, ValueError):
            matches = []
        if matches:
            best = max(matches, key=lambda m: m.confidence)
            guess = {"mime": best.mime_type or None, "extension": best.extension, "name": best.name}
    text = _is_text(head)
    guess["text"] = text
    if guess["mime"] is None:
        guess["mime"] = "text/plain" if text else "application/octet-stream"
    return guess
