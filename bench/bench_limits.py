"""The limit: this machine's raw figures for the work ingestor cannot avoid.

    .venv/bin/python bench/bench_limits.py             # 2 GiB streams, 500 fsyncs (a minute)
    .venv/bin/python bench/bench_limits.py --quick     # 64 MiB, 50 fsyncs (seconds)
    .venv/bin/python bench/bench_limits.py --record    # and write bench/RESULTS.md

Measured by this script, on the filesystem of ``--dir`` (the disk here) and
on /dev/shm (tmpfs), each the median of ``--repeat`` tries:

- SHA-256 with ``hashlib`` on one core (1 MiB updates over an in-memory
  buffer), and on two threads at once (hashlib releases the GIL);
- fsync rate: write 4 KiB at the end of a file, ``fsync``; and ``fdatasync``;
- rename rate (no fsync), and rename+fsync rate: rename a file into another
  directory and fsync that directory — the per-file cost of a durable rename
  when nothing is batched;
- create rate: open(O_CREAT) + write 4 KiB + close (the upstream's cost of
  making a small file; not the service's);
- SQLite commit rate: one INSERT per transaction, WAL, synchronous=FULL (what
  a ledger that commits every file pays);
- sequential write (16 MiB writes, one fsync at the end) and sequential read,
  cold (page cache dropped first; root only) and warm.

The other benchmarks measure their own reference in the same run (hashlib over
the same file, ``cp`` + ``sync``, a one-thread floor) and report the service as
a fraction of it; this script gives the raw figures those references are made of.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common as c

BLOCK = 16 * c.MiB


def _median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def sha256_one_core(total: int) -> float:
    buf = os.urandom(c.MiB)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    for _ in range(total // c.MiB):
        h.update(buf)
    h.hexdigest()
    return total / (time.perf_counter() - t0) / c.MB


def sha256_threads(total: int, threads: int) -> float:
    buf = os.urandom(c.MiB)

    def work() -> None:
        h = hashlib.sha256()
        for _ in range(total // c.MiB):
            h.update(buf)
        h.hexdigest()

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return threads * total / (time.perf_counter() - t0) / c.MB


def fsync_rate(d: Path, n: int, *, data_only: bool = False) -> float:
    path = d / "fsync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sync = os.fdatasync if data_only else os.fsync
    block = b"x" * 4096
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, block)
            sync(fd)
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)


def _make_files(d: Path, n: int) -> list[str]:
    names = [f"f{i:06d}" for i in range(n)]
    data = b"y" * 4096
    for name in names:
        fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
    os.sync()
    return names


def rename_rate(d: Path, n: int, *, fsync: bool) -> float:
    src, dst = d / "rsrc", d / "rdst"
    src.mkdir()
    dst.mkdir()
    names = _make_files(src, n)
    sfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    dfd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        t0 = time.perf_counter()
        for name in names:
            os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)
            if fsync:
                os.fsync(dfd)
        if not fsync:
            os.fsync(dfd)
            os.fsync(sfd)
        return n / (time.perf_counter() - t0)
    finally:
        os.close(sfd)
        os.close(dfd)
        c.remove_tree(src)
        c.remove_tree(dst)


def create_rate(d: Path, n: int) -> float:
    sub = d / "create"
    sub.mkdir()
    data = b"z" * 4096
    try:
        t0 = time.perf_counter()
        for i in range(n):
            fd = os.open(sub / f"c{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)
        return n / (time.perf_counter() - t0)
    finally:
        c.remove_tree(sub)


def sqlite_commit_rate(d: Path, n: int) -> float:
    path = d / "commit.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, sha TEXT, path TEXT)")
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t(sha, path) VALUES (?, ?)", ("0" * 64, f"landing/f{i}"))
            conn.execute("COMMIT")
        return n / (time.perf_counter() - t0)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def seq_write(path: Path, size: int) -> float:
    block = os.urandom(BLOCK)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        done = 0
        while done < size:
            done += os.write(fd, block[: size - done])
        os.fsync(fd)
    finally:
        os.close(fd)
    return size / (time.perf_counter() - t0) / c.MB


def seq_read(path: Path, *, cold: bool) -> float | None:
    if cold and not c.drop_caches():
        return None
    size = path.stat().st_size
    buf = bytearray(BLOCK)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass
    return size / (time.perf_counter() - t0) / c.MB


def measure(d: Path, *, quick: bool, repeat: int) -> dict[str, Any]:
    stream = (64 if quick else 2048) * c.MiB
    nsync = 50 if quick else 500
    nfiles = 500 if quick else 5000
    out: dict[str, Any] = {}
    out["fsync_per_s"] = _median(lambda: fsync_rate(d, nsync), repeat)
    out["fdatasync_per_s"] = _median(lambda: fsync_rate(d, nsync, data_only=True), repeat)
    out["rename_per_s"] = _median(lambda: rename_rate(d, nfiles, fsync=False), repeat)
    out["rename_fsync_per_s"] = _median(lambda: rename_rate(d, nsync, fsync=True), repeat)
    out["create_per_s"] = _median(lambda: create_rate(d, nfiles), repeat)
    out["sqlite_commit_per_s"] = _median(lambda: sqlite_commit_rate(d, nsync), repeat)
    big = d / "seq.bin"
    try:
        out["seq_write_mb_s"] = _median(lambda: seq_write(big, stream), repeat)
        cold = [seq_read(big, cold=True) for _ in range(repeat)]
        out["seq_read_cold_mb_s"] = None if None in cold else statistics.median(x for x in cold if x)
        seq_read(big, cold=False)  # into the cache
        out["seq_read_warm_mb_s"] = _median(lambda: seq_read(big, cold=False) or 0.0, repeat)
    finally:
        big.unlink(missing_ok=True)
    return out


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument(
        "--repeat", type=int, default=None, help="tries per figure, median kept (default 3; quick 1)"
    )
    p.add_argument("--shm", type=Path, default=Path("/dev/shm"), help="the tmpfs to measure too")
    args = c.parse(p)
    repeat = args.repeat or (1 if args.quick else 3)
    disk = c.workdir(args.dir, "bench-limits-")
    shm = c.workdir(args.shm, "bench-limits-") if args.shm.is_dir() else None
    if shm is not None and os.stat(shm).st_dev == os.stat(disk).st_dev:
        c.remove_tree(shm)  # not another filesystem: nothing more to learn
        shm = None
    meta = c.machine({"disk dir": disk, **({"shm dir": shm} if shm else {})})
    hash_total = (256 if args.quick else 2048) * c.MiB
    try:
        with c.Neighbours() as nb:
            sha1 = _median(lambda: sha256_one_core(hash_total), repeat)
            sha2 = _median(lambda: sha256_threads(hash_total // 2, 2), repeat)
            print(f"sha256 hashlib: {sha1:,.0f} MB/s on one core, {sha2:,.0f} MB/s on two threads")
            fs = {"disk": measure(disk, quick=args.quick, repeat=repeat)}
            print("disk:", {k: round(v) if v else v for k, v in fs["disk"].items()})
            if shm is not None:
                fs["shm"] = measure(shm, quick=args.quick, repeat=repeat)
                print("shm: ", {k: round(v) if v else v for k, v in fs["shm"].items()})
        neighbours = nb.describe()
    finally:
        if not args.keep:
            c.remove_tree(disk)
            if shm is not None:
                c.remove_tree(shm)

    labels = [
        ("fsync_per_s", "fsync (4 KiB append + fsync)", "/s"),
        ("fdatasync_per_s", "fdatasync (4 KiB append + fdatasync)", "/s"),
        ("rename_per_s", "rename into another dir (no fsync)", "/s"),
        ("rename_fsync_per_s", "rename + fsync of the destination dir", "/s"),
        ("create_per_s", "create + write 4 KiB + close (upstream's cost)", "/s"),
        ("sqlite_commit_per_s", "SQLite commit, 1 row, WAL, synchronous=FULL", "/s"),
        ("seq_write_mb_s", "sequential write, 16 MiB writes, fsync at end", "MB/s"),
        ("seq_read_cold_mb_s", "sequential read, page cache dropped", "MB/s"),
        ("seq_read_warm_mb_s", "sequential read, in the page cache", "MB/s"),
    ]
    rows: list[list[Any]] = [
        ["SHA-256, hashlib, one core", f"{sha1:,.0f} MB/s", "", ""],
        ["SHA-256, hashlib, two threads (total)", f"{sha2:,.0f} MB/s", "", ""],
    ]
    for key, label, unit in labels:
        vals = [fs[k].get(key) for k in ("disk", "shm") if k in fs]
        cells = [("n/a (cache not dropped)" if v is None else f"{v:,.0f} {unit}") for v in vals]
        rows.append([label, cells[0], cells[1] if len(cells) > 1 else "", ""])
    for r in rows:
        r.pop()  # keep three columns
    tab = c.table(["work", "disk (--dir)", "/dev/shm"], rows)
    print()
    print(tab)
    print(f"\nduring the run: {neighbours}")
    body = (
        f"Each figure is the median of {repeat} tries; streams of {hash_total // c.MiB} MiB "
        f"(hash) and {(64 if args.quick else 2048)} MiB (disk). Cold reads drop the page cache "
        "first (`sync; echo 3 > /proc/sys/vm/drop_caches`, as root).\n\n"
        f"{tab}\n\nDuring the run: {neighbours}.\n"
    )
    data = {"sha256_one_core_mb_s": sha1, "sha256_two_threads_mb_s": sha2, **fs, "neighbours": neighbours}
    c.finish(c.Result("limits", "6. The limit: raw figures of this machine", data, body), args, meta)


if __name__ == "__main__":
    c.main_guard(main)
