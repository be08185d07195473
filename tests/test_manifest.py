"""manifest.py: the record schema, path encoding, line reading, the durable appender."""

from __future__ import annotations

import base64
import calendar
import errno
import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import orjson
import pyarrow.json as pa_json
import pytest

from ingestor import __version__, runs
from ingestor import manifest as manifest_mod
from ingestor.errors import Retryable
from ingestor.manifest import (
    KEYS,
    MANIFEST_NAME,
    ManifestError,
    ManifestRecord,
    ManifestWriter,
    decode_path,
    encode_path,
    hour_end_ns,
    iter_lines,
    line_start_at_or_before,
    manifest_rel_for,
    rfc3339,
)
from ingestor.records import Action, Identity, Record, State, Status
from tests.data_fs import tiny_tmpfs
from tests.waiting import wait_for

SHA = "ab" * 32
NS = calendar.timegm((2026, 11, 23, 15, 1, 2, 0, 0, 0)) * 1_000_000_000 + 123_456_789
REL = manifest_rel_for(NS)
LANDING = Path("/data/landing")
WAREHOUSE = Path("/data/warehouse")


def record(
    rec_id: str = "01J000000000000000000000AA",
    *,
    source_rel: str = "in/data.csv",
    dest_rel: str | None = "ingest_date=2026-11-23/in/data.csv",
    status: Status = Status.INGESTED,
    action: Action = Action.LANDED,
    duplicate_of: str | None = None,
) -> Record:
    return Record(
        id=rec_id,
        state=State.MOVED,
        status=status,
        action=action,
        source_rel=source_rel,
        identity=Identity(2049, 123456, 42, NS - 10**9),
        sha256=SHA,
        dest_rel=dest_rel,
        manifest_rel=REL,
        manifest_floor=0,
        ingested_ns=NS,
        duplicate_of=duplicate_of,
        sidecar_rel=None,
    )


def line(rec_id: str, *, pad: int = 0) -> bytes:
    """A valid manifest line; ``pad`` lengthens its source path."""
    return ManifestRecord.from_record(
        record(rec_id, source_rel="in/" + "p" * pad + "data.csv"), LANDING, WAREHOUSE
    ).to_json()


