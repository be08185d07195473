"""Readiness, in process, on real files and a real event loop (no timers faked)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ingestor import logs
from ingestor.ready import Readiness
from ingestor.settings import Mode

OLD = 1_700_000_000  # an mtime far in the past: complete at once in stability mode


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """The async twin of tests.waiting.wait_for: poll with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        await asyncio.sleep(0.005)


def readiness(landing: Path, **kw: Any) -> Readiness:
    args: dict[str, Any] = {
        "landing": landing,
        "mode": Mode.STABILITY,
        "stability_seconds": 0.05,
        "sidecar_suffix": ".ok",
        "ignore_suffixes": (".tmp",),
        "log": logs.get_logger(),
    }
    args.update(kw)
    return Readiness(**args)


def run(body: Callable[[Readiness], Awaitable[None]], r_factory: Callable[[], Readiness]) -> None:
    async def main() -> None:
        r = r_factory()
        task = asyncio.create_task(r.run())
        try:
            await body(r)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def put(landing: Path, rel: str, data: bytes = b"x", old: bool = True) -> Path:
    p = landing / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if old:
        os.utime(p, (OLD, OLD))
    return p


def test_a_daemon_keeps_no_state_for_files_that_landed(tmp_path: Path) -> None:
    """Per-path memory is dropped once a worker lets go of a file (found: a set of every path
    ever judged complete, kept for replay's progress, also grew in the daemon)."""
    rels = [f"d/f{i:04d}.csv" for i in range(300)]
    for rel in rels:
        put(tmp_path, rel)

    async def body(r: Readiness) -> None:
        for rel in rels:
            r.observe(rel, os.lstat(tmp_path / rel))
        await until(lambda: len(r.ready) == len(rels))
        batch = r.take(1000, 1 << 40)
        assert sorted(c.rel for c in batch) == rels and all(c.size == 1 for c in batch)
        r.release(c.rel for c in batch)
        assert (r.pending, dict(r.ready), r.busy, r.hinted_busy, r.judged_ready) == (
            {},
            {},
            set(),
            set(),
            set(),
        )

    run(body, lambda: readiness(tmp_path))


def test_one_shot_counts_what_it_admits_for_progress(tmp_path: Path) -> None:
    put(tmp_path, "a.csv", b"12345")
    put(tmp_path, "b.csv", b"123")
    put(tmp_path, "fresh.csv", old=False)

    async def body(r: Readiness) -> None:
        for rel in ("a.csv", "b.csv", "fresh.csv"):
            r.observe(rel, os.lstat(tmp_path / rel))
        assert (r.admitted_files, r.admitted_bytes) == (2, 8)
        assert r.not_ready == ["fresh.csv"]  # still being written: left for the daemon

    run(body, lambda: readiness(tmp_path, one_shot=True, stability_seconds=60))


def test_a_file_written_until_recently_waits_for_its_window(tmp_path: Path) -> None:
    put(tmp_path, "slow.csv", old=False)

    async def body(r: Readiness) -> None:
        started = time.monotonic()
        r.hint("slow.csv")
        await until(lambda: "slow.csv" in r.ready, 5)
        assert time.monotonic() - started >= 0.3  # the window runs from the last write

    run(body, lambda: readiness(tmp_path, stability_seconds=0.3))


def test_an_event_for_a_busy_path_is_replayed_when_the_worker_lets_go(tmp_path: Path) -> None:
    put(tmp_path, "same.csv")

    async def body(r: Readiness) -> None:
        r.hint("same.csv")
        await until(lambda: "same.csv" in r.ready)
        (cand,) = r.take(10, 1 << 40)
        r.hint("same.csv")  # a new file under the name, while the worker holds the old one
        assert "same.csv" not in r.pending
        r.release([cand.rel])
        await until(lambda: "same.csv" in r.ready)

    run(body, lambda: readiness(tmp_path))


