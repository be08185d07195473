"""Deterministic crash sweep: kill the ingestor at each file-changing system call in turn.

Random kills rarely hit the narrow windows where bugs live; this does (the
method of shared/DESIGN.md, "Testing crash safety"):

1. record the file-changing system calls of a fixed one-shot workload
   (``ingestor replay`` over a small landing dir: unique files, a resend, a
   subdirectory, a sidecar pair) with ``strace -f``;
2. for each call in turn, run the same workload from scratch under
   ``strace -e inject=CALL:signal=KILL:when=N``, so the process dies on entering
   the Nth such call;
3. run ``ingestor replay`` again, normally, and check the invariant.

CI sweeps 28 points per layout: the first and last of every kind of call and
the rest spread evenly over a stride of the calls (every rename, unlink,
ftruncate and write, every other fsync, every 6th fdatasync and 16th
pwrite64); ``INGESTOR_SWEEP=full`` sweeps every call. Run on one filesystem and across two (landing on tmpfs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import invariants
from tests.conftest import Env, ingestor_cmd, sha256_file

CALLS = "rename,renameat,renameat2,link,linkat,unlink,unlinkat,write,pwrite64,fsync,fdatasync,ftruncate"
FULL = os.environ.get("INGESTOR_SWEEP") == "full"
STRIDE = {"pwrite64": 16, "fdatasync": 6, "fsync": 2}
CI_POINTS = 28  # per layout, spread evenly over the strided list: keeps CI within its budget
STRACE = shutil.which("strace")

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (.ci/run installs it)")


def make_workload(landing: Path) -> dict[str, int]:
    """The same files every time, with old mtimes (complete at once); returns sha256 → size."""
    files = {f"f{i}.csv": f"row {i}\n".encode() * (i * 300) for i in range(1, 6)}
    files["sub/deep/a.csv"] = b"same content twice\n"
    files["sub/b.csv"] = b"same content twice\n"
    files["g.csv"] = b"announced by a sidecar\n"
    files["g.csv.ok"] = b""
    files["empty.dat"] = b""
    for rel, data in files.items():
        p = landing / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (1_700_000_000, 1_700_000_000))
    return {sha256_file(landing / rel): len(data) for rel, data in files.items() if not rel.endswith(".ok")}


def replay(env: Env, *prefix: str, level: str = "warning") -> subprocess.CompletedProcess[str]:
    cmd = [
        *prefix,
        *ingestor_cmd("replay", *env.args(), "--stability-seconds", "0", "--log-level", level),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=env.root)


def fresh(env: Env, root: Path, landing_root: Path) -> Env:
    for p in (root, landing_root):
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir(parents=True)
    return Env.under(root, landing_root)


def crash_points(
    env: Env,
    ok: tuple[int, ...] = (0,),
    stride: dict[str, int] | None = None,
    cap: int = CI_POINTS,
    level: str = "warning",
) -> list[tuple[str, int]]:
    trace = env.root / "trace.txt"
    res = replay(env, STRACE or "strace", "-f", "-qq", "-o", str(trace), "-e", f"trace={CALLS}", level=level)
    assert res.returncode in ok, res.stderr
    counts: Counter[str] = Counter()
    for line in trace.read_text().splitlines():
        m = re.match(r"\d+\s+(\w+)\(", line)
        if m:
            counts[m.group(1)] += 1
    points = []
    for call, n in sorted(counts.items()):
        every = 1 if FULL else (stride or STRIDE).get(call, 1)
        points += [(call, k) for k in range(1, n + 1) if (k - 1) % every == 0 or k == n]
    if not FULL and len(points) > cap:
        # every kind of call keeps its first and last point; the rest are spread evenly
        keep = {(c, k) for c, k in points if k == 1 or k == counts[c]}
        rest = [p for p in points if p not in keep]
        step = len(rest) / max(1, cap - len(keep))
        keep.update(rest[int(i * step)] for i in range(max(0, cap - len(keep))))
        points = sorted(keep)
    return points


@pytest.fixture(params=["same-fs", "cross-fs"])
def roots(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    if request.param == "cross-fs":
        shm = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="sweep-"))
        yield tmp_path / "run", shm
        shutil.rmtree(shm, ignore_errors=True)
    else:
        yield tmp_path / "run", tmp_path / "run-landing"


def test_crash_at_every_file_changing_syscall(env: Env, roots: tuple[Path, Path]) -> None:
    root, landing_root = roots
    e = fresh(env, root, landing_root)
    expected = make_workload(e.landing)
    points = crash_points(e)
    assert len(points) > 20, points
    killed = 0
    failures = []
    for call, n in points:
        e = fresh(env, root, landing_root)
        make_workload(e.landing)
        crashed = replay(e, STRACE or "strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={call}",
                         "-e", f"inject={call}:signal=KILL:when={n}")  # fmt: skip
        killed += crashed.returncode != 0
        again = replay(e)
        try:
            assert again.returncode == 0, again.stderr[-2000:]
            invariants.check(e, expected, landing_may_hold=(".ok",))
        except AssertionError as exc:
            failures.append(f"crash at {call} #{n}: {exc}")
    assert not failures, f"{len(failures)}/{len(points)} crash points broke the invariant:\n" + "\n".join(
        failures[:5]
    )
    assert killed >= len(points) // 2, f"only {killed} of {len(points)} runs were killed"
    print(f"\nsweep: {len(points)} crash points, {killed} killed runs, 0 violations")


def make_rejected_workload(landing: Path) -> dict[str, int]:
    """Two files that never land (a FIFO, a symlink): nothing lands."""
    os.mkfifo(landing / "pipe.csv")
    (landing / "link.csv").symlink_to("/etc/hostname")
    return {}


def test_crash_at_every_file_changing_syscall_of_a_rejection(env: Env, tmp_path: Path) -> None:
    """Killed anywhere while files are put on record as rejected: each is on record once, with its
    line, after the next run.

    strace counts ``when=N`` per thread, and the first thread to reach its Nth call dies: the
    workload is rejected files only and the log level ``error``, so that the first ``write``
    of any thread is the rejected lines' append (no landed file's line, no log line before it).
    """
    root, landing_root = tmp_path / "run", tmp_path / "run-landing"
    e = fresh(env, root, landing_root)
    expected = make_rejected_workload(e.landing)
    # every write, fsync, truncate, rename and unlink (the lines, the manifest, the moves), every
    # 8th fdatasync and 64th pwrite64 (SQLite's)
    points = crash_points(e, ok=(1,), stride={"pwrite64": 64, "fdatasync": 8}, cap=10_000, level="error")
    assert ("write", 1) in points
    assert len(points) > 5, points
    failures = []
    for call, n in points:
        e = fresh(env, root, landing_root)
        make_rejected_workload(e.landing)
        replay(e, STRACE or "strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={call}",
               "-e", f"inject={call}:signal=KILL:when={n}", level="error")  # fmt: skip
        again = replay(e)
        try:
            assert again.returncode == 1, again.stderr[-2000:]  # the two rejected files stay
            invariants.check(e, expected, landing_may_hold=("pipe.csv", "link.csv"))
            rejected = sorted(Path(r.source).name for r in e.rejected())
            assert rejected == ["link.csv", "pipe.csv"], rejected
        except AssertionError as exc:
            failures.append(f"crash at {call} #{n}: {exc}")
    assert not failures, f"{len(failures)}/{len(points)} crash points broke the record:\n" + "\n".join(
        failures[:5]
    )
