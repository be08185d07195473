"""The manifest: one JSON line per landed (or duplicate) file, in hourly files.

Contract (shared with the sampler, which imports ``ManifestRecord``):

- Files live at ``<manifests>/YYYY/MM/DD/HH/manifest.jsonl``, the UTC hour of
  ``ingested_at``. Every line is one JSON object written by orjson and ends in
  ``\\n``; a reader treats a last line with no newline as not yet written.
- Every key is always present (``null`` when it does not apply), so DuckDB's
  ``read_json_auto`` and ``pandas.read_json(lines=True)`` see one schema.
- Paths are absolute. A path that is not valid UTF-8 is written with each
  invalid byte replaced by U+FFFD in ``source_path`` / ``warehouse_path``, and
  losslessly as base64 of the raw bytes in ``source_path_b64`` /
  ``warehouse_path_b64`` (``null`` when the path is valid UTF-8). Newlines,
  quotes and backslashes in names are escaped by JSON as usual.
- Late lines: a line normally goes to the hour file of its ``ingested_at``; a
  record finished late (crash recovery, a long disk-full retry) is re-planned
  into the current hour, so an hour file receives no new line more than
  ``LATE_APPEND_SECONDS`` after its hour ended.

Writing: ``ManifestWriter.append`` takes an exclusive ``flock`` on the file
(several processes may append: the daemon and ``ingestor replay``), cuts a torn
tail left by a crashed writer back to the last newline, writes the batch in one
``write``, and fsyncs. If the write or the fsync fails, the batch is cut off
again before the error is raised: after an fsync EIO, Linux may drop the dirty
pages while reads still show them, so the only safe retry starts from a file
that provably does not hold the lines.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import fcntl
import functools
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ingestor import __version__, faults, runs
from ingestor.errors import Retryable, from_oserror
from ingestor.fsops import fsync_dir, makedirs_durable, write_all
from ingestor.records import Action, Record, Status

MANIFEST_NAME = "manifest.jsonl"
LATE_APPEND_SECONDS = 60
LINE_BYTES = 1024  # room asked for a line (most are 500-700 bytes; long paths make them longer)
ROOM_MARGIN = 8 << 10  # a block or two of the filesystem
_HINT_FULL = "disk full: free space on the manifests' filesystem; landing resumes by itself"
_READ_CHUNK = 1 << 20


class ManifestError(ValueError):
    """A manifest line that does not parse as a record."""


def manifest_rel_for(ns: int) -> str:
    """Relative manifest path for a UTC time in nanoseconds."""
    return _manifest_rel_for_hour(ns // 3_600_000_000_000)


@functools.lru_cache(maxsize=8)
def _manifest_rel_for_hour(hour: int) -> str:
    t = time.gmtime(hour * 3600)
    return f"{t.tm_year:04d}/{t.tm_mon:02d}/{t.tm_mday:02d}/{t.tm_hour:02d}/{MANIFEST_NAME}"


def hour_end_ns(manifest_rel: str) -> int:
    """The UTC instant (ns) at which the hour of a manifest file ends."""
    y, m, d, h = (int(p) for p in manifest_rel.split("/")[:4])
    return (calendar.timegm((y, m, d, h, 0, 0, 0, 0, 0)) + 3600) * 1_000_000_000


def rfc3339(ns: int) -> str:
    """RFC 3339 UTC with microseconds: ``2026-11-23T15:01:02.123456Z``."""
    secs, rem = divmod(ns, 1_000_000_000)
    return f"{_second(secs)}.{rem // 1000:06d}Z"


@functools.lru_cache(maxsize=4096)
def _second(secs: int) -> str:
    t = time.gmtime(secs)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def encode_path(path: str) -> tuple[str, str | None]:
    """(display text, base64 of the raw bytes or None when the path is UTF-8)."""
    if path.isascii():
        return path, None
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")


def _text(rel: str) -> str:
    """A relative path as text (``encode_path``'s display text)."""
    return rel if rel.isascii() else encode_path(rel)[0]


def decode_path(text: str | None, b64: str | None) -> str | None:
    """The exact path (``surrogateescape`` str) from its two manifest fields."""
    if b64 is not None:
        return os.fsdecode(base64.b64decode(b64))
    return text


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """One manifest line. The schema is defined here and nowhere else."""

    id: str
    status: Status
    action: Action
    source_path: str
    source_path_b64: str | None
    warehouse_path: str | None
    warehouse_path_b64: str | None
    sha256: str | None  # None: rejected (never read)
    size: int | None  # None: rejected, and it could not even be stat'ed (so for mtime, device, inode)
    mtime: str | None
    device: int | None
    inode: int | None
    ingested_at: str  # rejected: when the rejection was recorded
    duplicate_of: str | None
    ingestor_version: str
    # the keys from here on are absent from older lines: None when read from one
    detected_at: str | None = None  # the first event or scan that saw the file (None: not known)
    source_relpath: str | None = None  # source_path relative to the landing dir
    warehouse_relpath: str | None = None  # warehouse_path relative to the warehouse
    reason: str | None = None  # rejected: why the file will not land
    hint: str | None = None  # rejected: what to do about it
    source_name: str | None = None  # key "source": the source's name
    dataset: dict[str, str] | None = None  # its placeholder values ({} for a plain path)
    host: str | None = None  # the host whose ingestor wrote the line
    run_id: str | None = None  # the run (ledger ``runs``) that wrote it

    @classmethod
    def from_record(
        cls,
        rec: Record,
        landing: str | Path,
        warehouse: str | Path,
        source: str = "default",
        dataset: dict[str, str] | None = None,
    ) -> ManifestRecord:
        """The line of a record; ``landing`` and ``warehouse`` are absolute dirs."""
        src, src_b64 = encode_path(f"{landing}/{rec.source_rel}")
        dst: str | None = None
        dst_b64: str | None = None
        if rec.dest_rel is not None:
            dst, dst_b64 = encode_path(f"{warehouse}/{rec.dest_rel}")
        return cls(
            id=rec.id,
            status=rec.status,
            action=rec.action,
            source_path=src,
            source_path_b64=src_b64,
            warehouse_path=dst,
            warehouse_path_b64=dst_b64,
            sha256=rec.sha256,
            size=rec.identity.size,
            mtime=rfc3339(rec.identity.mtime_ns),
            device=rec.identity.device,
            inode=rec.identity.inode,
            ingested_at=rfc3339(rec.ingested_ns),
            duplicate_of=rec.duplicate_of,
            ingestor_version=__version__,
            detected_at=rfc3339(rec.detected_ns) if rec.detected_ns else None,
            source_relpath=_text(rec.source_rel),
            warehouse_relpath=_text(rec.dest_rel) if rec.dest_rel is not None else None,
            source_name=source,
            dataset=dataset if dataset is not None else {},
            host=runs.HOST,
            run_id=runs.RUN_ID,
        )

    @classmethod
    def rejected(
        cls,
        rec_id: str,
        landing: str | Path,
        rel: str,
        ident: tuple[int, int, int, int] | None,
        reason: str,
        hint: str | None,
        *,
        at_ns: int,
        source: str = "default",
        dataset: dict[str, str] | None = None,
    ) -> ManifestRecord:
        """The line of a file that will not land as it is (``ident``: its inode, device, size and
        mtime, if known)."""
        ino, dev, size, mtime_ns = ident if ident is not None else (None, None, None, None)
        src, src_b64 = encode_path(f"{landing}/{rel}")
        return cls(
            id=rec_id,
            status=Status.REJECTED,
            action=Action.NONE,
            source_path=src,
            source_path_b64=src_b64,
            warehouse_path=None,
            warehouse_path_b64=None,
            sha256=None,
            size=size,
            mtime=rfc3339(mtime_ns) if mtime_ns is not None else None,
            device=dev,
            inode=ino,
            ingested_at=rfc3339(at_ns),
            duplicate_of=None,
            ingestor_version=__version__,
            source_relpath=_text(rel),
            reason=reason,
            hint=hint,
            source_name=source,
            dataset=dataset if dataset is not None else {},
            host=runs.HOST,
            run_id=runs.RUN_ID,
        )

    def to_json(self) -> bytes:
        """The line, newline included, keys in field order (``source_name`` is key ``source``)."""
        return orjson.dumps(
            dict(zip(KEYS, (getattr(self, f) for f in _FIELDS), strict=True)),
            option=orjson.OPT_APPEND_NEWLINE,
        )

    @staticmethod
    def line_of(rec: Record, landing: str, warehouse: str, tail: bytes | None = None) -> bytes:
        """``from_record(rec, landing, warehouse).to_json()`` without building the record.

        The writer's hot path (a line per landed file); the same fields in the same
        order, which a test holds to the dataclass above.
        """
        src, src_b64 = encode_path(f"{landing}/{rec.source_rel}")
        dst: str | None = None
        dst_b64: str | None = None
        if rec.dest_rel is not None:
            dst, dst_b64 = encode_path(f"{warehouse}/{rec.dest_rel}")
        ident = rec.identity
        if tail is None:  # the plain landing dir's
            tail = ManifestRecord.tail_of("default", {})
        return (
            orjson.dumps(
                {
                    "id": rec.id,
                    "status": rec.status,
                    "action": rec.action,
                    "source_path": src,
                    "source_path_b64": src_b64,
                    "warehouse_path": dst,
                    "warehouse_path_b64": dst_b64,
                    "sha256": rec.sha256,
                    "size": ident.size,
                    "mtime": rfc3339(ident.mtime_ns),
                    "device": ident.device,
                    "inode": ident.inode,
                    "ingested_at": rfc3339(rec.ingested_ns),
                    "duplicate_of": rec.duplicate_of,
                    "ingestor_version": __version__,
                    "detected_at": rfc3339(rec.detected_ns) if rec.detected_ns else None,
                    "source_relpath": _text(rec.source_rel),
                    "warehouse_relpath": _text(rec.dest_rel) if rec.dest_rel is not None else None,
                    "reason": None,
                    "hint": None,
                },
            )[:-1]
            + tail
        )

    @staticmethod
    def tail_of(source: str, dataset: dict[str, str]) -> bytes:
        """The end of every line of one landing dir in this run (``line_of``'s ``tail``):
        serialised once."""
        end = {"source": source, "dataset": dataset, "host": runs.HOST, "run_id": runs.RUN_ID}
        return b"," + orjson.dumps(end)[1:] + b"\n"

    @classmethod
    def from_json(cls, line: bytes | str) -> ManifestRecord:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ManifestError(f"not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise ManifestError("not a JSON object")
        try:
            values: dict[str, Any] = {
                name: obj.get(key) if key in _OPTIONAL else obj[key]
                for name, key in zip(_FIELDS, KEYS, strict=True)
            }
            rec = cls(**values)
            return _checked(rec)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ManifestError(f"not a manifest record: {exc!r}") from exc

    @property
    def source(self) -> str:
        """The exact source path (``surrogateescape`` str)."""
        path = decode_path(self.source_path, self.source_path_b64)
        assert path is not None
        return path

    @property
    def warehouse(self) -> str | None:
        """The exact warehouse path, or None for a deleted or kept duplicate."""
        return decode_path(self.warehouse_path, self.warehouse_path_b64)


_FIELDS = tuple(ManifestRecord.__dataclass_fields__)
KEYS = tuple("source" if f == "source_name" else f for f in _FIELDS)
# absent from lines written before they were added
_OPTIONAL = frozenset(KEYS[KEYS.index("detected_at") :])
_SHA256 = re.compile(r"[0-9a-f]{64}")
# text or null (the keys beside the ones checked one by one)
_TEXTS = (
    "detected_at",
    "source_relpath",
    "warehouse_relpath",
    "reason",
    "hint",
    "source_name",
    "host",
    "run_id",
)


def _checked(rec: ManifestRecord) -> ManifestRecord:
    status = Status(rec.status)
    action = Action(rec.action)
    if status is Status.REJECTED:
        if rec.sha256 is not None or rec.warehouse_path is not None or not isinstance(rec.reason, str):
            raise ValueError("a rejected line has a reason, and no sha256 or warehouse path")
        if rec.size is not None and (not isinstance(rec.size, int) or rec.size < 0):
            raise ValueError("size is not a non-negative integer")
    else:
        if not (isinstance(rec.sha256, str) and _SHA256.fullmatch(rec.sha256)):
            raise ValueError("sha256 is not 64 lowercase hex digits")
        if not isinstance(rec.size, int) or rec.size < 0:
            raise ValueError("size is not a non-negative integer")
    if rec.source_path_b64 is not None:
        base64.b64decode(rec.source_path_b64, validate=True)
    if rec.warehouse_path_b64 is not None:
        base64.b64decode(rec.warehouse_path_b64, validate=True)
    for key in _TEXTS:
        if not isinstance(getattr(rec, key), str | None):
            raise ValueError(f"{key} is not a string")
    if rec.dataset is not None and not (
        isinstance(rec.dataset, dict) and all(isinstance(v, str) for v in rec.dataset.values())
    ):
        raise ValueError("dataset is not an object of strings")
    if (status is Status.DUPLICATE) != (rec.duplicate_of is not None):
        raise ValueError("duplicate_of must be set exactly for duplicates")
    # normalise the enums so equality with the StrEnum members holds
    return ManifestRecord(**{**{f: getattr(rec, f) for f in _FIELDS}, "status": status, "action": action})


def iter_lines(fd: int, start: int, end: int | None = None) -> Iterator[tuple[bytes, int]]:
    """Complete lines of ``fd`` from ``start`` (a line start) as (line, offset after it).

    Stops at ``end`` (default: the size at call time) and never yields a last
    line with no newline: it is not written yet.
    """
    if end is None:
        end = os.fstat(fd).st_size
    pos = start
    pending = b""
    while pos < end:
        chunk = os.pread(fd, min(_READ_CHUNK, end - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        data = pending + chunk
        line_start = 0
        base = pos - len(data)
        while True:
            nl = data.find(b"\n", line_start)
            if nl < 0:
                break
            yield data[line_start : nl + 1], base + nl + 1
            line_start = nl + 1
        pending = data[line_start:]


def line_start_at_or_before(fd: int, offset: int) -> int:
    """Offset just after the last newline before ``offset`` (0 when there is none)."""
    pos = offset
    while pos > 0:
        lo = max(0, pos - 65536)
        chunk = os.pread(fd, pos - lo, lo)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return lo + nl + 1
        pos = lo
    return 0


class ManifestWriter:
    """Appends batches of lines to hourly manifest files, durably.

    Thread-safe: one process-wide mutex serialises appends between worker
    threads (flock does not exclude threads sharing a process), and an
    exclusive flock on the file excludes other processes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._mutex = threading.Lock()

    def check_room(self, lines: int) -> None:
        """Refuse a batch for which the manifests' filesystem has no room (``Retryable``).

        Asked before a batch is planned, so that its files stay in the landing
        dir while the manifests disk is full, instead of moving into the
        warehouse and waiting there for their lines. One ``statvfs`` a batch;
        a disk that fills between this and the append is still safe: the moved
        files wait in the warehouse, recorded in the ledger, for their lines.
        """
        try:
            st = os.statvfs(self.root)
        except OSError:
            return  # not there yet: the append makes it, or says why not
        need = lines * LINE_BYTES + ROOM_MARGIN
        if st.f_bavail * st.f_frsize < need:
            raise Retryable(
                "append to manifest",
                str(self.root),
                f"{st.f_bavail * st.f_frsize} bytes free, {need} needed",
                _HINT_FULL,
            )

    def path(self, rel: str) -> Path:
        return self.root / rel

    def size(self, rel: str) -> int:
        """Where the next line of a manifest file can start, at the earliest.

        The end of its last complete line, 0 when it does not exist: a torn tail
        left by a crashed writer is cut off before the next append, so the next
        line may start before the file's current size.
        """
        try:
            fd = os.open(self.root / rel, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            return line_start_at_or_before(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def append(self, rel: str, lines: Iterable[bytes]) -> int:
        """Append complete lines, fsync, return the file's size after them.

        Raises ``Retryable`` (disk full, I/O error...): the file then holds none
        of these lines, and the caller redoes the step later.
        """
        data = b"".join(lines)
        try:
            return self._append(rel, data)
        except OSError as exc:
            raise from_oserror("append to manifest", str(self.root / rel), exc, source=False) from exc

    def _append(self, rel: str, data: bytes) -> int:
        with self._mutex:
            fd = _open_append(self.root, rel)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                before = _repair_tail(fd)
                try:
                    if faults.ACTIVE and faults.ACTIVE.fire("manifest_write") == "torn":
                        cut = max(1, len(data) // 2)
                        cut -= data[cut - 1 : cut] == b"\n" and cut > 1  # tear inside a line
                        write_all(fd, data[:cut])
                        faults.kill_now()
                    write_all(fd, data)
                    os.fsync(fd)
                    if faults.ACTIVE:
                        faults.ACTIVE.hit("after_manifest_fsync")
                except OSError:
                    # Cut the batch off again: a retry must start from a file
                    # that provably does not hold these lines.
                    os.ftruncate(fd, before)
                    os.fsync(fd)
                    raise
                return before + len(data)
            finally:
                os.close(fd)  # also releases the flock

    def find_ids(self, rel: str, floor: int, ids: set[str]) -> set[str]:
        """Which of ``ids`` already have a complete line at or after ``floor``."""
        found: set[str] = set()
        try:
            fd = os.open(self.root / rel, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return found
        try:
            start = line_start_at_or_before(fd, min(floor, os.fstat(fd).st_size))
            for line, _ in iter_lines(fd, start):
                try:
                    line_id = orjson.loads(line).get("id")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if line_id in ids:
                    found.add(line_id)
        finally:
            os.close(fd)
        return found


def _open_append(root: Path, rel: str) -> int:
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(root / rel, flags, 0o644)
    except FileNotFoundError:
        root.mkdir(parents=True, exist_ok=True)
        for parent in makedirs_durable(root, os.path.dirname(rel)):  # never through a symlink
            fsync_dir(parent)
        return os.open(root / rel, flags, 0o644)


def _repair_tail(fd: int) -> int:
    """Cut a torn last line (a crashed writer's) back to the last newline."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    keep = line_start_at_or_before(fd, size)
    os.ftruncate(fd, keep)
    os.fsync(fd)
    return keep
