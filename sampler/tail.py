"""Reading the ingestor's hourly manifests forward, exactly where the last run stopped.

Input: the tree ``<manifests>/YYYY/MM/DD/HH/manifest.jsonl`` (sorted path order
is chronological) and a ``Checkpoint``. Output: complete lines, in file order
then byte order, each with the offset just past it; the caller processes a
line, then ``commit``s it.

- A last line with no newline is not yet written: ``iter_lines`` never yields
  it and no offset ever passes it. When the writer completes it (or cuts it
  off and appends whole lines, see ``ingestor.manifest``) it is read then.
- Restart cost: the tree is walked pruned by ``retired_through`` (each level
  lists only names at or after the retired hour's), and every file is read
  from its saved offset. Work grows with the new lines and the files still
  open, not with the manifest's history.

Retirement (the late-append rule). An hour file can still receive lines up
to ``LATE_APPEND_SECONDS`` (60 s) after its hour ends, while the next hour's
file already exists; so reading on into the next file must not forget the
previous one. Every file after ``retired_through`` keeps its own offset and
is re-read on each pass. A file is retired, in path order and only after
every earlier file, when both hold:

1. the wall clock is past its hour's end + ``LATE_APPEND_SECONDS`` +
   ``grace_s`` (default 240 s, room for clock skew and a slow writer), and
2. checked *after* (1), all of its complete lines have been processed. What
   is left past the offset then can only be a torn tail whose writer died:
   no writer appends to that hour any more, so nobody will complete it; it
   is logged (``manifest_torn_tail``) and the file retired.

A saved offset past the file's end (the file was rewritten) is logged and
the file re-read from 0; one not at a line start is moved back to the line
start before it. A re-read line costs a sidecar read: its sample is current.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestor.manifest import (
    LATE_APPEND_SECONDS,
    MANIFEST_NAME,
    hour_end_ns,
    iter_lines,
    line_start_at_or_before,
)
from sampler.checkpoint import Checkpoint

RETIRE_GRACE_SECONDS = 240.0
_WIDTHS = (4, 2, 2, 2)  # YYYY / MM / DD / HH


@dataclass(frozen=True, slots=True)
class Line:
    rel: str  # manifest file, relative to the manifests root
    data: bytes  # the line, newline included
    end: int  # offset just past it

    @property
    def start(self) -> int:
        return self.end - len(self.data)


def discover(root: Path, after: str | None) -> tuple[list[str], list[Path]]:
    """Manifest files after ``after`` in order, and the directories walked to find them."""
    floor = after.split("/")[:4] if after else None
    files: list[str] = []
    dirs: list[str] = []

    def walk(path: str, depth: int, prefix: str, tight: bool) -> None:
        try:
            with os.scandir(path) as it:
                names = sorted(
                    e.name
                    for e in it
                    if len(e.name) == _WIDTHS[depth]
                    and e.name.isascii()
                    and e.name.isdigit()
                    and e.is_dir(follow_symlinks=False)
                )
        except (FileNotFoundError, NotADirectoryError):
            return
        dirs.append(path)
        for name in names:
            if tight and floor is not None and name < floor[depth]:
                continue
            still_tight = tight and floor is not None and name == floor[depth]
            sub = f"{path}/{name}"
            if depth == 3:
                rel = f"{prefix}{name}/{MANIFEST_NAME}"
                if after is not None and rel <= after:
                    continue
                if os.path.isfile(f"{sub}/{MANIFEST_NAME}"):
                    files.append(rel)
                dirs.append(sub)
            else:
                walk(sub, depth + 1, f"{prefix}{name}/", still_tight)

    walk(os.fspath(root), 0, "", True)
    return files, [Path(d) for d in dirs]


class Tail:
    """The read position over the manifest tree. Owned by the run loop only (no lock)."""

    def __init__(
        self,
        root: Path,
        start: Checkpoint,
        *,
        log: Any,
        grace_s: float = RETIRE_GRACE_SECONDS,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.root = root
        self.key = start.manifests  # the dir named in the checkpoint, kept in every one saved
        self.retired_through = start.retired_through
        self.offsets: dict[str, int] = dict(start.offsets)
        self.log = log
        self.grace_ns = int(grace_s * 1e9)
        self.clock = clock
        self.files: list[str] = []  # from the last discovery, in order
        self.dirs: list[Path] = []
        self.sizes: dict[str, int] = {}  # size seen at the last read of each file

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.retired_through, dict(self.offsets), self.key)

    def lag(self) -> int:
        """Bytes of complete-or-torn manifest data not processed yet, as last seen."""
        return sum(max(0, size - self.offsets.get(rel, 0)) for rel, size in self.sizes.items())

    def refresh(self) -> None:
        self.files, self.dirs = discover(self.root, self.retired_through)
        known = set(self.files)
        for rel in [r for r in self.offsets if r not in known]:
            self.log.warning("manifest_vanished", manifest=rel, offset=self.offsets[rel])
            del self.offsets[rel]
            self.sizes.pop(rel, None)

    def lines(self, stop: Callable[[], bool]) -> Generator[Line, None, None]:
        """One pass: every complete line not processed yet, file by file.

        Close the generator when stopping early (``contextlib.closing``).
        """
        self.refresh()
        for rel in self.files:
            try:
                fd = os.open(self.root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                size = os.fstat(fd).st_size
                self.sizes[rel] = size
                start = self._valid_offset(fd, rel, size)
                for data, end in iter_lines(fd, start, size):
                    yield Line(rel, data, end)
                    if stop():
                        return
            finally:
                os.close(fd)

    def commit(self, line: Line) -> None:
        self.offsets[line.rel] = line.end

    def _valid_offset(self, fd: int, rel: str, size: int) -> int:
        off = self.offsets.get(rel, 0)
        if off > size:
            # Rewritten under us: re-read it all; lines already sampled are current.
            fixed = 0
            self.log.error("manifest_shrank", manifest=rel, offset=off, size=size, resume_at=fixed)
        elif off > 0 and os.pread(fd, 1, off - 1) != b"\n":
            fixed = line_start_at_or_before(fd, off)
            self.log.warning("offset_not_at_line_start", manifest=rel, offset=off, resume_at=fixed)
        else:
            return off
        self.offsets[rel] = fixed
        return fixed

    def retire(self) -> list[str]:
        """Retire the leading files that can receive nothing more (module docstring)."""
        retired: list[str] = []
        for rel in self.files:
            if self.clock() <= hour_end_ns(rel) + LATE_APPEND_SECONDS * 1_000_000_000 + self.grace_ns:
                break
            off = self.offsets.get(rel, 0)
            try:
                fd = os.open(self.root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                size = off
            else:
                try:
                    size = os.fstat(fd).st_size  # read after the time check: final
                    if off < size and line_start_at_or_before(fd, size) > off:
                        break  # complete lines still to process
                finally:
                    os.close(fd)
            if off < size:
                self.log.warning("manifest_torn_tail", manifest=rel, offset=off, size=size)
            self.retired_through = rel
            self.offsets.pop(rel, None)
            self.sizes.pop(rel, None)
            retired.append(rel)
        if retired:
            self.files = self.files[len(retired) :]
        return retired
