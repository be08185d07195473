"""Many landing dirs (issue 13): the idle cost of 200 of them, and the reconciliation scan of seen
files spread over 200 landing dirs against the same files in one.

    .venv/bin/python bench/bench_sources.py            # 30 s idle window, 1,000,000 files (~10 min)
    .venv/bin/python bench/bench_sources.py --quick    # 5 s, 20,000 files (one to two minutes)
    .venv/bin/python bench/bench_sources.py --record   # and write bench/RESULTS.md

Every daemon is the real one (``ingestor run``), fresh, on directories under
``--dir``. The data tree is seed 001's shape: ``data/{vendor}/{dataset}/{version}/raw``
for 10 vendors x 10 datasets x 2 versions (200 landing dirs, ``--vendors``),
each ``raw`` holding ``env0`` .. ``env9`` (2,000 subdirectories). It is served
two ways, by two daemons with their own ledgers, never at once: "many", one
``[[source]]`` whose path template matches every ``raw`` (warehouse and
manifests templates with the same placeholders, under the run's ``many/out``;
the product's defaults otherwise), and "single", today's daemon with ``data``
as its one plain ``--input`` landing dir: the same files, the same
directories, read by one scan.

1. Idle cost. The daemon starts on the empty tree; once its start-up scans
   are done (one ``scan_done`` line per landing dir) and its CPU has settled
   (a 1 s interval under 2% of a core, or 30 s at most), its CPU time
   (utime + stime of ``/proc/PID/stat``, reaped children included) is read
   every second over a window (30 s; ``--quick`` 5 s), then its RSS
   (``VmRSS``, and ``VmHWM``, the peak since it started), its open
   descriptors (``/proc/PID/fd``) and its inotify watches (``inotify wd:``
   lines of ``/proc/PID/fdinfo/*``). The window falls between the periodic
   scans (``scan_interval``, 60 s by default): without ``--quick`` the
   daemon then runs until its first periodic pass over the 200 landing dirs
   is done, and the CPU is given over that longer span too (about one scan
   interval, the pass included). Targets: under 1% of a core, under 100 MB.
   Then the same daemon once more under a soft limit of 1,024 open files
   (``--nofile``; the default soft limit of a login shell and of a systemd
   service): does it serve every landing dir?
2. The reconciliation scan of seen files. ``--files`` (1,000,000; quick
   20,000) empty files, spread evenly over the 2,000 subdirectories, made
   once; each ledger is built directly (``bench_memory``'s fixture: a
   sqlite3 insert checked against the ledger's schema, with each row's
   ``site`` and ``wh`` taken from the ``sites`` table its daemon filled when
   it first served the empty tree): every file a kept duplicate
   (``on_duplicate = "keep"``) of an original landed in its landing dir's
   warehouse, with its (device, inode, size, mtime_ns). A daemon on it
   should look at every file and hash none. The single daemon also counts
   the many daemon's 200 bindings (``raw/.ingestor-ledger``: hidden files,
   never landed).
   Each daemon's log gives, per landing dir, a ``scan_done`` line with its
   files and seconds. Measured per daemon:
   - the start-up scan: the span from the first scan's start (its
     ``scan_done`` time stamp minus its seconds, the daemon's own clock) to
     the last ``scan_done`` (the 200 start-up scans run concurrently, so
     their seconds overlap: their sum is shown, never used as a wall time);
     and spawn -> last ``scan_done`` (the start itself included: opening,
     binding and recovering 200 landing dirs);
   - the periodic pass: the daemon runs until its scan ticker has scanned
     every landing dir once more (one after the other), with a
     ``scan_interval`` chosen from the priming round so that the pass never
     meets the start-up scans (checked); its span likewise;
   - CPU seconds, peak RSS, ``file_*`` events and new ledger rows (both
     must be 0: a file handed on to be hashed makes both).
   A priming round (one daemon each way, not counted) first lets each
   ledger remember its last full scan's size, as a restarted daemon's
   does; then ``--rounds`` (5; quick 1) rounds alternate the two ways
   (single-many, many-single, ...). Medians, and the ratio many / single
   (aim: within 1.10x). Beside each: GNU ``find -type f -printf '%i %s
   %T@\\n'`` over the same landing dirs (warm caches).

The machine is shared: the load average at the start and the end, and what
else used the CPU, are printed with the figures.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_memory as bm
import common as c
import ulid

from ingestor.binding import NAME as BINDING
from ingestor.plan import scope_of

ENVS = 10  # env0 .. env9 in every landing dir
VERSIONS = ("1.0", "2.0")
IDLE_CPU_PCT = 1.0  # the targets of issue 13
IDLE_RSS_MB = 100.0
SCAN_RATIO = 1.10
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
ORIGINAL_REL = b"2026/01/01/000000--first.bin"  # every landing dir's original, in its warehouse
MANIFEST_REL = "2026/01/01/00/manifest.jsonl"


# ----------------------------------------------------------------- the two trees


@dataclass(frozen=True)
class Tree:
    """One way to serve the data tree: its landing dirs, its ledger, how its daemon starts."""

    label: str  # "many" or "single"
    root: Path  # its own dirs: state, warehouses, manifests, logs (the files are in data/)
    state: Path  # the ledger file
    landing_dirs: tuple[Path, ...]  # what the daemon serves
    leaves: tuple[Path, ...]  # the subdirectories the files are in (the same for both)
    config: Path | None  # many: the config file; single: plain flags

    @property
    def sites(self) -> int:
        return len(self.landing_dirs)

    def landing_of(self, leaf: Path) -> Path:
        served = set(self.landing_dirs)
        return next(p for p in leaf.parents if p in served)

    def daemon(self, log: Path, scan_interval: float | None) -> c.DaemonProcess:
        if self.config is None:
            lay = c.Layout(self.landing_dirs[0], self.root / "warehouse", self.root / "manifests", self.state)
            flags = ["--on-duplicate", "keep"]
            if scan_interval is not None:
                flags += ["--scan-interval", f"{scan_interval:g}"]
            return c.DaemonProcess(lay, flags, log)
        write_config(self.config, self.landing_dirs, self.root, self.state, scan_interval)
        return ConfigDaemon(self.config, self.state, log)


class ConfigDaemon(c.DaemonProcess):
    """``ingestor run --config FILE``: the sources are the config's.

    ``nofile``: the daemon's soft limit of open files (``prlimit``, which execs
    the daemon: the pid is the daemon's).
    """

    def __init__(self, config: Path, state: Path, log_path: Path, nofile: int | None = None) -> None:
        nowhere = config.parent / "unused"  # Layout's dirs: not passed to this daemon
        super().__init__(c.Layout(nowhere, nowhere, nowhere, state), [], log_path)
        self.config = config
        self.nofile = nofile

    @property
    def command(self) -> list[str]:
        limit = [] if self.nofile is None else ["prlimit", f"--nofile={self.nofile}:", "--"]
        return [*limit, *c.ingestor_executable(), "run", "--config", str(self.config), *self.flags]


def write_config(
    path: Path, landing_dirs: Sequence[Path], root: Path, state: Path, scan_interval: float | None
) -> None:
    """One ``[[source]]`` matching every landing dir; warehouses and manifests under ``root``
    (not under data/: that is the single daemon's landing dir)."""
    data = landing_dirs[0].parents[3]
    out = root / "out"
    interval = "" if scan_interval is None else f"scan_interval = {scan_interval:g}\n"
    path.write_text(
        f'state_path = "{state}"\n{interval}on_duplicate = "keep"\n\n'
        "[[source]]\n"
        'name = "bench"\n'
        f'path = "{data}/{{vendor}}/{{dataset}}/{{version}}/raw"\n'
        f'warehouse = "{out}/{{vendor}}/{{dataset}}/{{version}}/bronze"\n'
        f'manifests = "{out}/{{vendor}}/{{dataset}}/{{version}}/manifests"\n'
        'layout = "{yyyy}/{mm}/{dd}/{hhmmss}--{name}"\n'
    )


def trees(root: Path, vendors: int) -> tuple[Tree, Tree]:
    """The data tree (``vendors`` x 10 datasets x 2 versions landing dirs, each with env0..env9,
    empty) and its two ways of being served: "many" (each ``raw`` a landing dir, by one
    ``[[source]]``) and "single" (``data`` one plain ``--input`` landing dir)."""
    data = root / "data"
    landing, leaves = [], []
    for v in range(vendors):
        for d in range(10):
            for ver in VERSIONS:
                raw = data / f"vendor{v:02d}" / f"dataset{d:02d}" / ver / "raw"
                landing.append(raw)
                for e in range(ENVS):
                    (raw / f"env{e}").mkdir(parents=True)
                    leaves.append(raw / f"env{e}")
    many_root = root / "many"
    (many_root / "state").mkdir(parents=True)
    config = many_root / "ingestor.toml"
    many = Tree(
        "many", many_root, many_root / "state" / "ledger.sqlite", tuple(landing), tuple(leaves), config
    )
    write_config(config, many.landing_dirs, many_root, many.state, None)
    lay = c.Layout.under(root / "single", landing_root=root)
    single = Tree("single", root / "single", lay.state, (data,), tuple(leaves), None)
    return many, single


def fill(served: Sequence[Tree], files: int) -> float:
    """``files`` empty files spread over the leaves, each known to every tree's ledger as a kept
    duplicate of an original landed in its landing dir's warehouse; returns seconds."""
    t0 = time.monotonic()
    leaves = served[0].leaves
    cols = bm.SITE_COLUMNS
    insert = f"INSERT INTO files({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    owner = str(ulid.ULID())
    now = time.time_ns()
    ledgers = []
    for tree in served:
        conn = bm._open_ledger(tree.state)
        rows = conn.execute("SELECT id, landing, wh, warehouse FROM sites").fetchall()
        sites = {Path(r[1]): (r[0], r[2], Path(r[3])) for r in rows}
        if set(sites) != set(tree.landing_dirs):
            raise c.BenchError(f"{tree.label}: the ledger's sites are not its landing dirs ({len(sites)})")
        ids = bm._ids(files + tree.sites)
        originals = {landing: next(ids) for landing in tree.landing_dirs}
        conn.execute("BEGIN")
        for landing, (site, wh, warehouse) in sites.items():
            dest = warehouse / os.fsdecode(ORIGINAL_REL)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.touch()
            conn.execute(
                insert,
                (
                    originals[landing], "manifested", "ingested", "landed", owner, b"env0/first.bin",
                    os.stat(landing).st_dev, 1, 0, now, EMPTY_SHA, ORIGINAL_REL, MANIFEST_REL, 0, now,
                    None, None, None, now, 0, site, wh,
                ),
            )  # fmt: skip
            conn.execute(
                "INSERT INTO content(key, id) VALUES (?, ?)",
                (scope_of(site, True) + bytes.fromhex(EMPTY_SHA), originals[landing]),
            )
        ledgers.append((tree, conn, sites, ids, originals))

    def kept(rec: str, rel: bytes, st: os.stat_result, original: str, site: int, wh: int) -> tuple[Any, ...]:
        return (
            rec, "manifested", "duplicate", "kept", owner, rel, st.st_dev, st.st_ino, 0, st.st_mtime_ns,
            EMPTY_SHA, None, MANIFEST_REL, 0, now, original, None, None, now, st.st_ctime_ns, site, wh,
        )  # fmt: skip

    per_leaf, extra = divmod(files, len(leaves))
    for k, leaf in enumerate(leaves):
        made = []
        dfd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(per_leaf + (k < extra)):
                name = f"part-{i:05d}.csv"
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
                made.append((name.encode(), os.fstat(fd)))
                os.close(fd)
        finally:
            os.close(dfd)
        for tree, conn, sites, ids, originals in ledgers:
            landing = tree.landing_of(leaf)
            site, wh, _ = sites[landing]
            rel_dir = os.fsencode(leaf.relative_to(landing)) + b"/"
            conn.executemany(
                insert,
                [kept(next(ids), rel_dir + name, st, originals[landing], site, wh) for name, st in made],
            )
    for _, conn, *_ in ledgers:
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    os.sync()
    return time.monotonic() - t0


# ----------------------------------------------------------------- reading the daemon


def wait_count(d: c.DaemonProcess, name: str, n: int, timeout: float) -> list[dict[str, Any]]:
    """Wait for ``n`` log events ``name``; BenchError if the daemon dies or the deadline passes."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        evs = d.events(name)
        if len(evs) >= n:
            return evs
        if not d.alive():
            raise c.BenchError(f"daemon exited after {len(evs)} of {n} `{name}`:\n{d.tail_log()}")
        if time.monotonic() > deadline:
            raise c.BenchError(f"{len(evs)} of {n} `{name}` after {timeout:.0f} s:\n{d.tail_log()}")
        time.sleep(delay)  # poll interval of a deadline wait on a log file
        delay = min(delay * 2, 0.02)


def cpu_total(pid: int) -> float:
    """utime + stime of a process and of its reaped children (scan helpers), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")


def descriptors(pid: int, landing_dirs: Sequence[Path]) -> dict[str, Any]:
    """Open fds of a process, what they are, and its inotify instances and watches."""
    landing = {str(p) for p in landing_dirs}
    kinds: Counter[str] = Counter()
    instances = watches = 0
    fds = os.listdir(f"/proc/{pid}/fd")
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                n = sum(1 for line in fh if line.startswith("inotify wd:"))
        except OSError:
            continue  # closed meanwhile
        name = os.path.basename(target)
        if target in landing:
            kinds["landing dir"] += 1
        elif name.startswith(".ingestor-"):
            parent = os.path.basename(os.path.dirname(target))
            kinds[f"{parent}/{name}"] += 1
        else:
            kinds["other"] += 1
        if n:
            instances += 1
            watches += n
    return {"fds": len(fds), "kinds": dict(kinds.most_common()), "instances": instances, "watches": watches}


def limits_nofile(pid: int) -> str:
    """The soft and hard "Max open files" of a process, as /proc/PID/limits gives them."""
    with open(f"/proc/{pid}/limits") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}:{hard}"
    return "?"


