"""Sampling cost, small file versus big file: it must not grow with the file.

    .venv/bin/python bench/bench_sampler.py            # 2 MB vs 2 GB (a few minutes)
    .venv/bin/python bench/bench_sampler.py --quick    # 2 MB vs 64 MB (seconds, for CI)
    .venv/bin/python bench/bench_sampler.py --hostile  # bombs, a 1 GB line, deep JSON
    .venv/bin/python bench/bench_sampler.py --formats issue17 --quick  # zstd/bz2/xz/lz4, Arrow, ORC, Avro, xlsx
    .venv/bin/python bench/bench_sampler.py --formats all --rounds 7 --record  # issue 17's formats
        # against today's, 2 GB each, interleaved: ~32 GB of inputs, ~40 min on 2 cores

For each format (CSV, CSV gzip, Parquet with 128 MiB row groups, Parquet
with ONE row group the size of the file) it writes a small and a large file
in a temporary directory (``--dir``, default the system temp dir; removed
afterwards), every input first, then samples each one in a fresh child
process with the real sampler code (``sampler.sample.Sampler`` on a
manifest record; defaults: 100 rows, 64 MiB cap) and reports:

- the sampling time, median of ``--repeat`` runs, writing and fsyncing the
  sample and its sidecar included. Samples go to ``--samples-dir``
  (/dev/shm by default): on disk, two fsyncs of a few ms each would drown
  the read cost in their noise;
- the bytes the child read meanwhile: ``rchar`` of /proc/self/io (input,
  sidecar and all), plus the pages of the input it mapped (the Arrow IPC
  sampler maps its input, and a page fault is not a ``read``: each mapping's
  resident pages are counted when it is closed, see ``count_mapped``), the
  figure that shows the cost does not grow; "of which mapped" is the latter;
- the child's peak RSS (``VmHWM``), next to its RSS just before sampling
  (interpreter and imports, pyarrow included);
- a sample that ends as an error ``.meta.json`` is reported as such (the
  kind in the rows column), not as a crash of the benchmark.

``--rounds N`` measures every input N times (one child each), interleaved:
round after round over all inputs, the order rotated each round, so the
load of a shared machine falls on every format alike; the figures are the
medians over the rounds, with the range of the round medians next to the
time. The load average and how busy the machine was (this benchmark's
children against the rest) are printed with the results.

Input files were just written, then synced so no writeback competes with
the measurement; with more inputs than RAM (``--formats all``: ~32 GB) the
first sample of an input may read its pages from the disk: the median of
``--repeat`` hides that.

The gzip file is one gzip member of CSV text with random fields (ratio ~2),
compressed at level 1, so "2 GB" is its compressed size.

``--formats issue17`` measures the formats added by issue 17 instead: the
same CSV text in zstd, bzip2, xz (preset 0) and LZ4 frame (sizes are
compressed sizes), an Arrow IPC file and stream (32 Ki-row batches), a
Feather file as ``pyarrow.feather.write_feather`` writes it by default (LZ4,
64 Ki-row batches), ORC with 8 MiB stripes and with pyarrow's default 64 MiB
stripes, uncompressed and zstd (a sampler that read the whole first stripe paid 64 MiB),
Avro (deflate, fastavro's 16 KB blocks) and an xlsx of one sheet (its XML
written directly with a ``<dimension>``, deflate level 1; the size is the
zip's; Excel's grid stops at 1,048,576 rows, so a large xlsx gets wider rows:
~60 columns at 2 GB). ``--formats all`` measures both sets in one run and
adds a table of each large input against today's figures: the largest time,
bytes read and peak RSS of CSV, CSV gzip and Parquet in the same run.

``--size FORMAT=MB`` shrinks the large input of the formats whose label
starts with FORMAT (one that cannot be written in reasonable time).
``--record`` writes the tables into ``bench/SAMPLER_RESULTS.md``, replacing
the section of the same ``--formats`` (and ``--quick``) from an earlier run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MB = 1_000_000


def _csv_block(rows: int, seed: int) -> bytes:
    rnd = os.urandom(rows * 24)
    out = []
    for i in range(rows):
        field = rnd[i * 24 : (i + 1) * 24].hex()
        out.append(f'{seed * rows + i},"{field[:20]}\n{field[20:]}",{field},{i % 97}\n')
    return "".join(out).encode()


def make_csv(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(b"id,note,payload,n\n")
        block = _csv_block(8000, 0)  # ~1.1 MB; repeated
        while f.tell() < size:
            f.write(block[: size - f.tell()] if f.tell() + len(block) > size else block)


def make_gzip(path: Path, size: int) -> None:
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    blocks = [_csv_block(8000, s) for s in range(4)]  # distinct: no long-range repeats
    with open(path, "wb") as f:
        f.write(comp.compress(b"id,note,payload,n\n"))
        i = 0
        while f.tell() < size:
            f.write(comp.compress(blocks[i % 4]))
            i += 1
        f.write(comp.flush())


def make_parquet(path: Path, size: int, single_row_group: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = max(1000, min(200_000, size // 68))  # ~68 bytes a row: a 2 MB file is 2 MB
    chunk = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "payload": pa.array([os.urandom(24).hex() for _ in range(n)]),
            "score": pa.array([i * 0.25 for i in range(n)], pa.float64()),
        }
    ).replace_schema_metadata({b"bench": b"sampler"})
    per_chunk = chunk.nbytes
    copies = max(1, round(size / per_chunk))
    opts = {"compression": "none", "use_dictionary": False}
    if single_row_group:
        big = pa.concat_tables([chunk] * copies)  # shares buffers: little memory
        pq.write_table(big, path, row_group_size=big.num_rows, **opts)  # type: ignore[arg-type]
    else:
        rows_per_group = max(n, int(n * (128 << 20) / per_chunk))
        with pq.ParquetWriter(path, chunk.schema, **opts) as w:  # type: ignore[arg-type]
            for _ in range(copies):
                w.write_table(chunk, row_group_size=rows_per_group)


def _csv_blocks() -> list[bytes]:
    return [b"id,note,payload,n\n" + _csv_block(8000, 0)] + [_csv_block(8000, s) for s in range(1, 4)]


def make_codec(path: Path, size: int, codec: str) -> None:
    """CSV text compressed with ``codec`` until the file is ``size`` bytes."""
    import bz2
    import lzma

    import pyarrow as pa

    blocks = _csv_blocks()
    with open(path, "wb") as f:
        if codec in ("bz2", "xz"):
            c = bz2.BZ2Compressor(9) if codec == "bz2" else lzma.LZMACompressor(preset=0)
            i = 0
            while f.tell() < size:
                f.write(c.compress(blocks[i % 4]))
                i += 1
            f.write(c.flush())
            return
        with pa.CompressedOutputStream(pa.PythonFile(f, mode="w"), codec) as out:
            i = 0
            while f.tell() < size:
                out.write(blocks[i % 4])
                i += 1


def _rows_table(n: int) -> object:
    import pyarrow as pa

    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "payload": pa.array([os.urandom(24).hex() for _ in range(n)]),
            "score": pa.array([i * 0.25 for i in range(n)], pa.float64()),
        }
    ).replace_schema_metadata({b"bench": b"sampler"})


def make_arrow(path: Path, size: int, stream: bool) -> None:
    import pyarrow as pa

    chunk = _rows_table(32_768)
    with open(path, "wb") as f:
        new = pa.ipc.new_stream if stream else pa.ipc.new_file
        with new(f, chunk.schema) as w:  # type: ignore[attr-defined]
            while f.tell() < size:
                w.write_table(chunk)


def make_orc(path: Path, size: int, stripe: int = 8 << 20, codec: str = "uncompressed") -> None:
    import pyarrow as pa
    import pyarrow.orc as orc

    chunk = _rows_table(32_768)
    probe = pa.BufferOutputStream()  # ORC's own size for 4 chunks: encodings make it < nbytes
    orc.write_table(pa.concat_tables([chunk] * 4), probe, compression=codec)
    per_row = probe.getvalue().size / (4 * 32_768)
    rows = max(1000, round(size / per_row))
    big = pa.concat_tables([chunk] * (rows // 32_768 + 1)).slice(0, rows)
    orc.write_table(big, path, compression=codec, stripe_size=stripe)


def make_feather(path: Path, size: int) -> None:
    """Feather v2 as ``pyarrow.feather.write_feather`` writes it by default: LZ4 frames, 64 Ki-row batches."""
    import pyarrow as pa
    import pyarrow.feather as feather

    chunk = _rows_table(65_536)  # one chunk = one batch of the default chunksize
    probe = pa.BufferOutputStream()
    feather.write_feather(chunk, probe)
    per_batch = probe.getvalue().size
    if size < per_batch:  # a small file: one shorter batch
        feather.write_feather(chunk.slice(0, max(1000, 65_536 * size // per_batch)), path)  # type: ignore[attr-defined]
        return
    copies = round(size / per_batch)
    feather.write_feather(pa.concat_tables([chunk] * copies), path)


def make_avro(path: Path, size: int) -> None:
    import fastavro
    from fastavro.write import Writer

    schema = {"type": "record", "name": "Row", "fields": [
        {"name": "id", "type": "long"}, {"name": "payload", "type": "string"},
        {"name": "score", "type": "double"}]}  # fmt: skip
    payloads = [os.urandom(24).hex() for _ in range(4096)]
    with open(path, "wb") as f:
        w = Writer(f, fastavro.parse_schema(schema), codec="deflate")
        i = 0
        while f.tell() < size:  # fastavro writes a ~16 KB block whenever its buffer fills
            for j in range(i, i + 10_000):
                w.write({"id": j, "payload": payloads[j % 4096], "score": j * 0.25})
            i += 10_000
        w.flush()


def make_xlsx(path: Path, size: int) -> None:
    """A one-sheet xlsx, its parts written directly (openpyxl would take minutes for 64 MB)."""
    import zipfile

    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    parts = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.sheet.main+xml"/>'
        f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}.worksheet+xml"/></Types>',
        "_rels/.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'<?xml version="1.0" encoding="UTF-8"?><workbook {ns} xmlns:r="{rel}"><sheets>'
        '<sheet name="data" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
    }
    payloads = [os.urandom(24).hex() for _ in range(4096)]
    letters = [chr(65 + i) for i in range(26)]
    names = letters + [a + b for a in letters for b in letters]  # A..ZZ: 702 columns

    def rows(first: int, count: int, cols: int) -> bytes:
        # A: the row number, then cols-2 inline strings, last: a float
        out = []
        for r in range(first, first + count):
            cells = [f'<c r="A{r}"><v>{r}</v></c>']
            cells += [f'<c r="{names[c]}{r}" t="inlineStr"><is><t>{payloads[(r * cols + c) % 4096]}</t></is></c>'
                      for c in range(1, cols - 1)]  # fmt: skip
            cells.append(f'<c r="{names[cols - 1]}{r}"><v>{r * 0.25}</v></c>')
            out.append(f'<row r="{r}">{"".join(cells)}</row>')
        return "".join(out).encode()

    def per_row(cols: int) -> float:
        return len(zlib.compress(rows(1_000_000, 2_000, cols), 1)) / 2_000

    # Excel's grid stops at 1,048,576 rows: a file too big for 1,000,000 rows of 3 columns gets
    # wider rows (a 2 GB sheet: ~2 KB of zipped XML a row), never more rows
    cols = 3
    if size / per_row(3) > 1_000_000:
        slope = (per_row(13) - per_row(3)) / 10
        cols = min(len(names), 3 + int((size / 1_000_000 - per_row(3)) / slope) + 1)
    n = max(1000, min(1_000_000, int(size / per_row(cols))))
    # a <dimension>, as Excel, openpyxl and XlsxWriter write it: without one, openpyxl's
    # read-only mode parses the whole sheet when the workbook opens
    with open(path, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, text in parts.items():
            z.writestr(name, text)
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as m:
            m.write(f'<?xml version="1.0" encoding="UTF-8"?><worksheet {ns}>'
                    f'<dimension ref="A1:{names[cols - 1]}{n}"/><sheetData>'.encode())  # fmt: skip
            for first in range(1, n + 1, 1000):
                m.write(rows(first, min(1000, n + 1 - first), cols))
            m.write(b"</sheetData></worksheet>")


def make_long_line(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: one line of NULs, no newline


def make_gzip_bomb(path: Path, size: int) -> None:
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(comp.compress(block))
        f.write(comp.flush())


def make_json_string(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(b'["')
        block = b"a" * (1 << 20)
        for _ in range(size // len(block)):
            f.write(block)
        f.write(b'"]')


def make_deep_json(path: Path, size: int) -> None:
    path.write_bytes(b"[" * size)


# Hostile inputs: each must end as an error .meta.json, within the memory bound.
HOSTILE = {
    "1 GB single line (.jsonl, sparse)": ("line.jsonl", make_long_line, 1000 * MB),
    "gzip bomb, 1 GiB of zeros (.gz)": ("bomb.gz", make_gzip_bomb, 1 << 30),
    "JSON string of 256 MiB (.json)": ("string.json", make_json_string, 256 << 20),
    "JSON nested 1M deep (.json)": ("deep.json", make_deep_json, 1_000_000),
}

CASES = {
    "csv": ("data.csv", make_csv),
    "csv.gz": ("data.csv.gz", make_gzip),
    "parquet (128 MiB row groups)": ("groups.parquet", lambda p, s: make_parquet(p, s, False)),
    "parquet (one row group)": ("onegroup.parquet", lambda p, s: make_parquet(p, s, True)),
}


# --formats issue17: the formats issue 17 added
ISSUE17_CASES = {
    "csv.zst": ("data.csv.zst", lambda p, s: make_codec(p, s, "zstd")),
    "csv.bz2": ("data.csv.bz2", lambda p, s: make_codec(p, s, "bz2")),
    "csv.xz": ("data.csv.xz", lambda p, s: make_codec(p, s, "xz")),
    "csv.lz4": ("data.csv.lz4", lambda p, s: make_codec(p, s, "lz4")),
    "arrow (IPC file)": ("data.arrow", lambda p, s: make_arrow(p, s, False)),
    "arrows (IPC stream)": ("data.arrows", lambda p, s: make_arrow(p, s, True)),
    "feather (lz4, pyarrow defaults)": ("data.feather", make_feather),
    "orc (8 MiB stripes)": ("data.orc", make_orc),
    "orc (64 MiB stripes: pyarrow's default)": ("default.orc", lambda p, s: make_orc(p, s, 64 << 20)),
    "orc (zstd, 64 MiB stripes)": ("zstd.orc", lambda p, s: make_orc(p, s, 64 << 20, "zstd")),
    "avro (deflate)": ("data.avro", make_avro),
    "xlsx": ("data.xlsx", make_xlsx),
}
FORMAT_SETS = {"default": CASES, "issue17": ISSUE17_CASES, "all": {**CASES, **ISSUE17_CASES}}


def _proc(path: str, field: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _rss_mb(field: str) -> float:
    return _proc("/proc/self/status", field) / 1024  # kB


def _mapped_bytes(address: int) -> int:
    """Bytes of the mapping at ``address`` resident in this process (its ``Rss`` in /proc/self/smaps)."""
    head = f"{address:x}-"
    with open("/proc/self/smaps") as fh:
        found = False
        for line in fh:
            if line.startswith(head):
                found = True
            elif found and line.startswith("Rss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no mapping at {address:#x} in /proc/self/smaps")


def count_mapped() -> dict[str, int]:
    """Count the input's pages the sampler maps: Python's ``mmap`` replaced, in this child only.

    A read through a mapping is a page fault, not a ``read``: ``rchar``
    does not see it. Each mapping is measured when it is closed (or
    collected): its resident pages in this process, so every page faulted in
    counts, and so do the neighbours the kernel maps with it (fault-around,
    up to 64 KiB, when they are cached): an upper bound, never less than what
    was touched. The counts: ``bytes`` measured, ``made`` and ``measured``
    mappings (a mapping left open after a sample is an error of the bench).
    """
    import mmap

    import pyarrow as pa

    counts = {"bytes": 0, "made": 0, "measured": 0}

    class CountedMap(mmap.mmap):
        def __new__(cls, *args: Any, **kwargs: Any) -> CountedMap:
            counts["made"] += 1
            return super().__new__(cls, *args, **kwargs)

        def _measure(self) -> None:
            if self.__dict__.get("measured") or self.closed:
                return
            self.__dict__["measured"] = True
            view = pa.py_buffer(self)
            address = view.address
            del view
            counts["bytes"] += _mapped_bytes(address)
            counts["measured"] += 1

        def close(self) -> None:
            self._measure()
            super().close()

        def __exit__(self, *exc: object) -> None:
            self.close()

        def __del__(self) -> None:
            self._measure()

    mmap.mmap = CountedMap  # type: ignore[misc]
    return counts


def child(path: str, repeat: int, samples_root: str | None, expect: str) -> None:
    """Sample ``path`` in this process; print per-run seconds, bytes read and memory as JSON."""
    import gc

    import pyarrow.parquet  # noqa: F401 - imported before the baseline, as a sampler would have it
    import structlog

    from ingestor.manifest import ManifestRecord, encode_path
    from sampler.limits import Limits
    from sampler.sample import Event, Sampler

    mapped = count_mapped()
    file = Path(path)
    samples = Path(samples_root or file.parent) / f"samples-{os.getpid()}"
    wh, wh_b64 = encode_path(str(file))
    rec = ManifestRecord(
        id="bench", status="ingested", action="landed", source_path=wh, source_path_b64=wh_b64,  # type: ignore[arg-type]
        warehouse_path=wh, warehouse_path_b64=wh_b64, sha256="0" * 64, size=file.stat().st_size,
        mtime="", device=0, inode=0, ingested_at="", duplicate_of=None, ingestor_version="bench",
    )  # fmt: skip
    log = structlog.wrap_logger(None, processors=[structlog.testing.LogCapture()])
    base = _rss_mb("VmRSS")
    times: list[float] = []
    reads: list[int] = []
    maps: list[int] = []
    rows = 0
    for _ in range(repeat):
        samples.mkdir()  # a fresh samples dir each run: a current sample would be skipped
        sampler = Sampler(file.parent, samples, Limits(), log=log)
        r0, m0 = _proc("/proc/self/io", "rchar"), mapped["bytes"]
        t0 = time.perf_counter()
        out = sampler.sample(rec)
        times.append(time.perf_counter() - t0)
        gc.collect()  # a mapping the sampler left to the collector is measured now
        if mapped["measured"] != mapped["made"]:
            raise RuntimeError("a mapping of the input outlived its sample: its pages were not counted")
        maps.append(mapped["bytes"] - m0)
        reads.append(_proc("/proc/self/io", "rchar") - r0 + maps[-1])
        sampler.close()
        shutil.rmtree(samples)
        assert expect == "any" or out.event is Event(expect), out
        rows = out.rows
        error = None if out.event is not Event.ERROR else f"{out.error_kind.value}: {out.message}"  # type: ignore[union-attr]
    result = {"seconds": statistics.median(times), "read_mb": statistics.median(reads) / MB,
              "mapped_mb": statistics.median(maps) / MB}  # fmt: skip
    print(json.dumps({**result, "base_mb": base, "peak_mb": _rss_mb("VmHWM"), "rows": rows, "error": error}))


def measure(
    path: Path, repeat: int, samples_root: str | None, expect: str = "sample_written"
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(path), "--repeat", str(repeat)]
    cmd += ["--expect", expect]
    if samples_root:
        cmd += ["--samples-dir", samples_root]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"sampling {path} failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return data


def _machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = _proc("/proc/meminfo", "MemTotal") / (1 << 20)
    versions = []
    for mod in ("pyarrow", "fastavro", "openpyxl"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} not installed")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "sampler", "ingestor"], cwd=REPO,
                           capture_output=True, text=True).stdout.split("\n")  # fmt: skip
    changed = [line[3:] for line in dirty if line.strip()]
    tree = "clean" if not changed else "uncommitted changes in " + ", ".join(f"`{c}`" for c in changed)
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, {', '.join(versions)}; commit `{git.stdout.strip()}` "
            f"(sampler/ingestor {tree})")  # fmt: skip


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


RECORD_TITLE = {
    "all": "Issue 17's formats against today's, 2 GB inputs, measured in the same run",
    "issue17": "Issue 17's formats, 2 GB inputs",
    "default": "Today's formats, 2 GB inputs (interleaved rounds)",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 MB vs 64 MB instead of 2 GB")
    ap.add_argument("--dir", default=None, help="where to write the files (default: temp dir)")
    ap.add_argument("--repeat", type=int, default=9, help="samples per child process (median taken)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every input this many times, interleaved (one child per input per round, the "
        "order rotated each round): the load of a shared machine then falls on all formats alike",
    )
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    ap.add_argument(
        "--record",
        action="store_true",
        help="write the tables into bench/SAMPLER_RESULTS.md (replacing this mode's previous section)",
    )
    ap.add_argument(
        "--samples-dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where samples go (default /dev/shm: no disk fsync latency in the timing)",
    )
    ap.add_argument("--hostile", action="store_true", help="measure the hostile inputs instead")
    ap.add_argument(
        "--formats",
        choices=sorted(FORMAT_SETS),
        default="default",
        help="which formats: default (CSV, CSV gzip, Parquet), issue17 (the formats issue 17 added), all",
    )
    ap.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="FORMAT=MB",
        help="the large input of the formats whose label starts with FORMAT (e.g. csv.bz2) in MB, when "
        "the full size cannot be written in reasonable time; repeatable",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--expect", default="sample_written", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.repeat, args.samples_dir, args.expect)
        return 0
    if args.hostile:
        return hostile(args)
    small, large = 2 * MB, (64 * MB if args.quick else 2000 * MB)
    sizes = {k: int(float(v) * MB) for k, v in (item.split("=", 1) for item in args.size)}
    cases = FORMAT_SETS[args.formats]
    unknown = {k for k in sizes if not any(label.startswith(k) for label in cases)}

    def large_of(label: str) -> int:
        return next((v for k, v in sizes.items() if label.startswith(k)), large)

    if unknown:
        ap.error(f"--size: no format {', '.join(sorted(unknown))} in --formats {args.formats}")
    work = Path(tempfile.mkdtemp(prefix="bench-sampler-", dir=args.dir))
    free = shutil.disk_usage(work).free
    need = sum(large_of(label) + small for label in cases)
    command = " ".join([".venv/bin/python", os.path.relpath(__file__, REPO), *sys.argv[1:]])
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    head = [
        f"- date: {started}; command: `{command}`",
        f"- machine: {_machine()}",
        f"- inputs in {work} ({free / 1e9:.0f} GB free before, ~{need / 1e9:.0f} GB needed); "
        f"samples in {args.samples_dir or 'the inputs directory'}",
    ]
    print("\n".join(head), flush=True)
    if need > free * 0.9:
        shutil.rmtree(work, ignore_errors=True)
        print(f"not enough space in {work.parent}: {need / 1e9:.1f} GB needed", file=sys.stderr)
        return 2
    inputs: list[tuple[str, str, Path]] = []  # (label, small|large, path)
    written: dict[tuple[str, str], float] = {}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    loads = [f"{_load()} at start"]
    try:
        # 1. every input first: then the measurements of all formats are interleaved in time
        for label, (name, make) in cases.items():
            for tag, size in (("small", small), ("large", large_of(label))):
                d = work / f"{tag}-{name}"
                d.mkdir()
                path = d / name
                t0 = time.perf_counter()
                make(path, size)
                written[label, tag] = time.perf_counter() - t0
                inputs.append((label, tag, path))
                print(f"# wrote {label} {tag}: {path.stat().st_size / MB:,.1f} MB in "
                      f"{written[label, tag]:.1f} s (load {_load()})", file=sys.stderr, flush=True)  # fmt: skip
        os.sync()  # no writeback of the new files competing with the measurement
        loads.append(f"{_load()} after writing the inputs")
        # 2. rounds: each input once per round, in an order rotated each round
        busy0, cpu0, t0 = _cpu_busy(), _children_cpu(), time.monotonic()
        for rnd in range(args.rounds):
            shift = rnd * len(inputs) // max(1, args.rounds)
            for label, tag, path in inputs[shift:] + inputs[:shift]:
                r = measure(path, args.repeat, args.samples_dir, expect="any")  # an error is a figure too
                runs.setdefault((label, tag), []).append(r)
            if args.rounds > 1:
                loads.append(f"{_load()} after round {rnd + 1}")
                print(f"# round {rnd + 1}/{args.rounds} done (load {_load()})", file=sys.stderr, flush=True)
        busy1, cpu1, seconds = _cpu_busy(), _children_cpu(), time.monotonic() - t0
        sizes_on_disk = {(label, tag): path.stat().st_size for label, tag, path in inputs}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine_busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    ours = (cpu1 - cpu0) / max(1e-9, seconds) / (os.cpu_count() or 1)
    loads.append(f"{_load()} at the end")
    head.append(
        f"- {args.rounds} round(s) x {args.repeat} samples per input, {seconds:.0f} s of measuring: the "
        f"machine was {machine_busy * 100:.0f}% busy (all cores), this benchmark's children "
        f"{ours * 100:.0f}%, others ~{max(0.0, machine_busy - ours) * 100:.0f}%"
    )
    head.append("- load average (1/5/15 min): " + "; ".join(loads))

    # 3. per input: medians over rounds (each round's figure is itself a median of --repeat samples)
    res: dict[tuple[str, str], dict[str, Any]] = {}
    rows: list[dict[str, object]] = []
    for label, tag, _ in inputs:
        rs = runs[label, tag]
        secs = [r["seconds"] for r in rs]
        res[label, tag] = r = {
            "seconds": statistics.median(secs),
            "seconds_min": min(secs),
            "seconds_max": max(secs),
            "read_mb": statistics.median(r["read_mb"] for r in rs),
            "read_mb_max": max(r["read_mb"] for r in rs),
            "mapped_mb": statistics.median(r["mapped_mb"] for r in rs),
            "peak_mb": max(r["peak_mb"] for r in rs),
            "base_mb": statistics.median(r["base_mb"] for r in rs),
            "rows": rs[-1]["rows"],
            "error": next((r["error"] for r in rs if r["error"]), None),
        }
        rows.append({"format": label, "file": tag, "size": sizes_on_disk[label, tag],
                     "written_s": round(written[label, tag], 1), **r})  # fmt: skip

    def ms(r: dict[str, Any]) -> str:
        if args.rounds == 1:
            return f"{r['seconds'] * 1000:.1f} ms"
        return f"{r['seconds'] * 1000:.1f} ms ({r['seconds_min'] * 1000:.1f}-{r['seconds_max'] * 1000:.1f})"

    def outcome(r: dict[str, Any]) -> str:
        return f"{r['rows']:.0f}" if not r["error"] else f"ERROR {r['error'].split(':')[0]}"

    t1 = ["| format | file | size | sample time | bytes read | of which mapped | peak RSS | RSS before | rows | written in |",
          "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    worst_ratio = worst_peak = 0.0
    for label in cases:
        for tag in ("small", "large"):
            r = res[label, tag]
            worst_peak = max(worst_peak, r["peak_mb"])
            t1.append(f"| {label} | {tag} | {sizes_on_disk[label, tag] / MB:,.1f} MB | {ms(r)} | "
                      f"{r['read_mb']:.2f} MB | {r['mapped_mb']:.2f} MB | {r['peak_mb']:.0f} MB | "
                      f"{r['base_mb']:.0f} MB | {outcome(r)} | {written[label, tag]:.0f} s |")  # fmt: skip
        s_, l_ = res[label, "small"], res[label, "large"]
        ratio = l_["seconds"] / s_["seconds"]
        worst_ratio = max(worst_ratio, ratio)
        t1.append(f"| {label} | large/small | | x{ratio:.2f} | x{l_['read_mb'] / max(s_['read_mb'], 1e-9):.2f}"
                  " | | | | | |")  # fmt: skip

    # 4. against today's formats: the largest figure of CSV, CSV gzip and Parquet, large inputs, this run
    t2: list[str] = []
    today = [label for label in CASES if label in cases]
    new = [label for label in cases if label not in CASES]
    if today and new:
        ref = {k: max(res[label, "large"][k] for label in today) for k in ("seconds", "read_mb", "peak_mb")}
        who = {k: max(today, key=lambda label: res[label, "large"][k]) for k in ref}
        t2.append(
            f"Today's figures (the largest of {', '.join(today)}; large inputs, this run): "
            f"{ref['seconds'] * 1000:.1f} ms a sample ({who['seconds']}), {ref['read_mb']:.2f} MB read "
            f"({who['read_mb']}), {ref['peak_mb']:.0f} MB peak RSS ({who['peak_mb']}).\n"
        )
        t2 += ["| format | size | sample time | bytes read | peak RSS | time / today's | bytes / today's "
               "| RSS / today's | within today's figures |",
               "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for label in today + new:
            r = res[label, "large"]
            rt, rb, rp = (r[k] / ref[k] for k in ("seconds", "read_mb", "peak_mb"))
            over = [w for w, x in (("time", rt), ("bytes", rb)) if x > 1.0] + (
                ["error"] if r["error"] else []
            )
            verdict = "(reference)" if label in today else ("yes" if not over else "NO: " + ", ".join(over))
            t2.append(f"| {label} | {sizes_on_disk[label, 'large'] / MB:,.1f} MB | {ms(r)} | "
                      f"{r['read_mb']:.2f} MB | {r['peak_mb']:.0f} MB | x{rt:.2f} | x{rb:.2f} | x{rp:.2f} | "
                      f"{verdict} |")  # fmt: skip
    print()
    print("\n".join(head))
    print()
    print("\n".join(t1))
    if t2:
        print()
        print("\n".join(t2))
    print(f"\nworst time ratio large/small x{worst_ratio:.2f}; worst peak RSS {worst_peak:.0f} MB")
    if args.record:
        mode = args.formats + (" --quick" if args.quick else "")
        title = RECORD_TITLE[args.formats] if not args.quick else f"--formats {mode}"
        body = "\n".join(head) + "\n\n" + "\n".join(t1) + ("\n\n" + "\n".join(t2) if t2 else "") + "\n"
        record_section(f"formats {mode}", f"## {title}\n\n    {command}\n\n{body}")
        print(f"recorded in {os.path.relpath(RESULTS_MD)}")
    if args.json:
        print(json.dumps(rows))
    return 0 if worst_peak < 200 else 1


RESULTS_MD = REPO / "bench" / "SAMPLER_RESULTS.md"


def record_section(name: str, content: str) -> None:
    """Replace the section between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` (or append it)."""
    import re

    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{content.rstrip()}\n{end}"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    RESULTS_MD.write_text(text)


def hostile(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-sampler-", dir=args.dir))
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; command: {' '.join(sys.argv)}")
    print("| hostile input | file size | time to the error | bytes read | peak RSS | RSS before |")
    print("|---|---|---|---|---|---|")
    worst_peak = 0.0
    try:
        for label, (name, make, size) in HOSTILE.items():
            d = work / name
            d.mkdir()
            path = d / name
            make(path, size)
            os.sync()
            r = measure(path, args.repeat, args.samples_dir, expect="sample_error")
            worst_peak = max(worst_peak, r["peak_mb"])
            print(f"| {label} | {path.stat().st_size / MB:,.1f} MB | {r['seconds'] * 1000:.0f} ms | "
                  f"{r['read_mb']:.1f} MB | {r['peak_mb']:.0f} MB | {r['base_mb']:.0f} MB |",
                  flush=True)  # fmt: skip
            shutil.rmtree(d)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nworst peak RSS {worst_peak:.0f} MB")
    return 0 if worst_peak < 200 else 1


if __name__ == "__main__":
    sys.exit(main())
