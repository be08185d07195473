"""Sampling cost, small file versus big file: it must not grow with the file.

    .venv/bin/python bench/bench_sampler.py            # 2 MB vs 2 GB (a few minutes)
    .venv/bin/python bench/bench_sampler.py --quick    # 2 MB vs 64 MB (seconds, for CI)
    .venv/bin/python bench/bench_sampler.py --hostile  # bombs, a 1 GB line, deep JSON
    .venv/bin/python bench/bench_sampler.py --formats issue17 --quick  # zstd/bz2/xz/lz4, Arrow, ORC, Avro, xlsx

For each format (CSV, CSV gzip, Parquet with 128 MiB row groups, Parquet
with ONE row group the size of the file) it writes a small and a large file
in a temporary directory (``--dir``, default the system temp dir; removed
afterwards), then samples each one in a fresh child process with the real
sampler code (``sampler.sample.Sampler`` on a manifest record; defaults:
100 rows, 64 MiB cap) and reports:

- the sampling time, median of ``--repeat`` runs, writing and fsyncing the
  sample and its sidecar included. Samples go to ``--samples-dir``
  (/dev/shm by default): on disk, two fsyncs of a few ms each would drown
  the read cost in their noise;
- the bytes the child read meanwhile (``rchar`` of /proc/self/io: input,
  sidecar and all), the figure that shows the cost does not grow;
- the child's peak RSS (``VmHWM``), next to its RSS just before sampling
  (interpreter and imports, pyarrow included).

Input files are warm in the page cache (just written, then synced so no
writeback competes with the measurement).

The gzip file is one gzip member of CSV text with random fields (ratio ~2),
compressed at level 1, so "2 GB" is its compressed size.

``--formats issue17`` measures the formats added by issue 17 instead: the
same CSV text in zstd, bzip2, xz (preset 0) and LZ4 frame (sizes are
compressed sizes), an Arrow IPC file and stream (32 Ki-row batches), ORC
(8 MiB stripes: the sampler reads the whole first stripe), Avro (deflate,
fastavro's 16 KB blocks) and an xlsx of one sheet (its XML written
directly with a ``<dimension>``, deflate level 1; the size is the zip's).
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


def make_orc(path: Path, size: int) -> None:
    import pyarrow as pa
    import pyarrow.orc as orc

    chunk = _rows_table(32_768)
    copies = max(1, round(size / chunk.nbytes))  # type: ignore[attr-defined]
    big = pa.concat_tables([chunk] * copies)  # type: ignore[list-item]
    orc.write_table(big, path, compression="uncompressed", stripe_size=8 << 20)


def make_avro(path: Path, size: int) -> None:
    import fastavro

    schema = {"type": "record", "name": "Row", "fields": [
        {"name": "id", "type": "long"}, {"name": "payload", "type": "string"},
        {"name": "score", "type": "double"}]}  # fmt: skip
    payloads = [os.urandom(24).hex() for _ in range(4096)]
    n = size // 40  # ~40 bytes a record after deflate
    with open(path, "wb") as f:
        rows = ({"id": i, "payload": payloads[i % 4096], "score": i * 0.25} for i in range(n))
        fastavro.writer(f, fastavro.parse_schema(schema), rows, codec="deflate")


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

    def rows(first: int, count: int) -> bytes:
        return "".join(
            f'<row r="{r}"><c r="A{r}"><v>{r}</v></c><c r="B{r}" t="inlineStr"><is><t>'
            f'{payloads[r % 4096]}</t></is></c><c r="C{r}"><v>{r * 0.25}</v></c></row>'
            for r in range(first, first + count)
        ).encode()

    # a <dimension>, as Excel, openpyxl and XlsxWriter write it: without one, openpyxl's
    # read-only mode parses the whole sheet when the workbook opens
    per_row = len(zlib.compress(rows(1_000_000, 10_000), 1)) / 10_000
    n = max(1000, int(size / per_row))
    with open(path, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, text in parts.items():
            z.writestr(name, text)
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as m:
            m.write(f'<?xml version="1.0" encoding="UTF-8"?><worksheet {ns}><dimension ref="A1:C{n}"/>'
                    "<sheetData>".encode())  # fmt: skip
            for first in range(1, n + 1, 1000):
                m.write(rows(first, min(1000, n + 1 - first)))
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
    "orc (8 MiB stripes)": ("data.orc", make_orc),
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


def child(path: str, repeat: int, samples_root: str | None, expect: str) -> None:
    """Sample ``path`` in this process; print per-run seconds, bytes read and memory as JSON."""
    import pyarrow.parquet  # noqa: F401 - imported before the baseline, as a sampler would have it
    import structlog

    from ingestor.manifest import ManifestRecord, encode_path
    from sampler.limits import Limits
    from sampler.sample import Event, Sampler

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
    rows = 0
    for _ in range(repeat):
        samples.mkdir()  # a fresh samples dir each run: a current sample would be skipped
        sampler = Sampler(file.parent, samples, Limits(), log=log)
        r0 = _proc("/proc/self/io", "rchar")
        t0 = time.perf_counter()
        out = sampler.sample(rec)
        times.append(time.perf_counter() - t0)
        reads.append(_proc("/proc/self/io", "rchar") - r0)
        sampler.close()
        shutil.rmtree(samples)
        assert out.event is Event(expect), out
        rows = out.rows
    result = {"seconds": statistics.median(times), "read_mb": statistics.median(reads) / MB}
    print(json.dumps({**result, "base_mb": base, "peak_mb": _rss_mb("VmHWM"), "rows": rows}))


def measure(
    path: Path, repeat: int, samples_root: str | None, expect: str = "sample_written"
) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(path), "--repeat", str(repeat)]
    cmd += ["--expect", expect]
    if samples_root:
        cmd += ["--samples-dir", samples_root]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
    data: dict[str, float] = json.loads(res.stdout.strip().splitlines()[-1])
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 MB vs 64 MB instead of 2 GB")
    ap.add_argument("--dir", default=None, help="where to write the files (default: temp dir)")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
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
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--expect", default="sample_written", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.repeat, args.samples_dir, args.expect)
        return 0
    if args.hostile:
        return hostile(args)
    small, large = 2 * MB, (64 * MB if args.quick else 2000 * MB)
    work = Path(tempfile.mkdtemp(prefix="bench-sampler-", dir=args.dir))
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cpu, "
          f"python {platform.python_version()}, files in {work}")  # fmt: skip
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; command: {' '.join(sys.argv)}; "
          f"samples in {args.samples_dir or 'the files directory'}")  # fmt: skip
    print("| format | file | size | sample time | bytes read | peak RSS | RSS before | rows |")
    print("|---|---|---|---|---|---|---|---|")
    rows: list[dict[str, object]] = []
    worst_ratio = worst_peak = 0.0
    try:
        for label, (name, make) in FORMAT_SETS[args.formats].items():
            results = []
            for tag, size in (("small", small), ("large", large)):
                d = work / f"{tag}-{name}"
                d.mkdir()
                path = d / name
                t0 = time.perf_counter()
                make(path, size)
                gen = time.perf_counter() - t0
                os.sync()  # no writeback of the new file competing with the measurement
                r = measure(path, args.repeat, args.samples_dir)
                results.append(r)
                rows.append({"format": label, "file": tag, "size": path.stat().st_size, **r})
                worst_peak = max(worst_peak, r["peak_mb"])
                print(f"| {label} | {tag} | {path.stat().st_size / MB:,.1f} MB | "
                      f"{r['seconds'] * 1000:.1f} ms | {r['read_mb']:.2f} MB | "
                      f"{r['peak_mb']:.0f} MB | {r['base_mb']:.0f} MB | {r['rows']:.0f} |"
                      f" <!-- written in {gen:.1f} s -->", flush=True)  # fmt: skip
                shutil.rmtree(d)
            ratio = results[1]["seconds"] / results[0]["seconds"]
            reads = results[1]["read_mb"] / max(results[0]["read_mb"], 1e-9)
            worst_ratio = max(worst_ratio, ratio)
            print(f"| {label} | large/small | | x{ratio:.2f} | x{reads:.2f} | | | |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nworst time ratio large/small x{worst_ratio:.2f}; worst peak RSS {worst_peak:.0f} MB")
    if args.json:
        print(json.dumps(rows))
    return 0 if worst_peak < 200 else 1


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