def ids_in(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a manifest always ends with a complete line"
    return [ManifestRecord.from_json(x).id for x in data.splitlines()]


def append_fails(writer: ManifestWriter, rel: str, lines: list[bytes], code: int) -> None:
    """The append raises, as an OSError or as its translation (``Retryable``), for ``code``."""
    with pytest.raises((OSError, Retryable)) as info:
        writer.append(rel, lines)
    exc: BaseException | None = info.value
    if isinstance(exc, Retryable):
        exc = exc.__cause__
    assert isinstance(exc, OSError) and exc.errno == code, repr(info.value)


@pytest.fixture
def writer(tmp_path: Path) -> ManifestWriter:
    return ManifestWriter(tmp_path / "manifests")


# ---------------------------------------------------------------- names and times


def test_manifest_rel_is_the_utc_hour() -> None:
    assert manifest_rel_for(NS) == f"2026/11/23/15/{MANIFEST_NAME}"
    assert manifest_rel_for(0) == "1970/01/01/00/manifest.jsonl"


def test_hour_end() -> None:
    end = hour_end_ns(REL)
    assert end == calendar.timegm((2026, 11, 23, 16, 0, 0, 0, 0, 0)) * 1_000_000_000
    assert manifest_rel_for(end - 1) == REL
    assert manifest_rel_for(end) != REL


def test_rfc3339_is_utc_with_microseconds() -> None:
    assert rfc3339(NS) == "2026-11-23T15:01:02.123456Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"


# ---------------------------------------------------------------- path encoding


def test_utf8_path_has_no_b64() -> None:
    assert encode_path("/a/é/data.csv") == ("/a/é/data.csv", None)
    assert decode_path("/a/é/data.csv", None) == "/a/é/data.csv"


def test_non_utf8_path_is_kept_losslessly_in_b64() -> None:
    raw = b"/in/caf\xe9\xff.csv"
    path = os.fsdecode(raw)
    text, b64 = encode_path(path)
    assert text == "/in/caf\ufffd\ufffd.csv"
    assert b64 is not None and base64.b64decode(b64) == raw
    back = decode_path(text, b64)
    assert back == path and os.fsencode(back) == raw


def test_decode_path_none() -> None:
    assert decode_path(None, None) is None


# ---------------------------------------------------------------- the record


def test_from_record_fields() -> None:
    rec = record()
    m = ManifestRecord.from_record(rec, LANDING, WAREHOUSE)
    assert m.id == rec.id
    assert m.status is Status.INGESTED and m.action is Action.LANDED
    assert m.source_path == "/data/landing/in/data.csv" and m.source_path_b64 is None
    assert m.warehouse_path == "/data/warehouse/ingest_date=2026-11-23/in/data.csv"
    assert m.warehouse_path_b64 is None
    assert (m.sha256, m.size, m.device, m.inode) == (SHA, 42, 2049, 123456)
    assert m.mtime == "2026-11-23T15:01:01.123456Z"
    assert m.ingested_at == "2026-11-23T15:01:02.123456Z"
    assert m.duplicate_of is None
    assert m.ingestor_version == __version__


def test_line_has_every_key_and_one_newline() -> None:
    data = ManifestRecord.from_record(record(), LANDING, WAREHOUSE).to_json()
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    obj = json.loads(data)
    assert list(obj) == list(KEYS)  # the dataclass fields; source_name is "source"
    assert obj["status"] == "ingested" and obj["action"] == "landed"


def test_deleted_duplicate_has_null_warehouse_path() -> None:
    rec = record(dest_rel=None, status=Status.DUPLICATE, action=Action.DELETED, duplicate_of="01ORIG")
    obj = json.loads(ManifestRecord.from_record(rec, LANDING, WAREHOUSE).to_json())
    assert obj["warehouse_path"] is None and obj["warehouse_path_b64"] is None
    assert obj["duplicate_of"] == "01ORIG" and obj["status"] == "duplicate"


def test_hostile_names_give_one_strict_json_line() -> None:
    """Newlines, quotes, backslashes and invalid UTF-8: one line any strict reader parses."""
    src = os.fsdecode(b'in/a\nb"c\\d\xff\xfe\x01.csv')
    dst = os.fsdecode(b'_duplicates/a\nb"c\\d\xff\xfe\x01.csv')
    rec = record(
        source_rel=src,
        dest_rel=dst,
        status=Status.DUPLICATE,
        action=Action.QUARANTINED,
        duplicate_of="01ORIG",
    )
    data = ManifestRecord.from_record(rec, LANDING, WAREHOUSE).to_json()
    assert data.count(b"\n") == 1
    data.decode("utf-8")  # strict: no lone surrogates
    obj = json.loads(data)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in obj["source_path"] + obj["warehouse_path"])
    back = ManifestRecord.from_json(data)
    assert os.fsencode(back.source) == os.fsencode(str(LANDING / src))
    assert os.fsencode(back.warehouse or "") == os.fsencode(str(WAREHOUSE / dst))
    assert back.source_path_b64 is not None and back.warehouse_path_b64 is not None


@pytest.mark.parametrize(
    "rec",
    [
        record(),
        record(dest_rel=None, status=Status.DUPLICATE, action=Action.DELETED, duplicate_of="01ORIG"),
        record(
            source_rel=os.fsdecode(b'in/a\nb"c\\d\xff\xfe\x01.csv'),
            dest_rel=os.fsdecode(b"_duplicates/caf\xc3\xa9.csv"),
            status=Status.DUPLICATE,
            action=Action.QUARANTINED,
            duplicate_of="01ORIG",
        ),
    ],
    ids=["ingested", "deleted-duplicate", "hostile-names"],
)
def test_line_of_is_the_record_line_byte_for_byte(rec: Record) -> None:
    """The writer's fast path and the schema's dataclass give the same bytes."""
    fast = ManifestRecord.line_of(rec, str(LANDING), str(WAREHOUSE))
    assert fast == ManifestRecord.from_record(rec, LANDING, WAREHOUSE).to_json()


def test_255_byte_name_roundtrip() -> None:
    name = os.fsdecode(b"\xff" * 200 + b"x" * 51 + b".csv")
    assert len(os.fsencode(name)) == 255
    m = ManifestRecord.from_record(record(source_rel=name, dest_rel="d/" + name), LANDING, WAREHOUSE)
    back = ManifestRecord.from_json(m.to_json())
    assert back == m
    assert back.source == str(LANDING / name)


