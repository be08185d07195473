"""move.py: planned records → files at their destination, durably, recognising work already done."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ingestor import move as move_mod
from ingestor.digest import digest
from ingestor.errors import BadInput, Gone, Retryable, Stopping
from ingestor.fsops import OPEN_DIR, TempDir
from ingestor.manifest import manifest_rel_for
from ingestor.move import Moved, Mover, MoveResult
from ingestor.records import Action, Candidate, Identity, Record, State, Status
from tests.data_fs import shm_dir, tiny_tmpfs

NON_UTF8 = os.fsdecode(b"caf\xe9-\xff.csv")
LONG = "é" * 120 + "n" * 11 + ".csv"  # 255 bytes
DAY = "ingest_date=2026-01-01"
_ids = iter(range(10**6))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Site:
    landing: Path
    warehouse: Path
    landing_fd: int
    tmp: TempDir
    stop: threading.Event
    mover: Mover

    def put(self, rel: str, data: bytes = b"data") -> Path:
        path = self.landing / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def plan(
        self,
        rel: str,
        dest_rel: str | None = "",
        *,
        action: Action = Action.LANDED,
        temp: str | None = None,
        sidecar: str | None = None,
    ) -> Record:
        """A HASHED record of the file at ``rel`` as it is now (dest default: DAY/rel)."""
        path = self.landing / rel
        now = time.time_ns()
        return Record(
            id=f"01REC{next(_ids):021d}",
            state=State.HASHED,
            status=Status.INGESTED if action is Action.LANDED else Status.DUPLICATE,
            action=action,
            source_rel=rel,
            identity=Identity.of(os.lstat(path)),
            sha256=sha(path.read_bytes()),
            dest_rel=f"{DAY}/{rel}" if dest_rel == "" else dest_rel,
            manifest_rel=manifest_rel_for(now),
            manifest_floor=None,
            ingested_ns=now,
            duplicate_of=None if action is Action.LANDED else "01ORIGINAL",
            sidecar_rel=sidecar,
            temp=temp,
        )

    def plan_digested(self, rel: str, dest_rel: str | None = "") -> Record:
        """Hash it the way a worker does (a copy is made while hashing when needed)."""
        h = digest(
            self.landing_fd,
            Candidate(rel, 0, 0.0),
            warehouse_dev=self.mover.warehouse_dev,
            tmp=self.tmp,
            stop=self.stop,
        )
        assert h is not None
        return replace(self.plan(rel, dest_rel), temp=h.temp)

    def move(self, *recs: Record) -> list[MoveResult]:
        return self.mover.move_all(list(recs))

    def one(self, rec: Record) -> MoveResult:
        (res,) = self.move(rec)
        return res

    def dest(self, rec: Record) -> Path:
        assert rec.dest_rel is not None
        return self.warehouse / rec.dest_rel

    def temps(self) -> list[str]:
        return sorted(os.listdir(self.tmp.path))

    def warehouse_files(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.warehouse):
            dirnames[:] = [d for d in dirnames if d != TempDir.NAME]
            out += [os.path.relpath(os.path.join(dirpath, f), self.warehouse) for f in filenames]
        return sorted(out)


@contextmanager
def make_site(landing: Path, warehouse: Path) -> Iterator[Site]:
    landing.mkdir(parents=True, exist_ok=True)
    warehouse.mkdir(parents=True, exist_ok=True)
    fd = os.open(landing, OPEN_DIR)
    tmp = TempDir(warehouse, "01OWNER")
    tmp.open()
    stop = threading.Event()
    try:
        yield Site(landing, warehouse, fd, tmp, stop, Mover(fd, warehouse, tmp, stop))
    finally:
        tmp.close()
        os.close(fd)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with make_site(tmp_path / "landing", tmp_path / "warehouse") as s:
        yield s


@pytest.fixture
def cross_fs(tmp_path: Path) -> Iterator[Site]:
    """Landing on /dev/shm (tmpfs), warehouse on the test filesystem."""
    with shm_dir(tmp_path) as shm, make_site(shm / "landing", tmp_path / "warehouse") as s:
        yield s


@pytest.fixture(params=["same_fs", "cross_fs"])
def any_site(request: pytest.FixtureRequest) -> Site:
    return request.getfixturevalue("site" if request.param == "same_fs" else "cross_fs")


# ---------------------------------------------------------------- landing


def test_same_filesystem_is_a_rename(site: Site) -> None:
    src = site.put("a/b/data.csv", b"payload")
    ino = src.stat().st_ino
    rec = site.plan("a/b/data.csv")
    res = site.one(rec)
    assert (res.outcome, res.changed, res.record) == (Moved.MOVED, None, rec)
    assert not src.exists()
    assert site.dest(rec).stat().st_ino == ino  # the same inode: renamed, not copied
    assert site.dest(rec).read_bytes() == b"payload"
    assert site.temps() == []


def test_other_filesystem_is_copied_and_verified(cross_fs: Site) -> None:
    data = os.urandom(3 * (1 << 20) + 5)
    src = cross_fs.put("x/big.bin", data)
    rec = cross_fs.plan("x/big.bin")  # no copy made while hashing: made now
    assert cross_fs.one(rec).outcome is Moved.MOVED
    assert cross_fs.dest(rec).read_bytes() == data
    assert not src.exists()
    assert cross_fs.temps() == []


def test_other_filesystem_uses_the_copy_made_while_hashing(cross_fs: Site) -> None:
    data = os.urandom(100_000)
    src = cross_fs.put("f.bin", data)
    rec = cross_fs.plan_digested("f.bin")
    assert rec.temp is not None
    tmp_ino = (cross_fs.tmp.path / rec.temp).stat().st_ino
    assert cross_fs.one(rec).outcome is Moved.MOVED
    assert cross_fs.dest(rec).stat().st_ino == tmp_ino
    assert cross_fs.dest(rec).read_bytes() == data
    assert not src.exists() and cross_fs.temps() == []


@pytest.mark.parametrize("digested", [False, True])
def test_hard_link_is_copied_never_renamed(site: Site, tmp_path: Path, digested: bool) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_bytes(b"shared inode")
    os.link(outside, site.landing / "linked.csv")
    rec = site.plan_digested("linked.csv") if digested else site.plan("linked.csv")
    assert site.one(rec).outcome is Moved.MOVED
    dest = site.dest(rec)
    assert dest.read_bytes() == b"shared inode"
    assert dest.stat().st_ino != outside.stat().st_ino  # the outside inode never enters the warehouse
    assert dest.stat().st_nlink == 1
    assert not (site.landing / "linked.csv").exists()  # the landing dir drains
    assert outside.read_bytes() == b"shared inode" and outside.stat().st_nlink == 1
    with open(outside, "ab") as fh:
        fh.write(b" changed outside")
    assert dest.read_bytes() == b"shared inode"
    assert site.temps() == []


def test_rename_exdev_on_one_filesystem_falls_back_to_a_copy(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two bind mounts of one filesystem: same st_dev, yet rename says EXDEV."""
    src = site.put("f.csv", b"payload")
    rec = site.plan("f.csv")
    real = move_mod.rename_noreplace
    calls: list[int] = []

    def exdev_from_landing(src_dir: int, s: str, dst_dir: int, d: str) -> None:
        calls.append(src_dir)
        if src_dir != site.tmp.fd:
            raise OSError(errno.EXDEV, "Invalid cross-device link", d)
        real(src_dir, s, dst_dir, d)

    monkeypatch.setattr(move_mod, "rename_noreplace", exdev_from_landing)
    assert site.one(rec).outcome is Moved.MOVED
    assert len(calls) == 2 and calls[1] == site.tmp.fd  # tried the rename, then placed a copy
    assert site.dest(rec).read_bytes() == b"payload"
    assert site.dest(rec).stat().st_ino != rec.identity.inode
    assert not src.exists() and site.temps() == []


