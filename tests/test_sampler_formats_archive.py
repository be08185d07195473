"""gzip (through the compressed-file sampler), zip and tar samplers against real (and hostile) archives."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from sampler.formats_archive import LISTING_NAME, sample_tar, sample_zip
from sampler.formats_compressed import sample_compressed
from sampler.limits import BoundedFile, Budget, CapReached, ErrorKind, Limits, SampleError
from sampler.paths import Kind


def _run(path: Path, limits: Limits, fn: str, **kw: object) -> tuple[bytes, object]:
    fd = os.open(path, os.O_RDONLY)
    try:
        f = BoundedFile(fd, os.fstat(fd).st_size, Budget(limits))
        out = io.BytesIO()
        if fn == "gzip":
            result = sample_compressed(f, out, limits, Kind.GZIP, kw.get("inner"))  # type: ignore[arg-type]
        elif fn == "zip":
            result = sample_zip(f, out, limits)
        else:
            result = sample_tar(f, out, limits, compressed=bool(kw.get("compressed")))
        return out.getvalue(), result
    finally:
        os.close(fd)


# --- gzip -----------------------------------------------------------------------


def test_csv_gz_keeps_records_and_is_valid_gzip(tmp_path: Path) -> None:
    data = b'h,t\n1,"a\nb"\n2,"c"\n3,d\n4,e\n'
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(data))
    out, result = _run(path, Limits(rows=2), "gzip", inner=Kind.CSV)
    assert gzip.decompress(out) == b'h,t\n1,"a\nb"\n2,"c"\n'
    assert result.rows == 2  # type: ignore[attr-defined]


def test_plain_gz_first_lines_across_members(tmp_path: Path) -> None:
    path = tmp_path / "log.gz"
    path.write_bytes(gzip.compress(b"a\nb\n") + gzip.compress(b"c\nd\ne\n"))
    out, _ = _run(path, Limits(rows=4), "gzip", inner=None)
    assert gzip.decompress(out) == b"a\nb\nc\nd\n"


def test_json_gz_uses_the_json_sampler(tmp_path: Path) -> None:
    path = tmp_path / "d.json.gz"
    path.write_bytes(gzip.compress(json.dumps(list(range(100))).encode()))
    out, _ = _run(path, Limits(rows=3), "gzip", inner=Kind.JSON)
    assert json.loads(gzip.decompress(out)) == [0, 1, 2]


def test_gzip_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gz"
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        block = b"\0" * (1 << 20)
        for _ in range(200):  # 200 MiB of zeros -> ~200 KB
            f.write(comp.compress(block))
        f.write(comp.flush())
    assert path.stat().st_size < 1 << 20
    with pytest.raises(CapReached):
        _run(path, Limits(rows=10, max_bytes=16 << 20), "gzip", inner=None)


def test_truncated_gzip_is_malformed(tmp_path: Path) -> None:
    data = gzip.compress(os.urandom(200_000).hex().encode())  # one long line, no newline
    path = tmp_path / "t.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleError) as err:
        _run(path, Limits(rows=10), "gzip", inner=None)
    assert err.value.kind is ErrorKind.MALFORMED


def test_not_gzip_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "fake.gz"
    path.write_bytes(b"this is not gzip\n" * 10)
    with pytest.raises(SampleError) as err:
        _run(path, Limits(rows=10), "gzip", inner=None)
    assert err.value.kind is ErrorKind.MALFORMED


# --- zip ------------------------------------------------------------------------


def _listing(out: bytes) -> tuple[list[str], dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(out)) as z:
        lines = z.read(LISTING_NAME).decode().splitlines()
        members = {n: z.read(n) for n in z.namelist() if n != LISTING_NAME}
    return lines, members


def test_zip_listing_and_small_first_member(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("dir/", b"")
        z.writestr("dir/first.csv", b"a,b\n1,2\n")
        z.writestr("second.bin", os.urandom(5000))
    out, result = _run(path, Limits(rows=10), "zip")
    lines, members = _listing(out)
    assert len(lines) == 4 and lines[0].startswith("#")
    assert lines[2].endswith('"dir/first.csv"')
    assert members == {"first_member/dir/first.csv": b"a,b\n1,2\n"}
    assert result.rows == 3  # type: ignore[attr-defined]


def test_zip_hostile_names_stay_one_line_and_extract_inside(tmp_path: Path) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("../../etc/passwd\nfake line", b"root:x:0:0\n")
        z.writestr("/abs/path", b"x")
    out, _ = _run(path, Limits(rows=10), "zip")
    lines, members = _listing(out)
    assert len(lines) == 3
    assert json.loads(lines[1].split("\t")[-1]) == "../../etc/passwd\nfake line"
    (name,) = members
    assert ".." not in name.split("/") and not name.startswith("/") and "\n" not in name


def test_zip_big_first_member_gives_listing_only(tmp_path: Path) -> None:
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.bin", os.urandom(2 << 20))
    out, result = _run(path, Limits(rows=10), "zip")
    _, members = _listing(out)
    assert members == {}
    assert "listing only" in (result.note or "")  # type: ignore[attr-defined]


def _patch_central_size(path: Path, new_size: int) -> None:
    """Make the central directory lie about the first member's uncompressed size."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    struct.pack_into("<L", data, at + 24, new_size)
    path.write_bytes(bytes(data))


