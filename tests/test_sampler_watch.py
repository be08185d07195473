"""inotify hints on the manifest tree."""

from __future__ import annotations

import select
from pathlib import Path

from sampler.watch import ManifestWatch
from tests.sampler_helpers import append_lines


def _wait(watch: ManifestWatch, seconds: float = 5.0) -> bool:
    poller = select.poll()
    poller.register(watch.fileno(), select.POLLIN)
    return bool(poller.poll(seconds * 1000)) and watch.drain()


def test_appends_and_new_directories_are_seen(tmp_path: Path) -> None:
    hour = tmp_path / "2026" / "11" / "23" / "10"
    append_lines(tmp_path, "2026/11/23/10/manifest.jsonl", b"a\n")
    watch = ManifestWatch()
    try:
        watch.watch_only([tmp_path, tmp_path / "2026", tmp_path / "2026/11", tmp_path / "2026/11/23", hour])
        assert not watch.drain()
        append_lines(tmp_path, "2026/11/23/10/manifest.jsonl", b"b\n")
        assert _wait(watch)
        # a new day: the day and hour directories appear together, both are watched
        (tmp_path / "2026" / "11" / "24" / "00").mkdir(parents=True)
        assert _wait(watch)
        append_lines(tmp_path, "2026/11/24/00/manifest.jsonl", b"c\n")
        assert _wait(watch)
        # retiring the old hour drops its watch: appends there are no longer reported
        watch.watch_only([tmp_path, tmp_path / "2026", tmp_path / "2026/11", tmp_path / "2026/11/24",
                          tmp_path / "2026/11/24/00"])  # fmt: skip
        watch.drain()
        append_lines(tmp_path, "2026/11/23/10/manifest.jsonl", b"d\n")
        assert not _wait(watch, 0.2)
    finally:
        watch.close()
