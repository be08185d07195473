"""fsops.py: open below a root without symlinks, rename without replacing, durable mkdir, TempDir."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestor import fsops
from ingestor.fsops import (
    OPEN_DATA,
    OPEN_DIR,
    TempDir,
    fsync_dir,
    makedirs_durable,
    open_beneath,
    rename_noreplace,
    stat_at,
)
from tests.data_fs import shm_dir

NON_UTF8 = os.fsdecode(b"n\xff\xfe.bin")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """landing/ with a/b/f.txt, a/link-dir → a/b, a/link-file → a/b/f.txt; secret/ outside it."""
    landing = tmp_path / "landing"
    (landing / "a" / "b").mkdir(parents=True)
    (landing / "a" / "b" / "f.txt").write_bytes(b"inside")
    (landing / "a" / "link-dir").symlink_to("b")
    (landing / "a" / "link-file").symlink_to("b/f.txt")
    (landing / "escape").symlink_to(tmp_path / "secret")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "s.txt").write_bytes(b"secret")
    return landing


@pytest.fixture
def root_fd(root: Path) -> Iterator[int]:
    fd = os.open(root, OPEN_DIR)
    yield fd
    os.close(fd)


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with openat2 and with the component-walk fallback."""
    monkeypatch.setattr(fsops, "_have_openat2", request.param == "openat2" and fsops._SYS_OPENAT2 is not None)
    if request.param == "openat2" and not fsops._have_openat2:
        pytest.skip("no openat2 on this machine")
    return str(request.param)


def read_fd(fd: int) -> bytes:
    try:
        return os.pread(fd, 1 << 16, 0)
    finally:
        os.close(fd)


def open_errno(root_fd: int, rel: str, flags: int = OPEN_DATA) -> int:
    with pytest.raises(OSError) as info:
        fd = open_beneath(root_fd, rel, flags)
        os.close(fd)  # pragma: no cover - only reached when the test fails
    assert info.value.errno is not None
    return info.value.errno


# ---------------------------------------------------------------- open_beneath


def test_opens_a_nested_file(root: Path, root_fd: int, resolver: str) -> None:
    fd = open_beneath(root_fd, "a/b/f.txt")
    assert os.fstat(fd).st_ino == (root / "a/b/f.txt").stat().st_ino
    assert read_fd(fd) == b"inside"
    assert fsops._have_openat2 is (resolver == "openat2")


def test_opens_a_directory(root: Path, root_fd: int, resolver: str) -> None:
    fd = open_beneath(root_fd, "a/b", OPEN_DIR)
    try:
        assert os.listdir(fd) == ["f.txt"]
    finally:
        os.close(fd)


@pytest.mark.parametrize("rel", ["", "."])
def test_empty_means_the_root_itself(root: Path, root_fd: int, rel: str) -> None:
    fd = open_beneath(root_fd, rel, OPEN_DIR)
    try:
        assert os.fstat(fd).st_ino == root.stat().st_ino
    finally:
        os.close(fd)


def test_a_file_in_the_root_itself(root: Path, root_fd: int, resolver: str) -> None:
    """One component: opened directly, still never through a symlink (``escape`` is one)."""
    (root / "top.txt").write_bytes(b"top")
    assert read_fd(open_beneath(root_fd, "top.txt")) == b"top"
    assert open_errno(root_fd, "escape") == errno.ELOOP
    assert open_errno(root_fd, "nope.txt") == errno.ENOENT


def test_non_utf8_name(root: Path, root_fd: int, resolver: str) -> None:
    (root / "a" / NON_UTF8).write_bytes(b"latin")
    assert read_fd(open_beneath(root_fd, f"a/{NON_UTF8}")) == b"latin"


@pytest.mark.parametrize("rel", ["a/link-file", "escape"])
def test_symlink_last_component_is_refused_with_eloop(root_fd: int, resolver: str, rel: str) -> None:
    assert open_errno(root_fd, rel) == errno.ELOOP


def test_symlink_in_a_middle_component_is_refused(root_fd: int, resolver: str) -> None:
    """Even one that stays inside the root, and one that leads outside."""
    for rel in ("a/link-dir/f.txt", "escape/s.txt"):
        assert open_errno(root_fd, rel) in (errno.ELOOP, errno.ENOTDIR)