def test_roundtrip_gives_enum_members() -> None:
    m = ManifestRecord.from_record(record(), LANDING, WAREHOUSE)
    back = ManifestRecord.from_json(m.to_json().decode())
    assert back == m
    assert type(back.status) is Status and type(back.action) is Action


def _obj() -> dict[str, object]:
    return orjson.loads(ManifestRecord.from_record(record(), LANDING, WAREHOUSE).to_json())


@pytest.mark.parametrize(
    "change",
    [
        {"status": "landed"},
        {"action": "moved"},
        {"sha256": "ab" * 31},
        {"sha256": "zz" * 32},
        {"sha256": None},
        {"size": -1},
        {"size": "42"},
        {"source_path_b64": "***"},
        {"warehouse_path_b64": "abc"},
        {"duplicate_of": "01ORIG"},  # an ingested line names no original
        {"status": "duplicate"},  # a duplicate line must name one
        {"source": 3},
        {"dataset": {"vendor": 1}},
        {"dataset": ["sp"]},
        {"host": 3},
        {"run_id": ["x"]},
        {"detected_at": 1.5},
        {"status": "rejected"},  # a rejected line has a reason and no content
    ],
)
def test_from_json_rejects_bad_fields(change: dict[str, object]) -> None:
    with pytest.raises(ManifestError):
        ManifestRecord.from_json(orjson.dumps({**_obj(), **change}))


@pytest.mark.parametrize("missing", KEYS[: KEYS.index("detected_at")])
def test_from_json_rejects_a_missing_key(missing: str) -> None:
    obj = {k: v for k, v in _obj().items() if k != missing}
    with pytest.raises(ManifestError):
        ManifestRecord.from_json(orjson.dumps(obj))


@pytest.mark.parametrize("data", [b"", b"{", b"[1, 2]", b'"text"', b"null", b"\xff"])
def test_from_json_rejects_non_records(data: bytes) -> None:
    with pytest.raises(ManifestError):
        ManifestRecord.from_json(data)


def test_from_json_ignores_unknown_keys() -> None:
    obj = {**_obj(), "added_in_a_later_version": [1]}
    assert ManifestRecord.from_json(orjson.dumps(obj)).id == obj["id"]


@pytest.mark.parametrize("sha", ["a_" * 31 + "aa", " " + "a" * 62 + " ", "+" + "a" * 63])
def test_from_json_rejects_a_sha256_that_is_not_64_hex_digits(sha: str) -> None:
    with pytest.raises(ManifestError):
        ManifestRecord.from_json(orjson.dumps({**_obj(), "sha256": sha}))


def test_queryable_as_is_by_arrow(writer: ManifestWriter) -> None:
    """One schema for every line, non-UTF-8 and duplicate lines included (DuckDB/pandas alike)."""
    lines = [
        line("01A"),
        ManifestRecord.from_record(
            record(
                "01B",
                source_rel=os.fsdecode(b"in/\xff.csv"),
                dest_rel=None,
                status=Status.DUPLICATE,
                action=Action.DELETED,
                duplicate_of="01A",
            ),
            LANDING,
            WAREHOUSE,
        ).to_json(),
    ]
    writer.append(REL, lines)
    table = pa_json.read_json(writer.path(REL))
    assert table.num_rows == 2
    assert table.column_names == list(KEYS)
    rows = table.to_pylist()
    assert (
        rows[1]["warehouse_path"] is None
        and rows[1]["source_path_b64"] == base64.b64encode(b"/data/landing/in/\xff.csv").decode()
    )


# ---------------------------------------------------------------- reading lines


