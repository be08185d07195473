"""The benchmarks of issue 6, each run with ``--quick``: they must keep working.

Each script runs as a real subprocess in ``tmp_path`` (``--dir``), prints its
figures and one JSON line (``--json``); this checks the exit code, that the
figures are there and plausible (positive, every file accounted for), and that
nothing was left behind. No timing is asserted: these machines are shared and
noisy, and targets are judged by the full runs recorded in bench/RESULTS.md.
A comparison column whose tool (inotifywait, rclone) is not installed must say
"not installed" instead of failing.

The full runs take minutes and are not tests: run them by hand, as
bench/RESULTS.md shows.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def run_quick(script: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH / script), "--quick", "--json", "--dir", str(tmp_path), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    payload = json.loads(lines[-1])
    assert payload["machine"]["commit"], payload["machine"]
    assert "|" in result.stdout  # the figures table was printed
    assert list(tmp_path.iterdir()) == [], "the benchmark left files behind"
    return payload


def positive(*values: Any) -> bool:
    return all(isinstance(v, int | float) and v > 0 and not math.isnan(v) for v in values)


def test_limits(tmp_path: Path) -> None:
    data = run_quick("bench_limits.py", tmp_path, "--shm", str(tmp_path))["data"]
    assert positive(data["sha256_one_core_mb_s"], data["sha256_two_threads_mb_s"])
    disk = data["disk"]
    assert positive(
        disk["fsync_per_s"], disk["rename_per_s"], disk["rename_fsync_per_s"], disk["seq_write_mb_s"]
    )


def test_small_files(tmp_path: Path) -> None:
    data = run_quick("bench_small_files.py", tmp_path)["data"]
    assert {(r["how"], r["processes"]) for r in data["runs"]} == {
        ("prestaged", 1),
        ("prestaged", 2),
        ("live", 1),
        ("live", 2),
    }
    for r in data["runs"]:
        assert r["files"] == data["files"] == 1000
        assert positive(r["files_per_s"], r["peak_rss_mb"], r["daemon_cpu_s"])
    assert positive(data["floors"][0]["files_per_s"])


def test_large_file(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    extra = ["--shm", str(shm)] if shm.is_dir() else ["--shm", str(tmp_path / "none")]
    data = run_quick("bench_large_file.py", tmp_path, *extra)["data"]
    assert positive(data["hashlib_memory_mb_s"], data["read_hash_cold_mb_s"], data["read_hash_warm_mb_s"])
    for key in ("same_fs_cold", "same_fs_warm", "disk_to_shm_cold", "shm_to_disk", "disk_to_shm_warm"):
        if key.startswith("same") or shm.is_dir():
            assert positive(data[key]["mb_s"], data[key]["reference_mb_s"], data[key]["peak_rss_mb"]), key


def test_latency(tmp_path: Path) -> None:
    data = run_quick("bench_latency.py", tmp_path)["data"]
    assert [r["mode"] for r in data["runs"]] == ["stability", "sidecar"]
    for r in data["runs"]:
        assert r["files"] == 200
        assert positive(r["p50_ms"], r["p99_ms"], r["max_ms"], r["peak_rss_mb"])
        assert r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]


def test_memory(tmp_path: Path) -> None:
    data = run_quick("bench_memory.py", tmp_path)["data"]
    assert positive(data["burst"]["peak_rss_mb"], data["steady"]["peak_rss_mb"])
    big = data["ledger"][f"{data['records']:,} records"]
    assert positive(big["rss_after_start_mb"], big["peak_rss_mb"], big["ledger_mb"])
    for r in data["scan"]["runs"]:
        assert r["files_seen"] == data["records"]
        assert r["file_events"] == 0 and r["new_ledger_rows"] == 0
        assert positive(r["scan_s"])


def test_compare(tmp_path: Path) -> None:
    data = run_quick("bench_compare.py", tmp_path)["data"]
    results = data["results"]
    assert list(results) == ["ingestor", "ingestor-p2", "naive", "inotify", "inotify+sync", "rclone"]
    for name in ("ingestor", "ingestor-p2", "naive"):
        r = results[name]
        assert r["finished"] and r["landed"] == data["files"] and r["left_in_landing"] == 0, r
        assert positive(r["files_per_s"])
    for name, tool in (("inotify", "inotifywait"), ("rclone", "rclone")):
        if shutil.which(tool) is None:
            assert results[name] == {"tool": name, "installed": False}
        else:
            assert results[name]["installed"] and results[name]["landed"] > 0


def test_sources(tmp_path: Path) -> None:
    data = run_quick("bench_sources.py", tmp_path)["data"]
    idle = data["idle"]
    assert (idle["landing_dirs"], idle["subdirs"]) == (200, 2000)
    assert idle["inotify_watches"] >= 2200  # every landing dir and env subdirectory
    assert positive(idle["rss_mb"], idle["hwm_mb"], idle["fds"]) and idle["cpu_pct"] >= 0
    assert "served" in data["nofile"]
    scan = data["scan"]
    for r in [*scan["priming"], *scan["runs"]]:
        assert r["startup"]["scans"] == (200 if r["layout"] == "many" else 1)
        # the single landing dir also holds the many daemon's 200 bindings (hidden, never landed)
        assert scan["files"] <= r["startup"]["files"] <= scan["files"] + 200
        assert r["file_events"] == 0 and r["new_ledger_rows"] == 0
        assert positive(r["startup"]["span_s"], r["find_s"], r["peak_rss_mb"])
    assert [r["layout"] for r in scan["runs"]] == ["single", "many"]
    assert all(r["periodic"]["files"] == r["startup"]["files"] for r in scan["runs"])
    assert positive(*scan["ratio"].values())


def test_naive_reference_once(tmp_path: Path) -> None:
    """The reference lands a file with its manifest line and ledger row, then exits (--once)."""
    landing = tmp_path / "landing"
    (landing / "sub").mkdir(parents=True)
    (landing / "sub" / "a.csv").write_bytes(b"a,b\n1,2\n")
    (landing / ".hidden").write_bytes(b"x")
    cmd = [
        sys.executable, str(BENCH / "naive_reference.py"), "--input", str(landing), "--warehouse", str(tmp_path / "wh"),
        "--manifests", str(tmp_path / "mf"), "--db", str(tmp_path / "db.sqlite"), "--stability", "0", "--once",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    landed = list((tmp_path / "wh").rglob("a.csv"))
    assert len(landed) == 1 and landed[0].read_bytes() == b"a,b\n1,2\n"
    lines = [
        json.loads(x) for p in (tmp_path / "mf").rglob("manifest.jsonl") for x in p.read_text().splitlines()
    ]
    assert [x["status"] for x in lines] == ["ingested"]
    assert (landing / ".hidden").exists() and not (landing / "sub" / "a.csv").exists()


def test_lookup(tmp_path: Path) -> None:
    data = run_quick("bench_lookup.py", tmp_path)["data"]
    kinds = data["timed"]
    assert {"source path", "warehouse path", "sha256", "8-char prefix", "id", "not found"} <= set(kinds)
    for name, q in kinds.items():
        assert q["queries"] > 0 and positive(q["p50_ms"], q["max_ms"]), (name, q)
        assert (q["matches_per_query"] == 0) == (name == "not found"), (name, q)
    assert data["cli"]["not found"]["exit"] == 1
    assert all(c["exit"] == 0 for name, c in data["cli"].items() if name != "not found")
