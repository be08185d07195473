"""Hostile input, end to end: nothing outside the landing dir reaches the warehouse,
nothing crashes the daemon, every odd file is landed correctly or reported and left.

Names with newlines, quotes, invalid UTF-8 and 255 bytes, a plain symlink and a
FIFO are in test_daemon.py; a symlink in a middle path component and a
directory swapped for a symlink after hashing are in test_fsops.py,
test_digest.py and test_move.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulate import traffic
from tests import invariants
from tests.conftest import Env, ingestor_cmd, sha256_file
from tests.waiting import wait_for


def landed(env: Env, n: int) -> bool:
    return len(env.records()) >= n


def assert_not_in_warehouse(env: Env, data: bytes) -> None:
    for p in env.warehouse.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert p.read_bytes() != data, f"{p} holds content from outside the landing dir"


def test_symlink_loop_and_dangling_symlink(env: Env, daemon) -> None:
    d = daemon()
    os.symlink("loop-b", env.landing / "loop-a")
    os.symlink("loop-a", env.landing / "loop-b")
    os.symlink("/nonexistent/file", env.landing / "dangling.csv")
    os.symlink("/etc", env.landing / "etc-dir")  # a symlinked directory: never entered
    (env.landing / "fine.csv").write_bytes(b"fine")
    wait_for(lambda: landed(env, 1), 20)
    wait_for(lambda: len(d.event("file_rejected")) >= 3, 20, "three rejections")
    assert [r.source for r in env.records()] == [str(env.landing / "fine.csv")]
    assert not any("passwd" in str(p) for p in env.warehouse.rglob("*"))


def test_symlinked_subdirectory_is_never_entered(env: Env, daemon, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_bytes(b"outside secret")
    d = daemon()
    os.symlink(outside, env.landing / "sub")
    (env.landing / "ok.csv").write_bytes(b"ok")
    wait_for(lambda: landed(env, 1), 20)
    d.stop()
    assert (outside / "secret.csv").read_bytes() == b"outside secret"
    assert_not_in_warehouse(env, b"outside secret")


def test_hard_link_to_a_file_outside_is_copied_not_moved(env: Env, daemon, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_bytes(b"shared inode")
    daemon()
    os.link(outside, env.landing / "linked.csv")
    wait_for(lambda: landed(env, 1), 20)
    (rec,) = env.records()
    assert rec.warehouse is not None
    assert os.stat(rec.warehouse).st_ino != os.stat(outside).st_ino  # the inode never entered
    assert outside.read_bytes() == b"shared inode" and os.stat(outside).st_nlink == 1
    assert not (env.landing / "linked.csv").exists()
    # writing through the outside name later cannot change the landed file
    outside.write_bytes(b"changed later")
    assert Path(rec.warehouse).read_bytes() == b"shared inode"


def test_socket_is_rejected(env: Env, daemon) -> None:
    d = daemon()
    path = env.landing / "s.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        (env.landing / "ok.csv").write_bytes(b"ok")
        wait_for(lambda: landed(env, 1), 20)
        wait_for(lambda: d.event("file_rejected"), 20)
        assert "socket" in d.event("file_rejected")[0]["cause"]
    finally:
        sock.close()
    assert path.exists()


def test_name_colliding_with_an_existing_warehouse_file(env: Env, daemon) -> None:
    daemon()
    (env.landing / "report.csv").write_bytes(b"monday")
    wait_for(lambda: landed(env, 1), 20)
    first = env.records()[0].warehouse
    assert first is not None
    # same name, other content, same day
    (env.landing / "report.csv").write_bytes(b"tuesday")
    wait_for(lambda: landed(env, 2), 20)
    # a file an operator put where the next one would go
    (Path(first).parent / "manual.csv").write_bytes(b"placed by hand")
    (env.landing / "manual.csv").write_bytes(b"from upstream")
    wait_for(lambda: landed(env, 3), 20)
    recs = env.records()
    assert Path(first).read_bytes() == b"monday"
    assert (Path(first).parent / "manual.csv").read_bytes() == b"placed by hand"
    paths = [r.warehouse for r in recs]
    assert len(set(paths)) == 3
    for r in recs:
        assert r.warehouse is not None and sha256_file(Path(r.warehouse)) == r.sha256
    assert all("~" in os.path.basename(p or "") for p in paths[1:])


def test_zero_byte_files(env: Env, daemon) -> None:
    daemon()
    for i in range(3):
        (env.landing / f"empty{i}.csv").write_bytes(b"")
    wait_for(lambda: landed(env, 3), 20)
    statuses = sorted(r.status for r in env.records())
    assert statuses == ["duplicate", "duplicate", "ingested"]
    assert all(r.size == 0 for r in env.records())


@pytest.fixture
def shm_warehouse(env: Env) -> Iterator[Env]:
    shm = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="hostile-"))
    env.warehouse = shm / "warehouse"
    yield env
    shutil.rmtree(shm, ignore_errors=True)


def test_inode_reused_right_after_a_file_moved_away(shm_warehouse: Env, daemon) -> None:
    """Landing on ext4, warehouse on tmpfs: each landed source is unlinked, ext4 hands
    its inode to the next file at once, often with the same size and mtime tick."""
    env = shm_warehouse
    daemon(stability="0.05")
    inodes = []
    expected = {}
    for i in range(30):
        p = env.landing / f"r{i:03d}.dat"
        data = f"reuse {i:03d}\n".encode()  # same size every time
        p.write_bytes(data)
        inodes.append(os.stat(p).st_ino)
        expected[invariants.sha256_file(p)] = len(data)
        wait_for(lambda i=i: landed(env, i + 1), 20, f"file {i}")
    assert len(set(inodes)) < len(inodes), "no inode was reused: the test did not test anything"
    invariants.check(env, expected)


@pytest.fixture
def request_cleanup() -> Iterator[list[Path]]:
    paths: list[Path] = []
    yield paths
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def test_unreadable_file_is_reported_and_left(request_cleanup: list[Path]) -> None:
    """Run as an unprivileged user, so that permissions apply."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    nobody = pwd.getpwnam("nobody")
    # pytest's tmp dirs are private to root: use a directory nobody can reach
    shared = Path(tempfile.mkdtemp(prefix="ingestor-nobody-"))
    request_cleanup.append(shared)
    shared.chmod(0o755)
    env = Env.under(shared)
    for p in (env.landing, shared):
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    (env.landing / "secret.csv").write_bytes(b"no read permission")
    (env.landing / "secret.csv").chmod(0o000)
    os.chown(env.landing / "secret.csv", 0, 0)
    (env.landing / "open.csv").write_bytes(b"readable")
    os.chown(env.landing / "open.csv", nobody.pw_uid, nobody.pw_gid)
    cmd = [
        setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
        *ingestor_cmd("replay", *env.args(), "--stability-seconds", "0"),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=shared,
                         env={**os.environ, "HOME": str(shared)})  # fmt: skip
    assert res.returncode == 1, res.stderr  # one file could not be landed
    assert "file_rejected" in res.stderr and "secret.csv" in res.stderr and "ermission" in res.stderr
    assert [os.path.basename(r.source) for r in env.records()] == ["open.csv"]
    assert (env.landing / "secret.csv").exists()


