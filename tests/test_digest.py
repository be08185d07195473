"""digest.py: a candidate → identity + SHA-256 through one descriptor; a copy when it cannot be renamed."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingestor import digest as digest_mod
from ingestor import fsops
from ingestor.digest import digest, hash_at, hash_fd
from ingestor.errors import BadInput, Gone, Retryable, Stopping
from ingestor.fsops import OPEN_DIR, TempDir
from ingestor.records import Candidate, Hashed, Identity
from tests.data_fs import shm_dir, tiny_tmpfs

NON_UTF8 = os.fsdecode(b"r\xe9sum\xe9-\xff.csv")
LONG = "l" * 251 + ".csv"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Site:
    landing: Path
    warehouse: Path
    root_fd: int
    tmp: TempDir
    stop: threading.Event

    def digest(self, rel: str, before_read: Callable[[str, Identity], bool] | None = None) -> Hashed | None:
        return digest(
            self.root_fd,
            Candidate(rel, 0, 0.0),
            warehouse_dev=os.stat(self.warehouse).st_dev,
            tmp=self.tmp,
            stop=self.stop,
            before_read=before_read,
        )

    def temps(self) -> list[str]:
        return sorted(os.listdir(self.tmp.path))

    def put(self, rel: str, data: bytes) -> Path:
        path = self.landing / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


@contextmanager
def make_site(landing: Path, warehouse: Path) -> Iterator[Site]:
    landing.mkdir(parents=True, exist_ok=True)
    warehouse.mkdir(parents=True, exist_ok=True)
    fd = os.open(landing, OPEN_DIR)
    tmp = TempDir(warehouse, "OWNER")
    tmp.open()
    try:
        yield Site(landing, warehouse, fd, tmp, threading.Event())
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


# ---------------------------------------------------------------- hashing in place


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, (1 << 20) - 1, 1 << 20, 3 * (1 << 20) + 123])
def test_hash_and_identity(site: Site, size: int) -> None:
    data = os.urandom(size)
    path = site.put("d/f.bin", data)
    h = site.digest("d/f.bin")
    assert h is not None
    assert h.sha256 == sha(data)
    assert h.identity == Identity.of(os.stat(path))
    assert h.temp is None  # same filesystem, one link: it will be renamed
    assert h.candidate.rel == "d/f.bin"
    assert site.temps() == []


@pytest.mark.parametrize("rel", [NON_UTF8, LONG, f"sub/{NON_UTF8}"])
def test_hostile_names(site: Site, rel: str) -> None:
    site.put(rel, b"abc")
    h = site.digest(rel)
    assert h is not None and h.sha256 == sha(b"abc")


def test_missing_is_gone(site: Site) -> None:
    with pytest.raises(Gone) as info:
        site.digest("nope.csv")
    assert info.value.cause == "vanished"


# ---------------------------------------------------------------- hostile inputs


def test_symlink_is_bad_input_and_not_followed(site: Site, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"secret")
    (site.landing / "link.csv").symlink_to(tmp_path / "secret")
    with pytest.raises(BadInput):
        site.digest("link.csv")


@pytest.mark.parametrize(
    "mode",
    [
        "openat2",
        "walk",
    ],
)
def test_symlinked_directory_is_bad_input(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """landing/sub → /outside: never read, and reported (BadInput), not forgotten as vanished."""
    monkeypatch.setattr(fsops, "_have_openat2", mode == "openat2")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "s.csv").write_bytes(b"secret")
    (site.landing / "sub").symlink_to(tmp_path / "outside")
    with pytest.raises(BadInput):
        site.digest("sub/s.csv")


@pytest.mark.parametrize("rel", ["../outside.csv", "a/../../outside.csv", "/etc/hostname"])
def test_escapes_are_bad_input(site: Site, tmp_path: Path, rel: str) -> None:
    (tmp_path / "outside.csv").write_bytes(b"x")
    (site.landing / "a").mkdir()
    with pytest.raises(BadInput):
        site.digest(rel)


def test_directory_is_bad_input(site: Site) -> None:
    (site.landing / "d").mkdir()
    with pytest.raises(BadInput, match="not a regular file"):
        site.digest("d")


def test_socket_is_bad_input(site: Site) -> None:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(site.landing / "s.sock"))
        with pytest.raises(BadInput):
            site.digest("s.sock")
    finally:
        sock.close()


def test_fifo_is_bad_input_and_does_not_hang(tmp_path: Path) -> None:
    """In a child process with a deadline: a regression would hang the open forever."""
    landing = tmp_path / "landing"
    landing.mkdir()
    os.mkfifo(landing / "pipe.csv")
    code = textwrap.dedent(
        f"""
        import os, threading
        from pathlib import Path
        from ingestor.digest import digest
        from ingestor.errors import BadInput
        from ingestor.fsops import TempDir
        from ingestor.records import Candidate
        fd = os.open({str(landing)!r}, os.O_RDONLY | os.O_DIRECTORY)
        tmp = TempDir(Path({str(tmp_path / "wh")!r}), "O")
        tmp.open()
        try:
            digest(fd, Candidate("pipe.csv", 0, 0.0), warehouse_dev=0, tmp=tmp, stop=threading.Event())
        except BadInput as exc:
            print("BadInput:", exc.cause)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "BadInput: a FIFO: never opened"
    assert os.listdir(tmp_path / "wh" / ".ingestor-tmp") == []  # not even a temporary for it


