"""Arrow IPC samplers: the IPC file format and Feather v2 (``ARROW1``), and the IPC stream format.

Input: a ``BoundedFile`` (``strict``). Output: the first N rows, same schema
and schema metadata, as an IPC file (or stream) written by pyarrow.

The input is memory-mapped (read-only, ``MADV_RANDOM``) and read by
pyarrow without copying: a record batch whose buffers are not compressed is
a set of views on the mapping, and slicing its first N rows then writing
them touches only the pages behind those rows (and the message's metadata),
whatever the batch's size. So the first 100 rows of a 32 Ki-row (2.2 MB)
batch cost 0.05 to 0.27 MB mapped (bench_sampler: the kernel maps cached
neighbours with each fault), not the batch. ``MADV_RANDOM``: a fault on a
page not cached reads that page; without it the kernel reads around each
fault (``read_ahead_kb``, 8 MiB on the project VM: two faults read 13.9 MB).

Compressed buffers (LZ4 frame, zstd: Feather's default is LZ4) are
decompressed whole by pyarrow, so a compressed batch costs its whole body,
plus its decompressed size: the floor for a compressed file is its first
batch, whatever N.

The budget is spent before pyarrow touches anything, from the IPC framing
read here (``_Flat``: the few flatbuffer tables needed, bounds-checked):

- the footer (file) or each message's metadata (stream), as it is read;
- a dictionary batch: its whole body (a dictionary is written whole);
- a compressed record batch: its body and the decompressed lengths its
  buffers declare, before it is decompressed (a bomb is ``TOO_LARGE``);
- an uncompressed record batch: the bytes its first rows reference, before
  they are read; a nested column (list, struct, map) is read whole, as its
  child arrays are validated whole (``_take``).

The rows taken are validated in full (offsets in bounds and ordered, UTF-8,
dictionary indices) before they are written: pyarrow trusts IPC data, and a
damaged offset is otherwise a crash (``SIGSEGV``), not an error.

The footer's or a message's declared lengths must fit the file, else
``MALFORMED``; a stream that ends inside a message is ``MALFORMED``, one
that ends cleanly with fewer rows is a complete (short) sample.

Kernel caveat: a mapped file truncated while it is read raises ``SIGBUS``.
Warehouse files are never rewritten in place (the ingestor lands them by
rename), and the file's size is checked against its record before this.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from sampler.formats import Sampled
from sampler.formats_columnar import ARROW_MAGIC, first_rows, pyarrow_error, trailer_length
from sampler.limits import BoundedFile, CapReached, ErrorKind, Limits, SampleError

if TYPE_CHECKING:
    import pyarrow as pa

_CONTINUATION = 0xFFFFFFFF
_T = TypeVar("_T")
# Message.header_type values (Message.fbs)
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3


class _Flat:
    """One flatbuffer table in ``buf[lo:hi]``, read field by field; any offset outside is MALFORMED."""

    __slots__ = ("buf", "hi", "lo", "pos", "vt", "vt_len")

    def __init__(self, buf: mmap.mmap, lo: int, hi: int, pos: int) -> None:
        self.buf, self.lo, self.hi, self.pos = buf, lo, hi, pos
        self._check(pos, 4)
        self.vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self._check(self.vt, 4)
        self.vt_len = struct.unpack_from("<H", buf, self.vt)[0]
        self._check(self.vt, self.vt_len)

    @classmethod
    def root(cls, buf: mmap.mmap, lo: int, hi: int) -> _Flat:
        if hi - lo < 4:
            raise SampleError(ErrorKind.MALFORMED, "Arrow IPC metadata too short")
        return cls(buf, lo, hi, lo + struct.unpack_from("<I", buf, lo)[0])

    def _check(self, pos: int, n: int) -> None:
        if pos < self.lo or pos + n > self.hi:
            raise SampleError(ErrorKind.MALFORMED, "Arrow IPC metadata points outside itself")

    def _field(self, slot: int) -> int:
        at = 4 + 2 * slot
        if at + 2 > self.vt_len:
            return 0
        off: int = struct.unpack_from("<H", self.buf, self.vt + at)[0]
        return self.pos + off if off else 0

    def scalar(self, slot: int, fmt: str, default: int) -> int:
        at = self._field(slot)
        if not at:
            return default
        self._check(at, struct.calcsize(fmt))
        value: int = struct.unpack_from(fmt, self.buf, at)[0]
        return value

    def _target(self, slot: int) -> int:
        at = self._field(slot)
        if not at:
            return 0
        self._check(at, 4)
        rel: int = struct.unpack_from("<I", self.buf, at)[0]
        return at + rel

    def table(self, slot: int) -> _Flat | None:
        at = self._target(slot)
        return _Flat(self.buf, self.lo, self.hi, at) if at else None

    def vector(self, slot: int, item: int) -> tuple[int, int]:
        """(position of the first item, item count) of a vector of ``item``-byte structs."""
        at = self._target(slot)
        if not at:
            return 0, 0
        self._check(at, 4)
        count: int = struct.unpack_from("<I", self.buf, at)[0]
        self._check(at + 4, count * item)
        return at + 4, count


class _Batch:
    """A RecordBatch's framing: where its body is, and what reading it costs before slicing."""

    __slots__ = ("body", "body_len", "buffers", "compressed", "meta_len")

    def __init__(self, meta_len: int, body: int, body_len: int, rb: _Flat) -> None:
        self.meta_len, self.body, self.body_len = meta_len, body, body_len
        self.compressed = rb.table(3) is not None  # RecordBatch.compression
        self.buffers = rb.vector(2, 16)  # RecordBatch.buffers: struct Buffer {offset: long; length: long}

    def decompressed(self, mm: mmap.mmap) -> int:
        """The lengths its compressed buffers declare (each starts with its int64 length, -1: stored)."""
        start, count = self.buffers
        total = 0
        for i in range(count):
            offset, length = struct.unpack_from("<qq", mm, start + 16 * i)
            if length < 8:
                continue
            if offset < 0 or offset + length > self.body_len:
                raise SampleError(ErrorKind.MALFORMED, "an Arrow IPC buffer lies outside its message body")
            total += max(0, struct.unpack_from("<q", mm, self.body + offset)[0])
        return total

    def read_cost(self, mm: mmap.mmap) -> int:
        """What pyarrow reads to decode it: the metadata; when compressed, the body and its output."""
        if not self.compressed:
            return self.meta_len
        return self.meta_len + self.body_len + self.decompressed(mm)


