"""``ingestor simulate ...``: each sub-command as a real process, its output parsed, its files checked."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from simulate import cli as simulate_cli
from simulate import traffic
from tests.conftest import ingestor_cmd, run_ingestor, sha256_file
from tests.data_fs import shm_dir
from tests.waiting import wait_for

LINE = re.compile(
    r"^(?P<what>[a-z-]+): (?P<files>\d+) files, [\d.]+ (?:B|KiB|MiB|GiB) \((?P<bytes>\d+) bytes\) "
    r"(?:.* )?in (?P<seconds>\d+\.\d{3}) s (?P<rest>.*)$"
)


def simulate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_ingestor("simulate", *args, timeout=60, cwd=cwd)


def parse_line(res: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout
    m = LINE.match(lines[0])
    assert m, lines[0]
    return m.groupdict()


def parse_json(res: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def files_in(d: Path) -> list[Path]:
    """Files below ``d``, but the binding file the ingestor keeps at its top (``.ingestor-ledger``)."""
    return sorted(p for p in d.rglob("*") if p.is_file() and p != d / ".ingestor-ledger")


def test_rename_tmp(tmp_path: Path) -> None:
    into = tmp_path / "landing"
    out = parse_line(simulate("rename-tmp", "--into", str(into), "--count", "7", "--size", "4KiB"))
    assert out["what"] == "rename-tmp" and out["files"] == "7" and out["bytes"] == str(7 * 4096)
    assert out["rest"] == f"into {into}"
    files = files_in(into)
    assert len(files) == 7
    assert all(f.stat().st_size == 4096 and f.suffix == ".dat" for f in files)
    assert len({sha256_file(f) for f in files}) == 7  # every content unique


def test_rename_tmp_json_and_prefix(tmp_path: Path) -> None:
    into = tmp_path / "landing"
    out = parse_json(
        simulate(
            "rename-tmp", "--into", str(into), "--count", "2", "--size", "1K", "--prefix", "acme", "--json"
        )
    )
    assert out["what"] == "rename-tmp" and out["files"] == 2 and out["bytes"] == 2048
    assert out["into"] == str(into) and out["distinct_contents"] == 2
    assert isinstance(out["seconds"], float)
    assert all(f.name.startswith("acme-") for f in files_in(into))


def test_duplicates(tmp_path: Path) -> None:
    into = tmp_path / "landing"
    out = parse_json(simulate("duplicates", "--into", str(into), "--count", "4", "--size", "2KB", "--json"))
    assert out["files"] == 4 and out["bytes"] == 4 * 2000 and out["distinct_contents"] == 1
    files = files_in(into)
    assert len(files) == 4 and len({sha256_file(f) for f in files}) == 1
    assert not any(f.name.startswith(".") for f in files)


@pytest.mark.parametrize("ok_first", [False, True])
def test_sidecar(tmp_path: Path, ok_first: bool) -> None:
    into = tmp_path / "landing"
    args = ["sidecar", "--into", str(into), "--count", "3", "--size", "100"]
    out = parse_line(simulate(*args, *(["--ok-first"] if ok_first else [])))
    assert out["files"] == "3" and out["bytes"] == "300"
    assert ("sidecar first" if ok_first else "data first") in out["rest"]
    data = [f for f in files_in(into) if f.suffix == ".csv"]
    oks = [f for f in files_in(into) if f.suffix == ".ok"]
    assert len(data) == 3 and sorted(oks) == sorted(f.with_name(f.name + ".ok") for f in data)
    for f in data:
        ok = f.with_name(f.name + ".ok")
        assert ok.stat().st_size == 0
        if ok_first:
            assert ok.stat().st_mtime_ns <= f.stat().st_mtime_ns
        else:
            assert ok.stat().st_mtime_ns >= f.stat().st_mtime_ns


def test_burst_with_subdirs(tmp_path: Path) -> None:
    into = tmp_path / "landing"
    out = parse_line(
        simulate("burst", "--into", str(into), "--count", "300", "--size", "512", "--subdirs", "4")
    )
    assert out["files"] == "300" and out["bytes"] == str(300 * 512)
    files = files_in(into)
    assert len(files) == 300
    assert {f.parent.name for f in files} == {"d000", "d001", "d002", "d003"}
    assert not [f for f in files if f.name.startswith(".") or f.suffix == ".part"]


def test_burst_needs_a_count(tmp_path: Path) -> None:
    res = simulate("burst", "--into", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["ingestor: error: Missing option '--count'."]


def test_slow_copy_writes_slowly(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = traffic.content("slow", 50_000)
    src.write_bytes(data)
    into = tmp_path / "landing"
    proc = subprocess.Popen(
        ingestor_cmd(
            "simulate", "slow-copy", str(src), "--into", str(into), "--chunk", "10000", "--interval", "0.1",
            "--name", "upload.bin", "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    dst = into / "upload.bin"
    try:
        # a reader sees the file grow: partial first
        wait_for(lambda: dst.exists() and 0 < dst.stat().st_size < len(data), 20, "a partial file")
    finally:
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    out = json.loads(stdout)
    assert out["what"] == "slow-copy" and out["files"] == 1 and out["bytes"] == len(data)
    assert out["seconds"] >= 5 * 0.1 * 0.9  # five chunks, a pause after each
    assert dst.read_bytes() == data


def test_slow_copy_of_a_missing_file(tmp_path: Path) -> None:
    res = simulate("slow-copy", str(tmp_path / "nope"), "--into", str(tmp_path / "l"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "does not exist" in res.stderr


@pytest.mark.parametrize(
    ("text", "size"), [("4KiB", 4096), ("4K", 4096), ("4KB", 4000), ("1M", 1 << 20), ("3", 3)]
)
def test_sizes(tmp_path: Path, text: str, size: int) -> None:
    into = tmp_path / "landing"
    out = parse_json(simulate("rename-tmp", "--into", str(into), "--count", "1", "--size", text, "--json"))
    assert out["bytes"] == size
    (f,) = files_in(into)
    assert f.stat().st_size == size


@pytest.mark.parametrize("bad", ["4XB", "0", "-1", "1.5M", ""])
def test_bad_size_is_one_line_exit_2(tmp_path: Path, bad: str) -> None:
    res = simulate("rename-tmp", "--into", str(tmp_path / "l"), "--size", bad)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ingestor: error:") and "--size" in lines[0], res.stderr
    assert not (tmp_path / "l").exists()


# ----------------------------------------------------------------- cross-fs


def test_cross_fs_default_lands_from_tmpfs(tmp_path: Path) -> None:
    """Default: landing in a fresh /dev/shm dir (tmpfs), warehouse in the cwd; verify agrees."""
    with shm_dir(tmp_path):  # skips where /dev/shm is not another filesystem
        pass
    res = simulate("cross-fs", "--count", "6", "--size", "1536KiB", "--json", cwd=tmp_path)
    out = parse_json(res)
    assert out["what"] == "cross-fs" and out["ok"] is True and out["exit_code"] == 0
    assert out["files"] == out["landed"] == 6
    assert out["bytes"] == out["landed_bytes"] == 6 * 1536 * 1024
    assert out["left_in_landing"] == 0
    landing_fs, warehouse_fs = out["landing_fs"], out["warehouse_fs"]
    assert isinstance(landing_fs, dict) and isinstance(warehouse_fs, dict)
    assert landing_fs["fstype"] == "tmpfs" and landing_fs["mount_point"] == "/dev/shm"
    st = os.stat(tmp_path)
    assert warehouse_fs["device"] == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    assert warehouse_fs["device"] != landing_fs["device"]
    # the landing dir it made in /dev/shm is drained and removed
    landing = Path(str(out["landing"]))
    assert landing.parent == Path("/dev/shm") and not landing.exists()
    warehouse = Path(str(out["warehouse"]))
    assert warehouse.parent.parent == tmp_path
    landed = [p for p in files_in(warehouse) if ".ingestor-tmp" not in p.parts]
    assert len(landed) == 6 and all(p.stat().st_size == 1536 * 1024 for p in landed)
    assert all(p.name.startswith("cross-fs-") for p in landed)
    base = warehouse.parent
    res = run_ingestor(
        "verify", "--warehouse", str(warehouse), "--manifests", str(base / "manifests"),
        "--state-path", str(base / "state" / "ledger.sqlite"),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def test_cross_fs_chosen_dirs_human_line(tmp_path: Path) -> None:
    with shm_dir(tmp_path) as shm:
        landing, warehouse = shm / "landing", tmp_path / "out" / "warehouse"
        res = simulate(
            "cross-fs",
            "--landing",
            str(landing),
            "--warehouse",
            str(warehouse),
            "--count",
            "3",
            "--size",
            "10K",
        )
        out = parse_line(res)
        assert out["what"] == "cross-fs" and out["files"] == "3" and out["bytes"] == "30720"
        line = res.stdout
        assert " landed in " in line
        assert f"from tmpfs ({landing}, mount /dev/shm, " in line
        wf = traffic.filesystem_of(tmp_path)
        assert f"to {wf.fstype} ({warehouse}, mount {wf.mount_point}, dev {wf.device})" in line
        assert landing.is_dir() and files_in(landing) == []  # given by the user: kept, drained
        hashes = {sha256_file(p) for p in files_in(warehouse)}
        assert len(hashes) == 3
        manifest = [
            json.loads(line)
            for p in (tmp_path / "out" / "manifests").rglob("*.jsonl")
            for line in p.read_text().splitlines()
        ]
        assert {r["sha256"] for r in manifest} == hashes
        assert all(r["source_path"].startswith(str(landing) + "/") for r in manifest)


def test_cross_fs_refuses_one_filesystem(tmp_path: Path) -> None:
    res = simulate("cross-fs", "--landing", str(tmp_path / "l"), "--warehouse", str(tmp_path / "w"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "same filesystem" in lines[0], res.stderr
    assert not (tmp_path / "l").exists() and not (tmp_path / "w").exists()  # refused before making anything


def test_cross_fs_reports_what_did_not_land(tmp_path: Path) -> None:
    """The verdict comes from the manifest and the warehouse, not from the landing run's word."""
    with shm_dir(tmp_path) as shm:
        settings = _settings(shm / "landing", tmp_path / "warehouse")
        rep = traffic.cross_fs(settings, count=3, size=100, land=lambda s: 0)  # a landing that did nothing
        assert not rep.ok and rep.landed == 0 and rep.left_in_landing == 3
        assert rep.summary()["ok"] is False
        rep = traffic.cross_fs(settings, count=2, size=100, land=simulate_cli._land_once)
        assert rep.ok and rep.landed == 2 and rep.exit_code == 0
        assert rep.landing_fs.fstype == "tmpfs"
        assert hashlib.sha256(b"").hexdigest() not in rep.dropped.contents


