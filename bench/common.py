"""Shared instruments for the ingestor benchmarks (issue 6).

- ``Layout``: a landing / warehouse / manifests / state tree for one run.
- ``DaemonProcess``: ``ingestor run`` as a real subprocess (its console
  script), started with flags; waits for its ``started`` log line, reads its
  JSON log events, samples its memory (``VmHWM``/``VmRSS`` of
  ``/proc/<pid>/status`` — the daemon is long-lived, so sample before stopping
  it), and optionally profiles it with py-spy.
- ``ManifestTail``: follows ``<manifests>/**/manifest.jsonl`` from a thread
  woken by inotify, stamping every complete line with the monotonic time it
  was seen (the "last manifest line" and latency clocks).
- ``Neighbours``: what else used the CPU during a run (these machines are
  shared: figures without it cannot be judged).
- ``machine()``: CPU, cores, memory, kernel, filesystems of the dirs used,
  commit and whether the product's working tree differed from it.
- ``table()`` / ``record()``: print a result table; replace the benchmark's
  section of ``bench/RESULTS.md`` (and its rows in the targets summary).

Nothing here decides whether a target is met: each script does, and exits
non-zero only when something broke, never for a missed target.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS_MD = BENCH / "RESULTS.md"
RESULTS_JSON = BENCH / "results.json"
MiB = 1 << 20
MB = 1_000_000

sys.path.insert(0, str(REPO))  # run as `python bench/x.py` from anywhere

from simulate.traffic import filesystem_of  # noqa: E402  (after the path fix)


class BenchError(RuntimeError):
    """Something broke (not a missed target): the script exits 1."""


# ----------------------------------------------------------------- arguments


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark script shares."""
    p = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a run of seconds (CI smoke test)")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to make the run's directories (default: the system temp dir, on disk here)",
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    p.add_argument("--record", action="store_true", help="write this run's section of bench/RESULTS.md")
    p.add_argument("--keep", action="store_true", help="keep the run's directories (for inspection)")
    p.add_argument(
        "--drop-caches",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="drop the page cache before cold measurements (root only; default: on, off with --quick)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record a py-spy profile of the daemon (collapsed stacks) into this file",
    )
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and apply the shared options."""
    global ALLOW_DROP
    args = p.parse_args()
    ALLOW_DROP = (not args.quick) if args.drop_caches is None else args.drop_caches
    return args


def command_line() -> str:
    """The command that ran this benchmark, as one would type it from the repo root."""
    argv = [os.path.relpath(sys.argv[0], REPO) if os.path.isabs(sys.argv[0]) else sys.argv[0], *sys.argv[1:]]
    return ".venv/bin/python " + shlex.join(argv)


def workdir(base: Path | None, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def remove_tree(path: Path) -> None:
    """Remove a run's directory; big trees go faster with ``rm -rf`` than with shutil."""
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


# ----------------------------------------------------------------- directories


@dataclass(frozen=True)
class Layout:
    landing: Path
    warehouse: Path
    manifests: Path
    state: Path  # the ledger file

    @classmethod
    def under(
        cls, root: Path, *, landing_root: Path | None = None, warehouse_root: Path | None = None
    ) -> Layout:
        """landing, warehouse, manifests and state under ``root`` (landing/warehouse may live elsewhere)."""
        lay = cls(
            landing=(landing_root or root) / "landing",
            warehouse=(warehouse_root or root) / "warehouse",
            manifests=root / "manifests",
            state=root / "state" / "ledger.sqlite",
        )
        for d in (lay.landing, lay.warehouse, lay.manifests, lay.state.parent):
            d.mkdir(parents=True, exist_ok=True)
        return lay

    def args(self) -> list[str]:
        return [
            "--input", str(self.landing),
            "--warehouse", str(self.warehouse),
            "--manifests", str(self.manifests),
            "--state-path", str(self.state),
        ]  # fmt: skip


# ----------------------------------------------------------------- the daemon


def ingestor_executable() -> list[str]:
    """The real CLI: the venv's ``ingestor`` console script (one python process, no wrapper)."""
    script = Path(sys.executable).parent / "ingestor"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ingestor.cli"]


