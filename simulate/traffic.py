"""Upstream traffic generators: the ways files really arrive in a landing dir.

Each function writes real files the way one kind of upstream does and
returns a ``Report`` (files, bytes, seconds, the final paths). They are used
by ``ingestor simulate ...``, by the tests and by the benchmarks: one copy.

Every file's content is unique (it starts with its own name and a counter,
then pseudo-random bytes) unless the generator's point is duplicates.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ingestor.manifest import ManifestRecord
from ingestor.settings import Settings


@dataclass(frozen=True, slots=True)
class Report:
    what: str
    files: int
    bytes: int
    seconds: float
    paths: list[Path] = field(default_factory=list)
    contents: dict[str, int] = field(default_factory=dict)  # sha256 → size of each distinct content

    def summary(self) -> dict[str, object]:
        return {
            "what": self.what,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def content(tag: str, size: int, seed: int | None = None) -> bytes:
    """``size`` bytes that start with ``tag`` (unique per file), then pseudo-random bytes."""
    head = f"{tag}\n".encode()
    if size <= len(head):
        return head[:size] if size else b""
    rng = random.Random(seed if seed is not None else tag)
    return head + rng.randbytes(size - len(head))


def _run_id() -> str:
    return f"{os.getpid()}-{time.monotonic_ns() % 10**9}"


def slow_copy(
    src: Path,
    into: Path,
    *,
    chunk: int = 64 << 10,
    interval: float = 0.2,
    name: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Report:
    """Copy ``src`` into ``into`` chunk by chunk, pausing between chunks (a slow scp)."""
    started = time.monotonic()
    dst = into / (name or src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(chunk):
            fout.write(block)
            fout.flush()
            h.update(block)
            total += len(block)
            sleep(interval)
    return Report("slow-copy", 1, total, time.monotonic() - started, [dst], {h.hexdigest(): total})


def rename_tmp(into: Path, *, count: int = 10, size: int = 4096, prefix: str = "file") -> Report:
    """Write ``name.tmp``, close it, rename it to ``name`` (rsync, most SFTP clients)."""
    started = time.monotonic()
    into.mkdir(parents=True, exist_ok=True)
    run = _run_id()
    paths = []
    contents = {}
    for i in range(count):
        final = into / f"{prefix}-{run}-{i:06d}.dat"
        tmp = final.with_name(final.name + ".tmp")
        data = content(final.name, size)
        tmp.write_bytes(data)
        os.rename(tmp, final)
        paths.append(final)
        contents[hashlib.sha256(data).hexdigest()] = size
    return Report("rename-tmp", count, count * size, time.monotonic() - started, paths, contents)


def duplicates(into: Path, *, count: int = 5, size: int = 4096, prefix: str = "resend") -> Report:
    """Send the same bytes ``count`` times under new names (an upstream that re-sends)."""
    started = time.monotonic()
    into.mkdir(parents=True, exist_ok=True)
    run = _run_id()
    data = content(f"{prefix}-{run}", size)
    paths = []
    for i in range(count):
        final = into / f"{prefix}-{run}-copy{i:03d}.dat"
        tmp = final.with_name("." + final.name)
        tmp.write_bytes(data)
        os.rename(tmp, final)
        paths.append(final)
    contents = {hashlib.sha256(data).hexdigest(): size}
    return Report("duplicates", count, count * size, time.monotonic() - started, paths, contents)


def sidecar(
    into: Path,
    *,
    count: int = 5,
    size: int = 4096,
    ok_first: bool = False,
    suffix: str = ".ok",
    prefix: str = "batch",
) -> Report:
    """Data files announced by a ``.ok`` sidecar (written after the data, or before it)."""
    started = time.monotonic()
    into.mkdir(parents=True, exist_ok=True)
    run = _run_id()
    paths = []
    contents = {}
    for i in range(count):
        data = into / f"{prefix}-{run}-{i:04d}.csv"
        ok = data.with_name(data.name + suffix)
        if ok_first:
            ok.write_bytes(b"")
        body = content(data.name, size)
        data.write_bytes(body)
        if not ok_first:
            ok.write_bytes(b"")
        paths.append(data)
        contents[hashlib.sha256(body).hexdigest()] = size
    return Report("sidecar", count, count * size, time.monotonic() - started, paths, contents)


def burst(
    into: Path, *, count: int = 1000, size: int = 4096, subdirs: int = 0, prefix: str = "burst"
) -> Report:
    """Many small files as fast as possible, each written then renamed into place."""
    started = time.monotonic()
    run = _run_id()
    dirs = [into / f"d{k:03d}" for k in range(subdirs)] if subdirs else [into]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    paths = []
    contents = {}
    for i in range(count):
        d = dirs[i % len(dirs)]
        final = d / f"{prefix}-{run}-{i:07d}.bin"
        tmp = d / f".{final.name}.part"
        data = content(final.name, size)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        paths.append(final)
        contents[hashlib.sha256(data).hexdigest()] = size
    return Report("burst", count, count * size, time.monotonic() - started, paths, contents)


# ----------------------------------------------------------------- filesystems and the cross-fs scenario


@dataclass(frozen=True, slots=True)
class Filesystem:
    """The mount a path lives on, as ``/proc/self/mountinfo`` describes it."""

    device: str  # "major:minor", as st_dev
    fstype: str  # ext4, tmpfs, xfs...
    mount_point: str
    source: str

    def summary(self) -> dict[str, str]:
        return {
            "device": self.device,
            "fstype": self.fstype,
            "mount_point": self.mount_point,
            "source": self.source,
        }


def _unescape_mount(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_of(path: Path, mountinfo: str = "/proc/self/mountinfo") -> Filesystem:
    """The filesystem holding ``path``: the mount with its device whose mount point is the longest prefix."""
    st = os.stat(path)
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    real = os.path.realpath(path)
    best: Filesystem | None = None
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            head, sep, tail = line.partition(" - ")
            fields = head.split()
            if not sep or len(fields) < 5 or fields[2] != device:
                continue
            point = _unescape_mount(fields[4])
            if not (real == point or real.startswith(point.rstrip("/") + "/")):
                continue
            if best is None or len(point) > len(best.mount_point):
                rest = tail.split()
                fstype = rest[0] if rest else "?"
                source = _unescape_mount(rest[1]) if len(rest) > 1 else "?"
                best = Filesystem(device, fstype, point, source)
    if best is None:  # not in mountinfo (another mount namespace's path): still say the device
        return Filesystem(device, "?", "?", "?")
    return best


def other_filesystem_dir(
    than: Path, base: Path = Path("/dev/shm"), prefix: str = "ingestor-cross-fs-"
) -> Path:
    """A fresh directory under ``base`` (tmpfs by default), refused if on the same filesystem as ``than``."""
    d = Path(tempfile.mkdtemp(dir=base, prefix=prefix))
    if os.stat(d).st_dev == os.stat(than).st_dev:
        os.rmdir(d)
        raise ValueError(f"{base} is on the same filesystem as {than}: give --landing on another one")
    return d


@dataclass(frozen=True, slots=True)
class CrossFsReport:
    """The files dropped on one filesystem, and what landing them on another did."""

    dropped: Report
    landing: Path
    warehouse: Path
    landing_fs: Filesystem
    warehouse_fs: Filesystem
    landed: int  # files of ``dropped`` found ingested in the manifest, with their sha256 and size
    landed_bytes: int
    left_in_landing: int  # files still in the landing dir after the one-shot run
    exit_code: int  # of the one-shot landing (``ingestor replay``'s code)
    land_seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.landed == self.dropped.files and self.left_in_landing == 0

    def summary(self) -> dict[str, object]:
        return {
            "what": "cross-fs",
            "files": self.dropped.files,
            "bytes": self.dropped.bytes,
            "seconds": round(self.dropped.seconds + self.land_seconds, 3),
            "landed": self.landed,
            "landed_bytes": self.landed_bytes,
            "left_in_landing": self.left_in_landing,
            "exit_code": self.exit_code,
            "ok": self.ok,
            "landing": str(self.landing),
            "warehouse": str(self.warehouse),
            "landing_fs": self.landing_fs.summary(),
            "warehouse_fs": self.warehouse_fs.summary(),
        }


def cross_fs(
    settings: Settings,
    *,
    count: int = 10,
    size: int = 256 << 10,
    land: Callable[[Settings], int],
) -> CrossFsReport:
    """Drop ``count`` files into ``settings.input`` and land them once, as ``ingestor replay`` does.

    The landing dir and the warehouse should be on two filesystems: every
    file then takes the copy path (copy while hashing, fsync, rename, fsync
    the directory, only then unlink the source) instead of a rename.
    ``land`` runs the one-shot landing and returns its exit code (the CLI
    layer passes ``ingestor replay``'s: the traffic generators do not import
    the daemon).
    """
    settings.warehouse.mkdir(parents=True, exist_ok=True)
    dropped = rename_tmp(settings.input, count=count, size=size, prefix="cross-fs")
    started = time.monotonic()
    code = land(settings)
    land_seconds = time.monotonic() - started
    landed = landed_bytes = 0
    want = dict(dropped.contents)
    for rec in _manifest_records(settings.manifests):
        if rec.status == "ingested" and rec.sha256 is not None and want.get(rec.sha256) == rec.size:
            dest = rec.warehouse
            if dest is not None and os.path.isfile(dest) and os.path.getsize(dest) == rec.size:
                del want[rec.sha256]
                landed += 1
                landed_bytes += rec.size
    left = sum(1 for p in dropped.paths if os.path.lexists(p))
    return CrossFsReport(
        dropped=dropped,
        landing=settings.input,
        warehouse=settings.warehouse,
        landing_fs=filesystem_of(settings.input),
        warehouse_fs=filesystem_of(settings.warehouse),
        landed=landed,
        landed_bytes=landed_bytes,
        left_in_landing=left,
        exit_code=code,
        land_seconds=land_seconds,
    )


def _manifest_records(root: Path) -> list[ManifestRecord]:
    out = []
    for path in sorted(root.rglob("manifest.jsonl")):
        for line in path.read_bytes().split(b"\n")[:-1]:  # a last line without newline is not written yet
            out.append(ManifestRecord.from_json(line))
    return out
