"""Samplers for compressed files: gzip, zstd, bzip2, xz, LZ4 frame, each wrapping a text format.

Input: a ``BoundedFile`` of the compressed file and its ``Format`` (the codec,
and the inner format when the name or the content says it). Output: the inner
format's sample (CSV records, JSON pruning, JSONL records, else lines),
compressed again with the same codec, a valid file of that codec; a tar
inside gives its member listing as text (``formats_archive.sample_tar``).

The decompressed stream is read through the same ``Budget`` as the file:
compressed bytes read and decompressed bytes produced both count, and output
is asked for in bounded pieces, so a bomb (200 MB of zeros in a few hundred
KB) costs the byte cap, never more, and ends ``TOO_LARGE`` when no record is
complete by then. Concatenated streams/frames are read across. A stream that
ends inside a frame before N records is ``MALFORMED`` (truncated), as are
bytes that are not of the codec.

Decoders: gzip ``limits.GzipStream`` (zlib), bzip2 and xz the stdlib's
``bz2``/``lzma`` decompressor objects (``decompress(data, max_length)``: asked
for 16 KiB first, doubling, and fed 64 KiB at a time, so a sample of a few
hundred rows decodes one bzip2 block, not two, and a few KB of xz), zstd
and LZ4 pyarrow's ``CompressedInputStream`` (it decompresses at most 1 MiB
ahead of what is asked). Encoders: ``gzip``/``bz2``/``lzma`` file objects
(xz at preset 0: a sample is small) and pyarrow's ``CompressedOutputStream``.

A bzip2 sample costs one block at least (up to 900 kB of text, ~400 kB
compressed at level 9): bzip2 can output nothing of a block before it has
decoded all of it.

When the inner format is unknown (``x.gz``, ``data.zst``) or only "text"
(``.txt``, ``.dat``), it is sniffed from the first decompressed bytes
(``sniff.sniff_text``).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from sampler.formats import (
    Prefixed,
    Sampled,
    Sink,
    Source,
    read_head,
    sample_csv,
    sample_jsonl,
    sample_lines,
)
from sampler.formats_archive import sample_tar
from sampler.formats_json import sample_json_to
from sampler.limits import CHUNK, BoundedFile, CapReached, ErrorKind, GzipStream, Limits, SampleError
from sampler.paths import Kind
from sampler.sniff import sniff_text

_ARROW_CODECS = {Kind.ZSTD: "zstd", Kind.LZ4: "lz4"}  # pyarrow's "lz4" is the LZ4 frame format
# bzip2 and xz: output asked of the decompressor at first (doubling up to CHUNK on each read), and
# compressed bytes read at a time. bzip2 inverts its transform as it outputs, at random memory
# access per byte: 1 MiB asked cost two 900 kB blocks and 77 ms, 16 KiB (100 CSV rows and the
# sniffer's 8 KiB) one block and ~38 ms; xz 1 MiB of output 34 ms, 16 KiB under 1 ms.
FIRST_OUTPUT = 16 << 10
INPUT_CHUNK = 64 << 10
XZ_SAMPLE_PRESET = 0  # the sample's encoder: a few KB to compress; preset 6 costs ~4 ms and ~20 MB to set up
_XZ_MAGIC = b"\xfd7zXZ\x00"


class StdlibStream:
    """Decompressed bytes of a bz2 or xz file (concatenated streams too), within the budget."""

    def __init__(self, raw: BoundedFile, kind: Kind) -> None:
        self.raw = raw
        self.budget = raw.budget
        self._new: Callable[[], Any]
        self._error: type[Exception]
        if kind is Kind.BZIP2:
            self._new, self._magic, self._error = bz2.BZ2Decompressor, b"BZh", OSError
        else:
            self._new = lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            self._magic, self._error = _XZ_MAGIC, lzma.LZMAError
        self._name = "bzip2" if kind is Kind.BZIP2 else "xz"
        self._d = self._new()
        self._pending = b""  # compressed input not yet handed to the decompressor
        self._done = False
        self._ask = FIRST_OUTPUT  # output asked of the next read, at most
        self.consumed = 0

    def read(self, n: int = CHUNK, /) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        n = min(n, self._ask)
        while not self._done:
            if self._d.eof:
                rest = self._d.unused_data + self._pending
                self._pending = b""
                if not rest:
                    rest = self.raw.read(INPUT_CHUNK)
                if not rest.startswith(self._magic):
                    # the end of the last stream; xz stream padding (NULs) or junk after it is ignored
                    self._done = True
                    break
                self._d = self._new()
                self._pending = rest
            allowed = self.budget.allow(n)
            if allowed == 0:
                raise CapReached(self.budget.max_bytes)
            data = b""
            if self._d.needs_input:
                data, self._pending = self._pending, b""
                if not data:
                    data = self.raw.read(INPUT_CHUNK)
                    if not data:
                        raise SampleError(
                            ErrorKind.MALFORMED,
                            f"{self._name} stream truncated after {self.consumed} decompressed bytes",
                        )
            try:
                out = self._d.decompress(data, allowed)
            except (self._error, EOFError) as exc:
                raise SampleError(ErrorKind.MALFORMED, f"not valid {self._name}: {exc}") from exc
            if out:
                self.budget.spend(len(out))
                self.consumed += len(out)
                self._ask = min(2 * self._ask, CHUNK)
                return bytes(out)
        return b""


class ArrowStream:
    """Decompressed bytes of a zstd or LZ4-frame file through pyarrow, within the budget."""

    def __init__(self, raw: BoundedFile, kind: Kind) -> None:
        import pyarrow as pa

        self._pa = pa
        self.budget = raw.budget
        self._name = _ARROW_CODECS[kind]
        try:
            self._s = pa.CompressedInputStream(raw, self._name)
        except pa.ArrowException as exc:
            raise SampleError(ErrorKind.MALFORMED, f"not valid {self._name}: {exc}") from exc
        self.consumed = 0

    def read(self, n: int = CHUNK, /) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        allowed = self.budget.allow(n)
        if allowed == 0:
            raise CapReached(self.budget.max_bytes)
        try:
            out: bytes = self._s.read(allowed)
        except SampleError:
            raise
        except (self._pa.ArrowException, OSError) as exc:
            raise SampleError(
                ErrorKind.MALFORMED,
                f"not valid {self._name} after {self.consumed} decompressed bytes: {exc}",
            ) from exc
        self.budget.spend(len(out))
        self.consumed += len(out)
        return out


def open_stream(f: BoundedFile, codec: Kind) -> Source:
    """The decompressed stream of ``f`` (see the module docstring)."""
    if codec is Kind.GZIP or codec is Kind.TAR_GZ:
        return GzipStream(f)
    if codec in (Kind.BZIP2, Kind.XZ):
        return StdlibStream(f, codec)
    return ArrowStream(f, codec)


class _KeepOpen:
    """``out`` for pyarrow, whose output streams close what they wrap; the caller owns ``out``."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.closed = False

    def write(self, data: bytes) -> int:
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._out.tell()