def proc_status(pid: int) -> dict[str, int]:
    """The kB fields of ``/proc/<pid>/status`` (VmHWM, VmRSS...)."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0])
    return out


def proc_io(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/io") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                out[key] = int(value)
    except OSError:
        pass  # not readable for another user's process: the caller shows no I/O figure
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DaemonProcess:
    """``ingestor run`` on a ``Layout`` with ``flags``; JSON log lines go to ``log_path``."""

    def __init__(self, layout: Layout, flags: Sequence[str], log_path: Path) -> None:
        self.layout = layout
        self.flags = list(flags)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self.started_at = 0.0
        self.peak_rss_kb = 0
        self.rss_kb = 0
        self.processes = 1
        self._log_offset = 0
        self._events: list[dict[str, Any]] = []
        self._profiler: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [*ingestor_executable(), "run", *self.layout.args(), *self.flags]

    def start(self, timeout: float = 120.0, *, wait_started: bool = True) -> DaemonProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command, stdout=self._log, stderr=self._log, env=env, cwd=self.layout.state.parent
        )
        if wait_started:
            self.wait_event("started", timeout)
            self.started_at = self.first_seen("started")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _read_log(self) -> None:
        now = time.monotonic()
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for line in data[:end].splitlines():
            try:
                ev = orjson.loads(line)
            except orjson.JSONDecodeError:
                ev = {"event": "<not json>", "text": line.decode(errors="replace")}
            ev["_seen"] = now
            self._events.append(ev)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        self._read_log()
        return [e for e in self._events if name is None or e.get("event") == name]

    def first_seen(self, name: str) -> float:
        evs = self.events(name)
        return evs[0]["_seen"] if evs else 0.0

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait for a log event; BenchError if the daemon dies or the deadline passes."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            evs = self.events(name)
            if evs:
                return evs[0]
            if not self.alive():
                raise BenchError(f"daemon exited before `{name}`:\n{self.tail_log()}")
            if time.monotonic() > deadline:
                raise BenchError(f"no `{name}` from the daemon after {timeout} s:\n{self.tail_log()}")
            time.sleep(delay)  # poll interval of a deadline wait on a log file
            delay = min(delay * 2, 0.02)

    def tail_log(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def tree(self) -> list[int]:
        """The daemon and every live descendant (``--processes N`` landers, a resource tracker)."""
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as fh:
                        todo.extend(int(x) for x in fh.read().split())
            except OSError:
                continue  # exited meanwhile
        return out

    def sample_memory(self) -> dict[str, int]:
        """VmRSS and VmHWM summed over the daemon's process tree (for one process: its own).

        With child processes the summed VmHWM is an upper bound of the tree's
        simultaneous peak (each process's own peak, added up).
        """
        total = {"VmRSS": 0, "VmHWM": 0, "processes": 0}
        for pid in self.tree():
            try:
                st = proc_status(pid)
            except OSError:
                continue  # exited meanwhile
            total["VmRSS"] += st.get("VmRSS", 0)
            total["VmHWM"] += st.get("VmHWM", 0)
            total["processes"] += 1
        self.peak_rss_kb = max(self.peak_rss_kb, total["VmHWM"])
        self.rss_kb = total["VmRSS"]
        self.processes = total["processes"]
        return total

    def cpu_seconds(self) -> float:
        """CPU seconds of the daemon's process tree (live processes)."""
        total = 0.0
        for pid in self.tree():
            try:
                total += proc_cpu_seconds(pid)
            except OSError:
                continue  # exited meanwhile
        return total

    def start_profile(self, out: Path, rate: int = int(os.environ.get("BENCH_PROFILE_RATE", "97"))) -> None:
        """py-spy record of all threads (idle ones excluded) as collapsed stacks into ``out``."""
        spy = Path(sys.executable).parent / "py-spy"
        if not spy.exists():
            raise BenchError("py-spy not found in the venv")
        self._profiler = subprocess.Popen(
            [
                *(str(spy), "record", "--pid", str(self.pid), "--format", "raw"),
                *("--rate", str(rate), "--output", str(out), "--threads", "--subprocesses"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop_profile(self) -> None:
        if self._profiler is not None:
            self._profiler.send_signal(signal.SIGINT)
            try:
                self._profiler.wait(60)
            except subprocess.TimeoutExpired:
                self._profiler.kill()
                self._profiler.wait()
            self._profiler = None

    def dump_stack(self, match: str = "ingestor/") -> str:
        """py-spy dump of the daemon's busy threads (frames of ours only): where it is right now."""
        spy = Path(sys.executable).parent / "py-spy"
        r = subprocess.run(
            [str(spy), "dump", "--pid", str(self.pid)], capture_output=True, text=True, check=False
        )
        out, keep = [], False
        for line in r.stdout.splitlines():
            if line.startswith("Thread "):
                keep = "(active" in line
                if keep:
                    out.append(line.strip())
            elif keep and match in line:
                out.append("    " + line.strip())
        return "\n".join(out)

    def stop(self, timeout: float = 120.0, *, interrupt_scan: bool = False) -> int:
        """Sample memory, then SIGTERM and wait; returns the exit code.

        ``interrupt_scan``: signal twice (the second SIGTERM tells long work in
        threads, such as a start-up scan, to stop now).
        """
        if self.proc is None:
            return 0
        self.stop_profile()
        if self.alive():
            try:
                self.sample_memory()
            except OSError:
                pass  # exited between the check and the read: the last sample stands
            self.proc.send_signal(signal.SIGTERM)
            if interrupt_scan:
                time.sleep(0.5)  # two distinct signals, not one coalesced
                self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = -9
        self._log.close()
        self.proc = None
        return rc

    def bad_events(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events()
            if e.get("event") in ("internal_error", "fatal", "<not json>", "step_failed")
        ]


IDLE_LEAVES = (
    "Condition.wait",
    "EpollSelector.select",
    "_worker (concurrent/futures/thread.py",
    "Ledger._run",
)


def summarize_profile(path: Path, top: int = 12) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From a py-spy raw (collapsed) profile: (busiest innermost frames, busiest threads), in % of busy samples.

    Samples whose innermost frame is a wait (a condition, the event loop's
    select, an idle pool worker, the ledger writer's queue) are left out.
    """
    leaves: dict[str, int] = {}
    threads: dict[str, int] = {}
    pids: dict[int, int] = {}  # pid → order of first appearance (the daemon samples first)
    total = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return [], []
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        process = ""
        if frames[0].startswith("process "):  # py-spy --subprocesses: "process PID:cmdline" first
            m = re.match(r"process (\d+)", frames[0])
            pid = int(m.group(1)) if m else -1
            pids.setdefault(pid, len(pids))
            process = "daemon: " if pids[pid] == 0 else "lander process: "
            frames = frames[1:]
        if not frames or any(frames[-1].startswith(idle) for idle in IDLE_LEAVES):
            continue
        total += int(n)
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + int(n)
        name = re.sub(r"^thread \(\d+\): ?", "", frames[0]) or "unnamed"
        name = process + re.sub(r"_\d+$", "_N", name)  # worker_0..worker_4 → worker_N
        threads[name] = threads.get(name, 0) + int(n)
    if not total:
        return [], []

    def ranked(d: dict[str, int], k: int) -> list[tuple[str, float]]:
        return [(name, 100.0 * v / total) for name, v in sorted(d.items(), key=lambda kv: -kv[1])[:k]]

    return ranked(leaves, top), ranked(threads, 6)


def _source(frame: str) -> str:
    """The text of a frame's line, read now (right after the run: the line numbers still match)."""
    m = re.search(r"\((ingestor/[\w/]+\.py):(\d+)\)", frame)
    if not m:
        return ""
    try:
        lines = (REPO / m.group(1)).read_text().splitlines()
        return "`" + lines[int(m.group(2)) - 1].strip()[:70].replace("`", "'") + "`"
    except (OSError, IndexError):
        return ""


def profile_md(path: Path, top: int = 12) -> str:
    """A Markdown summary of a py-spy profile (empty if there is none)."""
    leaves, threads = summarize_profile(path, top)
    if not leaves:
        return ""
    return (
        "py-spy profile of the daemon (busy samples only; idle waits left out):\n\n"
        + table(["thread", "% of busy samples"], [[n, f"{p:.1f}"] for n, p in threads])
        + "\n\n"
        + table(
            ["innermost frame", "source line", "% of busy samples"],
            [[n, _source(n), f"{p:.1f}"] for n, p in leaves],
        )
        + "\n"
    )


# ----------------------------------------------------------------- following the manifest


class ManifestTail:
    """Counts (and optionally keeps) complete manifest lines as they are appended.

    A thread blocks on inotify (IN_MODIFY / IN_CREATE on every directory under
    ``root``); on each wake-up it reads the new bytes of every manifest file and
    stamps each complete line with ``time.monotonic()`` taken right after the
    wake-up. A line without its newline is not written yet and waits. Without
    inotify it polls every 2 ms.
    """

    def __init__(self, root: Path, *, keep: bool = False, name: str = "manifest.jsonl") -> None:
        self.root = root
        self.keep = keep
        self.name = name
        self.count = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.lines: list[tuple[float, bytes]] = []
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="manifest-tail", daemon=True)

    def __enter__(self) -> ManifestTail:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def wait_count(self, n: int, timeout: float, alive: Callable[[], bool] | None = None) -> bool:
        """Until ``n`` lines were seen; False at the deadline or when ``alive()`` turns false."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0 or (alive is not None and not alive()):
                    return self.count >= n
                self._cond.wait(min(left, 0.25))
        return True

    def _run(self) -> None:
        try:
            from inotify_simple import INotify, flags
        except ImportError:
            self._poll()
            return
        ino = INotify()
        mask = flags.MODIFY | flags.CREATE | flags.MOVED_TO
        watched: set[Path] = set()

        def watch_tree() -> None:
            for dirpath, _, _ in os.walk(self.root):
                p = Path(dirpath)
                if p not in watched:
                    try:
                        ino.add_watch(p, mask)
                        watched.add(p)
                    except OSError:
                        pass  # removed meanwhile

        try:
            watch_tree()
            self._read_all(time.monotonic(), rescan=True)
            while not self._stop.is_set():
                events = ino.read(timeout=50)
                now = time.monotonic()
                rescan = any(e.mask & flags.ISDIR or e.mask & flags.CREATE for e in events)
                if rescan:
                    watch_tree()
                self._read_all(now, rescan=rescan or not events)
        finally:
            ino.close()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._read_all(time.monotonic(), rescan=True)
            time.sleep(0.002)  # the polling fallback's interval (no inotify)

    def _read_all(self, now: float, *, rescan: bool) -> None:
        if rescan:
            for path in self.root.rglob(self.name):
                self._offsets.setdefault(path, 0)
        new: list[tuple[float, bytes]] = []
        for path, off in list(self._offsets.items()):
            try:
                with open(path, "rb") as fh:
                    fh.seek(off)
                    data = fh.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self._offsets[path] = off + len(data)
            data = self._partial.pop(path, b"") + data
            end = data.rfind(b"\n") + 1
            if end < len(data):
                self._partial[path] = data[end:]
            for line in data[:end].splitlines():
                new.append((now, line))
        if new:
            with self._cond:
                if not self.count:
                    self.first_at = now
                self.count += len(new)
                self.last_at = now
                if self.keep:
                    self.lines.extend(new)
                self._cond.notify_all()


# ----------------------------------------------------------------- the machine and its neighbours


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: the platform string below
    return platform.processor() or "?"


def _mem_total_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    return 0.0


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return r.stdout.rstrip("\n")  # not strip(): porcelain lines start with a status column

    dirty = [
        line[3:]
        for line in git("status", "--porcelain", "--", "ingestor", "simulate", "pyproject.toml").splitlines()
    ]
    return {
        "commit": git("rev-parse", "HEAD"),
        "short": git("rev-parse", "--short", "HEAD"),
        "product_changes": dirty,
    }


def machine(dirs: dict[str, Path] | None = None) -> dict[str, Any]:
    fss = {}
    for label, d in (dirs or {}).items():
        try:
            fs = filesystem_of(d)
            fss[label] = f"{fs.fstype} ({fs.source} on {fs.mount_point})"
        except OSError as exc:
            fss[label] = f"? ({exc.strerror})"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(_mem_total_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_before": os.getloadavg()[0],
        "filesystems": fss,
        **git_state(),
    }


def _proc_times() -> dict[int, tuple[str, float]]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue  # gone meanwhile
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _cpu_busy() -> tuple[float, float]:
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


class Neighbours:
    """CPU used by processes other than this benchmark and its children, during a run."""

    def __enter__(self) -> Neighbours:
        self.before = _proc_times()
        self.busy_before = _cpu_busy()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.t0
        self.after = _proc_times()
        busy, total = _cpu_busy()
        self.machine_busy = (busy - self.busy_before[0]) / max(1, total - self.busy_before[1])

    def others(self, ours: Iterable[int] = (), top: int = 4) -> list[tuple[str, float]]:
        """(name, CPU seconds) of the busiest other processes (exited ones are not seen)."""
        skip = {os.getpid(), *ours}
        rows = []
        for pid, (name, cpu) in self.after.items():
            if pid in skip or _is_descendant(pid, os.getpid()):
                continue
            prev = self.before.get(pid, (name, 0.0))[1]
            if cpu - prev >= 0.05:
                rows.append((f"{name}[{pid}]", cpu - prev))
        return sorted(rows, key=lambda r: -r[1])[:top]

    def describe(self, ours: Iterable[int] = ()) -> str:
        others = self.others(ours)
        busy = f"machine {self.machine_busy * 100:.0f}% busy over {self.seconds:.0f} s"
        if not others:
            return busy + "; no other process used ≥ 0.05 CPU s"
        return busy + "; others: " + ", ".join(f"{n} {s:.1f} CPU s" for n, s in others)


def _is_descendant(pid: int, ancestor: int) -> bool:
    for _ in range(32):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
        if ppid == ancestor:
            return True
        if ppid <= 1:
            return False
        pid = ppid
    return False


# ----------------------------------------------------------------- page cache, files, timing


ALLOW_DROP = True  # set by parse(): --quick runs (CI) leave the machine's page cache alone


def drop_caches() -> bool:
    """sync, then drop the page cache (root only); False if not allowed or not wanted."""
    os.sync()
    if not ALLOW_DROP:
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def write_random_file(path: Path, size: int, *, block: int = 16 * MiB, seed: int = 6) -> str:
    """``size`` bytes of non-zero data (a few random blocks repeated), fsynced; returns its sha256."""
    import random

    rng = random.Random(seed)
    blocks = [rng.randbytes(block) for _ in range(4)]
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        done = 0
        i = 0
        while done < size:
            b = blocks[i % len(blocks)][: size - done]
            fh.write(b)
            h.update(b)
            done += len(b)
            i += 1
        fh.flush()
        os.fsync(fh.fileno())
    return h.hexdigest()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def tool_version(argv: list[str]) -> str | None:
    """First line of ``tool --version``; None if the tool is not installed."""
    if shutil.which(argv[0]) is None:
        return None
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = (r.stdout or r.stderr).strip().splitlines()
    return text[0] if text else "?"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy; BenchError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)  # poll interval of a deadline wait


def count_files(root: Path) -> int:
    """Files below ``root``, but the binding file the ingestor keeps at its top (``.ingestor-ledger``)."""
    n = 0
    for top, _, files in os.walk(root):
        n += len(files) - (top == str(root) and ".ingestor-ledger" in files)
    return n


# ----------------------------------------------------------------- printing and recording


def fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable as plain text on a terminal)."""
    cells = [[fmt(c).replace("|", "\\|") for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    out.append("| " + " | ".join("-" * w for w in widths) + " |")
    for r in cells:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(out)


def machine_md(m: dict[str, Any]) -> str:
    fs = "; ".join(f"{k}: {v}" for k, v in m.get("filesystems", {}).items())
    changes = m.get("product_changes") or []
    tree = (
        "clean"
        if not changes
        else "with uncommitted product changes in " + ", ".join(f"`{c}`" for c in changes)
    )
    return (
        f"- date: {m['date']}; commit `{m['short']}` ({tree})\n"
        f"- machine: {m['cpu']}, {m['usable_cores']} cores, {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}; load average {m['loadavg_before']:.2f} at start\n"
        f"- filesystems: {fs}"
    )


@dataclass
class Target:
    """One target of issue 6 and whether this run met it."""

    what: str
    target: str
    figure: str
    met: bool | None  # None: not measured

    def row(self) -> list[str]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[self.met]
        return [self.what, self.target, self.figure, verdict]


@dataclass
class Result:
    """What a benchmark hands to ``finish``: figures for the JSON line, Markdown for RESULTS.md."""

    name: str  # section key in RESULTS.md
    title: str
    data: dict[str, Any]
    body: str  # Markdown: tables and notes
    targets: list[Target] = field(default_factory=list)


HEADER = """# ingestor benchmark results

Written by the scripts under `bench/` (`--record`): each one replaces its own
section below; the targets summary is rebuilt from `bench/results.json`.
Methods, and what each alternative guarantees, are in each section; the
figures are those of the last recorded run of each script, with the commit
(and any uncommitted product change) they were measured on.
"""


def _replace_section(text: str, name: str, content: str) -> str:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{content.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


ORDER = ["limits", "small_files", "large_file", "latency", "memory", "compare"]


def record(result: Result, meta: dict[str, Any], command: str) -> None:
    """Replace this benchmark's section of RESULTS.md and rebuild the targets summary."""
    store: dict[str, Any] = {}
    if RESULTS_JSON.exists():
        store = json.loads(RESULTS_JSON.read_text())
    store[result.name] = {
        "title": result.title,
        "command": command,
        "machine": meta,
        "targets": [t.__dict__ for t in result.targets],
        "data": result.data,
    }
    RESULTS_JSON.write_text(json.dumps(store, indent=1, sort_keys=True, default=str) + "\n")

    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else HEADER
    rows = []
    for key in sorted(store, key=lambda k: ORDER.index(k) if k in ORDER else 99):
        entry = store[key]
        for t in entry["targets"]:
            rows.append([*Target(**t).row(), f"{entry['machine']['short']}, {entry['machine']['date'][:10]}"])
    summary = "## Targets (2-core machine)\n\n" + table(
        ["what", "target", "this machine", "verdict", "run"], rows
    )
    text = _replace_section(text, "summary", summary)
    section = f"## {result.title}\n\n```\n{command}\n```\n\n{machine_md(meta)}\n\n{result.body.rstrip()}\n"
    # keep the sections in a stable order: remove then re-insert all known ones after the summary
    text = _replace_section(text, result.name, section)
    RESULTS_MD.write_text(_ordered(text, store))


def _ordered(text: str, store: dict[str, Any]) -> str:
    blocks = {}
    for m in re.finditer(r"<!-- begin (\w+) -->.*?<!-- end \1 -->", text, re.S):
        blocks[m.group(1)] = m.group(0)
    head = text.split("<!-- begin ", 1)[0].rstrip()
    names = sorted(blocks, key=lambda k: -1 if k == "summary" else (ORDER.index(k) if k in ORDER else 99))
    return head + "\n\n" + "\n\n".join(blocks[n] for n in names) + "\n"


def finish(result: Result, args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """Print the targets, write RESULTS.md when asked, print the JSON line when asked."""
    if result.targets:
        print()
        print(table(["what", "target", "this run", "verdict"], [t.row() for t in result.targets]))
    if args.record:
        record(result, meta, command_line())
        print(f"\nrecorded in {os.path.relpath(RESULTS_MD)}")
    if args.json:
        payload = {"name": result.name, "machine": meta, "data": result.data,
                   "targets": [t.__dict__ for t in result.targets]}  # fmt: skip
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def main_guard(fn: Callable[[], None]) -> None:
    """Exit 1 with a one-line cause when something broke; 0 otherwise (targets never fail a run)."""
    try:
        fn()
    except BenchError as exc:
        print(f"benchmark broke: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def stage(into: Path, count: int, size: int, prefix: str = "small") -> list[Path]:
    """Write ``count`` unique files outside the landing dir (``simulate.traffic.burst``), synced."""
    from simulate.traffic import burst

    rep = burst(into, count=count, size=size, prefix=prefix)
    os.sync()  # the upstream's own writeback is not charged to the service
    return rep.paths


def drop(paths: Sequence[Path], landing: Path) -> tuple[float, float]:
    """Rename each staged file into ``landing`` (same filesystem): the tmp-then-rename drop."""
    t0 = time.monotonic()
    for p in paths:
        os.rename(p, landing / p.name)
    return t0, time.monotonic()
