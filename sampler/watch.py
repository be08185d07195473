"""inotify on the manifest tree: a hint that a pass is due, never the truth.

The run loop polls ``fileno()``; ``drain()`` reads what the kernel queued and
says whether anything happened. Appends give ``IN_MODIFY``; a new hour
directory gives ``IN_CREATE|IN_ISDIR`` and is watched at once, then walked:
its file may have been created before the watch existed (no event for it),
which the pass that follows finds by listing. ``IN_Q_OVERFLOW`` (wd -1) just
means "look": the pass reads every open file from its offset anyway.
``watch_only(dirs)`` keeps watches on exactly the directories the last
discovery walked, so retired hours drop out and the count stays small.
Owned by the run loop only (no lock).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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


class ManifestWatch:
    def __init__(self) -> None:
        self._ino = INotify(nonblocking=True)
        self._wds: dict[Path, int] = {}
        self._paths: dict[int, Path] = {}

    def fileno(self) -> int:
        return int(self._ino.fileno())

    def watch_only(self, dirs: Iterable[Path]) -> None:
        wanted = set(dirs)
        for path in [p for p in self._wds if p not in wanted]:
            wd = self._wds.pop(path)
            self._paths.pop(wd, None)
            try:
                self._ino.rm_watch(wd)
            except OSError:
                pass  # already gone with its directory
        for path in wanted:
            if path not in self._wds:
                self._add(path)

    def _add(self, path: Path) -> None:
        try:
            wd = int(self._ino.add_watch(path, MASK))
        except OSError:
            return  # vanished or not a directory: the periodic pass covers it
        self._wds[path] = wd
        self._paths[wd] = path

    def drain(self) -> bool:
        """Consume queued events; True when any arrived."""
        events = self._ino.read(timeout=0)
        for ev in events:
            if ev.mask & flags.IGNORED:
                path = self._paths.pop(ev.wd, None)
                if path is not None:
                    self._wds.pop(path, None)
            elif ev.mask & flags.CREATE and ev.mask & flags.ISDIR and ev.wd in self._paths:
                self._add_tree(self._paths[ev.wd] / ev.name)
        return bool(events)

    def _add_tree(self, top: Path) -> None:
        self._add(top)
        for dirpath, dirnames, _ in os.walk(top):
            for d in dirnames:
                self._add(Path(dirpath) / d)

    def close(self) -> None:
        self._ino.close()