@contextlib.contextmanager
def compressor(codec: Kind, out: BinaryIO) -> Iterator[Sink]:
    """A writer that compresses into ``out`` with ``codec``; the frame is finished on exit."""
    if codec is Kind.GZIP:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
            yield gz
    elif codec is Kind.BZIP2:
        with bz2.BZ2File(out, "wb") as bz:
            yield bz
    elif codec is Kind.XZ:
        with lzma.LZMAFile(out, "wb", format=lzma.FORMAT_XZ, preset=XZ_SAMPLE_PRESET) as xz:
            yield xz
    else:
        import pyarrow as pa

        with pa.CompressedOutputStream(_KeepOpen(out), _ARROW_CODECS[codec]) as stream:
            yield stream


def sample_compressed(
    f: BoundedFile, out: BinaryIO, limits: Limits, codec: Kind, inner: Kind | None
) -> Sampled:
    """The inner format's sample, compressed again with ``codec`` (a tar: its listing, as text)."""
    stream = open_stream(f, codec)
    if inner is Kind.TAR:
        return sample_tar(f, out, limits, compressed=True, stream=stream)
    dialect = None
    if inner in (None, Kind.TEXT):
        head, ended = read_head(stream)
        inner, dialect = sniff_text(head, complete=ended, csv_only=inner is Kind.TEXT)
        stream = Prefixed(head, stream)
    with compressor(codec, out) as sink:
        if inner in (Kind.CSV, Kind.TSV):
            if dialect is not None:
                return sample_csv(
                    stream, sink, limits, delimiter=dialect.delimiter, quotechar=dialect.quotechar
                )
            return sample_csv(
                stream, sink, limits, delimiter=b"\t" if inner is Kind.TSV else b",", sniff=True
            )
        if inner is Kind.JSON:
            return sample_json_to(stream, sink, limits)
        if inner is Kind.JSONL:
            return sample_jsonl(stream, sink, limits)
        return sample_lines(stream, sink, limits)
