"""What sampling one file may cost, and the readers that enforce it.

Contract: every sampler reads its input only through a ``BoundedFile`` (the
warehouse file, by positional reads on one descriptor) or a decompressing
reader on top of one (``GzipStream`` here; bzip2, xz, zstd and LZ4 in
``formats_compressed``; zip members read by openpyxl in
``formats_office.InflateMeter``). All draw from the same ``Budget``: at most ``Limits.max_bytes``
bytes in total, compressed bytes read *and* decompressed bytes produced
counting alike, and no read after the per-file deadline. So a sampler's cost is
bounded by N records, the byte cap and the time limit, whatever the file's size:

- running out of bytes raises ``CapReached``; a sampler that already holds
  complete records writes them (the sample is marked truncated), one that holds
  none turns it into an error;
- the deadline raises ``SampleError(TIMEOUT)`` at the next read;
- decompression is asked for at most the bytes still allowed
  (``decompressobj.decompress(data, max_length)``), so a gzip bomb costs
  ``max_bytes`` of output and never more memory than one chunk.

``SampleError`` carries an ``ErrorKind`` that the error ``.meta.json`` and the
``sample_error`` log line report.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass
from enum import StrEnum

CHUNK = 1 << 20


class ErrorKind(StrEnum):
    """Why a file got an error ``.meta.json`` instead of a sample."""

    MISSING = "missing"  # not in the warehouse
    NOT_REGULAR = "not_regular"  # symlink, FIFO, socket, device or directory
    UNREADABLE = "unreadable"  # the OS refused a read
    CHANGED = "changed"  # the warehouse file is not the one the manifest describes
    MALFORMED = "malformed"  # not valid in its format: corrupt, truncated
    HOSTILE = "hostile"  # bomb, looping headers, lying sizes, absurd nesting
    TOO_LARGE = "too_large"  # nothing complete within the byte cap
    TIMEOUT = "timeout"  # the per-file time limit passed
    INTERNAL = "internal"  # a bug in a sampler, logged with its traceback


class SampleError(Exception):
    """A file that cannot be sampled; the sampler records it and moves on."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class CapReached(SampleError):
    """The byte budget ran out before the input did."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(ErrorKind.TOO_LARGE, f"byte cap of {max_bytes} bytes reached")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-file bounds, from the command line."""

    rows: int = 100  # records (rows, lines, array items) kept in a sample
    max_bytes: int = 64 << 20  # input bytes read, decompressed bytes included
    max_seconds: float = 30.0  # wall time spent on one file
    max_entries: int = 100_000  # archive members listed
    max_depth: int = 512  # JSON nesting
    member_bytes: int = 1 << 20  # a zip's first member is copied only up to this size
    max_sheets: int = 16  # xlsx: sheets sampled, in workbook order


class Budget:
    """Bytes and time left for one file. Owned by the one sampling call."""

    __slots__ = ("deadline", "left", "max_bytes", "seconds")

    def __init__(self, limits: Limits) -> None:
        self.max_bytes = limits.max_bytes
        self.left = limits.max_bytes
        self.seconds = limits.max_seconds
        self.deadline = time.monotonic() + limits.max_seconds

    def allow(self, want: int) -> int:
        """How many of ``want`` bytes may be read now (0: the cap is reached)."""
        if time.monotonic() > self.deadline:
            raise SampleError(ErrorKind.TIMEOUT, f"time limit of {self.seconds:g} s passed")
        return max(0, min(want, self.left))

    def spend(self, n: int) -> None:
        self.left -= n


class BoundedFile:
    """A read-only, seekable view of one descriptor that spends a ``Budget``.

    It has the file-object surface pyarrow, zipfile and tarfile need
    (``read``/``seek``/``tell``); reads are ``pread`` so the descriptor's own
    offset is never used. ``read`` returns ``b""`` only at the real end of the
    file and raises ``CapReached`` when the budget, not the file, ran out.
    """

    def __init__(self, fd: int, size: int, budget: Budget, *, strict: bool = False) -> None:
        # strict: a read the budget cannot fully grant raises at once instead
        # of returning short (pyarrow takes a short read for a truncated file).
        self.strict = strict
        self.fd = fd
        self.size = size
        self.budget = budget
        self.pos = 0
        self.closed = False
        self.capped = False  # a read hit the byte cap (a library may wrap the CapReached)

    def read(self, n: int = -1) -> bytes:
        remaining = self.size - self.pos
        if remaining <= 0:
            return b""
        want = remaining if n is None or n < 0 else min(n, remaining)
        if want == 0:
            return b""
        allowed = self.budget.allow(want)
        if allowed == 0 or (self.strict and allowed < want):
            self.capped = True
            raise CapReached(self.budget.max_bytes)
        try:
            data = os.pread(self.fd, allowed, self.pos)
        except OSError as exc:
            raise SampleError(ErrorKind.UNREADABLE, f"read failed: {exc.strerror}") from exc
        self.pos += len(data)
        self.budget.spend(len(data))
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self.pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise OSError("negative seek position")
        self.pos = pos
        return pos

    def tell(self) -> int:
        return self.pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def flush(self) -> None:
        return None

    def close(self) -> None:
        # The descriptor belongs to the caller that opened it.
        self.closed = True


class GzipStream:
    """Decompressed bytes of a (multi-member) gzip file, within the budget.

    ``read`` returns ``b""`` at the end of the last member; a stream that
    ends inside a member is ``MALFORMED`` (truncated), bytes that are not
    gzip are ``MALFORMED``. Output is asked for in bounded pieces, so a bomb
    costs the byte cap, not its expanded size.
    """

    def __init__(self, raw: BoundedFile) -> None:
        self.raw = raw
        self.budget = raw.budget
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._pending = b""  # compressed input not yet handed to zlib
        self._done = False
        self.consumed = 0  # decompressed bytes handed out

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        while not self._done:
            if self._d.eof:
                rest = self._d.unused_data + self._pending
                self._pending = b""
                if not rest:
                    rest = self.raw.read(CHUNK)
                if not rest or not rest.startswith(b"\x1f\x8b"):
                    # End of the last member; zero padding or trailing junk
                    # after a complete member is ignored, as gzip(1) does.
                    self._done = True
                    break
                self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)
                self._pending = rest
            allowed = self.budget.allow(n)
            if allowed == 0:
                raise CapReached(self.budget.max_bytes)
            data = self._d.unconsumed_tail or self._pending
            self._pending = b""
            if not data:
                data = self.raw.read(CHUNK)
                if not data:
                    raise SampleError(
                        ErrorKind.MALFORMED,
                        f"gzip stream truncated after {self.consumed} decompressed bytes",
                    )
            try:
                out = self._d.decompress(data, allowed)
            except zlib.error as exc:
                raise SampleError(ErrorKind.MALFORMED, f"not valid gzip: {exc}") from exc
            if out:
                self.budget.spend(len(out))
                self.consumed += len(out)
                return out
        return b""