def _message(mm: mmap.mmap, at: int, end: int) -> tuple[int, _Flat, int, int] | None:
    """The encapsulated message at ``at``: (header type, header, metadata length with its prefix,
    body length); None at the end-of-stream marker or the end of the data."""
    if at < 0:
        raise SampleError(ErrorKind.MALFORMED, "Arrow IPC file: a block points before the file")
    if at + 4 > end:
        if at == end:
            return None
        raise SampleError(ErrorKind.MALFORMED, "Arrow IPC stream truncated inside a message")
    first = struct.unpack_from("<I", mm, at)[0]
    prefix = 4
    if first == _CONTINUATION:
        if at + 8 > end:
            raise SampleError(ErrorKind.MALFORMED, "Arrow IPC stream truncated inside a message")
        first, prefix = struct.unpack_from("<I", mm, at + 4)[0], 8
    if first == 0:
        return None
    lo, hi = at + prefix, at + prefix + first
    if hi > end:
        raise SampleError(ErrorKind.MALFORMED, "Arrow IPC message metadata past the end of the file")
    msg = _Flat.root(mm, lo, hi)
    kind = msg.scalar(1, "<B", 0)  # Message.header_type
    header = msg.table(2)  # Message.header
    body_len = msg.scalar(3, "<q", 0)  # Message.bodyLength
    if header is None or body_len < 0 or hi + body_len > end:
        raise SampleError(ErrorKind.MALFORMED, "Arrow IPC message body past the end of the file")
    return kind, header, prefix + first, body_len


def _at_end(mm: mmap.mmap, at: int, end: int) -> bool:
    """Whether the stream ends at ``at``: the end of the data, or an end-of-stream marker."""
    if at + 4 > end:
        return at >= end
    first: int = struct.unpack_from("<I", mm, at)[0]
    if first == _CONTINUATION and at + 8 <= end:
        first = struct.unpack_from("<I", mm, at + 4)[0]
    return first == 0