@pytest.mark.parametrize(
    "mode",
    [
        "openat2",
        "walk",
    ],
)
def test_symlink_in_a_middle_component_is_eloop(
    root_fd: int, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The contract says ELOOP: digest turns ELOOP into BadInput, but ENOTDIR into Gone('vanished')."""
    monkeypatch.setattr(fsops, "_have_openat2", mode == "openat2")
    assert open_errno(root_fd, "a/link-dir/f.txt") == errno.ELOOP
    assert open_errno(root_fd, "escape/s.txt") == errno.ELOOP


@pytest.mark.parametrize(
    "rel", ["..", "../secret/s.txt", "a/../../secret/s.txt", "/etc/passwd", "a/b/../../.."]
)
def test_dotdot_and_absolute_escapes_are_refused(root_fd: int, resolver: str, rel: str) -> None:
    assert open_errno(root_fd, rel) == errno.EXDEV


def test_missing_and_not_a_directory(root_fd: int, resolver: str) -> None:
    assert open_errno(root_fd, "a/nope.txt") == errno.ENOENT
    assert open_errno(root_fd, "nope/f.txt") == errno.ENOENT
    assert open_errno(root_fd, "a/b/f.txt/x") == errno.ENOTDIR


def test_fifo_opens_without_blocking(root: Path, root_fd: int, resolver: str) -> None:
    os.mkfifo(root / "a" / "fifo")
    fd = open_beneath(root_fd, "a/fifo")  # O_NONBLOCK: no writer needed
    try:
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def test_falls_back_to_the_walk_without_openat2(root_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsops, "_have_openat2", True)
    monkeypatch.setattr(fsops, "_SYS_OPENAT2", 1_000_000)  # no such syscall: ENOSYS
    assert read_fd(open_beneath(root_fd, "a/b/f.txt")) == b"inside"
    assert fsops._have_openat2 is False
    assert open_errno(root_fd, "a/link-file") == errno.ELOOP


def test_walk_leaves_no_descriptor_open_on_failure(root_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsops, "_have_openat2", False)
    before = set(os.listdir("/proc/self/fd"))
    for rel in ("a/b/nope", "a/link-dir/f.txt", "a/b/f.txt/x", "a/b/../f.txt"):
        open_errno(root_fd, rel)
    assert set(os.listdir("/proc/self/fd")) == before


# ---------------------------------------------------------------- stat_at, fsync_dir


def test_stat_at(root: Path, root_fd: int) -> None:
    assert stat_at(root_fd, "nope") is None
    st = stat_at(root_fd, "escape")
    assert st is not None and stat.S_ISLNK(st.st_mode)  # lstat: never followed


def test_fsync_dir(root: Path) -> None:
    fsync_dir(root)
    fsync_dir(str(root / "a"))
    with pytest.raises(OSError):
        fsync_dir(root / "a" / "link-dir")  # never through a symlink


# ---------------------------------------------------------------- rename_noreplace


@pytest.fixture(params=["renameat2", "link+unlink"])
def renamer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "link+unlink":
        monkeypatch.setattr(fsops, "_have_renameat2", False)
    elif not fsops._have_renameat2:
        pytest.skip("no renameat2 in this libc")
    return str(request.param)


@pytest.fixture
def two_dirs(tmp_path: Path) -> Iterator[tuple[Path, int, Path, int]]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    sfd, dfd = os.open(src, OPEN_DIR), os.open(dst, OPEN_DIR)
    yield src, sfd, dst, dfd
    os.close(sfd)
    os.close(dfd)


def test_rename_moves_the_inode(two_dirs: tuple[Path, int, Path, int], renamer: str) -> None:
    src, sfd, dst, dfd = two_dirs
    (src / NON_UTF8).write_bytes(b"data")
    ino = (src / NON_UTF8).stat().st_ino
    rename_noreplace(sfd, NON_UTF8, dfd, "x" * 255)
    assert not (src / NON_UTF8).exists()
    assert (dst / ("x" * 255)).stat().st_ino == ino
    assert (dst / ("x" * 255)).stat().st_nlink == 1


def test_rename_never_replaces(two_dirs: tuple[Path, int, Path, int], renamer: str) -> None:
    src, sfd, dst, dfd = two_dirs
    (src / "f").write_bytes(b"new")
    (dst / "f").write_bytes(b"landed before")
    with pytest.raises(OSError) as info:
        rename_noreplace(sfd, "f", dfd, "f")
    assert info.value.errno == errno.EEXIST
    assert (dst / "f").read_bytes() == b"landed before"
    assert (src / "f").read_bytes() == b"new"
    assert (src / "f").stat().st_nlink == 1


def test_rename_never_replaces_a_symlink(two_dirs: tuple[Path, int, Path, int], renamer: str) -> None:
    src, sfd, dst, dfd = two_dirs
    (src / "f").write_bytes(b"new")
    (dst / "f").symlink_to("/nonexistent")
    with pytest.raises(OSError) as info:
        rename_noreplace(sfd, "f", dfd, "f")
    assert info.value.errno == errno.EEXIST
    assert os.readlink(dst / "f") == "/nonexistent"


def test_rename_falls_back_when_the_flag_is_unsupported(
    two_dirs: tuple[Path, int, Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL from renameat2 (a filesystem without RENAME_NOREPLACE): link + unlink, same guarantee."""
    src, sfd, dst, dfd = two_dirs
    calls: list[bytes] = []

    def renameat2(_sd: int, s: bytes, _dd: int, _d: bytes, _flags: int) -> int:
        calls.append(s)
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(fsops, "_have_renameat2", True)
    monkeypatch.setattr(fsops._libc, "renameat2", renameat2)
    (src / "a").write_bytes(b"a")
    (src / "b").write_bytes(b"b")
    (dst / "b").write_bytes(b"old")
    rename_noreplace(sfd, "a", dfd, "a")
    assert (dst / "a").read_bytes() == b"a" and not (src / "a").exists()
    with pytest.raises(FileExistsError):
        rename_noreplace(sfd, "b", dfd, "b")
    assert (dst / "b").read_bytes() == b"old" and (src / "b").read_bytes() == b"b"
    assert calls == [b"a", b"b"]


def test_rename_across_filesystems_is_exdev(tmp_path: Path, renamer: str) -> None:
    with shm_dir(tmp_path) as other:
        (tmp_path / "f").write_bytes(b"x")
        sfd, dfd = os.open(tmp_path, OPEN_DIR), os.open(other, OPEN_DIR)
        try:
            with pytest.raises(OSError) as info:
                rename_noreplace(sfd, "f", dfd, "f")
        finally:
            os.close(sfd)
            os.close(dfd)
        assert info.value.errno == errno.EXDEV
        assert (tmp_path / "f").read_bytes() == b"x"
        assert not (other / "f").exists()


def test_rename_on_tmpfs(tmp_path: Path, renamer: str) -> None:
    with shm_dir(tmp_path) as d:
        (d / "f").write_bytes(b"x")
        (d / "g").write_bytes(b"y")
        fd = os.open(d, OPEN_DIR)
        try:
            with pytest.raises(FileExistsError):
                rename_noreplace(fd, "f", fd, "g")
            rename_noreplace(fd, "f", fd, "h")
        finally:
            os.close(fd)
        assert sorted(os.listdir(d)) == ["g", "h"]
        assert (d / "g").read_bytes() == b"y"


# ---------------------------------------------------------------- makedirs_durable


def test_makedirs_reports_the_parents_it_changed(tmp_path: Path) -> None:
    assert makedirs_durable(tmp_path, "") == []
    assert makedirs_durable(tmp_path, "a/b/c") == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    assert (tmp_path / "a/b/c").is_dir()
    assert makedirs_durable(tmp_path, "a/b/c") == []
    assert makedirs_durable(tmp_path, "a/x") == [tmp_path / "a"]


def test_makedirs_refuses_a_symlink_or_a_file_component(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    wh = tmp_path / "wh"
    wh.mkdir()
    (wh / "link").symlink_to(outside)
    (wh / "file").write_bytes(b"")
    for rel in ("link/sub", "link", "file/sub"):
        with pytest.raises(OSError) as info:
            makedirs_durable(wh, rel)
        assert info.value.errno == errno.ENOTDIR
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------- TempDir


@pytest.fixture
def tmpdir_(tmp_path: Path) -> Iterator[TempDir]:
    t = TempDir(tmp_path / "wh", "OWNERA")
    t.open()
    yield t
    t.close()


def test_tempdir_lives_in_the_warehouse(tmpdir_: TempDir, tmp_path: Path) -> None:
    assert tmpdir_.path == tmp_path / "wh" / ".ingestor-tmp"
    assert tmpdir_.path.is_dir()
    assert os.fstat(tmpdir_.fd).st_ino == tmpdir_.path.stat().st_ino


def test_tempdir_create_and_remove(tmpdir_: TempDir) -> None:
    name, fd = tmpdir_.create()
    try:
        os.write(fd, b"copy")
    finally:
        os.close(fd)
    assert name == "OWNERA-1"
    assert (tmpdir_.path / name).read_bytes() == b"copy"
    name2, fd2 = tmpdir_.create()
    os.close(fd2)
    assert name2 == "OWNERA-2"
    tmpdir_.remove(name)
    tmpdir_.remove(name)  # idempotent
    assert sorted(os.listdir(tmpdir_.path)) == ["OWNERA-2"]


def test_tempdir_names_are_unique_across_threads(tmpdir_: TempDir) -> None:
    names: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            name, fd = tmpdir_.create()
            os.close(fd)
            with lock:
                names.append(name)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 200 == len(os.listdir(tmpdir_.path))


def test_tempdir_never_opens_an_existing_name(tmpdir_: TempDir) -> None:
    (tmpdir_.path / "OWNERA-1").symlink_to("/etc/passwd")
    with pytest.raises(FileExistsError):
        tmpdir_.create()


def test_tempdir_owners_and_remove_owner(tmpdir_: TempDir, tmp_path: Path) -> None:
    other = TempDir(tmp_path / "wh", "OWNERB")
    other.open()
    try:
        for t in (tmpdir_, tmpdir_, other):
            os.close(t.create()[1])
        assert tmpdir_.owners() == {"OWNERA", "OWNERB"}
        assert tmpdir_.remove_owner("OWNERB") == 1
        assert tmpdir_.remove_owner("OWNERB") == 0
        assert sorted(os.listdir(tmpdir_.path)) == ["OWNERA-1", "OWNERA-2"]
        assert tmpdir_.owners() == {"OWNERA"}
    finally:
        other.close()
    other.close()  # idempotent