def soft_nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stamp(ev: dict[str, Any]) -> float:
    """A log line's time stamp (the daemon's wall clock) in seconds."""
    return datetime.datetime.fromisoformat(str(ev["ts"]).replace("Z", "+00:00")).timestamp()


def span(scans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Files and times of a set of ``scan_done`` lines: from the first one's start to the last one."""
    starts = [stamp(e) - float(e["seconds"]) for e in scans]
    ends = [stamp(e) for e in scans]
    return {
        "scans": len(scans),
        "files": sum(int(e["files"]) for e in scans),
        "span_s": max(ends) - min(starts),
        "sum_s": sum(float(e["seconds"]) for e in scans),
        "max_s": max(float(e["seconds"]) for e in scans),
        "helpers": sum(int(e.get("helpers", 0)) for e in scans),
        "first_start": min(starts),
        "last_end": max(ends),
    }


def problems(d: c.DaemonProcess) -> list[dict[str, Any]]:
    """Log lines at warning level or above, and lines that are not JSON (the first 20)."""
    return [
        {k: v for k, v in e.items() if k != "_seen"}
        for e in d.events()
        if e.get("level") in ("warning", "error", "critical") or e.get("event") == "<not json>"
    ][:20]


def stop_checked(d: c.DaemonProcess) -> tuple[int, list[dict[str, Any]]]:
    rc = d.stop()
    bad = problems(d)
    if rc != 0 or d.bad_events():
        raise c.BenchError(f"daemon exited {rc} / logged {d.bad_events()[:3]}:\n{d.tail_log()}")
    return rc, bad


# ----------------------------------------------------------------- 1. idle


def idle(tree: Tree, window: float, *, periodic: bool, profile: Path | None) -> dict[str, Any]:
    """The daemon on the empty tree: start-up, then CPU, memory, descriptors at rest."""
    d = tree.daemon(tree.root / "idle.log", None).start()
    n = tree.sites
    started = d.events("started")[0]
    first = wait_count(d, "scan_done", n, 300)[:n]
    scans_done = first[-1]["_seen"] - d.spawned_at
    startup_cpu = cpu_total(d.pid)
    settle_t0 = time.monotonic()
    cpu_prev = cpu_total(d.pid)
    settled = False
    while time.monotonic() - settle_t0 < 30:
        time.sleep(1.0)  # one measuring interval of the settle condition
        cpu_now = cpu_total(d.pid)
        if cpu_now - cpu_prev < 0.02:
            settled = True
            break
        cpu_prev = cpu_now
    settle_s = time.monotonic() - settle_t0
    if profile is not None:
        d.start_profile(profile)
    t0, cpu0 = time.monotonic(), cpu_total(d.pid)
    per_second = []
    prev_t, prev_cpu = t0, cpu0
    while (left := t0 + window - time.monotonic()) > 0:
        time.sleep(min(1.0, left))  # one sample per second of the measuring window
        now, cpu = time.monotonic(), cpu_total(d.pid)
        per_second.append(100 * (cpu - prev_cpu) / (now - prev_t))
        prev_t, prev_cpu = now, cpu
    t1, cpu1 = prev_t, prev_cpu
    d.stop_profile()
    status = c.proc_status(d.pid)
    fds = descriptors(d.pid, tree.landing_dirs)
    in_window = Counter(str(e.get("event")) for e in d.events() if t0 <= e["_seen"] <= t1)
    out: dict[str, Any] = {
        "landing_dirs": n,
        "subdirs": len(tree.leaves),
        "started_landing_dirs": started.get("landing_dirs"),
        "started_dirs_watched": started.get("dirs_watched"),
        "spawn_to_started_s": d.started_at - d.spawned_at,
        "spawn_to_scans_done_s": scans_done,
        "startup_cpu_s": startup_cpu,
        "settled": settled,
        "settle_s": settle_s,
        "window_s": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "cpu_pct_max_1s": max(per_second, default=0.0),
        "log_lines_in_window": dict(in_window),
        "rss_mb": status.get("VmRSS", 0) / 1024,
        "hwm_mb": status.get("VmHWM", 0) / 1024,
        "threads": len(os.listdir(f"/proc/{d.pid}/task")),
        "fds": fds["fds"],
        "fd_kinds": fds["kinds"],
        "fds_per_landing_dir": (fds["fds"] - fds["kinds"].get("other", 0)) / n,
        "nofile_soft_limit": soft_nofile(),
        "inotify_instances": fds["instances"],
        "inotify_watches": fds["watches"],
        "periodic": None,
    }
    if periodic:
        evs = wait_count(d, "scan_done", 2 * n, 60 + 300)
        t2, cpu2 = time.monotonic(), cpu_total(d.pid)
        status = c.proc_status(d.pid)
        out["periodic"] = {
            **span(evs[n : 2 * n]),
            "span_from_window_start_s": t2 - t0,
            "cpu_s": cpu2 - cpu0,
            "cpu_pct": 100 * (cpu2 - cpu0) / (t2 - t0),
            "rss_mb": status.get("VmRSS", 0) / 1024,
            "hwm_mb": status.get("VmHWM", 0) / 1024,
        }
    _, out["problems"] = stop_checked(d)
    return out


def under_nofile(tree: Tree, limit: int) -> dict[str, Any]:
    """The same daemon under a soft limit of ``limit`` open files (1,024: a login shell's and a
    systemd service's default): does it serve every landing dir, or die?"""
    if tree.config is None:
        raise c.BenchError("the open-files check needs a config tree")
    log = tree.root / f"nofile-{limit}.log"
    d = ConfigDaemon(tree.config, tree.state, log, nofile=limit).start(wait_started=False)
    deadline = time.monotonic() + 120
    while d.alive() and len(d.events("scan_done")) < tree.sites and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval of a deadline wait on a log file
    alive = d.alive()
    fds = descriptors(d.pid, tree.landing_dirs)["fds"] if alive else None
    own = limits_nofile(d.pid) if alive else None
    rc = d.stop()
    events = d.events()
    errors = [e for e in events if e.get("level") in ("error", "critical")]
    first = errors[0] if errors else None
    cause = ""
    if first is not None:
        exc = first.get("exception")
        cause = (
            f"{exc[0]['exc_type']}: {exc[0]['exc_value']}" if isinstance(exc, list) and exc else str(first)
        )
    return {
        "limit": limit,
        "served": alive and len(d.events("scan_done")) >= tree.sites,
        "scan_done": len(d.events("scan_done")),
        "exit_code": rc,
        "fds": fds,
        "daemon_limit": own,
        "errors": len(errors),
        "error_events": dict(Counter(str(e.get("event")) for e in errors)),
        "first_error": cause,
        "first_error_task": first.get("task") if first else None,
    }


# ----------------------------------------------------------------- 2. the reconciliation scan


def find_walk(landing_dirs: Sequence[Path]) -> float:
    """GNU find reading the identities (inode, size, mtime) of every file of the landing dirs."""
    t0 = time.monotonic()
    subprocess.run(
        ["find", *map(str, landing_dirs), "-type", "f", "-printf", "%i %s %T@\\n"],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.monotonic() - t0


def register(tree: Tree) -> None:
    """A daemon serves the empty tree once: its landing dirs get their ids in the ledger."""
    d = tree.daemon(tree.root / "register.log", None).start()
    wait_count(d, "scan_done", tree.sites, 300)
    stop_checked(d)


def scan_round(
    tree: Tree, log: Path, files: int, hidden: int, scan_interval: float | None, timeout: float
) -> dict[str, Any]:
    """One daemon: its start-up scan, then (with ``scan_interval``) its first periodic pass.

    ``hidden``: files the scan may count besides ``files`` (the other daemon's bindings).
    """
    n = tree.sites
    before = bm.ledger_rows(tree.state)
    d = tree.daemon(log, scan_interval).start(wait_started=False)
    try:
        evs = wait_count(d, "scan_done", n, timeout)
        startup_seen = evs[n - 1]["_seen"]
        startup_cpu = cpu_total(d.pid)
        d.sample_memory()
        periodic: dict[str, Any] | None = None
        if scan_interval is not None:
            evs = wait_count(d, "scan_done", 2 * n, scan_interval + timeout)
            cpu_after = cpu_total(d.pid)
            d.sample_memory()
            periodic = span(evs[n : 2 * n])
            periodic["cpu_s"] = cpu_after - startup_cpu  # the pass, and the daemon at rest around it
        started = d.events("started")
        io = c.proc_io(d.pid)
    finally:
        if d.alive():
            d.stop()
    after = bm.ledger_rows(tree.state)
    file_events = [e for e in d.events() if str(e.get("event", "")).startswith("file_")]
    if d.bad_events():
        raise c.BenchError(f"daemon logged {d.bad_events()[:3]}:\n{d.tail_log()}")
    startup = span(evs[:n])
    startup.update(
        spawn_to_done_s=startup_seen - d.spawned_at,
        spawn_to_started_s=(started[0]["_seen"] - d.spawned_at) if started else None,
        cpu_s=startup_cpu,
    )
    r = {
        "layout": tree.label,
        "startup": startup,
        "periodic": periodic,
        "overlap": periodic is not None and periodic["first_start"] < startup["last_end"],
        "file_events": len(file_events),
        "new_ledger_rows": after - before,
        "read_syscalls": io.get("syscr", -1),
        "peak_rss_mb": d.peak_rss_kb / 1024,
        "problems": problems(d),
        "find_s": find_walk(tree.landing_dirs),
    }
    if r["file_events"] or r["new_ledger_rows"] or not files <= startup["files"] <= files + hidden:
        raise c.BenchError(
            f"the {tree.label} scan re-did work or missed files: {startup['files']:,} of {files:,} seen, "
            f"{r['file_events']} file events, {r['new_ledger_rows']} new rows"
        )
    if periodic is not None and periodic["files"] != startup["files"]:
        raise c.BenchError(f"the {tree.label} periodic pass saw {periodic['files']:,} of {files:,} files")
    return r


def show_round(label: str, r: dict[str, Any]) -> None:
    s, p = r["startup"], r["periodic"]
    line = (
        f"  {label:>10s} {r['layout']:6s}: start-up scan {s['span_s']:.2f} s "
        f"(spawn → last scan_done {s['spawn_to_done_s']:.2f} s, {s['scans']} scan_done, sum {s['sum_s']:.2f} s, "
        f"helpers {s['helpers']})"
    )
    if p is not None:
        line += f"; periodic pass {p['span_s']:.2f} s (sum {p['sum_s']:.2f} s, helpers {p['helpers']})"
    line += f"; find {r['find_s']:.2f} s; peak RSS {r['peak_rss_mb']:.0f} MB"
    if r["overlap"]:
        line += "; PASS OVERLAPPED THE START-UP SCANS"
    print(line)


def reconciliation(
    root: Path,
    many: Tree,
    single: Tree,
    files: int,
    rounds: int,
    scan_interval: float | None,
    timeout: float,
) -> dict[str, Any]:
    register(single)
    build = fill([single, many], files)
    print(
        f"  {files:,} seen files in {len(many.leaves):,} subdirectories, and both ledgers, "
        f"made in {build:.0f} s"
    )
    # the many daemon's bindings in its landing dirs: hidden files below the single landing dir
    hidden = sum((p / BINDING).exists() for p in many.landing_dirs)
    extra = {"single": hidden, "many": 0}
    trees = {"single": single, "many": many}
    priming = []
    for tree in (single, many):
        r = scan_round(tree, root / f"prime-{tree.label}.log", files, extra[tree.label], None, timeout)
        priming.append(r)
        show_round("priming", r)
    if scan_interval is None:  # the pass must not meet the start-up scans: twice the slowest start
        slowest = max(r["startup"]["spawn_to_done_s"] for r in priming)
        scan_interval = float(max(5, math.ceil(2 * slowest + 2)))
    print(f"  scan_interval for the rounds: {scan_interval:g} s")
    runs = []
    for i in range(rounds):
        order = ("single", "many") if i % 2 == 0 else ("many", "single")
        for label in order:
            r = scan_round(
                trees[label], root / f"round{i}-{label}.log", files, extra[label], scan_interval, timeout
            )
            r["round"] = i + 1
            runs.append(r)
            show_round(f"round {i + 1}", r)
    summary = {}
    for label in ("single", "many"):
        rs = [r for r in runs if r["layout"] == label]
        ok = [r for r in rs if not r["overlap"]]
        summary[label] = {
            "startup_span_s": statistics.median(r["startup"]["span_s"] for r in rs),
            "startup_sum_s": statistics.median(r["startup"]["sum_s"] for r in rs),
            "spawn_to_done_s": statistics.median(r["startup"]["spawn_to_done_s"] for r in rs),
            "startup_cpu_s": statistics.median(r["startup"]["cpu_s"] for r in rs),
            "periodic_span_s": statistics.median(r["periodic"]["span_s"] for r in ok) if ok else None,
            "periodic_sum_s": statistics.median(r["periodic"]["sum_s"] for r in ok) if ok else None,
            "find_s": statistics.median(r["find_s"] for r in rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
        }
    ratios = {
        key: summary["many"][key] / summary["single"][key]
        if summary["many"][key] and summary["single"][key]
        else None
        for key in ("startup_span_s", "spawn_to_done_s", "startup_cpu_s", "periodic_span_s", "find_s")
    }
    return {
        "files": files,
        "subdirs": len(many.leaves),
        "landing_dirs": many.sites,
        "build_s": build,
        "hidden_binding_files_in_single": hidden,
        "scan_interval": scan_interval,
        "priming": priming,
        "runs": runs,
        "median": summary,
        "ratio": ratios,
    }


# ----------------------------------------------------------------- main and report


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument(
        "--files", type=int, default=None, help="seen files per tree (default 1,000,000; quick 20,000)"
    )
    p.add_argument("--vendors", type=int, default=10, help="vendors x 10 datasets x 2 versions landing dirs")
    p.add_argument("--window", type=float, default=None, help="idle window in seconds (default 30; quick 5)")
    p.add_argument("--rounds", type=int, default=None, help="scan rounds per layout (default 5; quick 1)")
    p.add_argument(
        "--scan-interval",
        type=float,
        default=None,
        help="the rounds' scan_interval (default: from the priming round, twice the slowest start)",
    )
    p.add_argument("--no-periodic", action="store_true", help="no periodic pass after the idle window")
    p.add_argument(
        "--nofile",
        type=int,
        default=1024,
        help="also start the idle daemon under this soft limit of open files (default 1,024; 0: not)",
    )
    p.add_argument("--skip", default="", help="comma list of parts to skip: idle,scan")
    p.add_argument(
        "--scan-timeout", type=float, default=600.0, help="give up on a scan after this many seconds"
    )
    args = c.parse(p)
    files = args.files or (20_000 if args.quick else 1_000_000)
    window = args.window or (5.0 if args.quick else 30.0)
    rounds = args.rounds or (1 if args.quick else 5)
    skip = set(filter(None, args.skip.split(",")))
    root = c.workdir(args.dir, "bench-sources-")
    meta = c.machine({"landing dirs, warehouses, manifests, ledgers": root})
    print(
        f"sources: {args.vendors * 20} landing dirs, {files:,} seen files; in {root}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    data: dict[str, Any] = {"files": files, "window_s": window}
    try:
        with c.Neighbours() as nb:
            many, single = trees(root, args.vendors)
            if "idle" in skip:
                register(many)
            else:
                data["idle"] = r = idle(
                    many, window, periodic=not (args.quick or args.no_periodic), profile=args.profile
                )
                print(
                    f"  idle, {r['landing_dirs']} landing dirs / {r['subdirs']:,} subdirectories: "
                    f"CPU {r['cpu_pct']:.2f}% of a core over {r['window_s']:.0f} s "
                    f"(max {r['cpu_pct_max_1s']:.1f}% in 1 s), RSS {r['rss_mb']:.0f} MB "
                    f"(VmHWM {r['hwm_mb']:.0f} MB), {r['fds']} fds, {r['inotify_watches']:,} inotify watches"
                )
                if r["periodic"] is not None:
                    pp = r["periodic"]
                    print(
                        f"  idle until the first periodic pass ({pp['span_from_window_start_s']:.0f} s): "
                        f"CPU {pp['cpu_pct']:.2f}% of a core; the pass {pp['span_s']:.2f} s"
                    )
            if args.nofile:
                data["nofile"] = r = under_nofile(many, args.nofile)
                print(
                    f"  under a soft limit of {r['limit']:,} open files: "
                    + (
                        f"served all {many.sites} landing dirs ({r['fds']} fds; its limit {r['daemon_limit']})"
                        if r["served"]
                        else f"NOT served: exit {r['exit_code']} after {r['scan_done']} of {many.sites} "
                        f"start-up scans, {r['errors']} error lines ({r['error_events']}), "
                        f"first: {r['first_error']}"
                    )
                )
            if "scan" not in skip:
                data["scan"] = reconciliation(
                    root, many, single, files, rounds, args.scan_interval, args.scan_timeout
                )
        data["neighbours"] = nb.describe()
    finally:
        if not args.keep:
            c.remove_tree(root)
    data["loadavg_end"] = os.getloadavg()
    report(data, args, meta)


def report(data: dict[str, Any], args: Any, meta: dict[str, Any]) -> None:
    targets: list[c.Target] = []
    parts: list[str] = []
    load = (
        f"Load average {meta['loadavg_before']:.2f} at the start, "
        f"{' / '.join(f'{x:.2f}' for x in data['loadavg_end'])} (1/5/15 min) at the end. "
        f"During the run: {data['neighbours']}."
    )
    if "idle" in data:
        r = data["idle"]
        rows = [
            ["landing dirs (subdirectories)", f"{r['landing_dirs']} ({r['subdirs']:,})"],
            ["spawn → `started` s", r["spawn_to_started_s"]],
            ["spawn → last start-up `scan_done` s", r["spawn_to_scans_done_s"]],
            ["CPU s used by then", r["startup_cpu_s"]],
            [
                "settled (1 s under 2% of a core)",
                f"{'yes' if r['settled'] else 'NO'} after {r['settle_s']:.0f} s",
            ],
            [f"CPU over {r['window_s']:.0f} s, % of a core", f"{r['cpu_pct']:.2f}"],
            ["CPU, busiest second, % of a core", f"{r['cpu_pct_max_1s']:.1f}"],
            [
                "log lines in the window",
                ", ".join(f"{k} {v}" for k, v in r["log_lines_in_window"].items()) or "none",
            ],
            ["VmRSS MB", r["rss_mb"]],
            ["VmHWM MB", r["hwm_mb"]],
            ["threads", r["threads"]],
            ["open fds", f"{r['fds']:,}: " + ", ".join(f"{k} {v}" for k, v in r["fd_kinds"].items())],
            ["fds per landing dir (all but 'other')", f"{r['fds_per_landing_dir']:.2f}"],
            ["soft limit of open files (this run)", f"{r['nofile_soft_limit']:,}"],
            ["inotify instances / watches", f"{r['inotify_instances']} / {r['inotify_watches']:,}"],
            [
                "`started` line: landing_dirs / dirs_watched",
                f"{r['started_landing_dirs']} / {r['started_dirs_watched']}",
            ],
        ]
        pp = r["periodic"]
        if pp is not None:
            rows += [
                [
                    f"CPU from the window's start to the end of the first periodic pass ({pp['span_from_window_start_s']:.0f} s), % of a core",
                    f"{pp['cpu_pct']:.2f}",
                ],
                [
                    "that periodic pass: span s (sum of its scans s)",
                    f"{pp['span_s']:.2f} ({pp['sum_s']:.2f})",
                ],
                ["VmRSS / VmHWM MB after it", f"{pp['rss_mb']:.1f} / {pp['hwm_mb']:.1f}"],
            ]
        rows.append(["warnings or errors logged", len(r["problems"])])
        tab = c.table(["idle daemon", "figure"], rows)
        print()
        print(tab)
        for e in r["problems"][:5]:
            print(f"  logged: {e}")
        cpu_fig = f"{r['cpu_pct']:.2f}% over {r['window_s']:.0f} s"
        met_cpu = r["cpu_pct"] < IDLE_CPU_PCT
        if pp is not None:
            cpu_fig += (
                f"; {pp['cpu_pct']:.2f}% over {pp['span_from_window_start_s']:.0f} s with a periodic pass"
            )
            met_cpu = met_cpu and pp["cpu_pct"] < IDLE_CPU_PCT
        targets.append(
            c.Target(
                f"idle CPU, {r['landing_dirs']} landing dirs, {r['subdirs']:,} subdirs",
                "< 1% of a core",
                cpu_fig,
                met_cpu,
            )
        )
        hwm = max(r["hwm_mb"], pp["hwm_mb"] if pp else 0.0)
        targets.append(
            c.Target(
                f"idle RSS, {r['landing_dirs']} landing dirs",
                "< 100 MB",
                f"{r['rss_mb']:.0f} MB (VmHWM {hwm:.0f} MB)",
                r["rss_mb"] < IDLE_RSS_MB and hwm < IDLE_RSS_MB,
            )
        )
        parts.append(
            "Idle: the daemon on 200 empty landing dirs (one `[[source]]`, product defaults, "
            f"`scan_interval` 60 s), measured after its start-up scans:\n\n{tab}\n"
            + "".join(f"\nLogged: `{e}`\n" for e in r["problems"][:5])
        )
    if "nofile" in data:
        r = data["nofile"]
        text = (
            f"it served all its landing dirs ({r['fds']:,} fds open; its own limit then "
            f"{r['daemon_limit']}, soft:hard)"
            if r["served"]
            else f"it did NOT: it exited {r['exit_code']} after {r['scan_done']} of the "
            f"{data.get('idle', {}).get('landing_dirs', '?')} start-up scans, with {r['errors']} error lines "
            f"({', '.join(f'`{k}` {v}' for k, v in r['error_events'].items())}); the first, in task "
            f"`{r['first_error_task']}`: `{r['first_error']}`"
        )
        line = (
            f"The same daemon started under a soft limit of {r['limit']:,} open files "
            f"(`prlimit --nofile={r['limit']}:`, the hard limit unchanged; 1,024 is the default soft "
            f"limit of a login shell and of a systemd service): {text}."
        )
        print(f"\n{line}")
        parts.append(line + "\n")
    if "scan" in data:
        sc = data["scan"]
        srows = []
        for r in [*sc["priming"], *sc["runs"]]:
            s, p = r["startup"], r["periodic"]
            srows.append(
                [
                    r.get("round", "priming"), r["layout"], s["scans"], s["files"], s["span_s"], s["sum_s"],
                    s["spawn_to_done_s"], s["cpu_s"], s["helpers"],
                    "" if p is None else p["span_s"], "" if p is None else p["sum_s"],
                    "" if p is None else ("overlapped" if r["overlap"] else p["helpers"]),
                    r["find_s"], r["peak_rss_mb"],
                ]
            )  # fmt: skip
        tab = c.table(
            ["round", "layout", "scan_done lines", "files", "start-up scan s", "sum of scans s",
             "spawn → last scan_done s", "daemon CPU s by then", "helpers", "periodic pass s",
             "sum s", "helpers", "find -printf s", "peak RSS MB"],
            srows,
        )  # fmt: skip
        med, rat = sc["median"], sc["ratio"]

        def row(what: str, key: str) -> list[Any]:
            a, b = med["single"][key], med["many"][key]
            x = rat.get(key)
            return [
                what,
                "n/a" if a is None else a,
                "n/a" if b is None else b,
                "n/a" if x is None else f"{x:.2f}x",
            ]

        mtab = c.table(
            ["median over the rounds", "single s", "many s", "many / single"],
            [
                row("start-up scan (first scan's start → last scan_done)", "startup_span_s"),
                row("spawn → last scan_done", "spawn_to_done_s"),
                row("daemon CPU, spawn → last scan_done", "startup_cpu_s"),
                row("periodic pass", "periodic_span_s"),
                row("find -printf over the landing dirs", "find_s"),
            ],
        )
        print()
        print(tab)
        print()
        print(mtab)
        for key, what in (("startup_span_s", "start-up"), ("periodic_span_s", "periodic")):
            x = rat.get(key)
            print(
                f"  {what} scan, many / single: {'n/a' if x is None else f'{x:.2f}x'} (aim ≤ {SCAN_RATIO:.2f}x)"
            )
        for key, what in (("startup_span_s", "at start"), ("periodic_span_s", "periodic pass")):
            x = rat.get(key)
            targets.append(
                c.Target(
                    f"reconciliation scan {what}, {sc['files']:,} seen files in {sc['landing_dirs']} landing dirs",
                    f"≤ {SCAN_RATIO:.2f}x one landing dir",
                    "n/a"
                    if x is None
                    else f"{x:.2f}x ({med['many'][key]:.2f} s vs {med['single'][key]:.2f} s)",
                    None if x is None else x <= SCAN_RATIO,
                )
            )
        probs = [e for r in [*sc["priming"], *sc["runs"]] for e in r["problems"]]
        parts.append(
            f"Reconciliation scan: {sc['files']:,} seen files (kept duplicates the ledger knows) over "
            f"{sc['subdirs']:,} subdirectories, in {sc['landing_dirs']} landing dirs (many: one `[[source]]`) "
            f"or in one (single: plain `--input`); the files and both ledgers made in {sc['build_s']:.0f} s. "
            f"Rounds' `scan_interval` {sc['scan_interval']:g} s. Start-up scan = from the first scan's start "
            "(its `scan_done` time stamp minus its seconds) to the last `scan_done`; the 200 start-up "
            "scans overlap, so their sum is not a wall time. Periodic pass = the scan ticker's first pass "
            "(one landing dir after the other, each after a recovery check). No file was handed on "
            "(0 `file_*` events, 0 new ledger rows in every run).\n\n"
            f"{tab}\n\n{mtab}\n" + (f"\nWarnings logged: {len(probs)}, e.g. `{probs[0]}`\n" if probs else "")
        )
    parts.append(load)
    print(f"\n{load}")
    body = "\n".join(parts)
    c.finish(
        c.Result(
            "sources",
            "7. Many landing dirs: idle cost and the reconciliation scan (issue 13)",
            data,
            body,
            targets,
        ),
        args,
        meta,
    )


if __name__ == "__main__":
    c.main_guard(main)
