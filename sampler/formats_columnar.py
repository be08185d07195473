"""Samplers for columnar files, read with pyarrow: Parquet and ORC (Arrow IPC: ``formats_arrow``).

Same contract as ``formats``: a ``BoundedFile`` in (opened ``strict``, so a
read the budget cannot grant raises at once instead of coming back short),
the first N rows out, written in the same format with the same Arrow schema.
Every byte pyarrow reads goes through the budget and the deadline; pyarrow
errors (corrupt footers, truncated messages) are ``MALFORMED``.

- Parquet: the first N rows, the schema with its key-value metadata, the
  source's compression codec; pyarrow reads with a small ``buffer_size`` and
  no pre-buffering, so only the first pages of the first row group's column
  chunks are read, even when that row group is gigabytes.
- ORC: the file tail (postscript, footer) for the schema, codec and row
  count, then the first N rows through pyarrow's dataset scanner in batches
  of N rows (512 at least: ``ORC_MIN_BATCH``): its stripe reader fetches
  each column stream 128 KiB at a time
  as rows are decoded, so the first rows of a 64 MiB stripe (pyarrow's
  default) cost a few hundred KB, where ``ORCFile.read_stripe`` reads and
  holds the whole stripe. A first stripe shorter than N rows is followed by
  the next. The scanner reads in pyarrow's I/O threads, through a ``_Gate``
  that is shut once the rows are taken; what its prefetch read before that
  is paid for too (a run on a busy machine may read one more block of a
  stream than a quiet one). Written with the source's codec;
  pyarrow's ORC writer cannot write user metadata, so ORC user metadata is
  not kept (the note says so when the source had some). A read stopped by
  the cap or the deadline is ``TOO_LARGE`` or ``TIMEOUT`` even when liborc
  reports it as a parse error.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, BinaryIO

from sampler.formats import Sampled
from sampler.limits import BoundedFile, ErrorKind, Limits, SampleError

if TYPE_CHECKING:
    import pyarrow as pa

ARROW_MAGIC = b"ARROW1"
_PARQUET_CODECS = ("none", "snappy", "gzip", "brotli", "zstd", "lz4")
# Rows per batch when scanning ORC, at least. Closing the scan decodes, batch by batch (~80 us
# each), the rows already fetched (a 128 KiB block of each stream): 100-row batches made closing
# 3 ms of a 6 ms sample (64-byte strings, zstd), 512-row ones 0.5 to 1.6 ms. Larger batches
# close no faster and let the scanner's prefetch (up to 32 batches ahead, in its I/O thread)
# reach the next block of a stream before the gate is shut more often (measured at 1,024 rows:
# one more 128 KiB read in half the runs).
ORC_MIN_BATCH = 512
_ORC_CODECS = {"UNCOMPRESSED": "uncompressed", "ZLIB": "zlib", "SNAPPY": "snappy", "LZ4": "lz4",
               "ZSTD": "zstd"}  # fmt: skip


def trailer_length(f: BoundedFile, magic: bytes, what: str) -> int:
    """The length a trailer ``<int32 little-endian><magic>`` declares, checked against file and cap."""
    if f.size < 4 + 2 * len(magic):
        raise SampleError(ErrorKind.MALFORMED, f"too short to be {what}")
    f.seek(f.size - 4 - len(magic))
    tail = f.read(4 + len(magic))
    if tail[4:] != magic:
        raise SampleError(ErrorKind.MALFORMED, f"no {what} footer (bad magic)")
    footer_len = int.from_bytes(tail[:4], "little", signed=True)
    if footer_len <= 0 or footer_len > f.size - 4 - 2 * len(magic):
        raise SampleError(ErrorKind.MALFORMED, f"footer length {footer_len} does not fit the file")
    if footer_len > f.budget.left:
        raise SampleError(ErrorKind.TOO_LARGE, f"footer of {footer_len} bytes exceeds the byte cap")
    f.seek(0)
    return footer_len


def pyarrow_error(f: BoundedFile, exc: Exception, what: str) -> SampleError:
    """A pyarrow error as a ``SampleError``: the cap or the deadline when one of them made a read
    fail (liborc rethrows what a read raised as its own error, keeping only the message),
    else ``MALFORMED``."""
    if f.capped:
        return SampleError(
            ErrorKind.TOO_LARGE, f"the first rows need more than the byte cap of {f.budget.max_bytes} bytes"
        )
    if time.monotonic() > f.budget.deadline:
        return SampleError(ErrorKind.TIMEOUT, f"time limit of {f.budget.seconds:g} s passed")
    return SampleError(ErrorKind.MALFORMED, f"not readable as {what}: {exc}")


def first_rows(batches: list[pa.RecordBatch], schema: pa.Schema, rows: int) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_batches(batches, schema=schema).slice(0, rows)


# --- Parquet ------------------------------------------------------------------


def sample_parquet(f: BoundedFile, out: BinaryIO, limits: Limits) -> Sampled:
    import pyarrow as pa
    import pyarrow.parquet as pq

    trailer_length(f, b"PAR1", "Parquet")
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
        table = first_rows(batches, schema, limits.rows)
        codec = "snappy"
        if pf.metadata.num_row_groups and pf.metadata.num_columns:
            codec = pf.metadata.row_group(0).column(0).compression.lower()
        if codec not in _PARQUET_CODECS:
            codec = "snappy"
        pq.write_table(table, out, compression=codec)
    except SampleError:
        raise
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
        raise SampleError(ErrorKind.MALFORMED, f"not readable as Parquet: {exc}") from exc
    more = n > limits.rows or pf.metadata.num_rows > table.num_rows
    return Sampled(rows=table.num_rows, truncated=False, note="first rows" if more else None)


# --- ORC ----------------------------------------------------------------------


class _Gate:
    """``f`` for pyarrow's background readers: no read reaches ``f`` once ``shut`` returned.

    pyarrow's dataset scanner reads in its I/O threads, and closing it early
    reads on to the end of the file (measured: a 300 MB ORC file read whole
    when the scan of its first 100 rows was closed). Once shut, every read
    raises at once, so closing the scan costs nothing, and no read runs on
    the descriptor after the sampler returned (the caller closes it then).
    """

    def __init__(self, f: BoundedFile) -> None:
        self.f = f
        self.size = f.size
        self._lock = threading.Lock()
        self._open = True
        self.closed = False

    def shut(self) -> None:
        with self._lock:  # waits for a read in flight in an I/O thread
            self._open = False

    def read(self, n: int = -1) -> bytes:
        with self._lock:
            if not self._open:
                raise OSError("the sample is taken: no more reads")
            return self.f.read(n)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def sample_orc(f: BoundedFile, out: BinaryIO, limits: Limits) -> Sampled:
    """ORC: the first N rows (stripe after stripe), same schema and codec (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.orc as orc

    if f.size < 4:
        raise SampleError(ErrorKind.MALFORMED, "too short to be ORC")
    gate = _Gate(f)
    try:
        of = orc.ORCFile(gate)
        schema = of.schema
        codec = _ORC_CODECS.get(str(of.compression).upper(), "uncompressed")
        user_metadata = of.metadata
        nrows = of.nrows
        batches = []
        n = 0
        if of.nstripes:
            fragment = ds.OrcFileFormat().make_fragment(pa.PythonFile(gate, mode="r"))
            scan = fragment.to_batches(
                batch_size=max(limits.rows, ORC_MIN_BATCH),
                use_threads=False,
                batch_readahead=0,
                fragment_readahead=0,
            )
            try:
                for batch in scan:
                    batches.append(batch)
                    n += batch.num_rows
                    if n >= limits.rows:
                        break
            finally:
                gate.shut()
                with contextlib.suppress(pa.ArrowException, OSError, SampleError):
                    scan.close()  # drains the scan: every read now fails at once
        table = first_rows(batches, schema, limits.rows)
        orc.write_table(table, out, compression=codec)
        more = nrows > table.num_rows
    except SampleError:
        raise
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
        raise pyarrow_error(f, exc, "ORC") from exc
    finally:
        gate.shut()
    notes = ["first rows"] if more else []
    if user_metadata:
        notes.append("ORC user metadata not kept")
    return Sampled(rows=table.num_rows, truncated=False, note="; ".join(notes) or None)