# ---------------------------------------------------------------- copies


def test_hard_link_is_copied_while_hashed(site: Site, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(data)
    os.link(outside, site.landing / "f.bin")
    h = site.digest("f.bin")
    assert h is not None and h.temp is not None
    assert h.sha256 == sha(data)
    copy = site.tmp.path / h.temp
    assert copy.read_bytes() == data
    assert copy.stat().st_ino != outside.stat().st_ino
    assert outside.stat().st_nlink == 2  # digest never changes the source
    assert h.identity == Identity.of(os.stat(outside))


def test_other_filesystem_is_copied_while_hashed(cross_fs: Site) -> None:
    data = os.urandom(2 * (1 << 20) + 7)
    cross_fs.put("x/f.bin", data)
    h = cross_fs.digest("x/f.bin")
    assert h is not None and h.temp is not None
    assert h.sha256 == sha(data)
    assert (cross_fs.tmp.path / h.temp).read_bytes() == data
    assert cross_fs.temps() == [h.temp]
    assert (cross_fs.landing / "x/f.bin").read_bytes() == data


def test_copy_of_a_non_utf8_name(cross_fs: Site) -> None:
    cross_fs.put(NON_UTF8, b"latin")
    h = cross_fs.digest(NON_UTF8)
    assert h is not None and h.temp is not None
    assert (cross_fs.tmp.path / h.temp).read_bytes() == b"latin"


# ---------------------------------------------------------------- before_read, changes, stop


def test_before_read_false_skips_the_read(cross_fs: Site) -> None:
    path = cross_fs.put("f.bin", b"data")
    seen: list[tuple[str, Identity]] = []

    def ask(rel: str, ident: Identity) -> bool:
        seen.append((rel, ident))
        return False

    assert cross_fs.digest("f.bin", ask) is None
    assert seen == [("f.bin", Identity.of(os.stat(path)))]
    assert cross_fs.temps() == []


def test_before_read_raising_is_passed_on(site: Site) -> None:
    site.put("f.bin", b"data")

    def ask(rel: str, ident: Identity) -> bool:
        raise Gone("hash", rel, "changed since it was judged complete")

    with pytest.raises(Gone):
        site.digest("f.bin", ask)


def _appender(path: Path) -> Callable[[str, Identity], bool]:
    def ask(rel: str, ident: Identity) -> bool:
        with open(path, "ab") as fh:
            fh.write(b"more")
        return True

    return ask


def _truncater(path: Path) -> Callable[[str, Identity], bool]:
    def ask(rel: str, ident: Identity) -> bool:
        os.truncate(path, 10)
        return True

    return ask


def _toucher(path: Path) -> Callable[[str, Identity], bool]:
    def ask(rel: str, ident: Identity) -> bool:
        os.utime(path, ns=(ident.mtime_ns + 10**9, ident.mtime_ns + 10**9))
        return True

    return ask


@pytest.mark.parametrize("change", [_appender, _truncater, _toucher])
@pytest.mark.parametrize("where", ["same_fs", "cross_fs"])
def test_changed_while_hashed_is_gone_and_leaves_no_temporary(
    request: pytest.FixtureRequest, change: Callable[[Path], Callable[[str, Identity], bool]], where: str
) -> None:
    s: Site = request.getfixturevalue("site" if where == "same_fs" else "cross_fs")
    path = s.put("f.bin", os.urandom(100_000))
    with pytest.raises(Gone, match="changed while being hashed"):
        s.digest("f.bin", change(path))
    assert s.temps() == []


def test_stop_interrupts_and_leaves_no_temporary(cross_fs: Site) -> None:
    cross_fs.put("big.bin", os.urandom(3 * (1 << 20)))
    cross_fs.stop.set()
    with pytest.raises(Stopping):
        cross_fs.digest("big.bin")
    assert cross_fs.temps() == []


@pytest.fixture
def full_warehouse(tmp_path: Path) -> Iterator[Site]:
    """The warehouse on a 64 KiB tmpfs; the landing dir on the test filesystem."""
    with tiny_tmpfs(tmp_path / "wh", "64k") as wh, make_site(tmp_path / "landing", wh) as s:
        yield s


def test_disk_full_during_the_copy_is_retryable_and_leaves_no_temporary(full_warehouse: Site) -> None:
    data = os.urandom(200_000)
    full_warehouse.put("f.bin", data)
    os.link(full_warehouse.landing / "f.bin", full_warehouse.landing / "g.bin")  # two links: copied
    with pytest.raises(Retryable) as info:
        full_warehouse.digest("f.bin")
    assert "disk full" in info.value.hint
    assert full_warehouse.temps() == []
    assert (full_warehouse.landing / "f.bin").read_bytes() == data


# ---------------------------------------------------------------- hash_fd, hash_at


def test_hash_fd_with_a_sink_and_cache_dropping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest_mod, "DROP_CACHE_ABOVE", 0)
    monkeypatch.setattr(digest_mod, "_DROP_EVERY", 1 << 20)
    data = os.urandom(5 * (1 << 20) + 3)
    (tmp_path / "src").write_bytes(data)
    fd = os.open(tmp_path / "src", os.O_RDONLY)
    sink = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert hash_fd(fd, len(data), sink=sink) == sha(data)
    finally:
        os.close(fd)
        os.close(sink)
    assert (tmp_path / "dst").read_bytes() == data