@pytest.mark.parametrize("name", [NON_UTF8, LONG, f"sub/{NON_UTF8}"])
def test_hostile_names(any_site: Site, name: str) -> None:
    any_site.put(name, b"odd name")
    rec = any_site.plan(name)
    assert any_site.one(rec).outcome is Moved.MOVED
    assert any_site.dest(rec).read_bytes() == b"odd name"
    assert not (any_site.landing / name).exists()


def test_a_batch_lands_everything(any_site: Site) -> None:
    rels = [f"d{i % 3}/f{i}.csv" for i in range(12)]
    for i, rel in enumerate(rels):
        any_site.put(rel, b"%d" % i)
    recs = [any_site.plan(rel) for rel in rels]
    results = any_site.move(*recs)
    assert [r.outcome for r in results] == [Moved.MOVED] * 12
    assert [r.record.id for r in results] == [r.id for r in recs]
    assert len(any_site.warehouse_files()) == 12
    assert not any(p.is_file() for p in any_site.landing.rglob("*"))


def test_sidecar_is_removed_after_the_data_lands(any_site: Site) -> None:
    any_site.put("d/data.csv", b"rows")
    any_site.put("d/data.csv.ok", b"")
    rec = any_site.plan("d/data.csv", sidecar="d/data.csv.ok")
    assert any_site.one(rec).outcome is Moved.MOVED
    assert not (any_site.landing / "d/data.csv.ok").exists()
    assert any_site.warehouse_files() == [f"{DAY}/d/data.csv"]


