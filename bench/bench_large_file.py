"""Large-file throughput: one 4 GiB file, same filesystem and across filesystems.

    .venv/bin/python bench/bench_large_file.py            # 4 GiB (a few minutes)
    .venv/bin/python bench/bench_large_file.py --quick    # 64 MiB (seconds)
    .venv/bin/python bench/bench_large_file.py --record   # and write bench/RESULTS.md

One file of non-zero data (four random 16 MiB blocks repeated), written once
and fsynced, travels through three daemons, each on a fresh ledger:

1. same filesystem: landing and warehouse on the disk (``--dir``): hash, then rename;
2. disk → /dev/shm: landing on the disk, warehouse on tmpfs: copy while hashing;
3. /dev/shm → disk: landing on tmpfs, warehouse on the disk: copy while hashing,
   fdatasync, rename, fsync.

Ledger and manifests stay on the disk. "Ready" is exact: the daemons run in
sidecar mode (``--mode sidecar``), the file is renamed into the landing dir
first (not ready: no sidecar), the page cache is dropped (``sync; echo 3 >
/proc/sys/vm/drop_caches``, root only; a tmpfs source stays in memory by
nature), then ``<file>.ok`` is created: MB/s = size / (sidecar created → its
manifest line seen). Between runs the file is renamed back (same filesystem),
so it is written only once.

References, measured in the same run on the same file with the page cache in
the same state:
- same filesystem: SHA-256 with ``hashlib`` on one core over an in-memory
  buffer (the target's reference), and a plain loop reading the file (1 MiB
  reads, cold cache) and hashing it on one core;
- across filesystems: ``cp SRC DST`` then ``sync`` (one command line, timed
  together), the copy then removed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import common as c
import orjson

FLAGS = ["--mode", "sidecar"]
NAME = "big.bin"


def hashlib_memory(total: int) -> float:
    buf = os.urandom(c.MiB)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    for _ in range(max(1, total // c.MiB)):
        h.update(buf)
    h.hexdigest()
    return max(1, total // c.MiB) * c.MiB / (time.perf_counter() - t0) / c.MB


def hashlib_file(path: Path, dropped: bool) -> tuple[float, str]:
    if dropped:
        c.drop_caches()
    size = path.stat().st_size
    h = hashlib.sha256()
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(c.MiB)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
    sha = h.hexdigest()
    return size / (time.perf_counter() - t0) / c.MB, sha


def cp_sync(src: Path, dst_dir: Path, dropped: bool) -> float:
    dst = dst_dir / "cp-reference.bin"
    if dropped:
        c.drop_caches()
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", 'cp -- "$1" "$2" && sync', "sh", str(src), str(dst)], check=True)
    elapsed = time.perf_counter() - t0
    dst.unlink()
    return src.stat().st_size / elapsed / c.MB


def land_once(
    root: Path, staged: Path, sha: str, *, landing_root: Path, warehouse_root: Path, profile: Path | None
) -> dict[str, Any]:
    """Rename ``staged`` into a fresh daemon's landing dir, create the sidecar, time until its manifest line."""
    lay = c.Layout.under(root, landing_root=landing_root, warehouse_root=warehouse_root)
    size = staged.stat().st_size
    d = c.DaemonProcess(lay, FLAGS, root / "daemon.log").start()
    try:
        if profile is not None:
            d.start_profile(profile)
        with c.ManifestTail(lay.manifests, keep=True) as tail:
            os.rename(staged, lay.landing / NAME)
            dropped = c.drop_caches()
            time.sleep(0.2)  # let the daemon see (and set aside) the file without its sidecar
            cpu0 = d.cpu_seconds()
            t0 = time.monotonic()
            fd = os.open(lay.landing / (NAME + ".ok"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            if not tail.wait_count(1, 600, d.alive):
                raise c.BenchError(f"no manifest line:\n{d.tail_log()}")
            elapsed = tail.last_at - t0
            cpu = d.cpu_seconds() - cpu0
            line = tail.lines[0][1]
        d.sample_memory()
    finally:
        rc = d.stop()
    if rc != 0 or d.bad_events():
        raise c.BenchError(f"daemon exited {rc} / logged {d.bad_events()[:3]}:\n{d.tail_log()}")
    rec = orjson.loads(line)
    if rec["sha256"] != sha or rec["size"] != size or rec["status"] != "ingested":
        raise c.BenchError(f"manifest line does not match the file: {rec}")
    landed = Path(rec["warehouse_path"])
    if landed.stat().st_size != size or (lay.landing / NAME).exists():
        raise c.BenchError("the file did not land whole, or its source is still there")
    return {
        "seconds": elapsed,
        "mb_s": size / elapsed / c.MB,
        "daemon_cpu_s": cpu,
        "peak_rss_mb": d.peak_rss_kb / 1024,
        "cache_dropped": dropped,
        "landed": landed,
    }


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--size", type=int, default=None, help="bytes (default 4 GiB; quick 64 MiB)")
    p.add_argument("--shm", type=Path, default=Path("/dev/shm"), help="the other filesystem (tmpfs)")
    args = c.parse(p)
    size = args.size or ((64 if args.quick else 4096) * c.MiB)
    disk = c.workdir(args.dir, "bench-large-")
    shm = c.workdir(args.shm, "bench-large-") if args.shm.is_dir() else None
    if shm is not None and os.stat(shm).st_dev == os.stat(disk).st_dev:
        c.remove_tree(shm)
        shm = None
    meta = c.machine({"disk": disk, **({"other fs": shm} if shm else {})})
    print(f"large file: {size / c.MiB:,.0f} MiB; disk {disk}; other fs {shm or 'none'}")
    results: dict[str, Any] = {"size": size}
    try:
        with c.Neighbours() as nb:
            disk_stage = disk / "staging"
            disk_stage.mkdir()
            src = disk_stage / NAME
            t0 = time.monotonic()
            sha = c.write_random_file(src, size)
            print(f"  written in {time.monotonic() - t0:.1f} s")
            mem = hashlib_memory(min(size, 1024 * c.MiB))
            read_hash, got = hashlib_file(src, dropped=True)
            if got != sha:
                raise c.BenchError("the file does not read back as written")
            same = land_once(
                disk / "same", src, sha, landing_root=disk / "same", warehouse_root=disk / "same",
                profile=args.profile,
            )  # fmt: skip
            os.rename(same.pop("landed"), src)  # back to the staging dir (same filesystem)
            results["same_fs"] = {**same, "hashlib_memory_mb_s": mem, "hashlib_read_mb_s": read_hash}
            print(
                f"  same fs:      {same['mb_s']:7,.0f} MB/s   hashlib one core {mem:,.0f} MB/s "
                f"(read+hash loop, cold: {read_hash:,.0f} MB/s)"
            )
            if shm is not None:
                ref = cp_sync(src, shm, dropped=True)
                run = land_once(
                    disk / "to-shm", src, sha, landing_root=disk / "to-shm", warehouse_root=shm / "to-shm",
                    profile=None,
                )  # fmt: skip
                shm_stage = shm / "staging"
                shm_stage.mkdir()
                moved = shm_stage / NAME
                os.rename(run.pop("landed"), moved)  # now on tmpfs: the source of the last run
                results["disk_to_shm"] = {**run, "cp_sync_mb_s": ref}
                print(f"  disk -> shm:  {run['mb_s']:7,.0f} MB/s   cp+sync {ref:,.0f} MB/s")
                ref2 = cp_sync(moved, disk, dropped=True)
                run2 = land_once(
                    disk / "from-shm", moved, sha, landing_root=shm / "from-shm", warehouse_root=disk / "from-shm",
                    profile=None,
                )  # fmt: skip
                run2.pop("landed")
                results["shm_to_disk"] = {**run2, "cp_sync_mb_s": ref2}
                print(f"  shm -> disk:  {run2['mb_s']:7,.0f} MB/s   cp+sync {ref2:,.0f} MB/s")
        neighbours = nb.describe()
    finally:
        if not args.keep:
            c.remove_tree(disk)
            if shm is not None:
                c.remove_tree(shm)
    report(results, neighbours, size, args, meta)


def report(results: dict[str, Any], neighbours: str, size: int, args: Any, meta: dict[str, Any]) -> None:
    same = results["same_fs"]
    rows: list[list[Any]] = [
        [
            "same filesystem (disk)",
            same["mb_s"],
            f"hashlib one core {same['hashlib_memory_mb_s']:,.0f} MB/s",
            same["mb_s"] / same["hashlib_memory_mb_s"],
            same["mb_s"] / same["hashlib_read_mb_s"],
            same["daemon_cpu_s"],
            same["peak_rss_mb"],
        ]
    ]
    targets = [
        c.Target(
            "large file, same filesystem",
            "≥ 90% of one-core hashlib SHA-256",
            f"{same['mb_s']:,.0f} MB/s = {same['mb_s'] / same['hashlib_memory_mb_s']:.0%} of "
            f"{same['hashlib_memory_mb_s']:,.0f} MB/s",
            same["mb_s"] >= 0.9 * same["hashlib_memory_mb_s"],
        )
    ]
    for key, label in (("disk_to_shm", "disk → /dev/shm"), ("shm_to_disk", "/dev/shm → disk")):
        r = results.get(key)
        if r is None:
            targets.append(
                c.Target(f"large file, {label}", "≥ 90% of cp + sync", "no other filesystem", None)
            )
            continue
        ratio = r["mb_s"] / r["cp_sync_mb_s"]
        rows.append(
            [
                label,
                r["mb_s"],
                f"cp + sync {r['cp_sync_mb_s']:,.0f} MB/s",
                ratio,
                "",
                r["daemon_cpu_s"],
                r["peak_rss_mb"],
            ]
        )
        targets.append(
            c.Target(
                f"large file, {label}",
                "≥ 90% of cp + sync",
                f"{r['mb_s']:,.0f} MB/s = {ratio:.0%} of {r['cp_sync_mb_s']:,.0f} MB/s",
                ratio >= 0.9,
            )
        )
    headers = [
        "path", "ingestor MB/s (ready → landed)", "reference (same run)", "ratio to reference",
        "ratio to a read+hash loop (cold)", "daemon CPU s", "peak RSS MB",
    ]  # fmt: skip
    tab = c.table(headers, rows)
    print()
    print(tab)
    print(f"\nduring the run: {neighbours}")
    dropped = same["cache_dropped"]
    body = (
        f"One file of {size / c.MiB:,.0f} MiB (non-zero data), daemon flags `{' '.join(FLAGS)}` "
        "(ready = the `.ok` sidecar is created; the file was renamed in beforehand), ledger and "
        "manifests on the disk. "
        + (
            "Page cache dropped before every measured run (ingestor and references); a tmpfs source "
            "is in memory regardless."
            if dropped
            else "The page cache was NOT dropped (`--no-drop-caches`, or not root): the file was warm for every run."
        )
        + f"\n\n{tab}\n\nThe same-filesystem reference is hashlib over an in-memory buffer; the read+hash "
        f"loop (one thread, 1 MiB reads, cold cache) over the same file ran at "
        f"{same['hashlib_read_mb_s']:,.0f} MB/s.\n\nDuring the run: {neighbours}.\n"
    )
    if args.profile:
        body += "\nSame-filesystem run. " + c.profile_md(args.profile)
        print("\n" + c.profile_md(args.profile))
    c.finish(
        c.Result(
            "large_file", "2. Large-file throughput", results | {"neighbours": neighbours}, body, targets
        ),
        args,
        meta,
    )


if __name__ == "__main__":
    c.main_guard(main)
