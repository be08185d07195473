"""What the watch tells the loop in --config mode: which manifests dir had news, or "look again"."""

from __future__ import annotations

import select
from pathlib import Path

from ingestor.templates import Template
from sampler.config import Source
from sampler.limits import Limits
from sampler.streams import Streams
from sampler.watch import Changes, ManifestWatch
from tests.sampler_helpers import append_lines, current_rel


class _Log:
    def bind(self, **_: object) -> _Log:
        return self

    def __getattr__(self, _: str) -> object:
        return lambda *a, **k: None


def _wait(watch: ManifestWatch, seconds: float = 5.0) -> Changes:
    poller = select.poll()
    poller.register(watch.fileno(), select.POLLIN)
    got = Changes()
    if poller.poll(seconds * 1000):
        got.update(watch.drain())
    return got


def _streams(root: Path) -> Streams:
    t = str(root) + "/data/{vendor}/{dataset}"
    source = Source(
        "s",
        Template.parse(t + "/raw"),
        Template.parse(t + "/bronze"),
        Template.parse(t + "/manifests"),
        Template.parse(t + "/samples"),
    )
    return Streams(
        (source,), plain=None, state_dir=root / "state", limits=Limits(), log=_Log(), grace_s=240.0
    )


def test_level_and_tree_events(tmp_path: Path) -> None:
    rel = current_rel()
    append_lines(tmp_path / "data/sp/gics/manifests", rel, b"a\n")
    append_lines(tmp_path / "data/sp/fx/manifests", rel, b"a\n")
    streams = _streams(tmp_path)
    watch = ManifestWatch()
    try:
        streams.refresh(watch)
        assert set(streams.streams) == {
            tmp_path / "data/sp/gics/manifests",
            tmp_path / "data/sp/fx/manifests",
        }
        assert tmp_path / "data" in streams.levels and tmp_path / "data/sp/gics" in streams.levels
        watch.drain()
        # an append: the hour dir of that manifests dir only
        append_lines(tmp_path / "data/sp/gics/manifests", rel, b"b\n")
        got = _wait(watch)
        assert not got.rediscover
        assert streams.owners(got.dirs) == {tmp_path / "data/sp/gics/manifests"}
        # a file in a level dir is not news; a new directory there is
        (tmp_path / "data/sp/README").write_bytes(b"x")
        assert not _wait(watch, 0.2)
        (tmp_path / "data/acme/px/manifests").mkdir(parents=True)
        assert _wait(watch).rediscover
        streams.refresh(watch)
        assert tmp_path / "data/acme/px/manifests" in streams.streams
        assert tmp_path / "data/acme/px" in streams.levels
    finally:
        watch.close()
        streams.close()
