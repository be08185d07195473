"""Where a sample goes, and how the sampler touches both trees without being led astray.

Naming. A warehouse path is mirrored, relative to ``--warehouse``, under
``--samples``, with ``_sample`` inserted before the format suffix, which is
matched case-insensitively and kept as written. Compound suffixes count as one:

    W/ingest_date=2026-11-23/a/b.csv      ->  S/ingest_date=2026-11-23/a/b_sample.csv
    W/.../x.csv.gz                        ->  S/.../x_sample.csv.gz
    W/.../x.tar.gz  (tar listing)         ->  S/.../x_sample.tar.gz.txt
    W/.../x.bin     (unknown format)      ->  S/.../x_sample.bin.meta.json
    W/.../README    (no suffix)           ->  S/.../README_sample.meta.json
    W/.../part-0    (Parquet by content)  ->  S/.../part-0_sample
    W/.../x.txt     (CSV by content)      ->  S/.../x_sample.txt

The base comes from the name alone; the format (found by content first, see
``sniff``) decides only whether the sample is the base itself, a listing
(``.txt``) or a ``.meta.json``.

``<stem>_sample<suffix>`` is the sample's *base*. Beside every sample sits
``<base>.source.json``, the sidecar: the source's sha256 and record id, the
outcome (``sample`` or ``error``) and row counts. A record is current, and
skipped, when its sidecar holds the record's sha256 and the file of that
outcome exists. A file that cannot be sampled gets ``<base>.meta.json`` with
the error (for unknown formats that is also the sample's own name).

Safety. The manifest is input like any other:

- a warehouse path must lie under the warehouse root (as given, or its
  realpath) and have no empty, ``.`` or ``..`` component, else it is rejected;
  so no record can make the sampler write outside ``--samples``;
- both trees are walked with directory descriptors opened
  ``O_DIRECTORY|O_NOFOLLOW`` one component at a time (``O_NOFOLLOW`` alone
  only guards the last component), so a symlink anywhere in either tree is
  never followed;
- a warehouse file is ``lstat``-ed, then opened ``O_NOFOLLOW|O_NONBLOCK``
  (a FIFO would block forever without it) and ``fstat``-ed: only a regular
  file is ever read;
- samples are written to a temporary name fixed by the target name
  (``.~<hash>.sampler-tmp``), fsynced, then renamed: a crash leaves at most a
  temporary that the redo of the same record overwrites.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO, TypeVar

from sampler.limits import ErrorKind, SampleError

T = TypeVar("T")

NAME_MAX = 255
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SIDECAR_SUFFIX = ".source.json"
META_SUFFIX = ".meta.json"
LISTING_SUFFIX = ".txt"


class Kind(StrEnum):
    """Which sampler a file goes to (also the ``format`` the sidecar and ``.meta.json`` name)."""

    CSV = "csv"
    TSV = "tsv"
    JSON = "json"
    JSONL = "jsonl"
    TEXT = "text"  # a hint only (.txt, .dat): CSV when a dialect is sniffed, else lines or .meta.json
    PARQUET = "parquet"
    ARROW = "arrow"  # Arrow IPC file, Feather v2
    ARROW_STREAM = "arrow_stream"
    ORC = "orc"
    AVRO = "avro"
    XLSX = "xlsx"
    GZIP = "gzip"
    ZSTD = "zstd"
    BZIP2 = "bzip2"
    XZ = "xz"
    LZ4 = "lz4"  # the LZ4 frame format
    ZIP = "zip"
    TAR = "tar"
    TAR_GZ = "tar_gz"
    META = "meta"


COMPRESSED = frozenset({Kind.GZIP, Kind.ZSTD, Kind.BZIP2, Kind.XZ, Kind.LZ4})
TEXT_KINDS = frozenset({Kind.CSV, Kind.TSV, Kind.JSON, Kind.JSONL, Kind.TEXT})


@dataclass(frozen=True, slots=True)
class CsvDialect:
    """What the CSV record scanner needs: one byte each."""

    delimiter: bytes
    quotechar: bytes = b'"'


@dataclass(frozen=True, slots=True)
class Format:
    kind: Kind
    suffix: str  # as written in the file name ("" when unknown and suffix-less)
    inner: Kind | None = None  # compressed: the format of the decompressed stream (None: unknown)
    dialect: CsvDialect | None = None  # CSV/TSV: sniffed from the content (None: sniff when sampling)

    @property
    def listing(self) -> bool:
        """A tar (plain or compressed) is sampled as a text listing."""
        return self.kind in (Kind.TAR, Kind.TAR_GZ) or self.inner is Kind.TAR


_CODECS = ((".gz", Kind.GZIP), (".zst", Kind.ZSTD), (".zstd", Kind.ZSTD), (".bz2", Kind.BZIP2),
           (".xz", Kind.XZ), (".lz4", Kind.LZ4))  # fmt: skip
_INNER = ((".ndjson", Kind.JSONL), (".jsonl", Kind.JSONL), (".json", Kind.JSON), (".csv", Kind.CSV),
          (".tsv", Kind.TSV), (".txt", Kind.TEXT), (".dat", Kind.TEXT), (".tar", Kind.TAR))  # fmt: skip
_PLAIN: tuple[tuple[str, Kind, Kind | None], ...] = (
    (".tgz", Kind.TAR_GZ, None),
    (".tbz2", Kind.BZIP2, Kind.TAR),
    (".txz", Kind.XZ, Kind.TAR),
    (".parquet", Kind.PARQUET, None),
    (".feather", Kind.ARROW, None),
    (".arrows", Kind.ARROW_STREAM, None),
    (".arrow", Kind.ARROW, None),
    (".orc", Kind.ORC, None),
    (".avro", Kind.AVRO, None),
    (".xlsx", Kind.XLSX, None),
    *((suffix, kind, None) for suffix, kind in _INNER),
    (".zip", Kind.ZIP, None),
    *((suffix, kind, None) for suffix, kind in _CODECS),
)
# Compound suffixes count as one (x.csv.zst -> x_sample.csv.zst); longest first: the first match wins.
_SUFFIXES: tuple[tuple[str, Kind, Kind | None], ...] = tuple(
    sorted(
        [
            *(
                (inner_suffix + codec_suffix, Kind.TAR_GZ if (codec, inner) == (Kind.GZIP, Kind.TAR) else codec,
                 None if (codec, inner) == (Kind.GZIP, Kind.TAR) else inner)
                for inner_suffix, inner in _INNER
                for codec_suffix, codec in _CODECS
            ),
            *_PLAIN,
        ],
        key=lambda row: -len(row[0]),
    )
)  # fmt: skip


def detect(name: str) -> Format:
    """The format a file's name suggests (content decides first: see ``sniff``)."""
    lower = name.lower()
    for suffix, kind, inner in _SUFFIXES:
        if lower.endswith(suffix):
            return Format(kind, name[len(name) - len(suffix) :], inner)
    dot = name.rfind(".")
    return Format(Kind.META, name[dot:] if dot > 0 else "")


