"""Large-file throughput: one 4 GiB file, same filesystem and across filesystems.

    .venv/bin/python bench/bench_large_file.py            # 4 GiB (a few minutes)
    .venv/bin/python bench/bench_large_file.py --quick    # 64 MiB (seconds)
    .venv/bin/python bench/bench_large_file.py --record   # and write bench/RESULTS.md

One file of non-zero data (four random 16 MiB blocks repeated), written once
and fsynced, travels through fresh daemons (each on its own ledger):

- same filesystem: landing and warehouse on the disk (``--dir``): hash, then
  rename; once with the file cold (page cache dropped: ``sync; echo 3 >
  /proc/sys/vm/drop_caches``, root only) and once warm (read just before);
- disk → /dev/shm (warehouse on tmpfs: copy while hashing), cold and warm;
- /dev/shm → disk (copy while hashing, fdatasync, rename, fsync): a tmpfs
  source is in memory either way, so once.

Ledger and manifests stay on the disk. "Ready" is exact: the daemons run in
sidecar mode (``--mode sidecar``); the file is renamed into the landing dir
first (not ready: no sidecar), its cache state is set, then ``<file>.ok`` is
created: MB/s = size / (sidecar created → its manifest line seen). Between
runs the file is renamed back onto the next run's source filesystem, so it is
written only once.

References, in the same run, on the same file, in the same cache state:
- same filesystem: SHA-256 with ``hashlib`` on one core over an in-memory
  buffer (the target's reference), and a plain one-thread loop reading the
  file (1 MiB reads) and hashing it;
- across filesystems: ``cp SRC DST`` then ``sync`` (one command line, timed
  together); the copy is removed after.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import common as c
import orjson

FLAGS = ["--mode", "sidecar"]
NAME = "big.bin"


def hashlib_memory(total: int) -> float:
    """SHA-256 with hashlib on one core, 1 MiB updates over an in-memory buffer: MB/s."""
    buf = os.urandom(c.MiB)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    for _ in range(max(1, total // c.MiB)):
        h.update(buf)
    h.hexdigest()
    return max(1, total // c.MiB) * c.MiB / (time.perf_counter() - t0) / c.MB


def set_cache(path: Path, cache: str) -> bool:
    """Put ``path`` in the page cache state ``cache`` (cold: dropped; warm: read once); True if done."""
    if cache == "cold":
        return c.drop_caches()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(16 * c.MiB)
        while fh.readinto(buf):
            pass
    return True


def hashlib_file(path: Path, cache: str) -> tuple[float, str]:
    """A plain read + hash loop over ``path`` on one thread (1 MiB reads): MB/s and the sha256."""
    set_cache(path, cache)
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


def cp_sync(src: Path, dst_dir: Path, cache: str) -> float:
    """``cp SRC DST && sync``, timed as one command: MB/s (the copy is removed after)."""
    dst = dst_dir / "cp-reference.bin"
    set_cache(src, cache)
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", 'cp -- "$1" "$2" && sync', "sh", str(src), str(dst)], check=True)
    elapsed = time.perf_counter() - t0
    dst.unlink()
    os.sync()
    return src.stat().st_size / elapsed / c.MB


def land_once(
    root: Path,
    staged: Path,
    sha: str,
    *,
    landing_root: Path,
    warehouse_root: Path,
    cache: str,
    profile: Path | None,
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
            cache_set = set_cache(lay.landing / NAME, cache)
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
        "cache": cache if cache_set else "warm (not dropped)",
        "landed": landed,
    }


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--size", type=int, default=None, help="bytes (default 4 GiB; quick 64 MiB)")
    p.add_argument("--shm", type=Path, default=Path("/dev/shm"), help="the other filesystem (tmpfs)")
    p.add_argument(
        "--repeat", type=int, default=None, help="runs of each path, median kept (default 3; quick 1)"
    )
    args = c.parse(p)
    size = args.size or ((64 if args.quick else 4096) * c.MiB)
    repeat = args.repeat or (1 if args.quick else 3)
    disk = c.workdir(args.dir, "bench-large-")
    shm = c.workdir(args.shm, "bench-large-") if args.shm.is_dir() else None
    if shm is not None and os.stat(shm).st_dev == os.stat(disk).st_dev:
        c.remove_tree(shm)
        shm = None
    meta = c.machine({"disk": disk, **({"other fs": shm} if shm else {})})
    print(f"large file: {size / c.MiB:,.0f} MiB x {repeat}; disk {disk}; other fs {shm or 'none'}")
    samples: dict[str, list[dict[str, Any]]] = {}
    hashlib_mem: list[float] = []
    try:
        with c.Neighbours() as nb:
            disk_stage = disk / "staging"
            disk_stage.mkdir()
            src = disk_stage / NAME
            t0 = time.monotonic()
            sha = c.write_random_file(src, size)
            print(f"  written in {time.monotonic() - t0:.1f} s")
            runs = iter(range(1_000_000))

            def land(key: str, label: str, staged: Path, landing: Path, warehouse: Path, cache: str,
                     ref_name: str, ref: float, dest: Path, profile: Path | None = None) -> None:  # fmt: skip
                """One ingestor run after its reference; the file ends at ``dest`` (same fs as it landed)."""
                n = next(runs)
                r = land_once(
                    disk / f"run{n}", staged, sha, landing_root=landing / f"run{n}",
                    warehouse_root=warehouse / f"run{n}", cache=cache, profile=profile,
                )  # fmt: skip
                os.rename(r.pop("landed"), dest)
                for d in {disk / f"run{n}", landing / f"run{n}", warehouse / f"run{n}"}:
                    c.remove_tree(d)
                samples.setdefault(key, []).append(
                    {**r, "label": label, "reference": ref_name, "reference_mb_s": ref}
                )
                print(f"  {label:24s} {r['mb_s']:7,.0f} MB/s   {ref_name} {ref:,.0f} MB/s")

            for i in range(repeat):
                hashlib_mem.append(hashlib_memory(min(size, 1024 * c.MiB)))
                print(f"  hashlib, one core, in memory: {hashlib_mem[-1]:,.0f} MB/s")
                for cache in ("cold", "warm"):
                    ref, got = hashlib_file(src, cache)
                    if got != sha:
                        raise c.BenchError("the file does not read back as written")
                    prof = args.profile if (cache == "warm" and i == 0) else None
                    land(f"same_fs_{cache}", f"same fs, {cache}", src, disk, disk, cache,
                         f"read+hash loop ({cache})", ref, src, prof)  # fmt: skip
            if shm is not None:
                on_shm = shm / "staging" / NAME
                on_shm.parent.mkdir()
                for _ in range(repeat):
                    # the file goes disk → shm → disk → shm → disk: four measured runs per round
                    for cache, there, back in (("cold", on_shm, src), ("warm", on_shm, src)):
                        ref = cp_sync(src, shm, cache)
                        land(f"disk_to_shm_{cache}", f"disk → /dev/shm, {cache}", src, disk, shm, cache,
                             f"cp + sync ({cache})", ref, there)  # fmt: skip
                        ref = cp_sync(there, disk, "warm")
                        land(
                            "shm_to_disk", "/dev/shm → disk", there, shm, disk, "warm", "cp + sync", ref, back
                        )
        neighbours = nb.describe()
    finally:
        if not args.keep:
            c.remove_tree(disk)
            if shm is not None:
                c.remove_tree(shm)
    results: dict[str, Any] = {
        "size": size,
        "repeat": repeat,
        "hashlib_memory_mb_s": statistics.median(hashlib_mem),
    }
    results["hashlib_memory_runs"] = hashlib_mem
    for key, runs_ in samples.items():
        results[key] = {
            **runs_[0],
            "mb_s": statistics.median(r["mb_s"] for r in runs_),
            "reference_mb_s": statistics.median(r["reference_mb_s"] for r in runs_),
            "daemon_cpu_s": statistics.median(r["daemon_cpu_s"] for r in runs_),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs_),
            "runs": [(round(r["mb_s"]), round(r["reference_mb_s"])) for r in runs_],
        }
    for cache in ("cold", "warm"):
        if f"same_fs_{cache}" in results:
            results[f"read_hash_{cache}_mb_s"] = results[f"same_fs_{cache}"]["reference_mb_s"]
    report(results, neighbours, size, args, meta)


KEYS = ("same_fs_cold", "same_fs_warm", "disk_to_shm_cold", "disk_to_shm_warm", "shm_to_disk")


def report(results: dict[str, Any], neighbours: str, size: int, args: Any, meta: dict[str, Any]) -> None:
    mem = results["hashlib_memory_mb_s"]
    rows: list[list[Any]] = []
    targets: list[c.Target] = []
    for key in KEYS:
        r = results.get(key)
        if r is None:
            continue
        same = key.startswith("same")
        ratio = r["mb_s"] / r["reference_mb_s"]
        rows.append(
            [
                r["label"], r["mb_s"], f"{r['reference']} {r['reference_mb_s']:,.0f} MB/s", f"{ratio:.0%}",
                f"{r['mb_s'] / mem:.0%}" if same else "", r["daemon_cpu_s"], r["peak_rss_mb"], r["cache"],
                "; ".join(f"{a}/{b}" for a, b in r["runs"]),
            ]
        )  # fmt: skip
        if same:
            targets.append(
                c.Target(
                    f"large file, {r['label']}",
                    "≥ 90% of one-core hashlib SHA-256",
                    f"{r['mb_s']:,.0f} MB/s = {r['mb_s'] / mem:.0%} of {mem:,.0f} MB/s "
                    f"(read+hash loop: {ratio:.0%})",
                    r["mb_s"] >= 0.9 * mem,
                )
            )
        else:
            targets.append(
                c.Target(
                    f"large file, {r['label']}",
                    "≥ 90% of cp + sync",
                    f"{r['mb_s']:,.0f} MB/s = {ratio:.0%} of {r['reference_mb_s']:,.0f} MB/s",
                    ratio >= 0.9,
                )
            )
    if not any(k.startswith("disk_to") for k in results):
        targets.append(
            c.Target("large file, across filesystems", "≥ 90% of cp + sync", "no other filesystem", None)
        )
    headers = [
        "path, page cache", "ingestor MB/s (ready → landed)", "reference (same run, same cache state)",
        "ratio to reference", "ratio to hashlib in memory", "daemon CPU s", "peak RSS MB", "cache",
        "each run: ingestor/reference MB/s",
    ]  # fmt: skip
    tab = c.table(headers, rows)
    print()
    print(tab)
    print(f"\nduring the run: {neighbours}")
    body = (
        f"One file of {size / c.MiB:,.0f} MiB (non-zero data), {results['repeat']} run(s) of each path "
        f"(medians; each run right after its reference), daemon flags `{' '.join(FLAGS)}` "
        "(ready = the `.ok` sidecar is created; the file was renamed in beforehand), ledger and "
        "manifests on the disk. Each path is measured with the source cold (page cache dropped: "
        "`sync; echo 3 > /proc/sys/vm/drop_caches`) and warm (read once just before), the "
        "reference in the same state; a tmpfs source is in memory either way, so /dev/shm → disk "
        "needs no cold variant. hashlib SHA-256 on one core over an in-memory buffer, same run (median): "
        f"**{mem:,.0f} MB/s**.\n\n{tab}\n\nDuring the run: {neighbours}.\n"
    )
    if args.profile:
        body += "\nSame-filesystem warm run. " + c.profile_md(args.profile)
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
