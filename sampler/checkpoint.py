"""The sampler's durable position in the manifest tree.

Format (JSON, one object)::

    {"version": 1,
     "manifests": "/srv/data/sp/gics/1.0/manifests",
     "retired_through": "2026/11/23/09/manifest.jsonl",
     "offsets": {"2026/11/23/10/manifest.jsonl": 48213,
                 "2026/11/23/11/manifest.jsonl": 1022}}

- ``manifests``: the manifests dir it is the position in (``--config``
  mode, one checkpoint per manifests dir; absent with ``--manifests``).
  Loading it for another dir is refused: a copied or colliding file never
  moves a position to a tree it was not taken in.
- ``retired_through``: every manifest file at or before this path (sorted
  path order is chronological) is finished for good and never opened again;
  ``null`` before the first retirement.
- ``offsets``: for the files after it that have been read, the byte offset
  just past the last line processed: always a line start, never inside a
  torn last line. A file after ``retired_through`` with no entry is read
  from 0. The retirement rule that moves files from one to the other is in
  ``tail``.

Written atomically: a temporary beside it, fsync, rename, fsync of the
directory; a crash leaves the old checkpoint or the new one. Records after
the checkpoint are redone on restart and found current by their sidecar
(``sample``), so the checkpoint may lag, never lead: the caller fsyncs the
samples it wrote before saving.

One sampler per checkpoint: ``lock`` takes an exclusive ``flock`` on
``<checkpoint>.lock`` for the life of the process.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

VERSION = 1
REL_PATTERN = re.compile(r"\d{4}/\d{2}/\d{2}/\d{2}/manifest\.jsonl")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or trusted: fatal, an operator decides."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    retired_through: str | None = None
    offsets: Mapping[str, int] = field(default_factory=dict)
    manifests: str | None = None

    def to_json(self) -> bytes:
        body: dict[str, object] = {"version": VERSION}
        if self.manifests is not None:
            body["manifests"] = self.manifests
        body |= {
            "retired_through": self.retired_through,
            "offsets": dict(sorted(self.offsets.items())),
        }
        return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CheckpointError(f"not JSON: {exc}") from exc
        if not isinstance(obj, dict) or obj.get("version") != VERSION:
            raise CheckpointError(f"not a version {VERSION} checkpoint")
        retired = obj.get("retired_through")
        offsets = obj.get("offsets")
        if retired is not None and not (isinstance(retired, str) and REL_PATTERN.fullmatch(retired)):
            raise CheckpointError(f"bad retired_through {retired!r}")
        if not isinstance(offsets, dict):
            raise CheckpointError("offsets is not an object")
        for rel, off in offsets.items():
            if not REL_PATTERN.fullmatch(rel) or type(off) is not int or off < 0:
                raise CheckpointError(f"bad offset entry {rel!r}: {off!r}")
            if retired is not None and rel <= retired:
                raise CheckpointError(f"offset for {rel!r}, which is retired")
        manifests = obj.get("manifests")
        if manifests is not None and not isinstance(manifests, str):
            raise CheckpointError(f"bad manifests {manifests!r}")
        return cls(retired, dict(offsets), manifests)


def load(path: Path, manifests: str | None = None) -> Checkpoint:
    """The saved checkpoint; an empty one when there is none yet.

    With ``manifests``, the checkpoint is that dir's: one that names another
    dir is refused, and the one returned names it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Checkpoint(manifests=manifests)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        ckpt = Checkpoint.from_json(data)
        if manifests is not None and ckpt.manifests != manifests:
            raise CheckpointError(f"it is the position in {ckpt.manifests}, not in {manifests}")
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc} (move it away to start over)") from exc
    return ckpt


def save(path: Path, ckpt: Checkpoint) -> None:
    """Replace the checkpoint durably: temporary, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(ckpt.to_json())
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def lock(path: Path) -> int:
    """Hold ``<checkpoint>.lock`` exclusively; the returned fd keeps it until closed."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise CheckpointError(f"another sampler holds {lock_path}") from exc
    return fd