def name_inner(name: str) -> Kind | None:
    """The format a name says lies inside a compressed file that lacks the codec's suffix.

    ``x.csv`` holding gzip is gzipped CSV; ``x.tgz`` or ``x.tar`` holding
    gzip is a compressed tar.
    """
    fmt = detect(name)
    if fmt.kind in COMPRESSED:
        return fmt.inner
    if fmt.kind in (Kind.TAR, Kind.TAR_GZ):
        return Kind.TAR
    return fmt.kind if fmt.kind in TEXT_KINDS else None


@dataclass(frozen=True, slots=True)
class SampleNames:
    """File names, inside the sample's directory, for one warehouse file."""

    base: str
    sample: str  # the data sample (the .meta.json for unknown formats)
    meta: str  # the error metadata
    sidecar: str

    def for_outcome(self, outcome: str) -> str:
        return self.sample if outcome == "sample" else self.meta

    @property
    def outcomes(self) -> tuple[str, ...]:
        """Every name a sample of this base may have had, whatever its format was."""
        return (self.base, self.base + LISTING_SUFFIX, self.meta)


def sample_names(name: str, fmt: Format) -> SampleNames:
    """Names from the name's suffix (the base) and the format (sample, listing or .meta.json)."""
    stem = name[: len(name) - len(fmt.suffix)]
    base = f"{stem}_sample{fmt.suffix}"
    if fmt.listing:
        sample = base + LISTING_SUFFIX
    elif fmt.kind is Kind.META:
        sample = base + META_SUFFIX
    else:
        sample = base
    names = SampleNames(base, sample, base + META_SUFFIX, base + SIDECAR_SUFFIX)
    longest = max(len(os.fsencode(n)) for n in (names.sample, names.meta, names.sidecar))
    if longest > NAME_MAX:
        raise PathRejected(f"sample name would be {longest} bytes, over NAME_MAX")
    return names


