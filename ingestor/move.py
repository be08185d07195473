"""Move: planned records (HASHED) → files at their destination, durably.

One batch at a time, in commit order:

1. place every file: same filesystem, ``renameat2(RENAME_NOREPLACE)`` (never
   replaces); otherwise rename the copy made while hashing (or make it now,
   verifying its SHA-256) from the warehouse's temporary dir into place;
2. fsync every destination directory (and the parents of new ones);
3. only then remove the sources that were copied, and the sidecars, after
   checking each source is still the file that was hashed: two filesystems
   have no common journal, so a source unlink must never become durable
   before the copy it depends on;
4. fsync every source directory.

The same function redoes a step after a crash: each record is judged from
what is on disk (source still the hashed file? destination present and
ours?), so a move that already happened is recognised, not repeated.
Directories are reached through descriptors opened below the landing root
without following symlinks, so a swapped-in symlink cannot redirect a rename.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ingestor import faults
from ingestor.digest import hash_at, hash_fd
from ingestor.errors import BadInput, Gone, Retryable, from_oserror
from ingestor.fsops import (
    OPEN_DATA,
    OPEN_DIR,
    TempDir,
    makedirs_durable,
    open_beneath,
    rename_noreplace,
    stat_at,
)
from ingestor.records import Action, Identity, Record


def _split(rel: str) -> tuple[str, str]:
    """``os.path.split`` of a normalised relative path (no ``//``, no trailing ``/``), cheaper."""
    head, _, name = rel.rpartition("/")
    return head, name


class Moved(StrEnum):
    MOVED = "moved"  # done now
    ALREADY = "already"  # found done (recovery)
    VANISHED = "vanished"  # the source is gone and was never placed
    CHANGED = "changed"  # the source is not the hashed file any more
    COLLISION = "collision"  # something else sits at the destination: re-plan


@dataclass(slots=True)
class MoveResult:
    record: Record
    outcome: Moved
    # the file changed between hashing and the end of its rename: new identity + hash
    changed: tuple[Identity, str] | None = None


@dataclass(slots=True)
class _Batch:
    """Directory descriptors and dirty directories of one batch; closed at its end."""

    landing_fd: int
    src_fds: dict[str, int | None] = field(default_factory=dict)
    dst_fds: dict[str, int] = field(default_factory=dict)
    dirty_src: set[str] = field(default_factory=set)
    dirty_dst: set[str] = field(default_factory=set)
    new_parents: set[Path] = field(default_factory=set)
    unlinks: list[tuple[str, str, Identity | None]] = field(default_factory=list)

    def source(self, rel_dir: str) -> int | None:
        if rel_dir not in self.src_fds:
            try:
                self.src_fds[rel_dir] = open_beneath(self.landing_fd, rel_dir, OPEN_DIR)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                    raise from_oserror("open dir", rel_dir, exc, source=False) from exc
                # gone, or swapped for a symlink: the hashed file is not reachable there
                self.src_fds[rel_dir] = None
        return self.src_fds[rel_dir]

    def close(self) -> None:
        for fd in self.src_fds.values():
            if fd is not None:
                os.close(fd)
        for fd in self.dst_fds.values():
            os.close(fd)


class Mover:
    def __init__(self, landing_fd: int, warehouse: Path, tmp: TempDir, stop: threading.Event) -> None:
        self.landing_fd = landing_fd
        self.warehouse = warehouse
        self.warehouse_dev = os.stat(warehouse).st_dev
        self.tmp = tmp
        self.stop = stop

    def move_all(self, records: list[Record]) -> list[MoveResult]:
        batch = _Batch(self.landing_fd)
        try:
            results = []
            for rec in records:
                try:
                    results.append(self._place(rec, batch))
                except Gone:  # the source went away under a copy: this record only
                    results.append(MoveResult(rec, Moved.VANISHED))
                except BadInput:  # became unreadable: looked at (and reported) again as a new file
                    results.append(MoveResult(rec, Moved.CHANGED))
                if faults.ACTIVE:
                    faults.ACTIVE.hit("after_place")
            self._sync(batch, sources=False)
            if faults.ACTIVE:
                faults.ACTIVE.hit("after_dest_sync")
            for rel_dir, name, ident in batch.unlinks:
                self._unlink_source(batch, rel_dir, name, ident)
                if faults.ACTIVE:
                    faults.ACTIVE.hit("after_unlink")
            self._sync(batch, sources=True)
            if faults.ACTIVE:
                faults.ACTIVE.hit("after_src_sync")
            return results
        finally:
            batch.close()

    # ------------------------------------------------------------ placing

    def _dest_dir(self, batch: _Batch, rel_dir: str) -> int:
        fd = batch.dst_fds.get(rel_dir)
        if fd is None:
            try:
                batch.new_parents.update(makedirs_durable(self.warehouse, rel_dir))
                fd = os.open(self.warehouse / rel_dir if rel_dir else self.warehouse, OPEN_DIR)
            except OSError as exc:
                raise from_oserror("create dir", str(self.warehouse / rel_dir), exc, source=False) from exc
            batch.dst_fds[rel_dir] = fd
        return fd

    def _place(self, rec: Record, batch: _Batch) -> MoveResult:
        src_dir, src_name = _split(rec.source_rel)
        sfd = batch.source(src_dir)
        src_st = stat_at(sfd, src_name) if sfd is not None else None
        src_ok = rec.identity.matches(src_st)
        sidecar = _split(rec.sidecar_rel) if rec.sidecar_rel else None

        if rec.action is Action.KEPT:
            self._drop_temp(rec)
            return MoveResult(rec, Moved.MOVED)
        if rec.action is Action.DELETED:
            self._drop_temp(rec)
            if src_ok:
                batch.unlinks.append((src_dir, src_name, rec.identity))
                if sidecar:
                    batch.unlinks.append((*sidecar, None))
                return MoveResult(rec, Moved.MOVED)
            return MoveResult(rec, Moved.ALREADY if src_st is None else Moved.CHANGED)

        assert rec.dest_rel is not None
        dst_dir, dst_name = _split(rec.dest_rel)
        try:
            dfd = self._dest_dir(batch, dst_dir)
        except Retryable as exc:
            if exc.__cause__ is not None and getattr(exc.__cause__, "errno", None) in (
                errno.ENOTDIR,
                errno.EEXIST,
            ):
                self._drop_temp(rec)
                return MoveResult(rec, Moved.COLLISION)  # a file sits where a directory goes
            raise
        if (
            src_ok
            and sfd is not None
            and src_st is not None
            and rec.temp is None
            and src_st.st_nlink == 1
            and src_st.st_dev == self.warehouse_dev
        ):
            # The common case, tried first; the destination is looked at only when it
            # fails: taken (EEXIST: a collision, or this record's own earlier move),
            # or the source gone meanwhile (ENOENT), or another filesystem after all.
            try:
                rename_noreplace(sfd, src_name, dfd, dst_name)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOENT, errno.EXDEV):
                    raise from_oserror("rename", rec.source_rel, exc, source=False) from exc
                if exc.errno == errno.ENOENT:
                    src_st = stat_at(sfd, src_name)
                    src_ok = rec.identity.matches(src_st)
            else:
                batch.dirty_src.add(src_dir)
                batch.dirty_dst.add(dst_dir)
                if sidecar:
                    batch.unlinks.append((*sidecar, None))
                return MoveResult(rec, Moved.MOVED, self._check_after_rename(rec, dfd, dst_name))

        dst_st = stat_at(dfd, dst_name)
        if dst_st is not None:
            self._drop_temp(rec)
            if not self._is_ours(rec, dst_st, dfd, dst_name):
                return MoveResult(rec, Moved.COLLISION)
            if src_ok and src_st is not None:
                batch.unlinks.append((src_dir, src_name, rec.identity))
            elif src_st is not None and (src_st.st_dev, src_st.st_ino) == (dst_st.st_dev, dst_st.st_ino):
                # the link+unlink window: both names are the placed inode (whose ctime the
                # link changed); the source name goes, if it still is that inode
                batch.unlinks.append((src_dir, src_name, Identity.of(src_st)))
            if sidecar:
                batch.unlinks.append((*sidecar, None))
            changed = None
            if (dst_st.st_dev, dst_st.st_ino) == (rec.identity.device, rec.identity.inode):
                # renamed before a crash or a failed step: a writer may have written since
                changed = self._check_after_rename(rec, dfd, dst_name)
            return MoveResult(rec, Moved.ALREADY, changed)
        if not src_ok or sfd is None or src_st is None:
            self._drop_temp(rec)
            return MoveResult(rec, Moved.VANISHED if src_st is None else Moved.CHANGED)

        temp = rec.temp or self._copy(sfd, src_name, rec)
        if temp is None:
            return MoveResult(rec, Moved.CHANGED)
        try:
            rename_noreplace(self.tmp.fd, temp, dfd, dst_name)
        except OSError as exc:
            self.tmp.remove(temp)
            if exc.errno == errno.EEXIST:
                return MoveResult(rec, Moved.COLLISION)
            raise from_oserror("rename copy of", rec.source_rel, exc, source=False) from exc
        batch.dirty_dst.add(dst_dir)
        batch.unlinks.append((src_dir, src_name, rec.identity))
        if sidecar:
            batch.unlinks.append((*sidecar, None))
        return MoveResult(rec, Moved.MOVED)

    def _drop_temp(self, rec: Record) -> None:
        if rec.temp is not None:
            self.tmp.remove(rec.temp)

    def _is_ours(self, rec: Record, st: os.stat_result, dfd: int, name: str) -> bool:
        """Is the file at the destination this record's (a rename or copy done before a crash)?"""
        if not stat_mod.S_ISREG(st.st_mode):
            return False
        if (st.st_dev, st.st_ino) == (rec.identity.device, rec.identity.inode):
            return True
        if st.st_size != rec.identity.size:
            return False
        return hash_at(dfd, name) == rec.sha256

    def _check_after_rename(self, rec: Record, dfd: int, name: str) -> tuple[Identity, str] | None:
        """A writer still holding the file open may have written after the hash."""
        st = stat_at(dfd, name)
        if st is None or (st.st_size, st.st_mtime_ns) == (rec.identity.size, rec.identity.mtime_ns):
            return None
        fd = os.open(name, OPEN_DATA, dir_fd=dfd)
        try:
            sha = hash_fd(fd, st.st_size, name=name)
            return Identity.of(os.fstat(fd)), sha
        finally:
            os.close(fd)

    def _copy(self, sfd: int, name: str, rec: Record) -> str | None:
        """Copy the source into the temporary dir; None if its content is not the hashed one."""
        try:
            fd = os.open(name, OPEN_DATA, dir_fd=sfd)
        except OSError as exc:
            raise from_oserror("open", rec.source_rel, exc, source=True) from exc
        try:
            temp, sink = self.tmp.create()
            try:
                sha = hash_fd(fd, rec.identity.size, stop=self.stop, sink=sink, name=rec.source_rel)
                os.fdatasync(sink)
            except BaseException:
                os.close(sink)
                self.tmp.remove(temp)
                raise
            os.close(sink)
        finally:
            os.close(fd)
        if sha != rec.sha256:
            self.tmp.remove(temp)
            return None
        return temp

    # ------------------------------------------------------------ removing, syncing

    def _unlink_source(self, batch: _Batch, rel_dir: str, name: str, ident: Identity | None) -> None:
        sfd = batch.source(rel_dir)
        if sfd is None:
            return
        if ident is not None and not ident.matches(stat_at(sfd, name)):
            return  # changed after it was copied: it is a new file now, and stays
        try:
            os.unlink(name, dir_fd=sfd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise from_oserror("remove source", os.path.join(rel_dir, name), exc, source=False) from exc
        batch.dirty_src.add(rel_dir)

    def _sync(self, batch: _Batch, *, sources: bool) -> None:
        try:
            if sources:
                for rel_dir in batch.dirty_src:
                    fd = batch.source(rel_dir)
                    if fd is not None:
                        os.fsync(fd)
                batch.dirty_src.clear()
                return
            for rel_dir in batch.dirty_dst:
                os.fsync(batch.dst_fds[rel_dir])
            for parent in batch.new_parents:
                fd = os.open(parent, OPEN_DIR)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            batch.dirty_dst.clear()
            batch.new_parents.clear()
        except OSError as exc:
            raise from_oserror("fsync dir", str(self.warehouse), exc, source=False) from exc
