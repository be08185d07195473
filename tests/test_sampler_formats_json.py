"""The JSON sampler against an independent oracle (json.loads + the pruning rules)."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from sampler.formats_json import sample_json
from sampler.limits import BoundedFile, Budget, ErrorKind, Limits, SampleError


def run(tmp_path: Path, data: bytes, rows: int = 3, max_bytes: int = 1 << 20) -> tuple[Any, Any]:
    path = tmp_path / "doc.json"
    path.write_bytes(data)
    limits = Limits(rows=rows, max_bytes=max_bytes)
    fd = os.open(path, os.O_RDONLY)
    try:
        out = io.BytesIO()
        result = sample_json(BoundedFile(fd, len(data), Budget(limits)), out, limits)
    finally:
        os.close(fd)
    return json.loads(out.getvalue()), result


def pruned(value: Any, rows: int, top: bool = True) -> Any:
    """The rules: arrays keep N items at every depth, the top-level object N members."""
    if isinstance(value, list):
        return [pruned(v, rows, False) for v in value[:rows]]
    if isinstance(value, dict):
        items = list(value.items())[:rows] if top else list(value.items())
        return {k: pruned(v, rows, False) for k, v in items}
    return value


def random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 4 else 5)
    if pick == 0:
        return rng.randrange(-(10**20), 10**20)
    if pick == 1:
        return rng.random() * 10 ** rng.randrange(-5, 5)
    if pick == 2:
        return "".join(rng.choice('ab"\\\n\té€😀/\x01') for _ in range(rng.randrange(8)))
    if pick == 3:
        return rng.choice([True, False, None])
    if pick == 4:
        return ""
    if pick in (5, 6):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(7))]
    return {f"k{i}": random_value(rng, depth + 1) for i in range(rng.randrange(6))}


def test_matches_the_oracle_on_random_documents(tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(300):
        value = random_value(rng)
        indent = rng.choice([None, 2])
        data = json.dumps(value, indent=indent, ensure_ascii=rng.random() < 0.5).encode()
        rows = rng.randrange(1, 5)
        got, result = run(tmp_path, data, rows)
        assert got == pruned(value, rows), (i, data)
        if isinstance(value, (list, dict)):
            assert result.rows == expected_rows(value, rows)


def expected_rows(value: list[Any] | dict[str, Any], rows: int) -> int:
    """Items of a top-level array; an object: the most items one of its kept arrays keeps, else members."""
    if isinstance(value, dict):
        arrays = [len(v) for v in list(value.values())[:rows] if isinstance(v, list)]
        if arrays:
            return min(max(arrays), rows)
    return min(len(value), rows)


def test_object_of_arrays_reports_the_rows_kept(tmp_path: Path) -> None:
    doc = {"id": list(range(1000)), "name": [f"n{i}" for i in range(1000)], "score": [0.5] * 1000}
    got, result = run(tmp_path, json.dumps(doc).encode(), rows=10)
    assert got == {k: v[:10] for k, v in doc.items()}
    assert (result.rows, result.truncated) == (10, True)
    # a data array beside scalars: the rows are the array's items
    got, result = run(tmp_path, json.dumps({"count": 3, "data": [{"a": 1}, {"a": 2}, {"a": 3}]}).encode(), 10)
    assert got["data"] == [{"a": 1}, {"a": 2}, {"a": 3}] and result.rows == 3


def test_object_of_arrays_cut_by_the_cap_reports_the_rows_kept(tmp_path: Path) -> None:
    doc = {"a": [os.urandom(20).hex() for _ in range(5000)]}
    got, result = run(tmp_path, json.dumps(doc).encode(), rows=10_000, max_bytes=20_000)
    assert result.truncated and result.note == "byte cap reached"
    assert 0 < len(got["a"]) < 5000 and result.rows == len(got["a"])
    assert got["a"] == doc["a"][: len(got["a"])]


def test_numbers_and_strings_are_copied_verbatim(tmp_path: Path) -> None:
    data = b'[1.50, 1E+5, 123456789012345678901234567890, "caf\\u00e9\\n", -0.0]'
    path = tmp_path / "d.json"
    path.write_bytes(data)
    limits = Limits(rows=10)
    fd = os.open(path, os.O_RDONLY)
    try:
        out = io.BytesIO()
        sample_json(BoundedFile(fd, len(data), Budget(limits)), out, limits)
    finally:
        os.close(fd)
    text = out.getvalue()
    for token in (b"1.50", b"1E+5", b"123456789012345678901234567890", b'"caf\\u00e9\\n"', b"-0.0"):
        assert token in text


def test_top_level_array_stops_reading_after_n_items(tmp_path: Path) -> None:
    items = b",".join(b'{"i": %d}' % i for i in range(100_000))
    data = b"[" + items + b"]"
    path = tmp_path / "big.json"
    path.write_bytes(data)
    limits = Limits(rows=5)
    fd = os.open(path, os.O_RDONLY)
    try:
        f = BoundedFile(fd, len(data), Budget(limits))
        out = io.BytesIO()
        result = sample_json(f, out, limits)
    finally:
        os.close(fd)
    assert json.loads(out.getvalue()) == [{"i": i} for i in range(5)]
    assert result.truncated and result.rows == 5
    assert f.pos <= 1 << 20  # one chunk, not the whole file


@pytest.mark.parametrize(
    "doc",
    [b"[1,2,", b"[1 2]", b'{"a" 1}', b"[tru]", b'["\x01"]', b'["\xff"]', b"[01]",
     b'{"a":1,}', b"[1,]", b"", b"   ", b'{"a":1]', b'["\\x"]', b'["\\u12G4"]', b"-", b"[.5]"],
)  # fmt: skip
def test_malformed_documents_are_errors(tmp_path: Path, doc: bytes) -> None:
    with pytest.raises(SampleError) as err:
        run(tmp_path, doc, rows=10)
    assert err.value.kind is ErrorKind.MALFORMED
    with pytest.raises(ValueError):
        json.loads(doc)


def test_nested_a_million_deep_is_hostile_and_cheap(tmp_path: Path) -> None:
    with pytest.raises(SampleError) as err:
        run(tmp_path, b"[" * 1_000_000)
    assert err.value.kind is ErrorKind.HOSTILE


def test_byte_cap_cuts_back_to_complete_items(tmp_path: Path) -> None:
    data = json.dumps([{"id": i, "pad": "x" * 100} for i in range(1000)]).encode()
    got, result = run(tmp_path, data, rows=500, max_bytes=5000)
    assert result.truncated and 0 < len(got) < 500
    assert got == [{"id": i, "pad": "x" * 100} for i in range(len(got))]


def test_byte_cap_in_a_nested_array_keeps_its_first_items(tmp_path: Path) -> None:
    data = b'{"meta": {"v": 1}, "data": [' + b",".join(b"%d" % i for i in range(100_000)) + b"]}"
    got, result = run(tmp_path, data, rows=5, max_bytes=50_000)
    assert got == {"meta": {"v": 1}, "data": [0, 1, 2, 3, 4]}
    assert result.truncated


def test_string_longer_than_the_cap_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with open(path, "wb") as f:
        f.write(b'["')
        for _ in range(24):
            f.write(b"a" * (1 << 20))
        f.write(b'"]')
    limits = Limits(rows=3, max_bytes=8 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        f = BoundedFile(fd, path.stat().st_size, Budget(limits))
        with pytest.raises(SampleError) as err:
            sample_json(f, io.BytesIO(), limits)
    finally:
        os.close(fd)
    assert err.value.kind is ErrorKind.TOO_LARGE
    assert f.pos == 8 << 20


def test_long_valid_string_streams_through(tmp_path: Path) -> None:
    s = "é" * (3 << 20)  # 6 MiB of UTF-8 across many chunks
    got, result = run(tmp_path, json.dumps([s, 1], ensure_ascii=False).encode(), max_bytes=32 << 20)
    assert got == [s, 1] and not result.truncated


@pytest.mark.parametrize("doc", [b'"just a string"', b"42", b"null", b" true "])
def test_scalars(tmp_path: Path, doc: bytes) -> None:
    got, result = run(tmp_path, doc)
    assert got == json.loads(doc) and result.rows == 1