class PathRejected(ValueError):
    """A warehouse path the sampler refuses to mirror."""


def warehouse_parts(path: str | None, roots: tuple[str, ...]) -> list[str]:
    """Components of ``path`` below one of ``roots``; ``PathRejected`` otherwise."""
    if path is None:
        raise PathRejected("record has no warehouse path")
    if "\x00" in path:
        raise PathRejected("path holds a NUL byte")
    for root in roots:
        prefix = root.rstrip("/") + "/"
        if path.startswith(prefix):
            parts = path[len(prefix) :].split("/")
            if any(p in ("", ".", "..") for p in parts):
                raise PathRejected("path has an empty, '.' or '..' component")
            return parts
    raise PathRejected("path is not under the warehouse root")


def warehouse_roots(warehouse: str) -> tuple[str, ...]:
    given = os.path.abspath(warehouse)
    real = os.path.realpath(warehouse)
    return (given,) if given == real else (given, real)


def open_dir(root_fd: int, parts: list[str], *, create: bool) -> int:
    """A descriptor for ``root/parts...``, never following a symlink.

    With ``create``, missing directories are made and their parent fsynced
    (a sample in a directory whose entry is not durable is not durable).
    Raises ``FileNotFoundError`` when a part is missing and not ``create``,
    ``NotADirectoryError`` when a part is a symlink or not a directory.
    """
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                else:
                    os.fsync(fd)
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotADirectoryError(f"{part!r} is a symlink or not a directory") from exc
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_source(root_fd: int, parts: list[str]) -> tuple[int, os.stat_result]:
    """Open a warehouse file for reading: a regular file, reached without symlinks."""
    try:
        dir_fd = open_dir(root_fd, parts[:-1], create=False)
    except FileNotFoundError as exc:
        raise SampleError(ErrorKind.MISSING, "not in the warehouse (directory missing)") from exc
    except NotADirectoryError as exc:
        raise SampleError(ErrorKind.NOT_REGULAR, f"path goes through {exc}") from exc
    except OSError as exc:
        raise SampleError(ErrorKind.UNREADABLE, f"cannot open directory: {exc.strerror}") from exc
    try:
        try:
            st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise SampleError(ErrorKind.MISSING, "not in the warehouse") from exc
        if not stat.S_ISREG(st.st_mode):
            raise SampleError(ErrorKind.NOT_REGULAR, f"not a regular file ({_type_name(st)})")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(parts[-1], flags, dir_fd=dir_fd)
        except FileNotFoundError as exc:
            raise SampleError(ErrorKind.MISSING, "not in the warehouse") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SampleError(ErrorKind.NOT_REGULAR, "is a symlink") from exc
            raise SampleError(ErrorKind.UNREADABLE, f"cannot open: {exc.strerror}") from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise SampleError(ErrorKind.NOT_REGULAR, f"not a regular file ({_type_name(st)})")
        return fd, st
    finally:
        os.close(dir_fd)


def _type_name(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, name in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return name
    return "unknown type"


def tmp_name(name: str) -> str:
    """The temporary a target is written to: fixed by the name, short, hidden."""
    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:20]
    return f".~{digest}.sampler-tmp"


def write_atomic(dir_fd: int, name: str, write: Callable[[BinaryIO], T]) -> T:
    """Write ``name`` in ``dir_fd`` by ``write(file)``: temporary, fsync, rename.

    The directory itself is not fsynced here: the caller batches that before
    it records progress (see ``sample.Sampler.sync``). On any error the
    temporary is removed and the old ``name`` (if any) is untouched.
    """
    tmp = tmp_name(name)
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w+b") as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
    return result


def read_small(dir_fd: int, name: str, limit: int = 1 << 16) -> bytes | None:
    """A small regular file's bytes, or None when absent, not regular or too big."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        return os.pread(fd, limit, 0)
    finally:
        os.close(fd)


def is_regular(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