def test_zip_member_whose_declared_size_lies_is_hostile(tmp_path: Path) -> None:
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", b"hello world\n" * 1000)
    _patch_central_size(path, 100)
    with pytest.raises(SampleError) as err:
        _run(path, Limits(rows=10), "zip")
    assert err.value.kind is ErrorKind.HOSTILE


def test_zip_bomb_ratio_is_hostile(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("zeros", "w") as m:
        block = b"\0" * (1 << 20)
        for _ in range(200):
            m.write(block)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(SampleError) as err:
        _run(path, Limits(rows=10), "zip")
    assert err.value.kind is ErrorKind.HOSTILE
    assert "bomb" in err.value.message


def test_zip_overlapping_members_are_hostile(tmp_path: Path) -> None:
    path = tmp_path / "overlap.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a", b"A" * 1000)
        z.writestr("b", b"B" * 1000)
    data = bytearray(path.read_bytes())
    second = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    struct.pack_into("<L", data, second + 42, 0)  # b's local header offset -> a's
    path.write_bytes(bytes(data))
    with pytest.raises(SampleError) as err:
        _run(path, Limits(rows=10), "zip")
    assert err.value.kind is ErrorKind.HOSTILE


def test_zip_with_too_many_entries_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(50):
            z.writestr(f"f{i}", b"")
    limits = Limits(rows=10, max_entries=20)
    with pytest.raises(SampleError) as err:
        _run(path, limits, "zip")
    assert err.value.kind is ErrorKind.TOO_LARGE


def test_not_a_zip_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "fake.zip"
    path.write_bytes(os.urandom(3000))
    with pytest.raises(SampleError) as err:
        _run(path, Limits(rows=10), "zip")
    assert err.value.kind is ErrorKind.MALFORMED


# --- tar ------------------------------------------------------------------------


def _tar(path: Path, mode: str, n: int = 3, size: int = 10) -> None:
    with tarfile.open(path, mode) as t:
        for i in range(n):
            info = tarfile.TarInfo(f"dir/file{i}.txt" if i else "odd\nname")
            info.size = size
            info.mtime = 1_700_000_000
            t.addfile(info, io.BytesIO(b"x" * size))
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../outside"
        t.addfile(link)


@pytest.mark.parametrize(("name", "mode", "compressed"), [("a.tar", "w", False), ("a.tgz", "w:gz", True)])
def test_tar_listing(tmp_path: Path, name: str, mode: str, compressed: bool) -> None:
    path = tmp_path / name
    _tar(path, mode)
    out, result = _run(path, Limits(rows=10), "tar", compressed=compressed)
    lines = out.decode().splitlines()
    assert lines[0].startswith("#")
    assert lines[1].split("\t")[-1] == json.dumps("odd\nname")
    assert lines[1].startswith("f\t0644\t10\t2023-11-14T22:13:20Z")
    assert lines[-1].endswith('"link" -> "../../outside"') and lines[-1].startswith("l\t")
    assert len(lines) == 5 and result.rows == 4  # type: ignore[attr-defined]


def test_plain_tar_listing_seeks_over_member_data(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    _tar(path, "w", n=4, size=4 << 20)
    limits = Limits(rows=10, max_bytes=1 << 20)  # far less than the 16 MiB of data
    _, result = _run(path, limits, "tar")
    assert result.rows == 5 and not result.truncated  # type: ignore[attr-defined]


def test_compressed_tar_listing_stops_at_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.tgz"
    with tarfile.open(path, "w:gz") as t:
        for i in range(20):
            info = tarfile.TarInfo(f"f{i}")
            data = os.urandom(256 << 10)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    out, result = _run(path, Limits(rows=10, max_bytes=2 << 20), "tar", compressed=True)
    assert result.truncated and 0 < result.rows < 20  # type: ignore[attr-defined]
    assert out.decode().splitlines()[-1].startswith("# listing stops at the byte cap")


def test_tar_entry_limit(tmp_path: Path) -> None:
    path = tmp_path / "many.tar"
    _tar(path, "w", n=30, size=1)
    _, result = _run(path, Limits(rows=10, max_entries=5), "tar")
    assert result.rows == 5 and result.truncated  # type: ignore[attr-defined]


def test_truncated_tar_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "cut.tar"
    _tar(path, "w", n=3, size=5000)
    data = path.read_bytes()
    path.write_bytes(data[:700])
    with pytest.raises(SampleError) as err:
        _run(path, Limits(rows=10), "tar")
    assert err.value.kind is ErrorKind.MALFORMED
