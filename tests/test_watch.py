"""watch.py: the inotify watcher's events, fed as the kernel packs them, and a real overflow.

``InotifyWatcher.feed`` takes the bytes ``read(2)`` gives on an inotify
descriptor; the tests pack ``struct inotify_event`` records by hand (as
inotify_simple's own tests do), so every branch is reached without racing
the kernel. The overflow path also runs for real in test_faults.py.
"""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

import pytest
from inotify_simple import flags

from ingestor import logs
from ingestor.watch import DIR_MASK, InotifyWatcher


def event(wd: int, mask: int, name: str = "", cookie: int = 0) -> bytes:
    raw = os.fsencode(name)
    padded = raw + b"\0" * (16 - len(raw) % 16) if raw else b""
    return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def hint(self, rel: str) -> None:
        self.calls.append(("hint", rel))

    def written(self, rel: str) -> None:
        self.calls.append(("written", rel))

    def closed(self, rel: str) -> None:
        self.calls.append(("closed", rel))

    def new_dir(self, rel: str) -> None:
        self.calls.append(("new_dir", rel))

    def overflow(self) -> None:
        self.calls.append(("overflow", ""))

    def landing_replaced(self, cause: str) -> None:
        self.calls.append(("landing_replaced", cause))


@pytest.fixture
def watched(tmp_path: Path) -> tuple[InotifyWatcher, Sink, dict[str, int]]:
    """A watcher on tmp_path/landing with its root and ``sub`` watched; the map of rel → wd."""
    landing = tmp_path / "landing"
    (landing / "sub").mkdir(parents=True)
    sink = Sink()
    w = InotifyWatcher(landing, sink, logs.get_logger())

    async def start() -> None:
        w.start(asyncio.get_running_loop())
        w.add_dir("")
        w.add_dir("sub")

    loop = asyncio.new_event_loop()
    loop.run_until_complete(start())
    wds = {rel: wd for wd, rel in w._dirs.items()}
    yield w, sink, wds
    loop.run_until_complete(_close(w))
    loop.close()


async def _close(w: InotifyWatcher) -> None:
    await w.stop()


def test_file_events_become_the_sink_calls_readiness_needs(watched) -> None:  # type: ignore[no-untyped-def]
    w, sink, wds = watched
    w.feed(
        event(wds[""], flags.CREATE, "a.csv")
        + event(wds[""], flags.MODIFY, "a.csv")
        + event(wds[""], flags.CLOSE_WRITE, "a.csv")
        + event(wds["sub"], flags.MOVED_TO, "b.csv")
        + event(wds["sub"], flags.CREATE, "linked.csv")
    )
    assert sink.calls == [
        ("hint", "a.csv"),
        ("written", "a.csv"),
        ("closed", "a.csv"),
        ("closed", "sub/b.csv"),  # renamed into place: its writer is done
        ("hint", "sub/linked.csv"),  # a hard link gives only IN_CREATE
    ]
    assert w.events == 5


def test_a_new_directory_is_watched_then_scanned(watched) -> None:  # type: ignore[no-untyped-def]
    w, sink, wds = watched
    (w.landing / "sub" / "new").mkdir()
    (w.landing / ".hidden").mkdir()
    w.feed(
        event(wds["sub"], flags.CREATE | flags.ISDIR, "new")
        + event(wds[""], flags.CREATE | flags.ISDIR, ".hidden")
    )
    assert sink.calls == [("new_dir", "sub/new")]  # hidden directories are never entered
    assert "sub/new" in w._dirs.values()


def test_overflow_asks_for_a_full_rescan(watched) -> None:  # type: ignore[no-untyped-def]
    w, sink, _ = watched
    w.feed(event(-1, flags.Q_OVERFLOW))
    assert sink.calls == [("overflow", "")] and w.overflows == 1


def test_a_dead_watch_is_forgotten(watched) -> None:  # type: ignore[no-untyped-def]
    w, sink, wds = watched
    w.feed(event(wds["sub"], flags.IGNORED) + event(wds["sub"], flags.CLOSE_WRITE, "late.csv"))
    assert sink.calls == [] and "sub" not in w._dirs.values()
    w.feed(event(9999, flags.CLOSE_WRITE, "unknown-wd.csv"))  # a watch we never had
    assert sink.calls == []


@pytest.mark.parametrize("mask", [flags.DELETE_SELF, flags.MOVE_SELF, flags.UNMOUNT])
def test_the_landing_dir_itself_gone_is_reported(watched, mask: int) -> None:  # type: ignore[no-untyped-def]
    w, sink, wds = watched
    w.feed(event(wds[""], mask))
    ((call, cause),) = sink.calls
    assert call == "landing_replaced" and "landing dir" in cause


def test_a_subdirectory_moved_away_is_not_the_landing_dir(watched) -> None:  # type: ignore[no-untyped-def]
    w, sink, wds = watched
    w.feed(event(wds["sub"], flags.MOVE_SELF) + event(wds["sub"], flags.DELETE_SELF))
    assert sink.calls == []


def test_the_parent_tells_when_the_landing_dir_goes(watched) -> None:  # type: ignore[no-untyped-def]
    """The landing dir's own IN_DELETE_SELF never comes while the daemon holds it open."""
    w, sink, _ = watched
    parent = w._parent_wd
    w.feed(
        event(parent, flags.DELETE | flags.ISDIR, "warehouse")  # a sibling: not ours
        + event(parent, flags.MOVED_FROM | flags.ISDIR, "landing")
    )
    assert sink.calls == [("landing_replaced", "the landing dir was renamed away")]


def test_a_watch_that_fails_is_reported_once(watched) -> None:  # type: ignore[no-untyped-def]
    w, _, _ = watched
    lines: list[dict[str, object]] = []

    class Log:
        def warning(self, event: str, **kw: object) -> None:
            lines.append({"event": event, **kw})

    w.log = Log()
    for _ in range(3):  # a scan asks for every directory, every time
        w.add_dir("does/not/exist")
    assert [x["event"] for x in lines] == ["watch_failed"]


def test_the_mask_watches_what_readiness_needs() -> None:
    for f in (
        flags.CLOSE_WRITE,
        flags.MOVED_TO,
        flags.CREATE,
        flags.MODIFY,
        flags.DELETE_SELF,
        flags.MOVE_SELF,
    ):
        assert DIR_MASK & f
    assert DIR_MASK & flags.DONT_FOLLOW and DIR_MASK & flags.ONLYDIR  # a symlinked dir is never entered