# ---------------------------------------------------------------- never overwrite


def test_collision_with_other_content(any_site: Site) -> None:
    src = any_site.put("f.csv", b"mine")
    rec = any_site.plan_digested("f.csv")
    any_site.dest(rec).parent.mkdir(parents=True)
    any_site.dest(rec).write_bytes(b"theirs, longer")
    assert any_site.one(rec).outcome is Moved.COLLISION
    assert any_site.dest(rec).read_bytes() == b"theirs, longer"
    assert src.read_bytes() == b"mine"
    assert any_site.temps() == []


def test_collision_with_same_size_other_content(any_site: Site) -> None:
    src = any_site.put("f.csv", b"mine")
    rec = any_site.plan("f.csv")
    any_site.dest(rec).parent.mkdir(parents=True)
    any_site.dest(rec).write_bytes(b"MINE")
    assert any_site.one(rec).outcome is Moved.COLLISION
    assert any_site.dest(rec).read_bytes() == b"MINE" and src.read_bytes() == b"mine"


@pytest.mark.parametrize("digested", [False, True])
def test_rename_noreplace_wins_a_race_for_the_destination(
    any_site: Site, monkeypatch: pytest.MonkeyPatch, digested: bool
) -> None:
    """Someone creates the destination after it was checked: EEXIST, never an overwrite."""
    src = any_site.put("f.csv", b"mine")
    rec = any_site.plan_digested("f.csv") if digested else any_site.plan("f.csv")
    real = move_mod.rename_noreplace

    def racing(src_dir: int, s: str, dst_dir: int, d: str) -> None:
        os.close(os.open(d, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dst_dir))
        os.write(fd := os.open(d, os.O_WRONLY, dir_fd=dst_dir), b"racer")
        os.close(fd)
        real(src_dir, s, dst_dir, d)

    monkeypatch.setattr(move_mod, "rename_noreplace", racing)
    assert any_site.one(rec).outcome is Moved.COLLISION
    assert any_site.dest(rec).read_bytes() == b"racer"
    assert src.read_bytes() == b"mine"
    assert any_site.temps() == []


@pytest.mark.parametrize("kind", ["dir", "symlink"])
def test_something_not_a_file_at_the_destination_is_a_collision(any_site: Site, kind: str) -> None:
    """Even when its st_size happens to equal the file's size."""
    dest_rel = f"{DAY}/thing"
    (any_site.warehouse / DAY).mkdir()
    if kind == "dir":
        (any_site.warehouse / dest_rel).mkdir()
        size = (any_site.warehouse / dest_rel).stat().st_size
    else:
        target = "t" * 40
        (any_site.warehouse / dest_rel).symlink_to(target)
        size = len(target)
    src = any_site.put("thing", b"x" * size)
    rec = any_site.plan("thing", dest_rel)
    assert any_site.one(rec).outcome is Moved.COLLISION
    assert src.exists()


# ---------------------------------------------------------------- recovery: judged from the disk


def test_already_renamed_source_gone(site: Site) -> None:
    site.put("f.csv", b"landed")
    rec = site.plan("f.csv")
    assert site.one(rec).outcome is Moved.MOVED
    assert site.one(rec).outcome is Moved.ALREADY  # the same record, redone after a crash
    assert site.dest(rec).read_bytes() == b"landed"