def _batch_at(mm: mmap.mmap, at: int, end: int) -> tuple[int, _Batch]:
    """(header type, framing) of the record or dictionary batch message at ``at``."""
    found = _message(mm, at, end)
    if found is None:
        raise SampleError(ErrorKind.MALFORMED, "Arrow IPC file: a block points at no message")
    kind, header, meta_len, body_len = found
    rb = header.table(1) if kind == _DICTIONARY_BATCH else header  # DictionaryBatch.data
    if kind not in (_DICTIONARY_BATCH, _RECORD_BATCH) or rb is None:
        raise SampleError(ErrorKind.MALFORMED, "Arrow IPC message is not a batch where one is due")
    return kind, _Batch(meta_len, at + meta_len, body_len, rb)


def _spend(f: BoundedFile, n: int) -> None:
    f.budget.allow(0)  # the deadline
    if n > f.budget.left:
        f.capped = True
        raise CapReached(f.budget.max_bytes)
    f.budget.spend(n)


def _flat(t: pa.DataType) -> bool:
    """Whether a column's slice holds all it references (no child arrays, or only a dictionary)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return bool(_flat(t.value_type))
    return bool(t.num_fields == 0)


def _cost(whole: pa.Array, first: pa.Array) -> int:
    """The bytes ``first`` (the first rows of ``whole``) costs to check and write.

    A flat slice: the bytes it references; finding them reads two offsets
    (and its dictionary's), after the cheap check of buffer sizes and offset
    ends (pyarrow's IPC reader does not make it for dictionaries). A nested
    column: all of it, as its child arrays are validated whole.
    """
    if not _flat(first.type):
        return int(whole.get_total_buffer_size())
    first.validate()
    return max(0, int(first.nbytes))


def _take(f: BoundedFile, batch: pa.RecordBatch, rows: int, compressed: bool) -> pa.RecordBatch:
    """The first ``rows`` of ``batch``: paid for (uncompressed) before they are read, then
    validated in full before anything else reads them.

    pyarrow trusts IPC data (its reader checks lengths, not offsets), and a
    damaged offset sends a reader past its buffer: a crash, not an exception
    (both the file and the stream sampler crashed on flipped bytes before).
    """
    part = batch.slice(0, rows)
    columns = list(zip(batch.columns, part.columns, strict=True))
    cost = sum(_cost(whole, first) for whole, first in columns)
    if not compressed:
        _spend(f, cost)
    for whole, first in columns:
        (first if _flat(first.type) else whole).validate(full=True)
    return part


@contextlib.contextmanager
def _mapped(f: BoundedFile) -> Iterator[mmap.mmap]:
    """``f`` mapped read-only; unmapped on exit, unless pyarrow buffers on it are still alive:
    ``mmap`` refuses to close under live exports, and then goes (with the descriptor it
    holds, a dup of ``f``'s) when they do."""
    mm = mmap.mmap(f.fd, f.size, access=mmap.ACCESS_READ)
    try:
        mm.madvise(mmap.MADV_RANDOM)
        yield mm
    finally:
        with contextlib.suppress(BufferError):
            mm.close()


def _on_mapping(f: BoundedFile, what: str, work: Callable[[mmap.mmap], _T]) -> _T:
    """``work`` on ``f``'s mapping, which is gone when this returns or raises.

    A ``SampleError`` leaves without the traceback of ``work``: its frames hold
    pyarrow buffers on the mapping, which would keep the mapping, and its
    descriptor, for as long as the error is kept (the run loop logs it; a
    test holds it). A bug's exception keeps its traceback, and the mapping
    goes when it does.
    """
    import pyarrow as pa

    error: SampleError
    with _mapped(f) as mm:
        try:
            return work(mm)
        except SampleError as exc:
            error = exc
        except (pa.ArrowException, OSError, ValueError, IndexError, struct.error) as exc:
            error = pyarrow_error(f, exc, what)
        error = error.with_traceback(None)
        error.__cause__ = error.__context__ = None
    raise error


def sample_arrow_file(f: BoundedFile, out: BinaryIO, limits: Limits) -> Sampled:
    """Arrow IPC file / Feather v2: the first batches' rows, as an IPC file."""
    footer_len = trailer_length(f, ARROW_MAGIC, "Arrow IPC file")
    rows, more = _on_mapping(f, "an Arrow IPC file", lambda mm: _file_rows(f, mm, footer_len, out, limits))
    return Sampled(rows=rows, truncated=False, note="first rows" if more else None)


def _file_rows(
    f: BoundedFile, mm: mmap.mmap, footer_len: int, out: BinaryIO, limits: Limits
) -> tuple[int, bool]:
    """(rows written, rows left out): the framing walked here is paid for before pyarrow reads it."""
    import pyarrow as pa

    data_end = f.size - 4 - len(ARROW_MAGIC) - footer_len  # messages lie before the footer
    _spend(f, footer_len)
    footer = _Flat.root(mm, data_end, data_end + footer_len)
    blocks, count = footer.vector(3, 24)  # Footer.recordBatches: struct Block, 24 bytes
    dicts, ndicts = footer.vector(2, 24)  # Footer.dictionaries
    for i in range(ndicts):  # pyarrow reads every dictionary before the first batch
        _, d = _batch_at(mm, struct.unpack_from("<q", mm, dicts + 24 * i)[0], data_end)
        _spend(f, d.meta_len + d.body_len + (d.decompressed(mm) if d.compressed else 0))
    reader = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mm)))
    batches = []
    n = seen = 0
    for i in range(count):
        _, b = _batch_at(mm, struct.unpack_from("<q", mm, blocks + 24 * i)[0], data_end)
        _spend(f, b.read_cost(mm))
        whole = reader.get_batch(i)
        seen += whole.num_rows
        batches.append(_take(f, whole, limits.rows - n, b.compressed))
        n += batches[-1].num_rows
        if n >= limits.rows:
            break
    table = first_rows(batches, reader.schema, limits.rows)
    with pa.ipc.new_file(out, reader.schema) as writer:
        writer.write_table(table)
    return table.num_rows, seen > n or len(batches) < count


