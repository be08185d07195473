"""Typed records passed between the pipeline stages.

Paths inside the pipeline are *relative* ``str`` paths decoded the way
``os.listdir`` decodes them (UTF-8 with ``surrogateescape``), so a name that
is not valid UTF-8 survives every stage byte for byte; they become bytes again
only at the ledger (BLOB columns) and absolute only in the manifest.
"""

from __future__ import annotations

import operator
import os
import stat as stat_mod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class State(StrEnum):
    """Ledger state of one file in flight; each is committed before the next step."""

    HASHED = "hashed"  # content hashed, destination and manifest file planned
    MOVED = "moved"  # the file is at its destination (or its duplicate action is done)
    MANIFESTED = "manifested"  # its manifest line is written and fsynced: final
    ABANDONED = "abandoned"  # the source vanished or changed before it moved: final


OPEN_STATES = (State.HASHED, State.MOVED)


def sql_in(*values: StrEnum) -> str:
    """``('hashed','moved')``: an SQL list of enum values, for the ledger's queries."""
    return "(" + ",".join(f"'{v.value}'" for v in values) + ")"


OPEN_SQL = sql_in(*OPEN_STATES)  # the states of a record still in flight


class Status(StrEnum):
    """What the manifest says of a file."""

    INGESTED = "ingested"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"  # will never land as it is (a symlink, a FIFO, unreadable...): ``reason``


class Action(StrEnum):
    """What happened to the source file."""

    LANDED = "landed"  # moved into the warehouse
    QUARANTINED = "quarantined"  # a duplicate, moved under _duplicates/
    DELETED = "deleted"  # a duplicate, removed from the landing dir
    KEPT = "kept"  # a duplicate, left where it is (and remembered)
    NONE = "none"  # rejected: nothing was done to the file


@dataclass(frozen=True, slots=True)
class Identity:
    """A file in flight: never the inode alone, inodes are reused at once.

    ``ctime_ns`` catches what size and mtime miss: a write that keeps the size
    and puts the mtime back (``dd conv=notrunc`` then ``touch -r``); no call
    sets the ctime. Our own rename and link change it too, so it is compared
    only while the file is still where it was found. 0: not known (a record
    of an older ledger), not compared.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int = 0

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def matches(self, st: os.stat_result | None) -> bool:
        return (
            st is not None
            and stat_mod.S_ISREG(st.st_mode)
            and st.st_dev == self.device
            and st.st_ino == self.inode
            and st.st_size == self.size
            and st.st_mtime_ns == self.mtime_ns
            and (self.ctime_ns == 0 or st.st_ctime_ns == self.ctime_ns)
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """A path readiness judged complete, handed to a worker."""

    rel: str  # path relative to the landing dir
    size: int  # size seen by readiness (used to size batches)
    seen_at: float  # monotonic time of the first event or scan that saw it
    sidecar: str | None = None  # relative path of its `.ok` sidecar, if any
    detected_ns: int = 0  # wall clock (ns) of the first event or scan that saw it; 0: not known


@dataclass(frozen=True, slots=True)
class Hashed:
    """A candidate read through one descriptor, unchanged from first to last fstat."""

    candidate: Candidate
    identity: Identity
    sha256: str
    # Name of the copy already written under the warehouse's temporary dir when the
    # file had to be copied (other filesystem, or a hard link shared with a path
    # outside the landing dir); None when it will be renamed.
    temp: str | None


@dataclass(frozen=True, slots=True)
class Record:
    """One ledger row: a file between HASHED and MANIFESTED (or final)."""

    id: str
    state: State
    status: Status
    action: Action
    source_rel: str
    identity: Identity
    sha256: str
    dest_rel: str | None  # relative to the warehouse; None for deleted / kept duplicates
    manifest_rel: str  # relative to the manifests dir
    manifest_floor: int | None  # the manifest file's size before this line was appended
    ingested_ns: int
    duplicate_of: str | None
    sidecar_rel: str | None
    seen_at: float = 0.0  # monotonic, this process only (latency metrics); 0 after recovery
    temp: str | None = None  # this process only: the copy made while hashing
    site: int = 0  # the landing dir (ledger ``sites``) the source path is relative to
    detected_ns: int = 0  # wall clock (ns) of the first event or scan that saw it; 0: not known


def fast_pickle(cls: type) -> None:
    """Pickle ``cls`` as its constructor and field values, in one C call.

    Lander processes (``--processes``) send every batch's records back to the
    daemon; the ``__getstate__``/``__setstate__`` that ``dataclass(slots=True)``
    generates call ``fields()`` for every object, which cost more than the
    landing of a small file.
    """
    values = operator.attrgetter(*cls.__dataclass_fields__)  # type: ignore[attr-defined]

    def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, values(self)

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]


for _cls in (Identity, Candidate, Hashed, Record):
    fast_pickle(_cls)
