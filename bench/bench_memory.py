"""Memory, and the reconciliation scan of a landing dir full of already-seen files.

    .venv/bin/python bench/bench_memory.py            # 1,000,000 records / files (several minutes)
    .venv/bin/python bench/bench_memory.py --quick    # 10,000 (seconds)
    .venv/bin/python bench/bench_memory.py --record   # and write bench/RESULTS.md

Peak RSS is the daemon's ``VmHWM`` (``/proc/<pid>/status``), sampled while it
still runs, just before SIGTERM. Every daemon is fresh (its own process):

1. during the small-file burst of benchmark 1 (20,000 files of 4 KiB, renamed
   in at once; ``bench_small_files.one_run``);
2. during the steady 200 files/s run of benchmark 3 (stability mode, 0.2 s
   window, 10 s; ``bench_latency.run_mode``);
3. on a ledger already holding 1,000,000 MANIFESTED records: the ledger is
   built directly with sqlite3 from ``ingestor.ledger.SCHEMA`` (the column
   layout is checked against it, so a schema change breaks this script rather
   than skewing it), then the daemon starts on it and lands 2,000 new files;
   RSS after start and peak after the traffic, next to the same daemon on an
   empty ledger (same run);
4. the reconciliation scan: a landing dir holding 1,000,000 empty files in
   1,000 subdirectories that the ledger already knows — kept duplicates
   (``--on-duplicate keep``): rows in state 'manifested', action 'kept',
   whose (device, inode, size, mtime_ns) match the files, duplicates of one
   landed original. The daemon starts on it; its ``scan_done`` log line gives
   the files seen and the scan's seconds; start → ``scan_done`` is timed too.
   Checked: no ``file_*`` event and no new ledger row (a file handed on to
   be hashed would make both). The daemon's read system calls (``syscr`` of
   ``/proc/<pid>/io``) are shown too, but SQLite's page reads count there.
   Run twice: with the tree in the kernel's caches (just created), and after
   dropping them (``echo 3 > /proc/sys/vm/drop_caches``, root only). The
   warm run's daemon records the scan's size in the ledger, so the second
   daemon starts its scan helpers with itself, as one restarted after a
   reboot does (``scan_helpers_prestarted``). The
   limit next to each: GNU ``find -type f -printf '%i %s %T@\\n'`` over the
   same tree with the same caches (the same identities, read by C: with
   caches dropped, most of either is the kernel loading a million inodes).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bench_latency
import bench_small_files
import common as c
import ulid

from ingestor.ledger_db import SCHEMA

COLUMNS = (
    "id", "state", "status", "action", "owner", "source_rel", "device", "inode", "size", "mtime_ns",
    "sha256", "dest_rel", "manifest_rel", "manifest_floor", "ingested_ns", "duplicate_of",
    "sidecar_rel", "note", "updated_ns", "ctime_ns", "site", "wh", "detected_ns",
)  # fmt: skip
# ctime_ns and detected_ns keep their defaults (0: not known); site and wh 0: the one landing dir
INSERTED = COLUMNS[: COLUMNS.index("ctime_ns")]
SITE_COLUMNS = COLUMNS[: COLUMNS.index("wh") + 1]  # the rows of a ledger of sources (bench_sources)
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32, as ULIDs use


def _ids(n: int) -> Iterator[str]:
    """n distinct, sortable, valid ULIDs (one timestamp, counter in the random part): fast."""
    head = str(ulid.ULID())[:20]
    for i in range(n):
        tail = []
        for _ in range(6):
            i, r = divmod(i, 32)
            tail.append(_B32[r])
        yield head + "".join(reversed(tail))


def _open_ledger(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    have = tuple(r[1] for r in conn.execute("PRAGMA table_info(files)"))
    if have != COLUMNS:
        raise c.BenchError(f"ledger schema changed: files has {have}; update COLUMNS and the rows here")
    conn.execute("PRAGMA synchronous=OFF")  # building a fixture, not measuring
    return conn


def _insert(
    conn: sqlite3.Connection, rows: Iterator[tuple[Any, ...]], content: list[tuple[bytes, str]]
) -> None:
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO files({', '.join(INSERTED)}) VALUES ({', '.join('?' * len(INSERTED))})", rows
    )
    conn.executemany("INSERT INTO content(key, id) VALUES (?, ?)", content)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def build_manifested_ledger(path: Path, device: int, n: int) -> float:
    """n landed, MANIFESTED records of 4 KiB files from 3 days ago; returns build seconds."""
    t0 = time.monotonic()
    conn = _open_ledger(path)
    owner = str(ulid.ULID())
    then = time.time_ns() - 3 * 86400 * 10**9
    shas = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(n)]
    ids = list(_ids(n))

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(n):
            rel = f"synthetic/d{i % 1000:04d}/f{i:07d}.bin".encode()
            ns = then + i * 1000
            yield (
                ids[i], "manifested", "ingested", "landed", owner, rel, device, 10**9 + i, 4096, ns,
                shas[i], b"ingest_date=2026-01-01/" + rel, "2026/01/01/00/manifest.jsonl", i * 400,
                ns, None, None, None, ns,
            )  # fmt: skip

    _insert(conn, rows(), [(bytes.fromhex(s), i) for s, i in zip(shas, ids, strict=True)])
    conn.close()
    return time.monotonic() - t0


def ledger_rows(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (n,) = conn.execute("SELECT count(*) FROM files").fetchone()
        return int(n)
    finally:
        conn.close()


# ----------------------------------------------------------------- 3. a big ledger


def big_ledger(root: Path, records: int, traffic: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, n in (("empty ledger", 0), (f"{records:,} records", records)):
        run = root / ("empty" if n == 0 else "big")
        lay = c.Layout.under(run)
        build = build_manifested_ledger(lay.state, os.stat(lay.landing).st_dev, n) if n else 0.0
        staged = c.stage(run / "staging", traffic, 4096, prefix="mem")
        time.sleep(0.2)  # staged files older than the window
        d = c.DaemonProcess(lay, ["--stability-seconds", "0.2"], run / "daemon.log").start()
        try:
            start_s = d.started_at - d.spawned_at
            st = d.sample_memory()
            after_start = st["VmRSS"] / 1024
            with c.ManifestTail(lay.manifests) as tail:
                t0, _ = c.drop(staged, lay.landing)
                if not tail.wait_count(traffic, 120, d.alive):
                    raise c.BenchError(f"{tail.count} of {traffic} lines:\n{d.tail_log()}")
                rate = traffic / (tail.last_at - t0)
            d.sample_memory()
        finally:
            rc = d.stop()
        if rc != 0 or d.bad_events():
            raise c.BenchError(f"daemon exited {rc} / logged {d.bad_events()[:3]}:\n{d.tail_log()}")
        out[label] = {
            "records": n,
            "ledger_mb": sum(p.stat().st_size for p in lay.state.parent.glob("ledger.sqlite*")) / c.MB,
            "build_s": build,
            "start_s": start_s,
            "rss_after_start_mb": after_start,
            "peak_rss_mb": d.peak_rss_kb / 1024,
            "traffic_files_per_s": rate,
        }
        print(
            f"  {label:>18s}: start {start_s:.2f} s, RSS after start {after_start:.0f} MB, "
            f"peak after {traffic:,} files {d.peak_rss_kb / 1024:.0f} MB ({rate:,.0f} files/s)"
            + (f"; ledger built in {build:.0f} s" if n else "")
        )
        c.remove_tree(run)
    return out


# ----------------------------------------------------------------- 4. the reconciliation scan


def make_seen_tree(lay: c.Layout, files: int, per_dir: int) -> float:
    """``files`` empty files in subdirs, and a ledger that knows each as a kept duplicate."""
    t0 = time.monotonic()
    conn = _open_ledger(lay.state)
    owner = str(ulid.ULID())
    empty_sha = hashlib.sha256(b"").hexdigest()
    ids = _ids(files + 1)
    original = next(ids)
    now = time.time_ns()
    dev = os.stat(lay.landing).st_dev
    orig_row = (
        original, "manifested", "ingested", "landed", owner, b"first/empty.bin", dev, 1, 0, now,
        empty_sha, b"ingest_date=2026-01-01/first/empty.bin", "2026/01/01/00/manifest.jsonl", 0, now,
        None, None, None, now,
    )  # fmt: skip
    (lay.warehouse / "ingest_date=2026-01-01" / "first").mkdir(parents=True)
    (lay.warehouse / "ingest_date=2026-01-01" / "first" / "empty.bin").touch()

    def rows() -> Iterator[tuple[Any, ...]]:
        yield orig_row
        made = 0
        k = 0
        while made < files:
            rel_dir = f"drop{k:04d}"
            os.mkdir(lay.landing / rel_dir)
            dfd = os.open(lay.landing / rel_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for i in range(min(per_dir, files - made)):
                    name = f"part-{i:05d}.csv"
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
                    st = os.fstat(fd)
                    os.close(fd)
                    yield (
                        next(ids), "manifested", "duplicate", "kept", owner, f"{rel_dir}/{name}".encode(),
                        st.st_dev, st.st_ino, 0, st.st_mtime_ns, empty_sha, None,
                        "2026/01/01/00/manifest.jsonl", 0, now, original, None, None, now,
                    )  # fmt: skip
            finally:
                os.close(dfd)
            made += min(per_dir, files - made)
            k += 1

    _insert(conn, rows(), [(bytes.fromhex(empty_sha), original)])
    conn.close()
    os.sync()
    return time.monotonic() - t0


def scan_once(lay: c.Layout, log: Path, *, cold: bool, timeout: float) -> dict[str, Any]:
    """Start a daemon on the seen tree; time its start-up scan (or report that it did not end in ``timeout``)."""
    before = ledger_rows(lay.state)
    dropped = c.drop_caches() if cold else False
    d = c.DaemonProcess(lay, ["--on-duplicate", "keep", "--stability-seconds", "0.2"], log)
    d.start(wait_started=False)
    ev: dict[str, Any] | None = None
    where = ""
    try:
        try:
            ev = d.wait_event("scan_done", timeout)
        except c.BenchError:
            if not d.alive():
                raise
            where = d.dump_stack()
            d.sample_memory()
        if ev is not None:
            d.wait_event("started", 60)
            time.sleep(0.5)  # anything the scan handed on would be hashed by now
            d.sample_memory()
        io = c.proc_io(d.pid)
    finally:
        rc = d.stop(interrupt_scan=ev is None)
    after = ledger_rows(lay.state)
    file_events = [e for e in d.events() if str(e.get("event", "")).startswith("file_")]
    if (ev is not None and rc != 0) or d.bad_events():
        raise c.BenchError(f"daemon exited {rc} / logged {d.bad_events()[:3]}:\n{d.tail_log()}")
    return {
        "find_s": find_walk(lay.landing, cold=dropped),
        "cold": cold,
        "cache_dropped": dropped,
        "timed_out": ev is None,
        "timeout_s": timeout,
        "where": where,
        "files_seen": ev["files"] if ev else None,
        "scan_s": ev["seconds"] if ev else None,
        "start_to_scan_done_s": ev["_seen"] - d.spawned_at if ev else None,
        "file_events": len(file_events),
        "new_ledger_rows": after - before,
        "read_syscalls": io.get("syscr", -1),
        "read_bytes": io.get("rchar", -1),
        "peak_rss_mb": d.peak_rss_kb / 1024,
    }


def find_walk(landing: Path, *, cold: bool) -> float:
    """The limit: GNU find reading the same identities (inode, size, mtime) of every file, same caches."""
    if cold:
        c.drop_caches()
    t0 = time.monotonic()
    subprocess.run(
        ["find", str(landing), "-type", "f", "-printf", "%i %s %T@\\n"], stdout=subprocess.DEVNULL, check=True
    )
    return time.monotonic() - t0


def reconciliation(root: Path, files: int, timeout: float) -> dict[str, Any]:
    lay = c.Layout.under(root / "scan")
    per_dir = 1000 if files >= 100_000 else 100
    build = make_seen_tree(lay, files, per_dir)
    print(f"  {files:,} seen files in {files // per_dir:,} dirs + ledger made in {build:.0f} s")
    runs = []
    for cold in (False, True):
        if runs and runs[-1]["timed_out"]:
            print("  (no cold run: the warm one did not finish)")
            break
        r = scan_once(lay, root / f"scan-{'cold' if cold else 'warm'}.log", cold=cold, timeout=timeout)
        runs.append(r)
        label = "caches dropped" if r["cache_dropped"] else "warm"
        if r["timed_out"]:
            print(f"  scan ({label}): NOT DONE after {timeout:.0f} s; it was in:\n{r['where']}")
            continue
        print(
            f"  scan ({label}): {r['files_seen']:,} files, "
            f"scan {r['scan_s']:.2f} s, start → scan_done {r['start_to_scan_done_s']:.2f} s, "
            f"file events {r['file_events']}, new rows {r['new_ledger_rows']}, "
            f"read syscalls {r['read_syscalls']:,}, peak RSS {r['peak_rss_mb']:.0f} MB; "
            f"find -printf on the same tree {r['find_s']:.2f} s"
        )
    for r in runs:
        if r["file_events"] or r["new_ledger_rows"] or not (r["timed_out"] or r["files_seen"] == files):
            raise c.BenchError(f"the scan re-did work or missed files: {r}")
    return {"files": files, "per_dir": per_dir, "build_s": build, "runs": runs}


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument(
        "--records", type=int, default=None, help="ledger records and seen files (default 1,000,000)"
    )
    p.add_argument("--skip", default="", help="comma list of parts to skip: burst,steady,ledger,scan")
    p.add_argument(
        "--scan-timeout", type=float, default=600.0, help="give up on a start-up scan after this many seconds"
    )
    args = c.parse(p)
    n = args.records or (10_000 if args.quick else 1_000_000)
    skip = set(filter(None, args.skip.split(",")))
    root = c.workdir(args.dir, "bench-memory-")
    meta = c.machine({"landing, warehouse, manifests, ledger": root})
    print(f"memory: {n:,} records; in {root}")
    data: dict[str, Any] = {"records": n}
    try:
        with c.Neighbours() as nb:
            if "burst" not in skip:
                files = 500 if args.quick else 20_000
                data["burst"] = bench_small_files.one_run(root / "burst", files, "prestaged", None)
                print(f"  small-file burst ({files:,} files): peak RSS {data['burst']['peak_rss_mb']:.0f} MB")
                c.remove_tree(root / "burst")
            if "steady" not in skip:
                secs = 1.0 if args.quick else 10.0
                data["steady"] = bench_latency.run_mode(root / "steady", "stability", 0.2, 200.0, secs, None)
                print(f"  200 files/s for {secs:.0f} s: peak RSS {data['steady']['peak_rss_mb']:.0f} MB")
                c.remove_tree(root / "steady")
            if "ledger" not in skip:
                data["ledger"] = big_ledger(root, n, 200 if args.quick else 2000)
            if "scan" not in skip:
                data["scan"] = reconciliation(root, n, args.scan_timeout)
        neighbours = nb.describe()
    finally:
        if not args.keep:
            c.remove_tree(root)
    data["neighbours"] = neighbours
    report(data, n, args, meta)


def report(data: dict[str, Any], n: int, args: Any, meta: dict[str, Any]) -> None:
    rows: list[list[Any]] = []
    targets: list[c.Target] = []
    if "burst" in data:
        rows.append(
            [
                f"small-file burst ({data['burst']['files']:,} files, benchmark 1)",
                "",
                data["burst"]["peak_rss_mb"],
            ]
        )
    if "steady" in data:
        s = data["steady"]
        rows.append([f"steady 200 files/s ({s['files']:,} files, benchmark 3)", "", s["peak_rss_mb"]])
    if "ledger" in data:
        for label, r in data["ledger"].items():
            rows.append(
                [
                    f"{label} ({r['ledger_mb']:.0f} MB ledger) + new files",
                    r["rss_after_start_mb"],
                    r["peak_rss_mb"],
                ]
            )
        big = data["ledger"][f"{n:,} records"]
        targets.append(
            c.Target(
                f"memory with {n:,} ledger records",
                "< 150 MB RSS",
                f"{big['peak_rss_mb']:.0f} MB peak (after start: {big['rss_after_start_mb']:.0f} MB)",
                big["peak_rss_mb"] < 150,
            )
        )
    scan_tab = ""
    if "scan" in data:
        sc = data["scan"]
        srows = []
        for r in sc["runs"]:
            state = (
                "caches dropped"
                if r["cache_dropped"]
                else ("warm (drop not allowed)" if r["cold"] else "warm")
            )
            rows.append([f"reconciliation scan, {sc['files']:,} seen files ({state})", "", r["peak_rss_mb"]])
            if r["timed_out"]:
                srows.append([state, "?", f"not done after {r['timeout_s']:.0f}", "", r["find_s"], "",
                              r["file_events"], r["new_ledger_rows"], r["read_syscalls"]])  # fmt: skip
                continue
            srows.append(
                [
                    state, r["files_seen"], r["scan_s"], r["start_to_scan_done_s"], r["find_s"],
                    f"{r['scan_s'] / r['find_s']:.2f}x", r["file_events"], r["new_ledger_rows"],
                    r["read_syscalls"],
                ]
            )  # fmt: skip
        scan_tab = c.table(
            ["kernel caches", "files seen", "scan s (scan_done)", "start → scan_done s", "find -printf s",
             "scan / find", "file_* events", "new ledger rows", "daemon read syscalls (SQLite pages included)"],
            srows,
        )  # fmt: skip
        timed_out = [r for r in sc["runs"] if r["timed_out"]]
        worst = max((r["scan_s"] for r in sc["runs"] if not r["timed_out"]), default=0.0)
        rehash = any(r["file_events"] or r["new_ledger_rows"] for r in sc["runs"])
        figure = (
            f"not done after {timed_out[0]['timeout_s']:.0f} s"
            if timed_out
            else "; ".join(
                f"{'cold' if r['cache_dropped'] else 'warm'} {r['scan_s']:.2f} s (find -printf {r['find_s']:.2f} s)"
                for r in sc["runs"]
            )
        ) + ("; re-hashed!" if rehash else "; nothing re-hashed")
        targets.append(
            c.Target(
                f"reconciliation scan, {sc['files']:,} already-seen files",
                "< 5 s, no re-hashing",
                figure,
                not timed_out and worst < 5 and not rehash,
            )
        )
        where = next((r["where"] for r in timed_out), "")
        if where:
            scan_tab += f"\n\nWhere the unfinished scan was (py-spy dump of its scanning thread):\n\n```\n{where}\n```"
    tab = c.table(["daemon during", "RSS after start MB", "peak RSS (VmHWM) MB"], rows)
    print()
    print(tab)
    if scan_tab:
        print()
        print(scan_tab)
    print(f"\nduring the run: {data['neighbours']}")
    ledger_note = ""
    if "ledger" in data:
        big = data["ledger"][f"{n:,} records"]
        empty = data["ledger"]["empty ledger"]
        ledger_note = (
            f"Start time (spawn → `started`): {empty['start_s']:.2f} s on an empty ledger, "
            f"{big['start_s']:.2f} s on {n:,} records; the new files landed at "
            f"{empty['traffic_files_per_s']:,.0f} and {big['traffic_files_per_s']:,.0f} files/s. "
            f"The {n:,}-record ledger was built in {big['build_s']:.0f} s.\n\n"
        )
    body = (
        "Peak RSS = the daemon's VmHWM, sampled before SIGTERM. Daemon flags: "
        "`--stability-seconds 0.2` (and `--on-duplicate keep` for the scan).\n\n"
        f"{tab}\n\n{ledger_note}"
        + (f"Reconciliation scan:\n\n{scan_tab}\n\n" if scan_tab else "")
        + f"During the run: {data['neighbours']}.\n"
    )
    c.finish(c.Result("memory", "4. Memory, and the reconciliation scan", data, body, targets), args, meta)


if __name__ == "__main__":
    c.main_guard(main)