@contextmanager
def _fd(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.fixture
def text_file(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "lines"
    path.write_bytes(b"one\ntwo\n\nthree\ntorn")
    with _fd(path) as fd:
        yield path, fd


def test_iter_lines_complete_lines_with_offsets(text_file: tuple[Path, int]) -> None:
    _, fd = text_file
    assert list(iter_lines(fd, 0)) == [(b"one\n", 4), (b"two\n", 8), (b"\n", 9), (b"three\n", 15)]


def test_iter_lines_from_a_line_start_and_to_an_end(text_file: tuple[Path, int]) -> None:
    _, fd = text_file
    assert list(iter_lines(fd, 4)) == [(b"two\n", 8), (b"\n", 9), (b"three\n", 15)]
    assert list(iter_lines(fd, 0, 10)) == [(b"one\n", 4), (b"two\n", 8), (b"\n", 9)]
    assert list(iter_lines(fd, 0, 7)) == [(b"one\n", 4)]  # "two" is cut by the end: not written yet
    assert list(iter_lines(fd, 15)) == []


def test_iter_lines_end_defaults_to_the_size_when_reading_starts(text_file: tuple[Path, int]) -> None:
    path, fd = text_file
    it = iter_lines(fd, 8)
    assert next(it) == (b"\n", 9)
    with open(path, "ab") as fh:
        fh.write(b"\nlater\n")  # completes "torn" while the reader is at it: not seen
    assert list(it) == [(b"three\n", 15)]
    assert [x for x, _ in iter_lines(fd, 15)] == [b"torn\n", b"later\n"]


def test_iter_lines_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_mod, "_READ_CHUNK", 3)
    lines = [b"a" * n + b"\n" for n in (0, 1, 2, 3, 7, 2, 0)]
    path = tmp_path / "f"
    path.write_bytes(b"".join(lines) + b"tail")
    with _fd(path) as fd:
        got = list(iter_lines(fd, 0))
    assert [x for x, _ in got] == lines
    ends = [sum(len(x) for x in lines[: i + 1]) for i in range(len(lines))]
    assert [o for _, o in got] == ends


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(0, 0), (1, 0), (4, 4), (5, 4), (8, 8), (9, 9), (10, 9), (15, 15), (19, 15)],
)
def test_line_start_at_or_before(text_file: tuple[Path, int], offset: int, expected: int) -> None:
    _, fd = text_file
    assert line_start_at_or_before(fd, offset) == expected


