"""Building real manifests and warehouse files for the sampler tests (no daemon)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ingestor.manifest import ManifestRecord, encode_path, manifest_rel_for, rfc3339
from ingestor.records import Action, Status
from sampler.limits import ErrorKind

_ids = itertools.count()


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def record(
    path: Path,
    *,
    status: Status = Status.INGESTED,
    sha256: str | None = None,
    size: int | None = None,
    ns: int | None = None,
) -> ManifestRecord:
    """A manifest record for a warehouse file (which may be absent: give sha256/size)."""
    ns = time.time_ns() if ns is None else ns
    if sha256 is None:
        sha256 = sha256_of(path)
    if size is None:
        size = os.stat(path).st_size
    wh, wh_b64 = encode_path(str(path))
    src, src_b64 = encode_path(str(path.parent / ("landing-" + path.name)))
    rid = f"01J{next(_ids):023d}"
    return ManifestRecord(
        id=rid,
        status=status,
        action=Action.LANDED if status is Status.INGESTED else Action.QUARANTINED,
        source_path=src,
        source_path_b64=src_b64,
        warehouse_path=wh,
        warehouse_path_b64=wh_b64,
        sha256=sha256,
        size=size,
        mtime=rfc3339(ns),
        device=1,
        inode=next(_ids),
        ingested_at=rfc3339(ns),
        duplicate_of=None if status is Status.INGESTED else "01J0",
        ingestor_version="0.1.0",
    )


def append_lines(manifests: Path, rel: str, *lines: bytes) -> Path:
    path = manifests / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        for line in lines:
            f.write(line)
    return path


def current_rel(offset_hours: int = 0) -> str:
    return manifest_rel_for(time.time_ns() + offset_hours * 3600 * 1_000_000_000)


class Layout:
    """warehouse/, manifests/ and samples/ side by side, as the ingestor lays them out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.warehouse = root / "warehouse"
        self.manifests = root / "manifests"
        self.samples = root / "samples"
        for d in (self.warehouse, self.manifests):
            d.mkdir(parents=True, exist_ok=True)

    def file(self, rel: str, data: bytes) -> Path:
        path = self.warehouse / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def land(self, rel: str, data: bytes, manifest_rel: str | None = None) -> ManifestRecord:
        rec = record(self.file(rel, data))
        append_lines(self.manifests, manifest_rel or current_rel(), rec.to_json())
        return rec

    def sample_rel(self, rel: str) -> Path:
        return self.samples / rel

    def cli(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "sampler.cli",
            "run",
            "--manifests",
            str(self.manifests),
            "--samples",
            str(self.samples),
            *extra,
        ]

    def run_once(self, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.cli("--once", *extra), capture_output=True, timeout=timeout)


def events(stderr: bytes) -> list[dict[str, Any]]:
    """The JSON log lines (a line torn by SIGKILL is skipped)."""
    out = []
    for line in stderr.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def named(evs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in evs if e.get("event") == name]


def parquet_bytes() -> bytes:
    table = pa.table({"a": list(range(10))}).replace_schema_metadata({b"k": b"v"})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@functools.cache
def hostile_files() -> dict[str, tuple[bytes, ErrorKind]]:
    """The issue's hostile inputs (bar the 1 GB line and the missing file): name -> (bytes, kind)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open("zeros.csv", "w") as m:
        for _ in range(200):  # 200 MiB of zeros in ~200 KB
            m.write(b"\0" * (1 << 20))
    bomb_zip = buf.getvalue()
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb_gz = b"".join([*(c.compress(b"\0" * (1 << 20)) for _ in range(200)), c.flush()])
    corrupt = bytearray(parquet_bytes())
    n = int.from_bytes(corrupt[-8:-4], "little")
    corrupt[-8 - n : -8] = b"\xff" * n
    truncated = gzip.compress(os.urandom(100_000).hex().encode())[:5000]
    return {
        **new_format_hostile_files(),
        "bomb.zip": (bomb_zip, ErrorKind.HOSTILE),
        "bomb.log.gz": (bomb_gz, ErrorKind.TOO_LARGE),
        "deep.json": (b"[" * 1_000_000, ErrorKind.HOSTILE),
        "corrupt.parquet": (bytes(corrupt), ErrorKind.MALFORMED),
        "truncated.csv.gz": (truncated, ErrorKind.MALFORMED),
    }


def new_format_hostile_files() -> dict[str, tuple[bytes, ErrorKind]]:
    """One hostile file per format of issue 17: zstd bomb, lying xlsx, huge Avro block, corrupt ORC, truncated stream."""
    import fastavro
    import openpyxl
    import pyarrow.orc as orc

    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as z:
        for _ in range(200):  # 200 MiB of zeros in ~7 KB
            z.write(b"\0" * (1 << 20))
    bomb_zst = sink.getvalue().to_pybytes()

    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    for i in range(5):
        ws.append([i, f"row {i}"])
    buf = io.BytesIO()
    wb.save(buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src:
        members = [(i.filename, src.read(i)) for i in src.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in members:
            if name == "xl/worksheets/sheet1.xml":
                data = data.replace(b'<dimension ref="A1:B5"', b'<dimension ref="A1:B1000000000"')
            dst.writestr(name, data)
    liar_xlsx = buf.getvalue()

    buf = io.BytesIO()
    schema = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
    fastavro.writer(buf, schema, [{"s": "x"}] * 10)
    block = next(iter(fastavro.block_reader(io.BytesIO(buf.getvalue()))))
    head = buf.getvalue()[: block.offset]
    # count 10, then a block size of 2^60 bytes, then a little data: the block claims to be huge
    huge_avro = head + b"\x14" + b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01" + b"x" * 100

    buf = io.BytesIO()
    orc.write_table(pa.table({"a": list(range(1000))}), buf)
    data = bytearray(buf.getvalue())
    ps_len = data[-1]
    data[-1 - ps_len - 40 : -1 - ps_len] = b"\xff" * 40
    corrupt_orc = bytes(data)

    sink = pa.BufferOutputStream()
    table = pa.table({"a": list(range(10_000))})
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    stream = sink.getvalue().to_pybytes()
    return {
        "bomb.csv.zst": (bomb_zst, ErrorKind.TOO_LARGE),
        "liar.xlsx": (liar_xlsx, ErrorKind.HOSTILE),
        "huge-block.avro": (huge_avro, ErrorKind.MALFORMED),
        "corrupt.orc": (corrupt_orc, ErrorKind.MALFORMED),
        "truncated.arrows": (stream[: len(stream) // 2], ErrorKind.MALFORMED),
    }


def sample_path(path: Path, fn: Any, limits: Any, *args: Any, strict: bool = False) -> tuple[bytes, Any, int]:
    """Run sampler function ``fn`` on ``path`` as ``sample.Sampler`` does: (sample bytes, result, bytes spent)."""
    from sampler.limits import BoundedFile, Budget

    fd = os.open(path, os.O_RDONLY)
    try:
        f = BoundedFile(fd, os.fstat(fd).st_size, Budget(limits), strict=strict)
        out = io.BytesIO()
        result = fn(f, out, limits, *args)
        return out.getvalue(), result, limits.max_bytes - f.budget.left
    finally:
        os.close(fd)
