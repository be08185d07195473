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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


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