def test_already_linked_both_names_exist(site: Site) -> None:
    """The link+unlink crash window: the destination is the source's inode."""
    src = site.put("f.csv", b"landed")
    rec = site.plan("f.csv")
    site.dest(rec).parent.mkdir(parents=True)
    os.link(src, site.dest(rec))
    assert site.one(rec).outcome is Moved.ALREADY
    assert not src.exists()
    assert site.dest(rec).read_bytes() == b"landed" and site.dest(rec).stat().st_nlink == 1


def test_already_copied_source_still_there(cross_fs: Site) -> None:
    """Crash after the copy was renamed into place, before the source was removed."""
    src = cross_fs.put("f.csv", b"copied")
    rec = cross_fs.plan("f.csv")
    cross_fs.dest(rec).parent.mkdir(parents=True)
    cross_fs.dest(rec).write_bytes(b"copied")
    assert cross_fs.one(rec).outcome is Moved.ALREADY
    assert not src.exists()
    assert cross_fs.dest(rec).read_bytes() == b"copied"


def test_already_copied_and_the_temporary_is_dropped(cross_fs: Site) -> None:
    cross_fs.put("f.csv", b"copied")
    rec = cross_fs.plan_digested("f.csv")
    cross_fs.dest(rec).parent.mkdir(parents=True)
    cross_fs.dest(rec).write_bytes(b"copied")
    assert cross_fs.one(rec).outcome is Moved.ALREADY
    assert cross_fs.temps() == []


def test_already_there_but_the_source_is_a_new_file_keeps_it(cross_fs: Site) -> None:
    src = cross_fs.put("f.csv", b"copied")
    rec = cross_fs.plan("f.csv")
    cross_fs.dest(rec).parent.mkdir(parents=True)
    cross_fs.dest(rec).write_bytes(b"copied")
    src.unlink()
    cross_fs.put("f.csv", b"a new upload with the same name")
    assert cross_fs.one(rec).outcome is Moved.ALREADY
    assert src.read_bytes() == b"a new upload with the same name"


def test_vanished(any_site: Site) -> None:
    any_site.put("f.csv")
    rec = any_site.plan_digested("f.csv")
    (any_site.landing / "f.csv").unlink()
    assert any_site.one(rec).outcome is Moved.VANISHED
    assert any_site.warehouse_files() == [] and any_site.temps() == []


def test_vanished_with_its_directory(site: Site) -> None:
    site.put("d/f.csv")
    rec = site.plan("d/f.csv")
    (site.landing / "d/f.csv").unlink()
    (site.landing / "d").rmdir()
    assert site.one(rec).outcome is Moved.VANISHED


@pytest.mark.parametrize("how", ["append", "replace"])
def test_changed_before_the_move(any_site: Site, how: str) -> None:
    src = any_site.put("f.csv", b"v1")
    rec = any_site.plan_digested("f.csv")
    if how == "append":
        with open(src, "ab") as fh:
            fh.write(b" and more")
    else:
        src.unlink()
        any_site.put("f.csv", b"v2")  # a new inode under the old name
    assert any_site.one(rec).outcome is Moved.CHANGED
    assert src.exists()
    assert any_site.warehouse_files() == [] and any_site.temps() == []


def rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """``dd conv=notrunc`` then ``touch -r``: only the ctime tells."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_copy_verifies_the_content_not_only_the_identity(cross_fs: Site) -> None:
    """Same size, same mtime, other bytes, and a record of an older ledger (no ctime):
    the identity matches, the SHA-256 does not."""
    src = cross_fs.put("f.csv", b"original")
    rec = cross_fs.plan("f.csv")
    rec = replace(rec, identity=replace(rec.identity, ctime_ns=0))
    rewrite_keeping_size_and_mtime(src, b"ORIGINAL")
    assert rec.identity.matches(os.lstat(src))
    assert cross_fs.one(rec).outcome is Moved.CHANGED
    assert src.read_bytes() == b"ORIGINAL"
    assert cross_fs.warehouse_files() == [] and cross_fs.temps() == []


def test_written_during_the_rename_is_reported(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that still holds the file open wrote after the hash: new identity and hash."""
    src = site.put("f.csv", b"v1")
    rec = site.plan("f.csv")
    real = move_mod.rename_noreplace

    def late_write(src_dir: int, s: str, dst_dir: int, d: str) -> None:
        with open(src, "ab") as fh:
            fh.write(b"+late")
        real(src_dir, s, dst_dir, d)

    monkeypatch.setattr(move_mod, "rename_noreplace", late_write)
    res = site.one(rec)
    assert res.outcome is Moved.MOVED and res.changed is not None
    ident, new_sha = res.changed
    assert new_sha == sha(b"v1+late")
    assert ident == Identity.of(os.stat(site.dest(rec)))
    assert ident.inode == rec.identity.inode and ident.size == 7


