"""Small-file throughput: 20,000 files of 4 KiB, dropped by tmp-then-rename, full durability.

    .venv/bin/python bench/bench_small_files.py            # 20,000 files x 3 rounds (a minute)
    .venv/bin/python bench/bench_small_files.py --quick    # 1,000 files, 1 round (seconds)
    .venv/bin/python bench/bench_small_files.py --record   # and write bench/RESULTS.md

Two ways to drop, each on a fresh daemon, landing dir, warehouse and ledger:

- ``prestaged`` (the headline): the files are written beforehand by
  ``simulate.traffic.burst`` into a staging dir on the same filesystem and
  synced; the run renames them into the landing dir as fast as one thread can
  (~0.1 s for 20,000), so the figure is the service's own capacity.
- ``live``: ``simulate.traffic.burst`` writes each file as ``.name.part`` in
  the landing dir and renames it, while the daemon runs; the writer shares
  the two cores with the daemon, as a local upstream would.

files/s = files / (first drop → last manifest line seen), with the daemon's
stability window (``--stability-seconds 0.2``, a constant added latency) inside
that interval; the figure without it is shown too. The daemon runs with its
defaults otherwise: 4 workers, batches of 256, ledger WAL + synchronous=FULL,
manifest fsync per batch, directories fsynced after renames.

The same run also measures the floor on the same filesystem and files: one
thread doing only the work that cannot be avoided per file (open, read, SHA-256,
rename into the warehouse; one directory fsync at the end), and the peak RSS
(VmHWM) of each daemon, sampled before it is stopped.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from pathlib import Path
from typing import Any

import common as c

from simulate import traffic

SIZE = 4096
WINDOW = 0.2
FLAGS = ["--stability-seconds", str(WINDOW)]


def one_run(
    root: Path, files: int, how: str, profile: Path | None, processes: int = 1, extra: list[str] | None = None
) -> dict[str, Any]:
    lay = c.Layout.under(root)
    staged: list[Path] = []
    if how == "prestaged":
        staged = c.stage(root / "staging", files, SIZE)
        time.sleep(WINDOW)  # every staged file is older than the window when it is dropped
    flags = FLAGS + (["--processes", str(processes)] if processes != 1 else []) + (extra or [])
    d = c.DaemonProcess(lay, flags, root / "daemon.log").start()
    if profile is not None:
        d.start_profile(profile)
    cpu0 = d.cpu_seconds()
    try:
        with c.ManifestTail(lay.manifests) as tail:
            if how == "prestaged":
                t0, t_dropped = c.drop(staged, lay.landing)
            else:
                t0 = time.monotonic()
                traffic.burst(lay.landing, count=files, size=SIZE, prefix="live")
                t_dropped = time.monotonic()
            if not tail.wait_count(files, 120 + files / 200, d.alive):
                raise c.BenchError(
                    f"{tail.count} of {files} manifest lines after the deadline:\n{d.tail_log()}"
                )
            t_end = tail.last_at
        cpu = d.cpu_seconds() - cpu0
        d.sample_memory()
    finally:
        rc = d.stop()
    if rc != 0:
        raise c.BenchError(f"daemon exited {rc}:\n{d.tail_log()}")
    bad = d.bad_events()
    if bad:
        raise c.BenchError(f"daemon logged {bad[:3]}")
    left = c.count_files(lay.landing)
    if left:
        raise c.BenchError(f"{left} files left in the landing dir")
    elapsed = t_end - t0
    return {
        "how": how,
        "processes": processes,
        "processes_seen": d.processes,
        "files": files,
        "seconds": elapsed,
        "files_per_s": files / elapsed,
        "files_per_s_net": files / max(elapsed - WINDOW, 1e-9),
        "drop_seconds": t_dropped - t0,
        "daemon_cpu_s": cpu,
        "peak_rss_mb": d.peak_rss_kb / 1024,
    }


def floor_rate(root: Path, files: int) -> dict[str, Any]:
    """One thread doing only open + read + SHA-256 + rename per file, one fsync of each dir at the end."""
    src = root / "floor-src"
    dst = root / "floor-dst"
    dst.mkdir(parents=True)
    paths = c.stage(src, files, SIZE, prefix="floor")
    t0 = time.monotonic()
    dfd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    sfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for p in paths:
            fd = os.open(p.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=sfd)
            try:
                hashlib.sha256(os.read(fd, SIZE + 1)).hexdigest()
            finally:
                os.close(fd)
            os.rename(p.name, p.name, src_dir_fd=sfd, dst_dir_fd=dfd)
        os.fsync(dfd)
        os.fsync(sfd)
    finally:
        os.close(dfd)
        os.close(sfd)
    elapsed = time.monotonic() - t0
    return {"files": files, "seconds": elapsed, "files_per_s": files / elapsed}


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--files", type=int, default=None, help="files per run (default 20,000; quick 1,000)")
    p.add_argument("--rounds", type=int, default=None, help="runs of each kind (default 3; quick 1)")
    p.add_argument("--no-live", action="store_true", help="skip the live-writer runs")
    p.add_argument(
        "--processes", default="1,2", help="the daemon's --processes values to run, comma list (default 1,2)"
    )
    p.add_argument(
        "--flags", default="", help="more daemon flags, one string (e.g. '--concurrency 2'); not for --record"
    )
    args = c.parse(p)
    if args.flags and args.record:
        raise c.BenchError("--flags changes what is measured: not with --record")
    files = args.files or (1000 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    procs = [int(x) for x in args.processes.split(",") if x]
    root = c.workdir(args.dir, "bench-small-")
    meta = c.machine({"landing, warehouse, manifests, ledger": root})
    print(f"small files: {files:,} x {SIZE} B, {rounds} round(s), --processes {procs}, in {root}")
    runs: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    kinds = [(how, n) for how in (["prestaged"] if args.no_live else ["prestaged", "live"]) for n in procs]
    try:
        with c.Neighbours() as nb:
            for i in range(rounds):
                for how, n in kinds:
                    run_root = root / f"{how}-{n}-{i}"
                    prof = args.profile if (args.profile and i == 0 and (how, n) == kinds[0]) else None
                    r = one_run(run_root, files, how, prof, n, args.flags.split())
                    runs.append(r)
                    print(
                        f"  {how:9s} --processes {n} round {i + 1}: {r['files_per_s']:8,.0f} files/s "
                        f"({r['seconds']:.2f} s; drop {r['drop_seconds']:.2f} s; "
                        f"daemon CPU {r['daemon_cpu_s']:.1f} s; peak RSS {r['peak_rss_mb']:.0f} MB "
                        f"in {r['processes_seen']} process(es))"
                    )
                    c.remove_tree(run_root)
                fl = floor_rate(root / f"floor-{i}", files)
                floors.append(fl)
                print(f"  floor     round {i + 1}: {fl['files_per_s']:8,.0f} files/s (one thread)")
                c.remove_tree(root / f"floor-{i}")
        neighbours = nb.describe()
    finally:
        if not args.keep:
            c.remove_tree(root)

    def of(how: str, n: int) -> list[dict[str, Any]]:
        return [r for r in runs if r["how"] == how and r["processes"] == n]

    def med(how: str, n: int, key: str) -> float:
        return statistics.median(r[key] for r in of(how, n))

    floor = statistics.median(f["files_per_s"] for f in floors)
    rows = []
    for how, n in kinds:
        rows.append(
            [
                how,
                n,
                med(how, n, "files_per_s"),
                med(how, n, "files_per_s_net"),
                med(how, n, "seconds"),
                med(how, n, "drop_seconds"),
                med(how, n, "daemon_cpu_s") / files * 1e6,
                max(r["peak_rss_mb"] for r in of(how, n)),
                med(how, n, "files_per_s") / floor,
            ]
        )
    headers = [
        "drop", "--processes", "files/s", "files/s without the 0.2 s window", "seconds", "drop seconds",
        "daemon CPU µs per file", "peak RSS MB (all processes)", "fraction of the 1-thread floor",
    ]  # fmt: skip
    tab = c.table(headers, rows)
    per_round = c.table(
        ["drop", "--processes", "round files/s"],
        [[how, n, ", ".join(f"{r['files_per_s']:,.0f}" for r in of(how, n))] for how, n in kinds],
    )
    print()
    print(tab)
    print(
        f"\nfloor (one thread: open + read + sha256 + rename, no ledger, no manifest): {floor:,.0f} files/s"
    )
    print(f"during the run: {neighbours}")

    best_n = max(procs, key=lambda n: med("prestaged", n, "files_per_s"))
    head = med("prestaged", best_n, "files_per_s")
    default = med("prestaged", 1, "files_per_s") if 1 in procs else None
    targets = [
        c.Target(
            "small files, sustained, full durability",
            "≥ 10,000 files/s",
            f"{head:,.0f} files/s (--processes {best_n}, prestaged drop, median of {rounds})"
            + (f"; default --processes 1: {default:,.0f}" if default is not None and best_n != 1 else ""),
            head >= 10_000,
        )
    ]
    body = (
        f"{files:,} files of {SIZE} B per run, {rounds} run(s) of each drop, median shown; "
        f"daemon flags `{' '.join(FLAGS)}` and `--processes N` as shown (everything else default: "
        "4 workers, batches of 256, WAL + synchronous=FULL, manifest and directory fsyncs). "
        "The 0.2 s stability window is inside every figure (a constant added latency); the column "
        "without it subtracts it. Peak RSS is VmHWM summed over the daemon's processes; CPU is "
        "the whole process tree's.\n\n"
        f"{tab}\n\nPer round:\n\n{per_round}\n\n"
        f"Floor on the same filesystem, same run: one thread doing only open + read + SHA-256 + "
        f"rename per file and one fsync per directory at the end: **{floor:,.0f} files/s**.\n\n"
        f"During the run: {neighbours}.\n"
    )
    if args.profile:
        body += "\n" + c.profile_md(args.profile)
        print("\n" + c.profile_md(args.profile))
    data = {"files": files, "rounds": rounds, "runs": runs, "floors": floors, "neighbours": neighbours}
    c.finish(c.Result("small_files", "1. Small-file throughput", data, body, targets), args, meta)


if __name__ == "__main__":
    c.main_guard(main)