def test_sidecar_mode_ready_when_the_ok_appears_and_orphans_are_reported(tmp_path: Path) -> None:
    put(tmp_path, "data.csv", old=False)
    reported: list[str] = []

    async def body(r: Readiness) -> None:
        r.hint("data.csv")
        await until(lambda: "data.csv" not in r.pending)
        assert "data.csv" not in r.ready  # no sidecar yet: not complete
        (tmp_path / "data.csv.ok").write_bytes(b"")
        r.hint("data.csv.ok")
        await until(lambda: "data.csv" in r.ready)
        assert r.ready["data.csv"].sidecar == "data.csv.ok"
        (tmp_path / "ghost.csv.ok").write_bytes(b"")
        r.hint("ghost.csv.ok")
        await until(lambda: bool(reported), 10)
        assert reported == ["sidecar_orphan"] and "ghost.csv" not in r.ready

    run(
        body,
        lambda: readiness(tmp_path, mode=Mode.SIDECAR, stability_seconds=0.05, count_problem=reported.append),
    )


def test_ignored_names(tmp_path: Path) -> None:
    r = readiness(tmp_path)
    for rel in (".hidden", "a/.cache/x.csv", "x.tmp", "x.csv.ok"):
        assert r.target(rel) is None, rel
    assert r.target("a/b.csv") == "a/b.csv"
    assert readiness(tmp_path, mode=Mode.SIDECAR).target("a/b.csv.ok") == "a/b.csv"


def test_non_regular_files_are_rejected_once(tmp_path: Path) -> None:
    os.symlink("/etc/passwd", tmp_path / "link.csv")
    os.mkfifo(tmp_path / "pipe.csv")
    problems: list[str] = []

    async def body(r: Readiness) -> None:
        for _ in range(3):
            r.hint("link.csv")
            r.hint("pipe.csv")
            await until(lambda: not r.pending)
        assert problems == ["bad_input", "bad_input"] and not r.ready

    run(body, lambda: readiness(tmp_path, count_problem=problems.append))


def test_memory_of_rejected_paths_and_orphans_goes_with_them(tmp_path: Path) -> None:
    os.symlink("/etc/passwd", tmp_path / "link.csv")
    (tmp_path / "ghost.csv.ok").write_bytes(b"")

    async def body(r: Readiness) -> None:
        r.hint("link.csv")
        r.hint("ghost.csv.ok")
        await until(lambda: "link.csv" in r.settled and "ghost.csv.ok" in r.orphans, 10)
        os.unlink(tmp_path / "link.csv")
        os.unlink(tmp_path / "ghost.csv.ok")
        r.hint("link.csv")
        r.hint("ghost.csv.ok")
        await until(lambda: not r.settled and not r.orphans and not r.pending, 10)

    run(body, lambda: readiness(tmp_path, mode=Mode.SIDECAR))


def test_a_file_written_to_is_ready_only_after_its_close(tmp_path: Path) -> None:
    """IN_MODIFY without IN_CLOSE_WRITE: the writer still holds the file, however old its mtime."""
    put(tmp_path, "open.csv")  # an old mtime: stable by the clock alone

    async def body(r: Readiness) -> None:
        r.written("open.csv")
        r.observe("open.csv", os.lstat(tmp_path / "open.csv"))
        await until(lambda: r.pending["open.csv"].waits >= 2)  # judged, and judged again: waiting
        assert "open.csv" not in r.ready
        r.closed("open.csv")
        await until(lambda: "open.csv" in r.ready)
        assert r.writing == set()

    run(body, lambda: readiness(tmp_path))


def test_a_write_after_the_judgement_takes_the_file_back(tmp_path: Path) -> None:
    put(tmp_path, "f.csv")

    async def body(r: Readiness) -> None:
        r.observe("f.csv", os.lstat(tmp_path / "f.csv"))
        await until(lambda: "f.csv" in r.ready)
        r.written("f.csv")
        assert "f.csv" not in r.ready and "f.csv" in r.pending
        r.events_lost()  # an overflow: who closed what is unknown, the stability rule decides
        await until(lambda: "f.csv" in r.ready)

    run(body, lambda: readiness(tmp_path))


def test_a_written_file_that_disappears_is_forgotten(tmp_path: Path) -> None:
    p = put(tmp_path, "gone.csv")

    async def body(r: Readiness) -> None:
        r.written("gone.csv")
        p.unlink()
        r.hint("gone.csv")
        await until(lambda: "gone.csv" not in r.pending)
        assert r.writing == set() and r.missing(["gone.csv", "x"]) == ["gone.csv", "x"]

    run(body, lambda: readiness(tmp_path))
