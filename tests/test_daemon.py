"""End to end: a real ``ingestor run`` process, real files, real signals."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestor.scanhelpers import default_workers
from simulate import traffic
from tests import invariants
from tests.conftest import Env, run_ingestor, sha256_file
from tests.waiting import wait_for


def landed(env: Env, n: int, status: str = "ingested") -> bool:
    return sum(1 for r in env.records() if r.status == status) >= n


def test_files_land_once_with_manifest_lines(env: Env, daemon) -> None:
    d = daemon()
    rep = traffic.rename_tmp(env.landing, count=20, size=1000)
    wait_for(lambda: landed(env, 20), 20, "20 files")
    invariants.check(env, invariants.expected_of(rep))
    recs = env.ingested()
    assert all(r.warehouse and "/ingest_date=" in r.warehouse for r in recs)
    events = d.event("file_ingested")
    assert len(events) == 20
    for e in events:
        assert {"path", "warehouse_path", "sha256", "bytes", "id"} <= e.keys()
    # every log line is one JSON object
    assert all(e.get("event") != "<not json>" for e in d.logs())


def test_slow_copy_lands_once_whole_after_writer_stops(env: Env, daemon, tmp_path: Path) -> None:
    daemon(stability="0.5")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    stop_writing = threading.Event()
    ticks: list[float] = []

    def pause(seconds: float) -> None:
        ticks.append(seconds)
        stop_writing.wait(seconds)  # the writer's own pacing, not a test wait

    # 30 chunks, 0.1 s apart: 3 s of writing with pauses well inside the window
    rep = traffic.slow_copy(src, env.landing, chunk=10_000, interval=0.1, sleep=pause)
    assert env.records() == [] or all(r.size == src.stat().st_size for r in env.records())
    wait_for(lambda: landed(env, 1), 20, "the slow file")
    recs = env.records()
    assert len(recs) == 1 and recs[0].size == 300_000
    assert recs[0].sha256 == sha256_file(src)
    invariants.check(env, invariants.expected_of(rep))


def test_duplicate_resend_is_quarantined(env: Env, daemon) -> None:
    daemon()
    rep = traffic.duplicates(env.landing, count=4, size=5000)
    wait_for(lambda: len(env.records()) == 4, 20, "4 manifest lines")
    recs = env.records()
    ingested = [r for r in recs if r.status == "ingested"]
    dups = [r for r in recs if r.status == "duplicate"]
    assert len(ingested) == 1 and len(dups) == 3
    assert {r.duplicate_of for r in dups} == {ingested[0].id}
    for r in dups:
        assert r.action == "quarantined" and r.warehouse and "/_duplicates/" in r.warehouse
        assert Path(r.warehouse).is_file()
    invariants.check(env, invariants.expected_of(rep))


@pytest.mark.parametrize("action", ["delete", "keep"])
def test_duplicate_delete_and_keep(env: Env, daemon, action: str) -> None:
    daemon("--on-duplicate", action)
    traffic.duplicates(env.landing, count=3, size=100)
    wait_for(lambda: len(env.records()) == 3, 20, "3 lines")
    dups = [r for r in env.records() if r.status == "duplicate"]
    assert all(
        r.action == ("deleted" if action == "delete" else "kept") and r.warehouse is None for r in dups
    )
    left = env.landing_files()
    assert len(left) == (0 if action == "delete" else 2)
    if action == "keep":
        # a rescan must not pick the kept files up again
        rc = run_ingestor("replay", *env.args(), "--stability-seconds", "0")
        assert rc.returncode == 0, rc.stderr
        assert len(env.records()) == 3


def test_sidecar_mode(env: Env, daemon) -> None:
    daemon("--mode", "sidecar")
    rep = traffic.sidecar(env.landing, count=5, size=2000)
    early = traffic.sidecar(env.landing, count=3, size=2000, ok_first=True, prefix="early")
    lonely = env.landing / "no-sidecar.csv"
    lonely.write_bytes(b"waiting for its .ok\n")
    orphan = env.landing / "ghost.csv.ok"
    orphan.write_bytes(b"")
    wait_for(lambda: landed(env, 8), 20, "8 files")
    # sidecars of landed files are removed; the file without one waits; the orphan is reported
    left = sorted(p.name for p in env.landing_files())
    assert left == ["ghost.csv.ok", "no-sidecar.csv"]
    invariants.check(env, invariants.expected_of(rep, early), landing_may_hold=(".csv", ".ok"))
    lonely.with_name("no-sidecar.csv.ok").write_bytes(b"")
    wait_for(lambda: landed(env, 9), 20, "the late one")
    assert [p.name for p in env.landing_files()] == ["ghost.csv.ok"]


def test_sidecar_orphan_is_reported_never_ingested(env: Env, daemon) -> None:
    d = daemon("--mode", "sidecar", stability="0.2")
    (env.landing / "ghost.csv.ok").write_bytes(b"")
    wait_for(lambda: d.event("sidecar_orphan"), 20, "orphan report")
    assert env.records() == []
    assert (env.landing / "ghost.csv.ok").exists()


def test_new_subdirectory_filled_immediately(env: Env, daemon) -> None:
    daemon()
    deep = env.landing / "a" / "b" / "c"
    deep.mkdir(parents=True)
    reps = [
        traffic.rename_tmp(deep, count=10, size=300),
        traffic.rename_tmp(env.landing / "a", count=5, size=300),
    ]
    # a whole tree created elsewhere and moved in at once: no event for its contents
    staging = env.root / "staging" / "tree"
    reps.append(traffic.rename_tmp(staging / "x" / "y", count=5, size=300))
    os.rename(staging, env.landing / "tree")
    wait_for(lambda: landed(env, 20), 20, "20 files")
    invariants.check(env, invariants.expected_of(*reps))
    assert any("/a/b/c/" in (r.warehouse or "") for r in env.records())


def test_hidden_and_temporary_files_are_ignored(env: Env, daemon) -> None:
    d = daemon()
    names = [".hidden", "x.tmp", "y.part", "z.swp", "data.csv.ok"]
    for n in names:
        (env.landing / n).write_bytes(b"ignore me")
    (env.landing / ".cache").mkdir()
    (env.landing / ".cache" / "inside.csv").write_bytes(b"hidden dir")
    (env.landing / "real.csv").write_bytes(b"real")
    wait_for(lambda: landed(env, 1), 20, "real.csv")
    d.stop()
    assert [r.source for r in env.records()] == [str(env.landing / "real.csv")]
    assert sorted(p.name for p in env.landing_files()) == sorted([*names, "inside.csv"])


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="ingestor-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("side", ["landing", "warehouse"])
def test_cross_filesystem(env: Env, daemon, shm_dir: Path, side: str) -> None:
    if side == "landing":
        env.landing = shm_dir / "landing"
        env.landing.mkdir()
    else:
        env.warehouse = shm_dir / "warehouse"
    assert os.stat(shm_dir).st_dev != os.stat(env.root).st_dev
    daemon()
    rep = traffic.rename_tmp(env.landing, count=10, size=50_000)
    big = traffic.rename_tmp(env.landing, count=1, size=3_000_000, prefix="big")
    wait_for(lambda: landed(env, 11), 30, "11 files")
    invariants.check(env, invariants.expected_of(rep, big))
    for r in env.ingested():
        assert os.stat(r.warehouse).st_ino != r.inode or os.stat(r.warehouse).st_dev != r.device


def test_restart_after_sigterm_lands_files_dropped_while_down(env: Env, daemon) -> None:
    d = daemon()
    first = traffic.rename_tmp(env.landing, count=5, size=100)
    wait_for(lambda: landed(env, 5), 20, "first 5")
    assert d.stop(signal.SIGTERM) == 0
    down = traffic.rename_tmp(env.landing, count=7, size=100, prefix="while-down")
    sub = traffic.rename_tmp(env.landing / "new-dir", count=3, size=100, prefix="while-down")
    daemon()
    wait_for(lambda: landed(env, 15), 20, "all 15")
    invariants.check(env, invariants.expected_of(first, down, sub))


def test_sigint_drains_and_exits_zero(env: Env, daemon) -> None:
    d = daemon()
    traffic.rename_tmp(env.landing, count=3, size=100)
    wait_for(lambda: landed(env, 3), 20)
    assert d.stop(signal.SIGINT) == 0
    assert d.event("stopped")


def test_kill_9_during_burst_then_restart_loses_and_doubles_nothing(env: Env, daemon) -> None:
    d = daemon(stability="0.1")
    rep = traffic.burst(env.landing, count=1500, size=2048, subdirs=3)
    wait_for(lambda: len(env.records()) >= 100, 30, "some progress")
    d.kill()
    more = traffic.burst(env.landing, count=300, size=2048, prefix="after-kill")
    d2 = daemon(stability="0.1")
    wait_for(lambda: landed(env, 1800), 60, "all 1800")
    counts = invariants.check(env, invariants.expected_of(rep, more))
    assert counts["ingested"] == 1800
    assert d2.event("started")


def test_runs_in_an_empty_folder_with_defaults(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestor.cli", "run", "--input", "./landing", "--stability-seconds", "0.2"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: (tmp_path / "landing").is_dir() and (tmp_path / "state" / "ledger.sqlite").exists(), 20
        )
        wait_for(lambda: (tmp_path / "state" / "daemon.lock").exists(), 20)
        (tmp_path / "landing" / "hello.txt").write_text("hello\n")
        wait_for(lambda: list((tmp_path / "manifests").rglob("manifest.jsonl")), 20, "a manifest")
        assert list((tmp_path / "warehouse").rglob("hello.txt"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()


@pytest.mark.parametrize(
    "args",
    [
        ["--mode", "fast"],
        ["--stability-seconds", "soon"],
        ["--stability-seconds", "-1"],
        ["--concurrency", "0"],
        ["--on-duplicate", "explode"],
        ["--watcher", "magic"],
        ["--layout", "{nope}/{name}"],
        ["--no-such-flag"],
    ],
)
def test_bad_flag_is_one_line_and_exit_2(env: Env, args: list[str]) -> None:
    res = run_ingestor("run", *env.args(), *args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ingestor: error:"), res.stderr


def test_warehouse_inside_landing_is_refused(env: Env) -> None:
    res = run_ingestor("run", "--input", str(env.landing), "--warehouse", str(env.landing / "wh"))
    assert res.returncode == 2 and "inside the landing dir" in res.stderr


def test_second_daemon_on_same_ledger_is_refused(env: Env, daemon) -> None:
    daemon()
    res = run_ingestor("run", *env.args(), timeout=60)
    assert res.returncode == 1
    assert "another ingestor daemon" in res.stderr


def test_replay_one_shot_and_beside_running_daemon(env: Env, daemon) -> None:
    rep = traffic.rename_tmp(env.landing, count=30, size=500)
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "0")
    assert res.returncode == 0, res.stderr
    invariants.check(env, invariants.expected_of(rep))
    # beside a daemon: both may see the same files; each lands once
    daemon(stability="0.2")
    reps = [traffic.rename_tmp(env.landing, count=50, size=500, prefix="both")]
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "0")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: landed(env, 80), 30, "80 files")
    invariants.check(env, invariants.expected_of(rep, *reps))


def test_replay_of_given_paths_only(env: Env) -> None:
    a = traffic.rename_tmp(env.landing / "a", count=3, size=100)
    traffic.rename_tmp(env.landing / "b", count=2, size=100)
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "0", str(env.landing / "a"))
    assert res.returncode == 0, res.stderr
    assert {r.sha256 for r in env.ingested()} == set(a.contents)
    res = run_ingestor("replay", *env.args(), str(env.root))
    assert res.returncode == 2 and "not inside the landing dir" in res.stderr


def test_replay_leaves_files_still_being_written(env: Env) -> None:
    fresh = env.landing / "being-written.csv"
    fresh.write_bytes(b"partial")
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "3600")
    assert res.returncode == 0, res.stderr
    assert fresh.exists() and env.records() == []


def test_dry_run_moves_nothing(env: Env, daemon) -> None:
    d = daemon("--dry-run")
    traffic.rename_tmp(env.landing, count=3, size=100)
    wait_for(lambda: len(d.event("file_would_land")) >= 3, 20)
    assert env.records() == [] and len(env.landing_files()) == 3 and env.warehouse_files() == []


def test_hostile_names_are_one_valid_line_each(env: Env, daemon) -> None:
    daemon()
    names = [
        b"new\nline.csv",
        b'quote"and\\back.csv',
        b"latin1-\xe9\xff.csv",
        b"x" * 251 + b".csv",
        "ünï.csv".encode(),
    ]
    for n in names:
        fd = os.open(os.path.join(os.fsencode(env.landing), n), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, n + b" content")
        os.close(fd)
    wait_for(lambda: landed(env, len(names)), 20)
    recs = env.ingested()
    assert sorted(os.fsencode(os.path.basename(r.source)) for r in recs) == sorted(names)
    for r in recs:
        assert r.warehouse is not None and os.path.exists(r.warehouse)
        assert hashlib.sha256(Path(r.warehouse).read_bytes()).hexdigest() == r.sha256
    invalid = [r for r in recs if r.source_path_b64 is not None]
    assert len(invalid) == 1 and "\ufffd" in invalid[0].source_path


def test_symlink_fifo_and_unreadable_stay_and_are_reported(env: Env, daemon, tmp_path: Path) -> None:
    secret = tmp_path / "outside-secret.txt"
    secret.write_text("must never reach the warehouse")
    d = daemon()
    os.symlink(secret, env.landing / "link.csv")
    os.mkfifo(env.landing / "pipe.csv")
    (env.landing / "ok.csv").write_text("fine")
    wait_for(lambda: landed(env, 1), 20)
    wait_for(lambda: len(d.event("file_rejected")) >= 2, 20, "two rejections")
    causes = {os.path.basename(e["path"]): e["cause"] for e in d.event("file_rejected")}
    assert "symlink" in causes["link.csv"] and "FIFO" in causes["pipe.csv"]
    assert (env.landing / "link.csv").is_symlink() and (env.landing / "pipe.csv").exists()
    for p in env.warehouse.rglob("*"):
        assert not p.is_file() or p.read_bytes() != secret.read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_backs_off_and_resumes(env: Env, daemon) -> None:
    env.warehouse.mkdir()
    mounted = os.system(f"mount -t tmpfs -o size=256k tmpfs {env.warehouse}") == 0
    if not mounted:
        pytest.skip("cannot mount tmpfs here")
    try:
        d = daemon(stability="0.1")
        rep = traffic.rename_tmp(env.landing, count=6, size=100_000)
        wait_for(lambda: d.event("step_failed"), 30, "a disk-full failure")
        assert "disk full" in d.event("step_failed")[0]["hint"]
        assert len(env.landing_files()) >= 3  # what did not fit waits in the landing dir
        os.system(f"mount -o remount,size=4m {env.warehouse}")
        wait_for(lambda: landed(env, 6), 60, "all 6 after space came back")
        invariants.check(env, invariants.expected_of(rep))
        d.stop()
    finally:
        os.system(f"umount -l {env.warehouse}")


def test_ledger_records_end_final(env: Env, daemon) -> None:
    d = daemon()
    traffic.rename_tmp(env.landing, count=10, size=100)
    traffic.duplicates(env.landing, count=2, size=100)
    wait_for(lambda: len(env.records()) == 12, 20)
    d.stop()
    conn = sqlite3.connect(env.state)
    try:
        states = dict(conn.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall())
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert states == {"manifested": 12}


@pytest.mark.parametrize("watcher", ["inotify", "watchdog", "poll"])
def test_every_watcher_lands_everything(env: Env, daemon, watcher: str) -> None:
    scan = ["--scan-interval", "0.5"] if watcher == "poll" else []
    d = daemon("--watcher", watcher, *scan)
    assert (
        d.event("started")[0]["watcher"]
        == {"inotify": "InotifyWatcher", "watchdog": "WatchdogWatcher", "poll": "poll"}[watcher]
    )
    reps = [traffic.rename_tmp(env.landing, count=10, size=200)]
    (env.landing / "sub" / "deeper").mkdir(parents=True)
    reps.append(traffic.rename_tmp(env.landing / "sub" / "deeper", count=10, size=200))
    wait_for(lambda: landed(env, 20), 30, f"20 files via {watcher}")
    invariants.check(env, invariants.expected_of(*reps))


def test_replay_progress_json_lines_when_not_a_terminal(env: Env) -> None:
    rep = traffic.rename_tmp(env.landing, count=40, size=1000)
    res = run_ingestor("replay", *env.args(), "--stability-seconds", "0")
    assert res.returncode == 0, res.stderr
    import orjson

    lines = [orjson.loads(x) for x in res.stderr.splitlines()]
    last = [e for e in lines if e["event"] == "replay_progress"][-1]
    assert last["files_done"] == last["files_total"] == 40
    assert last["bytes_done"] == last["bytes_total"] == 40_000
    invariants.check(env, invariants.expected_of(rep))


@pytest.mark.skipif(shutil.which("script") is None, reason="script(1) gives the replay a terminal")
def test_replay_progress_bar_on_a_terminal(env: Env) -> None:
    import shlex
    import subprocess
    import sys

    traffic.rename_tmp(env.landing, count=25, size=4000)
    cmd = shlex.join(
        [sys.executable, "-m", "ingestor.cli", "replay", *env.args(), "--stability-seconds", "0"]
    )
    res = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout
    assert "25/25 files" in res.stdout and "100.0 kB" in res.stdout  # files, bytes
    assert '"event":"file_ingested"' in res.stdout  # log lines still shown, above the bar


def test_same_name_resent_right_after_landing_is_seen_at_once(env: Env, daemon) -> None:
    """The event for a new file under a name still held by a worker must not be lost
    (found: it waited for the next full scan)."""
    daemon(stability="0.1")  # scans only every 30 s: events must do it
    for i in range(8):
        (env.landing / "same.csv").write_bytes(f"version {i}\n".encode())
        wait_for(lambda i=i: landed(env, i + 1), 5, f"version {i}")
    assert len({r.sha256 for r in env.ingested()}) == 8


def test_sidecar_pairs_at_a_high_rate_none_lost(env: Env, daemon) -> None:
    """Found: a path re-armed by its .ok while it was being stat'ed was dropped by the
    stale verdict ('no sidecar yet'), and waited for the next full scan."""
    daemon("--mode", "sidecar", "--scan-interval", "600")
    reps = [traffic.sidecar(env.landing, count=100, size=500, prefix=f"p{k}") for k in range(3)]
    wait_for(lambda: landed(env, 300), 30, "300 sidecar pairs without a scan")
    invariants.check(env, invariants.expected_of(*reps))


def test_lander_processes_land_exactly_once(env: Env, daemon) -> None:
    d = daemon("--processes", "2")
    reps = [
        traffic.burst(env.landing, count=600, size=1000, subdirs=3),
        traffic.duplicates(env.landing, count=3),
    ]
    wait_for(lambda: len(env.records()) == 603, 60, "603 lines")
    invariants.check(env, invariants.expected_of(*reps))
    owners = {e["owner"] for e in d.event("file_ingested")}
    assert len(owners) >= 2  # landed by the lander processes, not the daemon's own threads


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _spawned(pid: int) -> list[int]:
    """Children that are multiprocessing workers (not its resource tracker)."""
    out = []
    for c in _children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                out.append(c)
        except FileNotFoundError:
            continue  # exited meanwhile
    return out


def test_kill_9_with_lander_processes_children_die_and_nothing_is_lost(env: Env, daemon) -> None:
    d = daemon("--processes", "2", stability="0.1")
    rep = traffic.burst(env.landing, count=1500, size=2048, subdirs=2)
    wait_for(lambda: len(env.records()) >= 100, 60, "some progress")
    assert d.proc is not None
    children = wait_for(lambda: _children(d.proc.pid), 10, "lander processes")
    d.kill()
    # PR_SET_PDEATHSIG: no lander keeps landing behind a dead daemon's back
    wait_for(lambda: not any(Path(f"/proc/{c}").exists() for c in children), 10, "children to die")
    daemon("--processes", "2", stability="0.1")
    wait_for(lambda: landed(env, 1500), 90, "all 1500")
    invariants.check(env, invariants.expected_of(rep))


def test_a_lander_process_that_dies_is_replaced_and_its_files_recovered(env: Env, daemon) -> None:
    d = daemon("--processes", "2", stability="0.1", environ={"INGESTOR_LANDER_FAULTS": "after_place=kill@5"})
    rep = traffic.burst(env.landing, count=400, size=1000)
    wait_for(lambda: d.event("lander_process_died"), 60, "a lander to die at the fault")
    wait_for(lambda: landed(env, 400), 90, "all 400 after the lander died")
    invariants.check(env, invariants.expected_of(rep))
    assert d.alive()


def test_first_scan_of_a_large_landing_dir_uses_helper_processes_and_leaves_none(env: Env, daemon) -> None:
    rep = traffic.burst(env.landing, count=6000, size=100, subdirs=4)  # there before the daemon starts
    d = daemon(stability="0.1")
    wait_for(lambda: d.event("scan_done"), 60, "the first scan")
    assert d.event("scan_done")[0]["files"] == 6000
    # above rescan.HELPERS_ABOVE_FIRST: one helper per core up to 4 (none on one core)
    assert d.event("scan_done")[0]["helpers"] == default_workers()
    assert d.proc is not None
    pid = d.proc.pid
    # started for the scan, stopped after it (the daemon has no lander processes;
    # multiprocessing's resource tracker stays for the daemon's life)
    wait_for(lambda: not _spawned(pid), 20, "the scan helpers to exit")
    wait_for(lambda: landed(env, 6000), 90, "all 6000")
    invariants.check(env, invariants.expected_of(rep))
    assert d.stop() == 0
    assert meta(env)["last_full_scan_files"] == "6000"
    # the next start begins with helpers (the last full scan was large); its scan
    # finds an empty landing dir, so they go unused and are stopped after it
    d2 = daemon(stability="0.1")
    assert d2.event("scan_helpers_prestarted")[0]["last_full_scan_files"] == 6000
    wait_for(lambda: d2.event("scan_done"), 60, "the first scan")
    assert (d2.event("scan_done")[0]["files"], d2.event("scan_done")[0]["helpers"]) == (0, 0)
    assert d2.proc is not None
    pid2 = d2.proc.pid
    wait_for(lambda: not _spawned(pid2), 20, "the unused helpers to exit")
    wait_for(lambda: meta(env).get("last_full_scan_files") == "0", 10, "the new size to be recorded")


def meta(env: Env) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{env.state}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()
