"""What a worker says of each file it had: one result per file, carrying what comes next.

A batch's ``Outcome`` is a list of ``FileResult``: the path, the record when
there is one, and ``then``, the follow-up the daemon gives readiness and
the retrier (``landing.py``). It crosses from lander processes to the
daemon, so it pickles as its field values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum

from ingestor.errors import IngestError
from ingestor.records import Record, fast_pickle

StatKey = tuple[int, int, int, int]  # (inode, size, mtime, ctime): a path not to look at until it changes


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Then(Enum):
    """What happens to a file's path once the worker lets go of it."""

    DONE = "done"  # its record is final (manifested): nothing more to do
    SKIPPED = "skipped"  # in flight in another process, or kept as a duplicate
    DEFER = "defer"  # the same content is in flight: look again in a moment
    CHANGED = "changed"  # it changed under the worker: look again after a stability window
    VANISHED = "vanished"  # gone before it moved: nothing to look at
    REJECTED = "rejected"  # bad input: reported, not looked at again until it changes (``key``)
    REPORTED = "reported"  # dry run: reported, not looked at again until it changes (``key``)
    BACK_OFF = "back_off"  # a step before planning failed (``error``): look again after the back-off
    UNFINISHED = "unfinished"  # planned; a later step failed (``error``): its ``record`` is retried
    STOPPED = "stopped"  # not started: shutting down, or the landing dir was replaced


@dataclass(slots=True)
class FileResult:
    rel: str  # the path below the landing dir
    then: Then
    record: Record | None = None  # DONE, UNFINISHED; and a record abandoned as CHANGED or VANISHED
    error: IngestError | None = None  # REJECTED, BACK_OFF, UNFINISHED: why
    key: StatKey | None = None  # REJECTED, REPORTED: the file as it was


@dataclass(slots=True)
class Outcome:
    files: list[FileResult] = field(default_factory=list)
    landing_replaced: str | None = None  # why nothing was started (``fsops.replaced``)

    def add(self, rel: str, then: Then, **extra: object) -> None:
        self.files.append(FileResult(rel, then, **extra))  # type: ignore[arg-type]

    def done(self) -> list[Record]:
        return [f.record for f in self.files if f.then is Then.DONE and f.record is not None]

    def unfinished(self) -> list[Record]:
        return [f.record for f in self.files if f.then is Then.UNFINISHED and f.record is not None]


fast_pickle(FileResult)
