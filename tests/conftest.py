"""Fixtures: real directories, real daemon processes, real signals.

``env``: a landing/warehouse/manifests/state layout in ``tmp_path``.
``daemon``: starts ``ingestor run`` as a subprocess on ``env`` and stops it
(SIGTERM) at the end of the test, failing the test if it did not exit 0.
Every in-process test is checked for leaked threads and file descriptors.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestor.manifest import ManifestRecord
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.pg"]  # pg_server, pg_url: a real PostgreSQL server


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass
class Env:
    root: Path
    landing: Path
    warehouse: Path
    manifests: Path
    state: Path

    @classmethod
    def under(cls, root: Path, landing_root: Path | None = None) -> Env:
        """The default layout below ``root`` (the landing dir may live elsewhere); landing created."""
        e = cls(
            root=root,
            landing=(landing_root or root) / "landing",
            warehouse=root / "warehouse",
            manifests=root / "manifests",
            state=root / "state" / "ledger.sqlite",
        )
        e.landing.mkdir(parents=True, exist_ok=True)
        return e

    def args(self) -> list[str]:
        return [
            "--input", str(self.landing),
            "--warehouse", str(self.warehouse),
            "--manifests", str(self.manifests),
            "--state-path", str(self.state),
        ]  # fmt: skip

    def records(self) -> list[ManifestRecord]:
        """Every complete manifest line of a file that landed (ingested or duplicate), in file
        then line order."""
        return [r for r in self.lines() if r.status != "rejected"]

    def rejected(self) -> list[ManifestRecord]:
        """The lines of files that will not land."""
        return [r for r in self.lines() if r.status == "rejected"]

    def lines(self) -> list[ManifestRecord]:
        """Every complete manifest line, in file then line order."""
        out = []
        if not self.manifests.exists():
            return out
        for path in sorted(self.manifests.rglob("manifest.jsonl")):
            data = path.read_bytes()
            for line in data.split(b"\n")[:-1]:  # a last line without newline is not written yet
                out.append(ManifestRecord.from_json(line))
        return out

    def ingested(self) -> list[ManifestRecord]:
        return [r for r in self.records() if r.status == "ingested"]

    def warehouse_files(self, *, duplicates: bool = False) -> list[Path]:
        out = []
        for path in self.warehouse.rglob("*"):
            rel = path.relative_to(self.warehouse).parts
            if rel[0] in (".ingestor-tmp", ".ingestor-ledger") or (
                rel[0] == "_duplicates" and not duplicates
            ):
                continue
            if path.is_file() and not path.is_symlink():
                out.append(path)
        return sorted(out)

    def landing_files(self) -> list[Path]:
        """Everything in the landing dir but directories and the ingestor's binding file."""
        return sorted(
            p
            for p in self.landing.rglob("*")
            if (not p.is_dir() or p.is_symlink()) and p != self.landing / ".ingestor-ledger"
        )


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env.under(tmp_path)


def ingestor_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ingestor.cli", *args]