def test_a_source_changed_after_its_copy_is_not_removed(
    cross_fs: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = cross_fs.put("f.csv", b"v1")
    rec = cross_fs.plan_digested("f.csv")
    real = move_mod.rename_noreplace

    def then_write(src_dir: int, s: str, dst_dir: int, d: str) -> None:
        real(src_dir, s, dst_dir, d)
        with open(src, "ab") as fh:
            fh.write(b" v2")

    monkeypatch.setattr(move_mod, "rename_noreplace", then_write)
    assert cross_fs.one(rec).outcome is Moved.MOVED
    assert cross_fs.dest(rec).read_bytes() == b"v1"
    assert src.read_bytes() == b"v1 v2"  # a new file now: it stays to be landed in turn


# ---------------------------------------------------------------- duplicates


def test_quarantined_duplicate(any_site: Site) -> None:
    any_site.put("d/f.csv", b"dup")
    rec = any_site.plan("d/f.csv", f"_duplicates/{DAY}/d/f.csv", action=Action.QUARANTINED)
    assert any_site.one(rec).outcome is Moved.MOVED
    assert any_site.warehouse_files() == [f"_duplicates/{DAY}/d/f.csv"]
    assert not (any_site.landing / "d/f.csv").exists()


def test_deleted_duplicate(any_site: Site) -> None:
    any_site.put("f.csv", b"dup")
    any_site.put("f.csv.ok", b"")
    rec = any_site.plan_digested("f.csv", None)
    rec = replace(
        rec, action=Action.DELETED, status=Status.DUPLICATE, duplicate_of="01O", sidecar_rel="f.csv.ok"
    )
    assert any_site.one(rec).outcome is Moved.MOVED
    assert list(any_site.landing.iterdir()) == []
    assert any_site.warehouse_files() == [] and any_site.temps() == []
    assert any_site.one(rec).outcome is Moved.ALREADY  # redone after a crash


def test_deleted_duplicate_that_changed_is_kept(any_site: Site) -> None:
    src = any_site.put("f.csv", b"dup")
    rec = any_site.plan("f.csv", None, action=Action.DELETED)
    with open(src, "ab") as fh:
        fh.write(b"+new")
    assert any_site.one(rec).outcome is Moved.CHANGED
    assert src.read_bytes() == b"dup+new"


def test_kept_duplicate_is_left_alone(any_site: Site) -> None:
    src = any_site.put("f.csv", b"dup")
    rec = any_site.plan_digested("f.csv", None)
    rec = replace(rec, action=Action.KEPT, status=Status.DUPLICATE, duplicate_of="01O")
    assert any_site.one(rec).outcome is Moved.MOVED
    assert src.read_bytes() == b"dup"
    assert any_site.warehouse_files() == [] and any_site.temps() == []


# ---------------------------------------------------------------- durability order


def _record_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real_fsync, real_unlink = os.fsync, os.unlink

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        where = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
        calls.append(("unlink", os.path.join(where, os.fsdecode(path))))
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "unlink", unlink)
    return calls


