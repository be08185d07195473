"""Side by side, same run, same data: ingestor and what an operator would otherwise use.

    .venv/bin/python bench/bench_compare.py            # 20,000 files of 4 KiB (several minutes)
    .venv/bin/python bench/bench_compare.py --quick    # 200 files (seconds)
    .venv/bin/python bench/bench_compare.py --record   # and write bench/RESULTS.md

One data set (``simulate.traffic.burst``: unique 4 KiB files) is written once;
for each tool it is copied (``cp -a``: same names, bytes and mtimes) into a
staging dir on the same filesystem and synced, the tool is started on a fresh
landing dir and warehouse, then every file is renamed into the landing dir at
once (one thread, ~0.1 s for 20,000). files/s = files / (first rename → the
tool is done): its last manifest line, or for rclone (no manifest) the moment
the landing dir is empty. A tool that stops making progress for ``--stall``
seconds is stopped and reported with what it left behind.

The tools (each started before the drop, stopped after):

- ``ingestor run --stability-seconds 0.2`` (defaults otherwise), and the
  same with ``--processes 2`` (two lander processes);
- ``bench/naive_reference.py --interval 1 --stability 0.2``: scan, hash, move,
  one SQLite commit per file, manifest line + fsync;
- ``bench/inotify_pipeline.sh``: ``inotifywait -m -r | while read``,
  ``sha256sum``, ``mv -n``, a manifest line; and the same with ``--durable``
  (``sync`` of the manifest, destination and source dir per file);
- ``rclone move --min-age 200ms`` in a loop (``sleep 1`` between passes),
  as a cron job would run it, back to back.

CPU is the tool's own processes and every descendant they waited for
(``getrusage(RUSAGE_CHILDREN)`` around the run; each tool is stopped
gracefully so its children are reaped and counted). A column whose tool is
not installed says so.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common as c

NAIVE = c.BENCH / "naive_reference.py"
PIPELINE = c.BENCH / "inotify_pipeline.sh"
WINDOW = 0.2


@dataclass
class Running:
    progress: Callable[[], int]  # files done so far
    done_at: Callable[[], float]  # monotonic time the last one was seen
    stop: Callable[[], int]  # exit code
    alive: Callable[[], bool]
    pids: list[int]


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _popen(argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    fh = open(log, "ab")  # noqa: SIM115 - the child holds it; closed with the process
    try:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    finally:
        fh.close()


def _wait_text(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    c.wait_until(
        lambda: text in log.read_text(errors="replace") or proc.poll() is not None, timeout, repr(text)
    )
    if proc.poll() is not None:
        raise c.BenchError(f"{proc.args} exited {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")


def _tail_running(
    lay: c.Layout, proc_stop: Callable[[], int], alive: Callable[[], bool], pids: list[int]
) -> Running:
    tail = c.ManifestTail(lay.manifests)
    tail.start()

    def stop() -> int:
        try:
            return proc_stop()
        finally:
            tail.stop()

    return Running(lambda: tail.count, lambda: tail.last_at, stop, alive, pids)


def start_ingestor(lay: c.Layout, root: Path, processes: int = 1) -> Running:
    flags = ["--stability-seconds", str(WINDOW)] + (["--processes", str(processes)] if processes > 1 else [])
    d = c.DaemonProcess(lay, flags, root / "tool.log").start()
    return _tail_running(lay, d.stop, d.alive, [d.pid])


def start_naive(lay: c.Layout, root: Path) -> Running:
    log = root / "tool.log"
    argv = [
        sys.executable, str(NAIVE), "--input", str(lay.landing), "--warehouse", str(lay.warehouse),
        "--manifests", str(lay.manifests), "--db", str(lay.state), "--interval", "1",
        "--stability", str(WINDOW),
    ]  # fmt: skip
    proc = _popen(argv, log)
    _wait_text(log, "naive: started", proc, 30)

    def stop() -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(120)

    return _tail_running(lay, stop, lambda: proc.poll() is None, [proc.pid])


def start_pipeline(lay: c.Layout, root: Path, durable: bool) -> Running:
    log = root / "tool.log"
    argv = [
        "bash",
        str(PIPELINE),
        str(lay.landing),
        str(lay.warehouse),
        str(lay.manifests / "manifest.jsonl"),
    ]
    proc = _popen([*argv, "--durable"] if durable else argv, log)
    _wait_text(log, "Watches established.", proc, 30)

    def stop() -> int:
        # stop inotifywait only: the loop reads EOF, finishes, and bash reaps every child
        for pid in _group_members(proc.pid):
            if _comm(pid) == "inotifywait":
                os.kill(pid, signal.SIGTERM)
        try:
            return proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()

    return _tail_running(lay, stop, lambda: proc.poll() is None, [proc.pid])


def start_rclone(lay: c.Layout, root: Path, files: int) -> Running:
    log = root / "tool.log"
    stop_file = root / "STOP"
    script = 'while [ ! -e "$3" ]; do rclone move --min-age 200ms "$1" "$2"; sleep 1; done'  # a cron job's loop, back to back
    proc = _popen(["sh", "-c", script, "sh", str(lay.landing), str(lay.warehouse), str(stop_file)], log)
    state = {"done_at": 0.0, "left": files}

    def progress() -> int:
        left = c.count_files(lay.landing)
        if left == 0 and state["left"]:
            state["done_at"] = time.monotonic()
        state["left"] = left
        return files - left

    def stop() -> int:
        stop_file.touch()
        try:
            return proc.wait(300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()

    return Running(progress, lambda: state["done_at"], stop, lambda: proc.poll() is None, [proc.pid])


def _group_members(pgid: int) -> list[int]:
    out = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                if os.getpgid(int(e.name)) == pgid:
                    out.append(int(e.name))
            except OSError:
                continue  # gone
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


TOOLS: dict[str, tuple[str, list[str] | None]] = {
    # name: (what it is, the command whose presence it needs)
    "ingestor": ("ingestor run --stability-seconds 0.2", None),
    "ingestor-p2": ("the same with --processes 2", None),
    "naive": ("naive_reference.py (scan every 1 s, commit + fsync per file)", None),
    "inotify": ("inotifywait | while read; sha256sum; mv -n", ["inotifywait", "--help"]),
    "inotify+sync": ("the same + sync of manifest and dirs per file", ["inotifywait", "--help"]),
    "rclone": ("rclone move --min-age 200ms, looped", ["rclone", "version"]),
}


def run_tool(name: str, master: Path, root: Path, files: int, stall: float) -> dict[str, Any]:
    lay = c.Layout.under(root)
    staging = root / "staging"
    subprocess.run(["cp", "-a", f"{master}/.", str(staging)], check=True)
    os.sync()
    staged = sorted(staging.iterdir())
    time.sleep(WINDOW)
    cpu0 = _children_cpu()
    if name == "ingestor":
        r = start_ingestor(lay, root)
    elif name == "ingestor-p2":
        r = start_ingestor(lay, root, processes=2)
    elif name == "naive":
        r = start_naive(lay, root)
    elif name.startswith("inotify"):
        r = start_pipeline(lay, root, durable=name.endswith("sync"))
    else:
        r = start_rclone(lay, root, files)
    finished = False
    try:
        t0, t_dropped = c.drop(staged, lay.landing)
        last, last_change = -1, time.monotonic()
        while True:
            n = r.progress()
            now = time.monotonic()
            if n >= files:
                finished = True
                break
            if n != last:
                last, last_change = n, now
            if now - last_change > stall or not r.alive():
                break
            time.sleep(0.05)  # progress poll; the finish time itself comes from the tool's own clock
        t_end = r.done_at() if finished else time.monotonic()
    finally:
        rc = r.stop()
    cpu = _children_cpu() - cpu0
    landed = c.count_files(lay.warehouse)
    left = c.count_files(lay.landing)
    elapsed = t_end - t0
    return {
        "tool": name,
        "files": files,
        "finished": finished,
        "seconds": elapsed,
        "files_per_s": files / elapsed if finished else float("nan"),
        "done": files if finished else last,
        # an unfinished tool: its pace while it still made progress
        "files_per_s_while_working": (files if finished else last)
        / max(1e-9, (t_end if finished else last_change) - t0),
        "landed": landed,
        "left_in_landing": left,
        "cpu_s": cpu,
        "exit_code": rc,
        "drop_seconds": t_dropped - t0,
    }


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument(
        "--files", type=int, default=None, help="files in the data set (default 20,000; quick 200)"
    )
    p.add_argument("--tools", default=",".join(TOOLS), help="comma list, in run order")
    p.add_argument(
        "--stall",
        type=float,
        default=None,
        help="seconds without progress before giving up (default 20; quick 10)",
    )
    args = c.parse(p)
    files = args.files or (200 if args.quick else 20_000)
    stall = args.stall or (10.0 if args.quick else 20.0)
    wanted = [t for t in args.tools.split(",") if t]
    unknown = set(wanted) - set(TOOLS)
    if unknown:
        raise c.BenchError(f"unknown tools {sorted(unknown)}; known: {', '.join(TOOLS)}")
    root = c.workdir(args.dir, "bench-compare-")
    meta = c.machine({"landing, warehouse, manifests, ledgers": root})
    versions = {
        "inotifywait": c.tool_version(["inotifywait", "--help"]),
        "rclone": c.tool_version(["rclone", "version"]),
        "sha256sum": c.tool_version(["sha256sum", "--version"]),
    }
    meta["tools"] = versions
    print(f"compare: {files:,} files of 4 KiB; tools {', '.join(wanted)}; in {root}")
    results: dict[str, dict[str, Any]] = {}
    try:
        master = root / "master"
        c.stage(master, files, 4096, prefix="cmp")
        with c.Neighbours() as nb:
            for name in wanted:
                need = TOOLS[name][1]
                if need is not None and c.tool_version(need) is None:
                    results[name] = {"tool": name, "installed": False}
                    print(f"  {name:13s} not installed")
                    continue
                r = run_tool(name, master, root / name, files, stall)
                results[name] = r | {"installed": True}
                status = (
                    f"{r['files_per_s']:8,.0f} files/s ({r['seconds']:.1f} s)"
                    if r["finished"]
                    else f"DID NOT FINISH: {r['landed']:,} landed, {r['left_in_landing']:,} left in landing"
                )
                print(f"  {name:13s} {status}; CPU {r['cpu_s']:.1f} s")
                c.remove_tree(root / name)
        neighbours = nb.describe()
    finally:
        if not args.keep:
            c.remove_tree(root)
    report(results, files, neighbours, versions, args, meta)


GUARANTEES = {
    "ingestor": "exactly once by content (SHA-256 dedup), crash-safe ledger, manifest and dirs fsynced, completion check",
    "ingestor-p2": "the same",
    "naive": "dedup by SHA-256, a commit and a manifest fsync per file; no directory fsync, a crash between steps loses a record or a line",
    "inotify": "no dedup, no completion check, nothing fsynced, not crash-safe, loses files when inotify's queue overflows",
    "inotify+sync": "as above, but the manifest line and both directories are fsynced per file",
    "rclone": "no manifest, no hash on a same-filesystem move (a rename), no dedup, nothing fsynced",
}


def report(
    results: dict[str, dict[str, Any]],
    files: int,
    neighbours: str,
    versions: dict[str, Any],
    args: Any,
    meta: dict[str, Any],
) -> None:
    ing = results.get("ingestor", {})
    base = ing.get("files_per_s") if ing.get("finished") else None
    rows = []
    for name, r in results.items():
        if not r.get("installed"):
            rows.append([name, TOOLS[name][0], "not installed", "", "", "", GUARANTEES[name]])
            continue
        if r["finished"]:
            figure = f"{r['files_per_s']:,.0f}"
            ratio = f"{base / r['files_per_s']:.1f}x" if base else "n/a"
        else:
            pace = r["files_per_s_while_working"]
            figure = (
                f"did not finish: {r['landed']:,} landed, {r['left_in_landing']:,} never moved "
                f"(pace while working: {pace:,.0f}/s)"
            )
            ratio = f"{base / pace:.1f}x its pace" if base and pace else "n/a"
        rows.append(
            [
                name,
                TOOLS[name][0],
                figure,
                ratio,
                f"{r['seconds']:.1f}",
                f"{r['cpu_s'] / files * 1e6:,.0f}",
                GUARANTEES[name],
            ]
        )
    headers = ["tool", "what", "files/s", "ingestor is", "seconds", "CPU µs per file", "what it guarantees"]
    tab = c.table(headers, rows)
    print()
    print(tab)
    print(f"\nduring the run: {neighbours}")
    targets = []
    naive = results.get("naive", {})
    best = max(
        (n for n in ("ingestor", "ingestor-p2") if results.get(n, {}).get("finished")),
        key=lambda n: results[n]["files_per_s"],
        default=None,
    )
    if best and naive.get("finished"):
        rate = results[best]["files_per_s"]
        ratio = rate / naive["files_per_s"]
        others = f"; default: {base / naive['files_per_s']:.1f}x" if base and best != "ingestor" else ""
        targets.append(
            c.Target(
                "small files vs the naive reference",
                "≥ 5x",
                f"{ratio:.1f}x ({best}: {rate:,.0f} vs {naive['files_per_s']:,.0f} files/s{others})",
                ratio >= 5,
            )
        )
    tools = ", ".join(f"{k}: {v or 'not installed'}" for k, v in versions.items())
    body = (
        f"{files:,} unique files of 4 KiB, the same bytes, names and mtimes for every tool, renamed into "
        "the tool's landing dir at once after the tool started; files/s from the first rename to the "
        "tool's last manifest line (rclone: landing dir empty). CPU = the tool's processes and their "
        f"reaped descendants, start to stop. Tools: {tools}.\n\n{tab}\n\n"
        f"During the run: {neighbours}.\n"
    )
    data = {"files": files, "results": results, "neighbours": neighbours}
    c.finish(c.Result("compare", "5. Side by side with the alternatives", data, body, targets), args, meta)


if __name__ == "__main__":
    c.main_guard(main)
