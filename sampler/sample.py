"""One manifest record -> its sample, its sidecar, or an error ``.meta.json``.

Input: an ``ingested`` ``ManifestRecord``. Output, in the record's mirrored
directory under ``--samples`` (names in ``paths``):

1. currency: if ``<base>.source.json`` holds the record's sha256 and the file
   of its outcome exists, nothing is done (``Event.CURRENT``);
2. the warehouse file is opened safely (``paths.open_source``), checked
   against the record's size, its format found by content then name
   (``sniff.sniff_format``), and given to the sampler of that format through
   a fresh ``Budget``; the sample is written atomically (temporary, fsync,
   rename);
3. if that fails with ``SampleError`` (or a sampler bug: ``INTERNAL``), an
   error ``<base>.meta.json`` is written instead;
4. then the sidecar is written atomically, naming the file written (its
   suffix after the base: ``""``, ``.txt`` or ``.meta.json``), and a
   leftover of another outcome (or another format) from an earlier run is
   removed.

The sidecar is written last, so a crash anywhere before it leaves the record
not current and the redo writes the same sample again; a crash after it
leaves it current. ``Sampler.sync`` fsyncs the directories written since the
last call: the run loop calls it before saving the checkpoint, so the
checkpoint never passes a sample whose directory entry is not durable.

Errors on the samples side (disk full, permissions), and a warehouse root
that cannot be opened (unmounted), are not the file's fault and are raised
as ``OSError``: the run loop stops without passing the record, and systemd
restarts the sampler to retry it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ingestor import __version__
from ingestor.manifest import ManifestRecord, rfc3339
from sampler.formats import Sampled, sample_csv, sample_jsonl
from sampler.formats_archive import sample_tar, sample_zip
from sampler.formats_arrow import sample_arrow_file, sample_arrow_stream
from sampler.formats_avro import sample_avro
from sampler.formats_columnar import sample_orc, sample_parquet
from sampler.formats_compressed import sample_compressed
from sampler.formats_json import sample_json
from sampler.formats_office import sample_xlsx
from sampler.limits import BoundedFile, Budget, ErrorKind, Limits, SampleError
from sampler.paths import (
    COMPRESSED,
    Format,
    Kind,
    PathRejected,
    SampleNames,
    detect,
    is_regular,
    open_dir,
    open_source,
    read_small,
    sample_names,
    warehouse_parts,
    warehouse_roots,
    write_atomic,
)
from sampler.sniff import HEAD_BYTES, guess_type, sniff_format

SIDECAR_VERSION = 1
MAX_DIRTY_DIRS = 64
# read by pyarrow or by the Avro framing, which take a short read for a truncated file
STRICT = frozenset({Kind.PARQUET, Kind.ARROW, Kind.ARROW_STREAM, Kind.ORC, Kind.AVRO})


class Event(StrEnum):
    """What happened to one record; also its log event name."""

    WRITTEN = "sample_written"
    CURRENT = "sample_current"
    ERROR = "sample_error"
    REJECTED = "sample_path_rejected"


@dataclass(frozen=True, slots=True)
class Outcome:
    event: Event
    format: Kind | None = None
    sample: str | None = None  # relative to --samples
    rows: int = 0
    truncated: bool = False
    note: str | None = None
    error_kind: ErrorKind | None = None
    message: str | None = None
    seconds: float = 0.0


def _dump(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _write_bytes(data: bytes) -> Any:
    def write(out: BinaryIO) -> None:
        out.write(data)

    return write


class Sampler:
    """Writes samples under one samples root. Owned by the run loop only (no lock)."""

    def __init__(self, warehouse: Path, samples: Path, limits: Limits, *, log: Any) -> None:
        self.warehouse = warehouse
        self.roots = warehouse_roots(str(warehouse))
        self.limits = limits
        self.log = log
        self.samples_fd = os.open(samples, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._warehouse_fd: int | None = None
        self._dirty: dict[tuple[str, ...], int] = {}  # directory -> fd to fsync at sync()

    def close(self) -> None:
        """fsync what was written, then close every descriptor, even when an fsync fails."""
        try:
            self.sync()
        finally:
            for fd in self._dirty.values():  # left by a failed fsync: not durable, not retried here
                os.close(fd)
            self._dirty.clear()
            os.close(self.samples_fd)
            if self._warehouse_fd is not None:
                os.close(self._warehouse_fd)

    def sync(self) -> None:
        """fsync every sample directory written since the last call."""
        while self._dirty:
            _, fd = self._dirty.popitem()
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _warehouse_root(self) -> int:
        """The warehouse root's fd. Unusable root: ``OSError``, fatal, not the file's fault.

        A per-file error would be recorded and never retried; an unmounted or
        misconfigured warehouse must stop the sampler instead, so systemd
        retries once it is back.
        """
        if self._warehouse_fd is None:
            try:
                self._warehouse_fd = os.open(self.warehouse, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise OSError(exc.errno, f"warehouse root {self.warehouse} unusable: {exc.strerror}") from exc
        return self._warehouse_fd

    def sample(self, rec: ManifestRecord) -> Outcome:
        started = time.monotonic()
        if rec.sha256 is None:  # a rejected file's line: nothing landed to sample
            return Outcome(Event.REJECTED, message="a rejected file: nothing landed")
        try:
            parts = warehouse_parts(rec.warehouse, self.roots)
            hint = detect(parts[-1])  # the name's format; the content decides in _write
            names = sample_names(parts[-1], hint)
        except PathRejected as exc:
            return Outcome(Event.REJECTED, message=str(exc))
        rel_dir = parts[:-1]
        try:
            dir_fd = open_dir(self.samples_fd, rel_dir, create=False)
        except FileNotFoundError:
            dir_fd = -1
        except NotADirectoryError as exc:
            return Outcome(Event.REJECTED, message=f"samples tree: {exc}")
        try:
            if dir_fd >= 0 and (current := self._current(dir_fd, names, rec.sha256)) is not None:
                return Outcome(Event.CURRENT, current)
            if dir_fd < 0:
                try:
                    dir_fd = open_dir(self.samples_fd, rel_dir, create=True)
                except NotADirectoryError as exc:
                    return Outcome(Event.REJECTED, message=f"samples tree: {exc}")
            outcome = self._write(rec, parts, hint, dir_fd)
            key = tuple(rel_dir)
            if key not in self._dirty:
                self._dirty[key] = os.dup(dir_fd)
                if len(self._dirty) >= MAX_DIRTY_DIRS:
                    self.sync()
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)
        rel_sample = "/".join([*rel_dir, outcome.sample or ""])
        return replace(outcome, sample=rel_sample, seconds=time.monotonic() - started)

    def _current(self, dir_fd: int, names: SampleNames, sha256: str) -> Kind | None:
        """The format of a sample current for ``sha256`` (sidecar and its file present), else None."""
        raw = read_small(dir_fd, names.sidecar)
        if raw is None:
            return None
        try:
            side = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(side, dict) or side.get("sha256") != sha256:
            return None
        outcome = side.get("outcome")
        if outcome not in ("sample", "error"):
            return None
        suffix = side.get("file_suffix")  # absent from sidecars written before content detection
        written = names.base + suffix if isinstance(suffix, str) else names.for_outcome(outcome)
        if written not in names.outcomes:
            return None
        if not is_regular(dir_fd, written):
            return None
        try:
            return Kind(str(side.get("format")))
        except ValueError:
            return None

    def _write(self, rec: ManifestRecord, parts: list[str], hint: Format, dir_fd: int) -> Outcome:
        fmt = hint
        try:
            fd, st = open_source(self._warehouse_root(), parts)
            try:
                if st.st_size != rec.size:
                    raise SampleError(
                        ErrorKind.CHANGED,
                        f"warehouse file is {st.st_size} bytes, the manifest says {rec.size}",
                    )
                f = BoundedFile(fd, st.st_size, Budget(self.limits))
                fmt = self._sniff(rec, f, hint, parts[-1])
                f.strict = fmt.kind in STRICT
                names = sample_names(parts[-1], fmt)
                result = self._sample_file(rec, fmt, names, f, st, dir_fd)
            finally:
                os.close(fd)
            outcome = Outcome(
                Event.WRITTEN,
                fmt.kind,
                names.sample,
                result.rows,
                result.truncated,
                result.note,
            )
        except SampleError as exc:
            names = sample_names(parts[-1], fmt)
            doc = self._meta_doc(rec, fmt, None, None)
            doc["error"] = {"kind": str(exc.kind), "message": exc.message}
            write_atomic(dir_fd, names.meta, _write_bytes(_dump(doc)))
            outcome = Outcome(Event.ERROR, fmt.kind, names.meta, error_kind=exc.kind, message=exc.message)
        side = {
            "version": SIDECAR_VERSION,
            "id": rec.id,
            "sha256": rec.sha256,
            "source": rec.warehouse_path,
            "source_b64": rec.warehouse_path_b64,
            "format": str(fmt.kind),
            "outcome": "sample" if outcome.event is Event.WRITTEN else "error",
            "file_suffix": (outcome.sample or "")[len(names.base) :],  # the file written: base + this
            "rows": outcome.rows,
            "truncated": outcome.truncated,
            "note": outcome.note,
            "error_kind": None if outcome.error_kind is None else str(outcome.error_kind),
            "sampled_at": rfc3339(time.time_ns()),
            "sampler_version": __version__,
        }
        write_atomic(dir_fd, names.sidecar, _write_bytes(_dump(side)))
        for stale in names.outcomes:
            if stale != outcome.sample:
                try:
                    os.unlink(stale, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
        return outcome

    def _sniff(self, rec: ManifestRecord, f: BoundedFile, hint: Format, name: str) -> Format:
        try:
            return sniff_format(f, hint, self.limits, name)
        except SampleError:
            raise
        except Exception as exc:  # a detection bug must not stop the sampler
            self.log.exception("sampler_internal_error", path=rec.warehouse, sha256=rec.sha256)
            raise SampleError(ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}") from exc

    def _sample_file(
        self,
        rec: ManifestRecord,
        fmt: Format,
        names: SampleNames,
        f: BoundedFile,
        st: os.stat_result,
        dir_fd: int,
    ) -> Sampled:
        if fmt.kind is Kind.META:
            f.seek(0)
            doc = self._meta_doc(rec, fmt, st, guess_type(f.read(HEAD_BYTES), fmt))
            write_atomic(dir_fd, names.sample, _write_bytes(_dump(doc)))
            return Sampled(rows=0, truncated=False)
        try:
            return write_atomic(dir_fd, names.sample, lambda out: self._dispatch(fmt, f, out))
        except (SampleError, OSError):
            raise
        except Exception as exc:  # a sampler bug must not stop the sampler
            self.log.exception("sampler_internal_error", path=rec.warehouse, sha256=rec.sha256)
            raise SampleError(ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}") from exc

    def _dispatch(self, fmt: Format, f: BoundedFile, out: BinaryIO) -> Sampled:
        limits = self.limits
        kind = fmt.kind
        if kind in (Kind.CSV, Kind.TSV):
            if fmt.dialect is not None:
                d = fmt.dialect
                return sample_csv(f, out, limits, delimiter=d.delimiter, quotechar=d.quotechar)
            return sample_csv(f, out, limits, delimiter=b"\t" if kind is Kind.TSV else b",", sniff=True)
        if kind in COMPRESSED:
            return sample_compressed(f, out, limits, kind, fmt.inner)
        samplers = {
            Kind.JSONL: sample_jsonl,
            Kind.JSON: sample_json,
            Kind.PARQUET: sample_parquet,
            Kind.ARROW: sample_arrow_file,
            Kind.ARROW_STREAM: sample_arrow_stream,
            Kind.ORC: sample_orc,
            Kind.AVRO: sample_avro,
            Kind.XLSX: sample_xlsx,
            Kind.ZIP: sample_zip,
        }
        if kind in samplers:
            return samplers[kind](f, out, limits)
        if kind in (Kind.TAR, Kind.TAR_GZ):
            return sample_tar(f, out, limits, compressed=kind is Kind.TAR_GZ)
        raise AssertionError(f"no sampler for {kind}")

    def _meta_doc(
        self,
        rec: ManifestRecord,
        fmt: Format,
        st: os.stat_result | None,
        type_guess: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The ``.meta.json`` body: size, mtime, sha256, type guess (and error)."""
        if type_guess is None:
            type_guess = self._head_guess(rec, fmt)
        return {
            "source": rec.warehouse_path,
            "source_b64": rec.warehouse_path_b64,
            "id": rec.id,
            "format": str(fmt.kind),
            "size": st.st_size if st is not None else rec.size,
            "mtime": rfc3339(st.st_mtime_ns) if st is not None else rec.mtime,
            "sha256": rec.sha256,
            "type_guess": type_guess,
            "error": None,
        }

    def _head_guess(self, rec: ManifestRecord, fmt: Format) -> dict[str, Any] | None:
        """A type guess for an error document, when the file can still be opened."""
        try:
            fd, st = open_source(self._warehouse_root(), warehouse_parts(rec.warehouse, self.roots))
        except (SampleError, PathRejected, OSError):
            return None
        try:
            f = BoundedFile(fd, st.st_size, Budget(self.limits))
            return guess_type(f.read(HEAD_BYTES), fmt)
        except SampleError:
            return None
        finally:
            os.close(fd)
