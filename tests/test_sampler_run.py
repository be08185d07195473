"""Real ``sampler`` processes: --once, --follow, SIGKILL resume, SIGTERM, sd_notify."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingestor.manifest import ManifestRecord
from ingestor.records import Status
from tests.sampler_helpers import (
    Layout,
    append_lines,
    current_rel,
    events,
    hostile_files,
    named,
    record,
)
from tests.waiting import wait_for


@pytest.fixture
def lay(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


def _sidecar_sha(lay: Layout, rel_base: str) -> str | None:
    try:
        return str(json.loads((lay.samples / f"{rel_base}.source.json").read_bytes())["sha256"])
    except FileNotFoundError:
        return None


def test_once_samples_what_is_there_and_resumes(lay: Layout) -> None:
    rel = current_rel()
    a = lay.land("ingest_date=2026-11-23/a.csv", b"h\n1\n2\n")
    dup = record(lay.warehouse / "ingest_date=2026-11-23/a.csv", status=Status.DUPLICATE)
    torn = record(lay.file("ingest_date=2026-11-23/b.jsonl", b"1\n2\n"))
    torn_line = torn.to_json()
    append_lines(lay.manifests, rel, dup.to_json(), b"not a record\n", torn_line[:20])

    first = lay.run_once()
    assert first.returncode == 0, first.stderr
    evs = events(first.stderr)
    assert [e["id"] for e in named(evs, "sample_written")] == [a.id]
    assert len(named(evs, "manifest_line_invalid")) == 1
    stopped = named(evs, "sampler_stopped")[0]
    assert stopped["records_read"] == 3 and stopped["skipped"] == 1 and stopped["errors"] == 1
    assert stopped["lag_bytes"] == 20  # the torn line
    assert (lay.samples / "ingest_date=2026-11-23/a_sample.csv").read_bytes() == b"h\n1\n2\n"
    assert not (lay.samples / "ingest_date=2026-11-23/b_sample.jsonl").exists()
    ck = json.loads((lay.samples / ".sampler-checkpoint.json").read_bytes())
    size_before_torn = (lay.manifests / rel).stat().st_size - 20
    assert ck["offsets"] == {rel: size_before_torn}

    second = lay.run_once()
    assert named(events(second.stderr), "sample_written") == []
    assert named(events(second.stderr), "sampler_stopped")[0]["records_read"] == 0

    append_lines(lay.manifests, rel, torn_line[20:])  # the writer completes the line
    third = lay.run_once()
    assert [e["id"] for e in named(events(third.stderr), "sample_written")] == [torn.id]


def test_hostile_files_never_stop_the_sampler(lay: Layout) -> None:
    rel = current_rel()
    bad = {name: lay.land(f"h/{name}", data, rel) for name, (data, _) in hostile_files().items()}
    huge = lay.warehouse / "h" / "one-line.jsonl"
    with open(huge, "wb") as f:
        f.truncate(1 << 30)  # sparse: a single 1 GiB line
    bad["one-line.jsonl"] = record(huge, sha256="1" * 64)
    bad["missing.csv"] = record(lay.warehouse / "h" / "missing.csv", sha256="2" * 64, size=5)
    append_lines(lay.manifests, rel, bad["one-line.jsonl"].to_json(), bad["missing.csv"].to_json())
    good = lay.land("h/good.csv", b"h\n1\n", rel)
    result = lay.run_once("--max-bytes", "16MiB")
    assert result.returncode == 0, result.stderr
    evs = events(result.stderr)
    errors = {e["id"]: e for e in named(evs, "sample_error")}
    assert set(errors) == {r.id for r in bad.values()}
    for name, rec in bad.items():
        err = errors[rec.id]
        assert err["level"] == "error" and err["error_kind"] and err["error"] and err["sha256"]
        meta = json.loads((lay.samples / err["sample"]).read_bytes())
        assert meta["error"]["kind"] == err["error_kind"], name
    expected = {name: str(kind) for name, (_, kind) in hostile_files().items()}
    expected |= {"one-line.jsonl": "too_large", "missing.csv": "missing"}
    assert {n: errors[r.id]["error_kind"] for n, r in bad.items()} == expected
    assert [e["id"] for e in named(evs, "sample_written")] == [good.id]


def test_unusable_warehouse_is_fatal_not_recorded(lay: Layout) -> None:
    rec = lay.land("w/a.csv", b"h\n1\n")
    os.rename(lay.warehouse, lay.root / "unmounted")
    result = lay.run_once()
    assert result.returncode == 1
    assert "unusable" in named(events(result.stderr), "sampler_failed")[0]["error"]
    os.rename(lay.root / "unmounted", lay.warehouse)
    again = lay.run_once()
    assert [e["id"] for e in named(events(again.stderr), "sample_written")] == [rec.id]


def test_rerun_without_checkpoint_does_no_sampling_work(lay: Layout) -> None:
    for i in range(5):
        lay.land(f"d/f{i}.csv", b"h\n%d\n" % i)
    assert len(named(events(lay.run_once().stderr), "sample_written")) == 5
    (lay.samples / ".sampler-checkpoint.json").unlink()
    again = events(lay.run_once("--log-level", "debug").stderr)
    assert named(again, "sample_written") == []
    assert len(named(again, "sample_current")) == 5


def _written_at_least(log: Path, count: int, proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    def check() -> bool:
        done = len(named(events(log.read_bytes()), "sample_written")) >= count
        return done or proc.poll() is not None

    return check


def test_resume_after_sigkill_misses_nothing_and_samples_nothing_twice(lay: Layout, tmp_path: Path) -> None:
    n = 200
    recs: list[ManifestRecord] = []
    rels = [current_rel(-1), current_rel()]
    for i in range(n):
        rec = record(lay.file(f"d{i % 7}/f{i}.csv", b"h,i\n%d,x\n%d,y\n" % (i, i)))
        append_lines(lay.manifests, rels[i * 2 // n], rec.to_json())
        recs.append(rec)
    written: collections.Counter[str] = collections.Counter()
    for kill_after in (10, 30, 50):  # the last run still has ~100 to do
        log = tmp_path / f"run-{kill_after}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(lay.cli("--once", "--rows", "1"), stderr=fh)
            try:
                wait_for(_written_at_least(log, kill_after, proc), 30, f"{kill_after} samples")
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
        written.update(e["id"] for e in named(events(log.read_bytes()), "sample_written"))
    final = lay.run_once("--rows", "1")
    assert final.returncode == 0, final.stderr
    written.update(e["id"] for e in named(events(final.stderr), "sample_written"))
    assert max(written.values()) == 1, [k for k, v in written.items() if v > 1]
    # a kill between a sample's commit and its log line hides at most one per kill
    assert len(written) >= n - 3
    for i, rec in enumerate(recs):
        assert _sidecar_sha(lay, f"d{i % 7}/f{i}_sample.csv") == rec.sha256, i
    leftovers = [p for p in lay.samples.rglob("*") if p.name.endswith(".sampler-tmp")]
    assert leftovers == []


def test_sigterm_finishes_the_record_in_hand_and_saves_the_checkpoint(lay: Layout, tmp_path: Path) -> None:
    rel = current_rel()
    recs = [lay.land(f"t/f{i}.csv", b"h\n%d\n" % i, rel) for i in range(150)]
    log = tmp_path / "term.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(lay.cli("--once"), stderr=fh)
        wait_for(lambda: len(named(events(log.read_bytes()), "sample_written")) >= 20, 30, "20")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    offset = json.loads((lay.samples / ".sampler-checkpoint.json").read_bytes())["offsets"][rel]
    assert 0 < offset < (lay.manifests / rel).stat().st_size
    ends = 0
    for i, rec in enumerate(recs):
        ends += len(rec.to_json())
        sampled = _sidecar_sha(lay, f"t/f{i}_sample.csv") == rec.sha256
        assert sampled == (ends <= offset), i  # exactly the records before the checkpoint
    written = {e["id"] for e in named(events(log.read_bytes()), "sample_written")}
    assert written == {r.id for r in recs[: len(written)]}


def test_follow_tails_new_lines_late_appends_and_stops_on_sigterm(lay: Layout, tmp_path: Path) -> None:
    prev, cur = current_rel(-1), current_rel()
    lay.land("x/first.csv", b"h\n1\n", prev)
    log = tmp_path / "follow.log"
    with open(log, "wb") as fh:
        # A long poll interval: only inotify can make these pass in time. A long
        # grace keeps the previous hour open whatever the wall clock says now
        # (the exact window is tested with a fake clock in test_sampler_tail).
        cmd = lay.cli("--follow", "--poll-interval", "600", "--retire-grace", "7200")
        proc = subprocess.Popen(cmd, stderr=fh)
        try:

            def written() -> list[str]:
                return [e["id"] for e in named(events(log.read_bytes()), "sample_written")]

            wait_for(lambda: len(written()) == 1, 20, "first sample")
            second = lay.land("x/second.csv", b"h\n2\n", cur)  # new hour directory
            wait_for(lambda: second.id in written(), 20, "sample in the new hour")
            late = lay.land("x/late.csv", b"h\n3\n", prev)  # late append to the previous hour
            wait_for(lambda: late.id in written(), 20, "late sample")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    evs = events(log.read_bytes())
    assert collections.Counter(written()).most_common(1)[0][1] == 1
    assert named(evs, "sampler_signalled")[0]["signal"] == "SIGTERM"
    ck = json.loads((lay.samples / ".sampler-checkpoint.json").read_bytes())
    assert ck["offsets"] == {
        prev: (lay.manifests / prev).stat().st_size,
        cur: (lay.manifests / cur).stat().st_size,
    }


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"@sampler-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(20)
    yield sock, name
    sock.close()


def test_sd_notify_ready_watchdog_stopping(
    lay: Layout, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, name = notify_socket
    env = {**os.environ, "NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000"}
    proc = subprocess.Popen(
        lay.cli("--follow"), env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        got = [sock.recv(256)]
        while b"WATCHDOG=1" not in got:
            got.append(sock.recv(256))
        assert got[0] == b"READY=1"
        proc.send_signal(signal.SIGINT)
        while got[-1] != b"STOPPING=1":
            got.append(sock.recv(256))
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_sampler_on_the_same_checkpoint_exits_1(lay: Layout, tmp_path: Path) -> None:
    lay.land("m/a.csv", b"h\n1\n")
    log = tmp_path / "first.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(lay.cli("--follow", "--metrics-interval", "0.05"), stderr=fh)
        try:
            metrics = wait_for(lambda: named(events(log.read_bytes()), "sampler_metrics"), 20, "m")
            assert {"records_read", "samples_written", "skipped", "errors", "lag_bytes"} <= set(metrics[-1])
            wait_for(
                lambda: named(events(log.read_bytes()), "sampler_metrics")[-1]["samples_written"] == 1,
                20,
                "metrics to count the sample",
            )
            second = lay.run_once()
            assert second.returncode == 1
            assert "another sampler" in named(events(second.stderr), "sampler_failed")[0]["error"]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0


def test_corrupt_checkpoint_is_fatal(lay: Layout) -> None:
    lay.samples.mkdir()
    (lay.samples / ".sampler-checkpoint.json").write_bytes(b"{garbage")
    result = lay.run_once()
    assert result.returncode == 1
    assert "move it away" in named(events(result.stderr), "sampler_failed")[0]["error"]