def test_copy_is_durable_before_its_source_is_removed(
    cross_fs: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    cross_fs.put("in/f.csv", b"x")
    rec = cross_fs.plan("in/f.csv", f"{DAY}/deep/er/f.csv")
    calls = _record_calls(monkeypatch)
    assert cross_fs.one(rec).outcome is Moved.MOVED
    monkeypatch.undo()
    wh, land = str(cross_fs.warehouse), str(cross_fs.landing)
    dest_dir = ("fsync", f"{wh}/{DAY}/deep/er")
    unlink = ("unlink", f"{land}/in/f.csv")
    src_dir = ("fsync", f"{land}/in")
    assert dest_dir in calls and unlink in calls and src_dir in calls, calls
    assert calls.index(dest_dir) < calls.index(unlink) < calls.index(src_dir)
    for parent in (wh, f"{wh}/{DAY}", f"{wh}/{DAY}/deep"):  # the new directories' entries too
        assert calls.index(("fsync", parent)) < calls.index(unlink)


def test_rename_syncs_both_directories(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.put("in/f.csv", b"x")
    rec = site.plan("in/f.csv")
    calls = _record_calls(monkeypatch)
    assert site.one(rec).outcome is Moved.MOVED
    monkeypatch.undo()
    assert ("fsync", f"{site.warehouse}/{DAY}/in") in calls
    assert ("fsync", f"{site.landing}/in") in calls


# ---------------------------------------------------------------- failures


@pytest.fixture
def full_warehouse(tmp_path: Path) -> Iterator[Site]:
    """The warehouse on a 64 KiB tmpfs: another filesystem, and a small one."""
    with tiny_tmpfs(tmp_path / "wh", "64k") as wh, make_site(tmp_path / "landing", wh) as s:
        yield s


def test_disk_full_during_the_copy(full_warehouse: Site) -> None:
    data = os.urandom(200_000)
    src = full_warehouse.put("big.bin", data)
    full_warehouse.put("small.csv", b"fits")
    small = full_warehouse.plan("small.csv")
    big = full_warehouse.plan("big.bin")
    with pytest.raises(Retryable) as info:
        full_warehouse.move(small, big)
    assert "disk full" in info.value.hint
    assert src.read_bytes() == data  # the source stays
    assert full_warehouse.temps() == []  # nothing half-written is left
    assert not full_warehouse.dest(big).exists()
    # the retry of the same batch: the small one is recognised, the big one still does not fit
    with pytest.raises(Retryable):
        full_warehouse.move(small, big)
    assert full_warehouse.dest(small).read_bytes() == b"fits"
    assert full_warehouse.temps() == []


def test_stop_during_a_copy(cross_fs: Site) -> None:
    src = cross_fs.put("big.bin", os.urandom(3 * (1 << 20)))
    rec = cross_fs.plan("big.bin")
    cross_fs.stop.set()
    with pytest.raises(Stopping):
        cross_fs.one(rec)
    assert src.exists() and cross_fs.temps() == [] and cross_fs.warehouse_files() == []


def test_a_symlink_in_the_warehouse_is_not_followed(site: Site, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (site.warehouse / DAY).symlink_to(outside)
    src = site.put("f.csv", b"x")
    rec = site.plan("f.csv")
    # a symlink where a directory goes is not a directory: re-planned around, never entered
    assert site.one(rec).outcome is Moved.COLLISION
    assert list(outside.iterdir()) == []
    assert src.exists()


def _swap_for_symlink(landing: Path, component: str, outside: Path, rel_inside: str) -> None:
    """Replace ``landing/component`` (a directory) by a symlink to ``outside``, which holds
    the same file at ``rel_inside``."""
    (outside / rel_inside).parent.mkdir(parents=True, exist_ok=True)
    (outside / rel_inside).write_bytes(b"hashed")
    os.rename(landing / component, landing.parent / "moved-away")
    (landing / component).symlink_to(outside)


@pytest.mark.parametrize(
    ("rel", "component", "rel_inside"),
    [
        ("d/f.csv", "d", "f.csv"),
        ("a/d/f.csv", "a", "d/f.csv"),
    ],
)
def test_a_source_directory_swapped_for_a_symlink(
    site: Site, tmp_path: Path, rel: str, component: str, rel_inside: str
) -> None:
    """After hashing, a source directory becomes a symlink to a directory outside: that record
    is not the hashed file any more (VANISHED); the rest of the batch lands; nothing outside moves."""
    site.put("ok.csv", b"fine")
    site.put(rel, b"hashed")
    good, swapped = site.plan("ok.csv"), site.plan(rel)
    outside = tmp_path / "outside"
    _swap_for_symlink(site.landing, component, outside, rel_inside)
    results = {r.record.id: r.outcome for r in site.move(good, swapped)}
    assert results[good.id] is Moved.MOVED
    assert results[swapped.id] in (Moved.VANISHED, Moved.CHANGED)
    assert (outside / rel_inside).read_bytes() == b"hashed"
    assert site.warehouse_files() == [f"{DAY}/ok.csv"]


@pytest.mark.parametrize(
    ("rel", "component", "rel_inside"), [("d/f.csv", "d", "f.csv"), ("a/d/f.csv", "a", "d/f.csv")]
)
def test_a_source_directory_swapped_for_a_symlink_is_never_followed(
    site: Site, tmp_path: Path, rel: str, component: str, rel_inside: str
) -> None:
    """Whatever the outcome, the file outside is neither moved nor removed."""
    site.put(rel, b"hashed")
    rec = site.plan(rel)
    outside = tmp_path / "outside"
    _swap_for_symlink(site.landing, component, outside, rel_inside)
    assert site.one(rec).outcome in (Moved.VANISHED, Moved.CHANGED)
    assert (outside / rel_inside).read_bytes() == b"hashed"
    assert site.warehouse_files() == []


def test_a_file_where_a_destination_directory_goes_is_left_alone(site: Site) -> None:
    (site.warehouse / DAY).mkdir()
    (site.warehouse / DAY / "reports").write_bytes(b"an earlier file")
    src = site.put("reports/q1.csv", b"q1")
    rec = site.plan("reports/q1.csv")
    try:
        outcome = site.one(rec).outcome
    except Retryable:
        outcome = None
    assert outcome in (None, Moved.COLLISION)
    assert (site.warehouse / DAY / "reports").read_bytes() == b"an earlier file"
    assert src.read_bytes() == b"q1"


def test_move_closes_its_descriptors_on_error(full_warehouse: Site) -> None:
    before = set(os.listdir("/proc/self/fd"))
    full_warehouse.put("a/big.bin", os.urandom(200_000))
    rec = full_warehouse.plan("a/big.bin")
    with pytest.raises(Retryable):
        full_warehouse.one(rec)
    assert set(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (Gone("open", "x", "vanished"), Moved.VANISHED),
        (BadInput("open", "x", "Permission denied"), Moved.CHANGED),
    ],
)
def test_a_source_lost_during_its_copy_fails_that_record_only(
    cross_fs: Site, monkeypatch: pytest.MonkeyPatch, error: Exception, outcome: Moved
) -> None:
    """A copy made at move time (recovery) whose source vanishes or turns unreadable:
    that record gets an outcome, the rest of the batch lands, nothing is raised."""
    cross_fs.put("ok.csv", b"fine")
    cross_fs.put("lost.csv", b"lost")
    good, lost = cross_fs.plan("ok.csv"), cross_fs.plan("lost.csv")
    real_copy = cross_fs.mover._copy

    def copy(sfd: int, name: str, rec: Record) -> str | None:
        if name == "lost.csv":
            raise error
        return real_copy(sfd, name, rec)

    monkeypatch.setattr(cross_fs.mover, "_copy", copy)
    results = {r.record.id: r.outcome for r in cross_fs.move(good, lost)}
    assert results == {good.id: Moved.MOVED, lost.id: outcome}


@pytest.mark.parametrize("layout", ["same_fs", "cross_fs"])
def test_a_change_that_keeps_size_and_mtime_is_caught_before_the_move(
    site: Site, cross_fs: Site, layout: str
) -> None:
    """Before: the identity (size, mtime) matched, the file moved, and the manifest recorded
    the hash of content the warehouse file did not hold. Now the ctime tells."""
    where = site if layout == "same_fs" else cross_fs
    src = where.put("f.csv", b"original")
    rec = where.plan_digested("f.csv")
    rewrite_keeping_size_and_mtime(src, b"ORIGINAL")
    assert not rec.identity.matches(os.lstat(src))
    assert where.one(rec).outcome is Moved.CHANGED
    assert src.read_bytes() == b"ORIGINAL"  # stays, and is judged again as the file it is now
    assert where.warehouse_files() == [] and where.temps() == []