def test_many_hostile_things_at_once_do_not_stop_the_daemon(env: Env, daemon, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    d = daemon()
    os.mkfifo(env.landing / "fifo")
    os.symlink(outside, env.landing / "link")
    os.symlink("self", env.landing / "self")
    (env.landing / "weird\nname\\\"'.csv").write_bytes(b"weird")
    (env.landing / ("x" * 250 + ".csv")).write_bytes(b"long")
    rep = traffic.rename_tmp(env.landing / "normal", count=5, size=100)
    wait_for(lambda: landed(env, 7), 20)
    assert d.alive()
    assert_not_in_warehouse(env, b"outside")
    invariants.check(
        env,
        {**invariants.expected_of(rep), sha256_bytes(b"weird"): 5, sha256_bytes(b"long"): 4},
        landing_may_hold=("fifo", "link", "self"),
    )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- paths longer than PATH_MAX


def make_deep_file(root: Path, name: str, data: bytes, *, over: int = 4096) -> str:
    """A file whose absolute path is longer than ``over`` bytes, made through directory
    descriptors (a path that long cannot be used whole); returns its path below ``root``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    parts: list[str] = []
    try:
        while len(os.fsencode(root)) + sum(len(p) + 1 for p in parts) + len(name) + 1 <= over:
            part = f"{len(parts):02d}" + "d" * 200
            os.mkdir(part, dir_fd=fd)
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            parts.append(part)
        wfd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(wfd, data)
        os.utime(wfd, (1_700_000_000, 1_700_000_000))
        os.close(wfd)
    finally:
        os.close(fd)
    return "/".join([*parts, name])


def deep_exists(root: Path, rel: str) -> bool:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        *dirs, name = rel.split("/")
        for part in dirs:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return os.path.exists(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)


def rejections_of(stderr: str, deep: Path) -> list[str]:
    """The file_rejected lines naming ``deep`` or a directory above it (a directory too long
    to enter is reported for everything below it)."""
    out = []
    for ln in stderr.splitlines():
        if '"file_rejected"' in ln:
            path = json.loads(ln)["path"]
            if str(deep) == path or str(deep).startswith(path + "/"):
                out.append(ln)
    return out


def test_replay_rejects_a_path_longer_than_path_max_once_and_exits_1(env: Env) -> None:
    """Before: never landed, never reported (`replay` exited 0 with landed: 0 failed: 0)."""
    rel = make_deep_file(env.landing, "deep.csv", b"deep")
    (env.landing / "fine.csv").write_bytes(b"fine")
    res = subprocess.run(
        ingestor_cmd("replay", *env.args(), "--stability-seconds", "0"),
        capture_output=True, text=True, timeout=120, cwd=env.root,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    (line,) = rejections_of(res.stderr, env.landing / rel) or [""]
    assert "4096" in line, res.stderr
    assert [os.path.basename(r.source) for r in env.records()] == ["fine.csv"]
    assert deep_exists(env.landing, rel)


def test_the_daemon_reports_a_too_long_path_once_not_every_scan(env: Env, daemon) -> None:
    """Before: `watch_failed "File name too long"` on every scan, 611 lines a minute."""
    rel = make_deep_file(env.landing, "deep.csv", b"deep")
    d = daemon("--scan-interval", "0.1")
    wait_for(lambda: len(d.event("scan_done")) >= 6, 30, "six scans")
    (env.landing / "fine.csv").write_bytes(b"fine")
    wait_for(lambda: len(env.records()) == 1, 20)
    log = d.log_text()
    assert len(rejections_of(log, env.landing / rel)) == 1, log[-3000:]
    assert "watch_failed" not in log


def test_a_warehouse_path_that_would_be_too_long_is_rejected_not_retried(env: Env, tmp_path: Path) -> None:
    """The landing path fits, the warehouse path (a deeper warehouse, the layout's date) would not."""
    rel = make_deep_file(env.landing, "near.csv", b"near", over=4096 - 40)
    env.warehouse = tmp_path / ("w" * 100) / "warehouse"
    res = subprocess.run(
        ingestor_cmd("replay", *env.args(), "--stability-seconds", "0"),
        capture_output=True, text=True, timeout=120, cwd=env.root,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert len(rejections_of(res.stderr, env.landing / rel)) == 1, res.stderr
    assert "step_failed" not in res.stderr
    assert deep_exists(env.landing, rel)