def test_line_start_before_a_line_longer_than_the_read_window(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x\n" + b"y" * 200_000 + b"\n" + b"z" * 70_000)
    with _fd(path) as fd:
        assert line_start_at_or_before(fd, 150_000) == 2
        assert line_start_at_or_before(fd, 200_002) == 2
        assert line_start_at_or_before(fd, 200_003) == 200_003
        assert line_start_at_or_before(fd, 270_003) == 200_003
    path.write_bytes(b"q" * 140_000)
    with _fd(path) as fd:
        assert line_start_at_or_before(fd, 140_000) == 0


# ---------------------------------------------------------------- appending


def test_append_creates_the_hour_dirs_and_returns_the_size(writer: ManifestWriter) -> None:
    assert writer.size(REL) == 0
    end = writer.append(REL, [line("01A"), line("01B")])
    path = writer.path(REL)
    assert path == writer.root / "2026/11/23/15/manifest.jsonl"
    assert end == path.stat().st_size == writer.size(REL)
    end2 = writer.append(REL, [line("01C")])
    assert end2 == end + len(line("01C"))
    assert ids_in(path) == ["01A", "01B", "01C"]
    assert writer.append(REL, []) == end2


def test_append_repairs_a_torn_tail(writer: ManifestWriter) -> None:
    writer.append(REL, [line("01A")])
    path = writer.path(REL)
    good = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(line("01TORN")[:-10])  # a writer killed mid-write
    end = writer.append(REL, [line("01B")])
    assert end == good + len(line("01B"))
    assert ids_in(path) == ["01A", "01B"]


def test_append_repairs_a_file_that_is_all_torn(writer: ManifestWriter) -> None:
    path = writer.path(REL)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"id": "01TORN", "sta')
    assert writer.append(REL, [line("01A")]) == len(line("01A"))
    assert ids_in(path) == ["01A"]


def test_append_refuses_a_symlinked_manifest(writer: ManifestWriter, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    path = writer.path(REL)
    path.parent.mkdir(parents=True)
    path.symlink_to(victim)
    append_fails(writer, REL, [line("01A")], errno.ELOOP)
    assert victim.read_bytes() == b"precious\n"


def test_append_from_many_threads_keeps_lines_whole(writer: ManifestWriter) -> None:
    def work(t: int) -> None:
        for i in range(20):
            writer.append(REL, [line(f"01T{t:02d}N{i:02d}A", pad=t * 37), line(f"01T{t:02d}N{i:02d}B")])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = ids_in(writer.path(REL))
    assert len(got) == len(set(got)) == 8 * 20 * 2
    for i in range(0, len(got), 2):  # a batch is written in one piece
        assert got[i][:-1] == got[i + 1][:-1]


def _blocked_flock_on(inode: int) -> bool:
    with open("/proc/locks") as fh:
        return any("->" in x and "FLOCK" in x and f":{inode} " in x for x in fh)


def test_append_waits_for_another_writers_lock_then_repairs_its_torn_tail(writer: ManifestWriter) -> None:
    """Another process appending (here: another open file description) holds the flock."""
    writer.append(REL, [line("01A")])
    path = writer.path(REL)
    other = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(writer.append(REL, [line("01B")])))
        t.start()
        wait_for(lambda: _blocked_flock_on(path.stat().st_ino), 10, "append to wait on the flock")
        assert not result
        os.write(other, line("01X")[:30])  # the other writer dies mid-write
    finally:
        os.close(other)  # releases its flock
    t.join()
    assert ids_in(path) == ["01A", "01B"]
    assert result == [path.stat().st_size]


def test_failed_fsync_cuts_the_batch_off(writer: ManifestWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    writer.append(REL, [line("01A")])
    path = writer.path(REL)
    before = path.read_bytes()
    real_fsync = os.fsync
    failed: list[int] = []

    def fsync(fd: int) -> None:
        if not failed and os.readlink(f"/proc/self/fd/{fd}") == str(path):
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    append_fails(writer, REL, [line("01B"), line("01C")], errno.EIO)
    assert failed
    assert path.read_bytes() == before
    monkeypatch.undo()
    writer.append(REL, [line("01B"), line("01C")])
    assert ids_in(path) == ["01A", "01B", "01C"]


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    with tiny_tmpfs(tmp_path / "tiny", "64k") as d:
        yield d


def test_disk_full_cuts_the_partial_batch_off(tiny: Path) -> None:
    writer = ManifestWriter(tiny / "manifests")
    writer.append(REL, [line("01A")])
    path = writer.path(REL)
    before = path.read_bytes()
    big = [line(f"01BIG{i:05d}", pad=900) for i in range(100)]  # ~100 KB: more than the filesystem
    append_fails(writer, REL, big, errno.ENOSPC)
    assert path.read_bytes() == before  # nothing half-written is left
    end = writer.append(REL, [line("01B")])  # and the space is back
    assert end == path.stat().st_size
    assert ids_in(path) == ["01A", "01B"]


# ---------------------------------------------------------------- find_ids


def test_find_ids(writer: ManifestWriter) -> None:
    assert writer.find_ids(REL, 0, {"01A"}) == set()  # no file yet
    writer.append(REL, [line("01A"), line("01B")])
    floor = writer.size(REL)
    writer.append(REL, [line("01C"), line("01D")])
    assert writer.find_ids(REL, 0, {"01A", "01D", "01Z"}) == {"01A", "01D"}
    assert writer.find_ids(REL, floor, {"01A", "01B", "01C", "01D"}) == {"01C", "01D"}
    assert writer.find_ids(REL, 0, set()) == set()


def test_find_ids_skips_garbage_and_an_incomplete_last_line(writer: ManifestWriter) -> None:
    path = writer.path(REL)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not json\n[1]\n" + line("01A") + b'"x"\n' + line("01B")[:-1])
    assert writer.find_ids(REL, 0, {"01A", "01B"}) == {"01A"}


def test_find_ids_finds_a_line_that_straddles_the_floor(writer: ManifestWriter) -> None:
    """The floor was taken with a short torn tail; the repair put the line before it."""
    writer.append(REL, [line("01A")])
    path = writer.path(REL)
    with open(path, "ab") as fh:
        fh.write(b'{"id":"01TORN"')
    assert writer.size(REL) == len(line("01A"))  # the floor a worker records skips the torn tail
    floor = path.stat().st_size  # a floor taken as the raw size (inside the next line)
    writer.append(REL, [line("01B"), line("01C")])
    assert floor > path.read_bytes().index(b'"01B"')  # 01B starts before the floor
    assert writer.find_ids(REL, floor, {"01A", "01B", "01C"}) == {"01B", "01C"}


@pytest.mark.parametrize("later", [False, True])
def test_find_ids_finds_a_line_written_over_a_longer_torn_tail(writer: ManifestWriter, later: bool) -> None:
    """Torn tail longer than the line that replaced it: the line ends before the floor.

    A recovery that misses it appends the line again: two lines with one id.
    """
    writer.append(REL, [line("01A")])
    path = writer.path(REL)
    with open(path, "ab") as fh:
        fh.write(line("01TORN", pad=2000)[:-1])  # a crashed writer's big batch
    floor = writer.size(REL)
    writer.append(REL, [line("01B")])  # this process then dies before recording MANIFESTED
    if later:
        writer.append(REL, [line("01C", pad=3000)])  # and another writer appended after it
    assert "01B" in ids_in(path)
    assert writer.find_ids(REL, floor, {"01B"}) == {"01B"}


def test_lines_written_before_sources_parse_with_null_source_and_dataset() -> None:
    obj = {k: v for k, v in _obj().items() if k in KEYS[: KEYS.index("detected_at")]}
    rec = ManifestRecord.from_json(orjson.dumps(obj))
    assert rec.source_name is None and rec.dataset is None
    assert (rec.detected_at, rec.source_relpath, rec.host, rec.run_id) == (None, None, None, None)


def test_every_line_names_its_host_run_relative_paths_and_when_the_file_was_first_seen() -> None:
    runs.set_current("5f0c6f9e-0000-4000-8000-000000000001", "landing-host-1")
    try:
        rec = replace(record(), detected_ns=1_700_000_000_250_000_000)
        obj = orjson.loads(ManifestRecord.line_of(rec, str(LANDING), str(WAREHOUSE)))
    finally:
        runs.set_current(None, socket.gethostname())
    assert list(obj) == list(KEYS)
    assert obj["detected_at"] == "2023-11-14T22:13:20.250000Z"
    assert (obj["host"], obj["run_id"]) == ("landing-host-1", "5f0c6f9e-0000-4000-8000-000000000001")
    assert obj["source_relpath"] == rec.source_rel
    assert obj["warehouse_relpath"] == rec.dest_rel
    assert obj["source_path"] == f"{LANDING}/{rec.source_rel}"
    assert (obj["reason"], obj["hint"]) == (None, None)


def test_a_rejected_line_has_a_reason_and_no_content(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    st = os.lstat(fifo)
    ident = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
    line = ManifestRecord.rejected(
        "01REJ", tmp_path, "pipe.csv", ident, "a FIFO: never opened", "deliver a regular file", at_ns=10**18
    ).to_json()
    rec = ManifestRecord.from_json(line)
    assert (rec.status, rec.action, rec.sha256, rec.warehouse) == (Status.REJECTED, Action.NONE, None, None)
    assert (rec.size, rec.inode, rec.reason) == (0, st.st_ino, "a FIFO: never opened")
    unreachable = ManifestRecord.rejected(
        "01UNR", tmp_path, "x/y.csv", None, "cannot be reached", None, at_ns=1
    )
    assert ManifestRecord.from_json(unreachable.to_json()).size is None
    for change in ({"sha256": "ab" * 32}, {"reason": None}, {"warehouse_path": "/w/x"}):
        with pytest.raises(ManifestError):
            ManifestRecord.from_json(orjson.dumps({**orjson.loads(line), **change}))


def test_a_landing_dir_of_a_source_puts_its_name_and_values_in_every_line() -> None:
    tail = ManifestRecord.tail_of("sp", {"vendor": "sp", "dataset": "gics", "version": "1.0"})
    line = ManifestRecord.line_of(record(), str(LANDING), str(WAREHOUSE), tail)
    obj = orjson.loads(line)
    assert obj["source"] == "sp" and obj["dataset"] == {"vendor": "sp", "dataset": "gics", "version": "1.0"}
    assert (
        line
        == ManifestRecord.from_record(
            record(), LANDING, WAREHOUSE, "sp", {"vendor": "sp", "dataset": "gics", "version": "1.0"}
        ).to_json()
    )