def sample_arrow_stream(f: BoundedFile, out: BinaryIO, limits: Limits) -> Sampled:
    """Arrow IPC stream: batches in order until N rows, as an IPC stream."""
    if f.size < 8:
        raise SampleError(ErrorKind.MALFORMED, "too short to be an Arrow IPC stream")
    rows, ended = _on_mapping(f, "an Arrow IPC stream", lambda mm: _stream_rows(f, mm, out, limits))
    return Sampled(rows=rows, truncated=False, note=None if ended else "first rows")


def _stream_rows(f: BoundedFile, mm: mmap.mmap, out: BinaryIO, limits: Limits) -> tuple[int, bool]:
    """(rows written, the stream ended): messages are paid for as the walk here meets them,
    before pyarrow's reader, one message behind, reads them."""
    import pyarrow as pa

    found = _message(mm, 0, f.size)
    if found is None or found[0] != _SCHEMA:
        raise SampleError(ErrorKind.MALFORMED, "an Arrow IPC stream starts with its schema")
    _spend(f, found[2])
    at = found[2] + found[3]
    reader = pa.ipc.open_stream(pa.BufferReader(pa.py_buffer(mm)))
    batches = []
    n = seen = 0
    ended = False
    while n < limits.rows:
        if _at_end(mm, at, f.size):
            ended = True
            break
        kind, b = _batch_at(mm, at, f.size)
        at = b.body + b.body_len
        if kind == _DICTIONARY_BATCH:
            _spend(f, b.meta_len + b.body_len + (b.decompressed(mm) if b.compressed else 0))
            continue
        _spend(f, b.read_cost(mm))
        whole = reader.read_next_batch()
        seen += whole.num_rows
        batches.append(_take(f, whole, limits.rows - n, b.compressed))
        n += batches[-1].num_rows
    if seen == n:  # every row read was taken: the sample is the stream if nothing follows
        ended = ended or _at_end(mm, at, f.size)
    table = first_rows(batches, reader.schema, limits.rows)
    with pa.ipc.new_stream(out, reader.schema) as writer:
        writer.write_table(table)
    return table.num_rows, ended and seen == n