def _settings(landing: Path, warehouse: Path):  # type: ignore[no-untyped-def]
    from ingestor.settings import load

    return load(
        {
            "input": landing,
            "warehouse": warehouse,
            "manifests": warehouse.parent / "manifests",
            "state_path": warehouse.parent / "state" / "ledger.sqlite",
            "stability_seconds": 0.0,
            "log_level": "warning",
        },
        environ={},
    )


def test_filesystem_of_reads_escaped_mount_points(tmp_path: Path) -> None:
    odd = tmp_path / "a b\\c"
    odd.mkdir()
    st = os.stat(odd)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    escaped = str(odd).replace("\\", "\\134").replace(" ", "\\040")
    info = tmp_path / "mountinfo"
    info.write_text(
        f"20 1 {dev} / / rw,relatime shared:1 - ext4 /dev/root rw\n"
        f"30 20 {dev} / {escaped} rw,relatime shared:2 - xfs /dev/odd\\040disk rw\n"
        f"31 20 9:9 / {tmp_path} rw - nfs server:/x rw\n"  # another device: not this path's mount
    )
    fs = traffic.filesystem_of(odd, mountinfo=str(info))
    assert fs == traffic.Filesystem(dev, "xfs", str(odd), "/dev/odd disk")
    assert traffic.filesystem_of(tmp_path, mountinfo=str(info)).fstype == "ext4"
