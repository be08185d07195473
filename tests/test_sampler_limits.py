"""The budgeted readers: byte cap, deadline, bounded gzip decompression."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from sampler.limits import (
    BoundedFile,
    Budget,
    CapReached,
    ErrorKind,
    GzipStream,
    Limits,
    SampleError,
)


def _file(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "f"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


def test_bounded_file_hands_out_at_most_the_cap(tmp_path: Path) -> None:
    fd = _file(tmp_path, b"x" * 1000)
    try:
        f = BoundedFile(fd, 1000, Budget(Limits(max_bytes=300)))
        assert f.read(200) == b"x" * 200
        assert f.read(200) == b"x" * 100  # short: the budget, not the file, ran out
        with pytest.raises(CapReached):
            f.read(1)
        f.seek(0, os.SEEK_END)
        assert f.read(10) == b""  # the real end is not a cap
    finally:
        os.close(fd)


def test_strict_mode_refuses_a_partial_read(tmp_path: Path) -> None:
    fd = _file(tmp_path, b"x" * 1000)
    try:
        f = BoundedFile(fd, 1000, Budget(Limits(max_bytes=300)), strict=True)
        with pytest.raises(CapReached):
            f.read(400)
        assert f.read(300) == b"x" * 300
    finally:
        os.close(fd)


def test_deadline(tmp_path: Path) -> None:
    fd = _file(tmp_path, b"x" * 10)
    try:
        f = BoundedFile(fd, 10, Budget(Limits(max_seconds=-1.0)))
        with pytest.raises(SampleError) as err:
            f.read(1)
        assert err.value.kind is ErrorKind.TIMEOUT
    finally:
        os.close(fd)


def test_gzip_stream_counts_decompressed_bytes(tmp_path: Path) -> None:
    data = gzip.compress(b"\0" * (8 << 20))
    fd = _file(tmp_path, data)
    try:
        budget = Budget(Limits(max_bytes=1 << 20))
        stream = GzipStream(BoundedFile(fd, len(data), budget))
        got = 0
        with pytest.raises(CapReached):
            while chunk := stream.read(1 << 16):
                got += len(chunk)
        assert got <= 1 << 20
    finally:
        os.close(fd)


def test_gzip_stream_reads_every_member_and_ignores_zero_padding(tmp_path: Path) -> None:
    data = gzip.compress(b"one\n") + gzip.compress(b"two\n") + b"\0" * 512
    fd = _file(tmp_path, data)
    try:
        stream = GzipStream(BoundedFile(fd, len(data), Budget(Limits())))
        out = b""
        while chunk := stream.read(3):
            out += chunk
        assert out == b"one\ntwo\n"
    finally:
        os.close(fd)


def test_gzip_truncated_inside_a_member(tmp_path: Path) -> None:
    data = gzip.compress(os.urandom(10000))[:-20]
    fd = _file(tmp_path, data)
    try:
        stream = GzipStream(BoundedFile(fd, len(data), Budget(Limits())))
        with pytest.raises(SampleError) as err:
            while stream.read(1 << 16):
                pass
        assert err.value.kind is ErrorKind.MALFORMED
    finally:
        os.close(fd)
