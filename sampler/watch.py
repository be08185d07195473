"""inotify on the manifest tree: a hint that a pass is due, never the truth.

The run loop polls ``fileno()``; ``drain()`` reads what the kernel queued and
says what happened (``Changes``): the dirs of the manifest trees that had
events, so that only their manifests dirs are read again. Appends give ``IN_MODIFY``; a new hour
directory gives ``IN_CREATE|IN_ISDIR`` and is watched at once, then walked:
its file may have been created before the watch existed (no event for it),
which the pass that follows finds by listing. ``IN_Q_OVERFLOW`` (wd -1), and
a watched directory gone, mean "look at everything again" (``rediscover``).
``watch_only(dirs, levels)`` keeps watches on exactly the directories the
last discovery walked, so retired hours drop out and the count stays small.

``levels`` (``--config``) are the directories where a new manifests dir can
appear (``/srv/data``, ``/srv/data/sp``...): only a directory made or moved
into one of them counts as an event there, and it is not walked (it may be a
whole dataset tree; the pass that follows lists what it needs). A directory
that is both is watched as a manifests dir. Owned by the run loop only (no
lock).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from inotify_simple import INotify, flags

MASK = (
    flags.CREATE
    | flags.MOVED_TO
    | flags.MODIFY
    | flags.CLOSE_WRITE
    | flags.DELETE_SELF
    | flags.ONLYDIR
    | flags.DONT_FOLLOW
)


LEVEL_MASK = flags.CREATE | flags.MOVED_TO | flags.DELETE_SELF | flags.ONLYDIR | flags.DONT_FOLLOW


@dataclass(slots=True)
class Changes:
    """What drained events say: manifests-tree dirs with news, or that manifests dirs may have come or gone."""

    dirs: set[Path] = field(default_factory=set)
    rediscover: bool = False

    def __bool__(self) -> bool:
        return self.rediscover or bool(self.dirs)

    def update(self, other: Changes) -> None:
        self.dirs |= other.dirs
        self.rediscover = self.rediscover or other.rediscover


class ManifestWatch:
    def __init__(self) -> None:
        self._ino = INotify(nonblocking=True)
        self._wds: dict[Path, int] = {}
        self._paths: dict[int, Path] = {}
        self._levels: set[int] = set()  # wds of level directories

    def fileno(self) -> int:
        return int(self._ino.fileno())

    def watch_only(self, dirs: Iterable[Path], levels: Iterable[Path] = ()) -> None:
        tree = set(dirs)
        wanted = {p: False for p in levels} | {p: True for p in tree}
        for path in [p for p in self._wds if p not in wanted]:
            old = self._wds.pop(path)
            self._paths.pop(old, None)
            self._levels.discard(old)
            try:
                self._ino.rm_watch(old)
            except OSError:
                pass  # already gone with its directory
        for path, is_tree in wanted.items():
            wd = self._wds.get(path)
            if wd is None or (wd in self._levels) == is_tree:  # new, or its kind changed
                self._add(path, level=not is_tree)

    def watched(self) -> set[Path]:
        """The directories watched now (one gone with its directory is not)."""
        return set(self._wds)

    def _add(self, path: Path, *, level: bool = False) -> None:
        try:
            wd = int(self._ino.add_watch(path, LEVEL_MASK if level else MASK))
        except OSError:
            return  # vanished or not a directory: the periodic pass covers it
        self._wds[path] = wd
        self._paths[wd] = path
        if level:
            self._levels.add(wd)
        else:
            self._levels.discard(wd)

    def drain(self) -> Changes:
        """Consume queued events: the manifests-tree dirs they were in, or "look for manifests dirs again"."""
        changes = Changes()
        for ev in self._ino.read(timeout=0):
            path = self._paths.get(ev.wd)
            if ev.mask & flags.Q_OVERFLOW:
                changes.rediscover = True  # events were lost: look at everything
            elif ev.mask & flags.IGNORED:
                if path is not None:  # gone with its directory (not by rm_watch): look again
                    del self._paths[ev.wd]
                    self._wds.pop(path, None)
                    changes.rediscover = True
                self._levels.discard(ev.wd)
            elif ev.wd in self._levels:
                changes.rediscover = changes.rediscover or bool(ev.mask & (flags.ISDIR | flags.DELETE_SELF))
            elif path is not None:
                changes.dirs.add(path)
                if ev.mask & flags.CREATE and ev.mask & flags.ISDIR:
                    self._add_tree(path / ev.name)
        return changes

    def _add_tree(self, top: Path) -> None:
        self._add(top)
        for dirpath, dirnames, _ in os.walk(top):
            for d in dirnames:
                self._add(Path(dirpath) / d)

    def close(self) -> None:
        self._ino.close()
