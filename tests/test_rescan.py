"""rescan.scan: the walk in its own thread, the ledger asked in the caller's."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import pytest

from ingestor import rescan
from ingestor.fsops import OPEN_DIR
from ingestor.ledger import Ledger
from ingestor.scanhelpers import ScanHelpers
from tests.conftest import Env, ingestor_cmd
from tests.waiting import wait_for


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "landing"
    for d in range(5):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(700):
            (root / f"d{d}" / f"f{i}.csv").write_bytes(b"x")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "never.csv").write_bytes(b"x")
    (root / "link").symlink_to(root / "d0")  # never followed: seen as a link
    os.mkfifo(root / "fifo")
    fd = os.open(root, OPEN_DIR)
    yield root, fd
    os.close(fd)


def test_only_what_the_ledger_does_not_know_is_emitted(tree: tuple[Path, int]) -> None:
    root, fd = tree
    asked: list[int] = []
    emitted: list[rescan.Observation] = []
    threads: set[str] = set()

    def unknown(keys: list[rescan.Key]) -> list[int]:
        threads.add(threading.current_thread().name)
        asked.append(len(keys))
        known = os.stat(root / "d1" / "f5.csv").st_ino
        return [i for i, k in enumerate(keys) if k[1] != known]

    seen = rescan.scan(
        fd, "", emit=emitted.extend, unknown=unknown, ignored=lambda rel: rel.endswith("f9.csv")
    )
    rels = {rel for rel, _ in emitted}
    assert seen == 5 * 700 + 2  # the link and the FIFO are seen; the hidden dir is not entered
    assert sum(asked) == 5 * 700  # regular files only go to the ledger
    assert threads == {threading.current_thread().name}  # the caller's reader connection
    assert "d1/f5.csv" not in rels and "d2/f9.csv" not in rels
    assert {"link", "fifo", "d0/f0.csv"} <= rels
    assert len(rels) == 5 * 700 - 1 - 5 + 2


def test_a_ledger_error_ends_the_walk_and_is_raised(tree: tuple[Path, int]) -> None:
    _, fd = tree
    calls = 0

    def unknown(keys: list[rescan.Key]) -> list[int]:
        nonlocal calls
        calls += 1
        raise RuntimeError("ledger gone")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="ledger gone"):
        rescan.scan(fd, "", emit=lambda c: None, unknown=unknown, ignored=lambda rel: False)
    assert calls == 1
    assert threading.active_count() == before  # the walker thread has ended


def test_a_walk_error_is_raised_in_the_caller(
    tree: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, fd = tree

    def broken_walk(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        yield "", ["a"]
        raise OSError(5, "I/O error")

    monkeypatch.setattr(rescan, "walk", broken_walk)
    with pytest.raises(OSError, match="I/O error"):
        rescan.scan(fd, "", emit=lambda c: None, unknown=lambda k: [], ignored=lambda rel: False)


def test_stop_ends_the_scan(tree: tuple[Path, int]) -> None:
    _, fd = tree
    stop = threading.Event()
    stop.set()
    seen = rescan.scan(
        fd, "", emit=lambda c: None, unknown=lambda k: list(range(len(k))), ignored=lambda r: False, stop=stop
    )
    assert seen < 5 * 700


# ---------------------------------------------------------------- helper processes

# multiprocessing's resource tracker is one process for the life of this one,
# holding a pipe from its start on: started here, it is not a leak of a test
resource_tracker.ensure_running()


class BrokenHelpers:
    """Helpers whose processes died: every answer is a BrokenExecutor (``refused``: a
    RuntimeError, as from a helper that found another dir at the landing path)."""

    workers = 2

    def __init__(self, *, start_fails: bool = False, refused: bool = False) -> None:
        self.start_fails = start_fails
        self.refused = refused
        self.submitted = 0
        self.closed = False

    def ready(self) -> bool:
        if self.start_fails:
            raise concurrent.futures.BrokenExecutor("could not start")
        return True

    def submit(self, rel_dir: str, names: list[str]) -> concurrent.futures.Future[list[rescan.Observation]]:
        self.submitted += 1
        fut: concurrent.futures.Future[list[rescan.Observation]] = concurrent.futures.Future()
        if self.refused:
            fut.set_exception(RuntimeError("/x is no longer the daemon's landing dir"))
        else:
            fut.set_exception(concurrent.futures.process.BrokenProcessPool("a helper died"))
        return fut

    def close(self) -> None:
        self.closed = True


def kept_duplicates(env: Env, count: int) -> None:
    """``count`` files of one content, landed by a replay: one original, the rest kept in place."""
    for i in range(count):
        (env.landing / "seen" / f"dup{i:04d}.csv").parent.mkdir(exist_ok=True)
        (env.landing / "seen" / f"dup{i:04d}.csv").write_bytes(b"same\n")
    res = subprocess.run(
        ingestor_cmd("replay", *env.args(), "--stability-seconds", "0", "--on-duplicate", "keep"),
        capture_output=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr.decode()[-2000:]


def scan_all(env: Env, helpers: object | None) -> tuple[int, set[str]]:
    fd = os.open(env.landing, OPEN_DIR)
    ledger = Ledger(env.state, "TESTSCAN")
    try:
        emitted: list[rescan.Observation] = []
        seen = rescan.scan(
            fd,
            "",
            emit=emitted.extend,
            unknown=ledger.unknown_keys,
            ignored=lambda rel: False,
            helpers=(lambda: helpers) if helpers is not None else None,  # type: ignore[arg-type,return-value]
            helpers_above=0,  # helpers from the first chunk on
        )
        return seen, {rel for rel, _ in emitted}
    finally:
        ledger.close()
        os.close(fd)


def test_helper_processes_find_what_this_process_finds(env: Env) -> None:
    kept_duplicates(env, 1500)
    for d in range(3):
        (env.landing / f"new{d}").mkdir()
        for i in range(400):
            (env.landing / f"new{d}" / f"f{i}.csv").write_bytes(f"{d} {i}\n".encode())
    (env.landing / "new0" / "link").symlink_to("/etc/passwd")
    here = scan_all(env, None)
    fd = os.open(env.landing, OPEN_DIR)
    helpers = ScanHelpers(fd, env.landing, env.state, 2)
    try:
        wait_for(helpers.ready, 60, "the helpers to start")
        pids = set(helpers.pids())
        handed: list[str] = []
        submit = helpers.submit
        helpers.submit = lambda rel_dir, names: handed.append(rel_dir) or submit(rel_dir, names)  # type: ignore[method-assign,func-returns-value]
        there = scan_all(env, helpers)
    finally:
        helpers.close()  # the scan closed them already: a second close is harmless
        os.close(fd)
    assert there == here
    seen, rels = there
    assert seen == 1499 + 1200 + 1  # the replay moved the original away
    # the kept duplicates are known; the new files and the symlink are not
    assert {r for r in rels if r.startswith("seen/")} == set()
    assert len(rels) == 1200 + 1 and "new0/link" in rels
    assert pids and os.getpid() not in pids
    assert len(handed) >= 5  # every chunk went to the helpers (1499 + 3 x 400 names)
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), 30, "the helpers to exit")


def test_helpers_that_die_or_never_start_leave_the_scan_to_this_process(env: Env) -> None:
    for i in range(6000):  # 6 chunks: more than the 4 the helpers may hold at once
        (env.landing / f"f{i}.csv").write_bytes(b"x")
    made = Ledger(env.state, "MAKE")
    made.open({})  # an empty ledger: every file is unknown
    made.close()
    for broken in (BrokenHelpers(), BrokenHelpers(start_fails=True), BrokenHelpers(refused=True)):
        seen, rels = scan_all(env, broken)
        assert (seen, len(rels)) == (6000, 6000)
        assert broken.closed
        # after the first failure, nothing more is handed out
        assert broken.submitted == (0 if broken.start_fails else 2 * broken.workers)


def test_check_never_follows_a_symlink(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    outside = tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.csv").write_bytes(b"x")
    (root / "d" / "a.csv").write_bytes(b"x")
    (root / "d" / "to-secret").symlink_to(outside / "secret.csv")
    (root / "swapped").symlink_to(outside)  # a directory that became a symlink after the walk
    fd = os.open(root, OPEN_DIR)
    try:
        everything = lambda keys: list(range(len(keys)))  # noqa: E731
        assert rescan.check(fd, everything, "swapped", ["secret.csv"]) == []
        found = dict(rescan.check(fd, everything, "d", ["a.csv", "to-secret", "gone.csv"]))
        assert set(found) == {"d/a.csv", "d/to-secret"}
        assert stat.S_ISLNK(found["d/to-secret"].st_mode)
    finally:
        os.close(fd)