def test_hash_fd_reads_past_the_stated_size(tmp_path: Path) -> None:
    """The size only sizes the buffer: a grown file is read to its end (and digest notices)."""
    (tmp_path / "f").write_bytes(b"x" * 10_000)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert hash_fd(fd, 10) == sha(b"x" * 10_000)
    finally:
        os.close(fd)


def test_hash_at(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    (tmp_path / "l").symlink_to("f")
    fd = os.open(tmp_path, OPEN_DIR)
    try:
        assert hash_at(fd, "f") == sha(b"abc")
        assert hash_at(fd, "missing") is None
        with pytest.raises(OSError):
            hash_at(fd, "l")  # never through a symlink
    finally:
        os.close(fd)


@pytest.mark.parametrize("drop", [False, True], ids=["cached", "dropped behind"])
def test_large_copy_is_pipelined_and_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drop: bool
) -> None:
    """Above PIPELINE_ABOVE the copy overlaps hashing and writing; bytes and hash must be exact."""
    import hashlib as _h

    from ingestor import digest as digest_mod

    if drop:  # the I/O thread drops what is hashed, every 1 MiB
        monkeypatch.setattr(digest_mod, "DROP_CACHE_ABOVE", 0)
        monkeypatch.setattr(digest_mod, "_DROP_EVERY", 1 << 20)
    monkeypatch.setattr(digest_mod, "COPY_CHUNK", 1 << 20)
    src = tmp_path / "big.bin"
    data = os.urandom(1 << 20) * 11 + b"tail"  # 11 MiB + 4 bytes: chunks of 1 MiB, a short last read
    src.write_bytes(data)
    dst = tmp_path / "copy.bin"
    fd = os.open(src, os.O_RDONLY)
    sink = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        sha = digest_mod.hash_fd(fd, len(data), sink=sink, name="big.bin")
    finally:
        os.close(fd)
        os.close(sink)
    assert len(data) >= digest_mod.PIPELINE_ABOVE
    assert sha == _h.sha256(data).hexdigest()
    assert dst.read_bytes() == data


class _RewriteOnFirstCheck(threading.Event):
    """The stop event a hash asks after every chunk: rewrites the file's second half the
    first time, keeping size and mtime (``dd conv=notrunc`` then ``touch -r``)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.done = False

    def is_set(self) -> bool:
        if not self.done:
            self.done = True
            st = self.path.stat()
            with open(self.path, "r+b") as fh:
                fh.seek(st.st_size // 2)
                fh.write(b"X" * (st.st_size - st.st_size // 2))
            os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return False


def test_a_rewrite_during_the_hash_that_keeps_size_and_mtime_is_caught(site: Site) -> None:
    """Before: size and mtime matched before and after the read, and the hash of half the old
    and half the new content was recorded. The ctime tells."""
    path = site.put("big.dat", b"a" * (3 << 20))  # read in 1 MiB chunks: the rewrite falls between two
    site.stop = _RewriteOnFirstCheck(path)
    with pytest.raises(Gone, match="changed while being hashed"):
        site.digest("big.dat")
    assert site.stop.done