@dataclass
class DaemonProc:
    env: Env
    extra: list[str]
    log_path: Path
    environ: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _offset: int = 0
    stopped: list[int] = field(default_factory=list)

    def start(self, wait: bool = True) -> DaemonProc:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            ingestor_cmd("run", *self.env.args(), *self.extra),
            stdout=self.log_file,
            stderr=self.log_file,
            cwd=self.env.root,
            # asyncio's debug mode: a call that blocks the loop, or a loop method called from
            # another thread, is logged (and fails the test, below)
            env={**os.environ, "PYTHONASYNCIODEBUG": "1", **self.environ},
        )
        if wait:
            wait_for(lambda: self.event("started") or self._died(), 30, "daemon start")
            assert self.proc.poll() is None, self.log_text()
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logs(self, since_start: bool = True) -> list[dict[str, Any]]:
        data = self.log_path.read_bytes()[self._offset if since_start else 0 :]
        out = []
        for line in data.splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                out.append({"event": "<not json>", "text": line.decode(errors="replace")})
        return out

    def event(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.log_file.close()
        self.stopped.append(rc)
        self.proc = None
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@pytest.fixture
def daemon(env: Env, tmp_path: Path) -> Iterator[Any]:
    """``daemon(*flags)`` starts a daemon; all are stopped with SIGTERM at the end."""
    started: list[DaemonProc] = []

    def start(
        *extra: str, wait: bool = True, stability: str = "0.3", environ: dict[str, str] | None = None
    ) -> DaemonProc:
        flags = ["--stability-seconds", stability, "--scan-interval", "30", "--log-level", "debug", *extra]
        d = DaemonProc(env, flags, tmp_path / "daemon.log", environ or {})
        started.append(d)
        return d.start(wait=wait)

    yield start
    for d in started:
        if d.proc is not None:
            rc = d.stop()
            assert rc == 0, f"daemon exited {rc}:\n{d.log_text()[-5000:]}"
    killed = any(-signal.SIGKILL in d.stopped for d in started)
    for d in started:
        entries = d.logs(since_start=False)
        if killed:
            entries = _without_orphaned_spawns(entries)
        bad = [e for e in entries if e.get("event") in ("internal_error", "<not json>") or _blocked_loop(e)]
        assert not bad, f"daemon logged {bad[:3]}"


SLOW_CALLBACK_SECONDS = 0.25  # a loop step this long is a blocking call (asyncio reports from 0.1 s)


def _blocked_loop(entry: dict[str, Any]) -> bool:
    """asyncio's debug mode said the loop was blocked, or misused from a thread."""
    if entry.get("logger") != "asyncio":
        return False
    took = re.search(r" took ([0-9.]+) seconds$", str(entry.get("message", "")))
    return took is None or float(took.group(1)) >= SLOW_CALLBACK_SECONDS


def _without_orphaned_spawns(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the one traceback a ``kill -9`` may leave behind with ``--processes``.

    A lander process whose parent is killed during multiprocessing's spawn handshake
    (after the exec, before the parent wrote the pickled start-up data) finds its pipe
    closed and the interpreter prints ``EOFError`` from ``spawn_main``: before any
    ingestor code runs, so nothing was claimed or touched. Only that exact shape is
    dropped; any other text that is not JSON still fails the test.
    """
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(entries):
        e = entries[i]
        if e.get("event") == "<not json>" and e["text"] == "Traceback (most recent call last):":
            j = i + 1
            while (
                j < len(entries)
                and entries[j].get("event") == "<not json>"
                and entries[j]["text"].startswith(" ")
            ):
                j += 1
            frames = " ".join(x["text"] for x in entries[i + 1 : j])
            last = entries[j]["text"] if j < len(entries) and entries[j].get("event") == "<not json>" else ""
            if (
                "multiprocessing/spawn.py" in frames
                and "spawn_main" in frames
                and "ingestor" not in frames
                and (last.startswith(("EOFError", "_pickle.UnpicklingError")))
            ):
                i = j + 1
                continue
        out.append(e)
        i += 1
    return out


def run_ingestor(
    *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ingestor_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail an in-process test that leaks threads or file descriptors."""
    threads = set(threading.enumerate())
    fds = set(os.listdir("/proc/self/fd"))
    yield
    wait_for(lambda: set(threading.enumerate()) <= threads, 5, "threads to end")
    leaked = set(os.listdir("/proc/self/fd")) - fds
    # the pipe to multiprocessing's resource tracker, started by the first process pool of the
    # test process, stays for the process's life: not a leak of the test that came first
    tracker = getattr(resource_tracker._resource_tracker, "_fd", None)
    leaked.discard(str(tracker))
    still = [fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not still, (
        f"leaked fds: {[os.readlink(f'/proc/self/fd/{fd}') for fd in still if os.path.exists(f'/proc/self/fd/{fd}')]}"
    )
