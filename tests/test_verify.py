"""``ingestor verify``: a real daemon's landing audits clean; each inconsistency injected by hand is found.

Most tests start from one warehouse landed by a real daemon (built once per
module, restored before each test at the same absolute paths), break one
thing, and call ``run_verify`` in-process; the CLI tests run the real command.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import ulid

from ingestor import verify, verify_report
from ingestor.ledger import Ledger, MovedUpdate
from ingestor.ledger_db import SCHEMA, connect
from ingestor.manifest import ManifestRecord, manifest_rel_for, rfc3339
from ingestor.plan import PlanPolicy
from ingestor.records import Action, Candidate, Hashed, Identity, Status
from ingestor.settings import Dedup, OnDuplicate
from simulate import traffic
from tests import invariants
from tests.conftest import DaemonProc, Env, run_ingestor
from tests.waiting import wait_for

ODD_NAME = os.fsdecode(b"caf\xe9 \xff-raw.csv")  # not UTF-8: its manifest line carries *_b64 paths
GOLD_BYTES = 8 * 3000 + 3 * 100 + 3 * 2000 + 500  # what the landed warehouse below holds


def make_env(root: Path) -> Env:
    return Env.under(root)


def audit(env: Env) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    rc = verify.run_verify(env.warehouse, env.manifests, env.state, as_json=True, out=out)
    return rc, orjson.loads(out.getvalue()) if out.getvalue() else {}


def found(doc: dict[str, Any]) -> dict[str, int]:
    return {k: n for k, n in doc["counts"].items() if n}


def one(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    assert doc["counts"][kind] == 1, doc["problems"]
    return dict(doc["problems"][kind][0])


def sql(env: Env, statement: str, *params: Any) -> list[Any]:
    conn = sqlite3.connect(env.state)
    try:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def fields_of(rec: ManifestRecord) -> dict[str, Any]:
    return {f: getattr(rec, f) for f in rec.__dataclass_fields__}


def manifest_files(env: Env) -> list[Path]:
    return sorted(env.manifests.rglob("manifest.jsonl"))


# ----------------------------------------------------------------- landing by hand


def by_hand(
    env: Env, n: int, data: bytes, *, hour: str | None = None, place: bool = True
) -> tuple[bytes, Path, tuple[Any, ...]]:
    """A file placed in the warehouse, its manifest line and its ledger row (manifested): a landing by hand."""
    now = time.time_ns()
    rel = f"ingest_date=2026-01-01/d{n // 1000:04d}/f{n:07d}.dat"
    dest = env.warehouse / rel
    if place:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    rec_id = str(ulid.ULID())
    mrel = hour or manifest_rel_for(now)
    line = ManifestRecord(
        id=rec_id, status=Status.INGESTED, action=Action.LANDED, source_path=str(env.landing / f"f{n}.dat"),
        source_path_b64=None, warehouse_path=str(dest), warehouse_path_b64=None, sha256=sha, size=len(data),
        mtime=rfc3339(now), device=1, inode=n, ingested_at=rfc3339(now), duplicate_of=None,
        ingestor_version="0",
    ).to_json()  # fmt: skip
    row = (rec_id, "manifested", "ingested", "landed", "synthetic", f"f{n}.dat".encode(), 1, n, len(data),
           now, sha, rel.encode(), mrel, 0, now, None, None, None, now, 0, 0, 0, now)  # fmt: skip
    return line, env.manifests / mrel, row


def insert_rows(env: Env, rows: list[tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(env.state)
    try:
        conn.executemany(f"INSERT INTO files VALUES ({','.join('?' * 23)})", rows)
        conn.executemany(
            "INSERT OR IGNORE INTO content VALUES (?, ?)", [(bytes.fromhex(r[10]), r[0]) for r in rows]
        )
        conn.commit()
    finally:
        conn.close()


def land_by_hand(env: Env, n: int, data: bytes) -> tuple[bytes, Path]:
    """File and ledger row in place; the caller appends the line (when the daemon would)."""
    line, path, row = by_hand(env, n, data)
    insert_rows(env, [row])
    return line, path


def build_synthetic(root: Path, n: int, size: int = 64, *, place: bool = True) -> Env:
    """``n`` small files landed by hand, 1000 per directory: the scale test and the memory measurement.

    Run by hand for the 200k measurement::

        .venv/bin/python -c 'from pathlib import Path; from tests.test_verify import build_synthetic; build_synthetic(Path("/tmp/v200k"), 200_000)'
        /usr/bin/time -v .venv/bin/ingestor verify --warehouse /tmp/v200k/warehouse \\
            --manifests /tmp/v200k/manifests --state-path /tmp/v200k/state/ledger.sqlite
    """
    env = make_env(root)
    env.warehouse.mkdir()
    env.state.parent.mkdir()
    conn = sqlite3.connect(env.state)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("landing", str(env.landing)), ("warehouse", str(env.warehouse)), ("manifests", str(env.manifests))],
    )
    conn.commit()
    conn.close()
    out: dict[Path, list[bytes]] = {}
    rows = []
    for i in range(n):
        hour = f"2026/01/01/{i * 24 // n:02d}/manifest.jsonl"  # spread over the hour files of a day
        line, path, row = by_hand(env, i, traffic.content(f"synthetic-{i}", size), hour=hour, place=place)
        out.setdefault(path, []).append(line)
        rows.append(row)
        if len(rows) >= 10_000:
            insert_rows(env, rows)
            rows.clear()
    insert_rows(env, rows)
    for path, lines in out.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(lines))
    return env


def append_line(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(line)


# ----------------------------------------------------------------- the landed warehouse


@pytest.fixture(scope="module")
def gold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Path]]:
    """A warehouse a real daemon landed: subdirs, quarantined duplicates, a non-UTF-8 name."""
    env = make_env(tmp_path_factory.mktemp("verify") / "live")
    d = DaemonProc(env, ["--stability-seconds", "0.2", "--scan-interval", "30"], env.root / "daemon.log")
    d.start()
    try:
        reps = [
            traffic.rename_tmp(env.landing, count=8, size=3000),
            traffic.rename_tmp(env.landing / "sub" / "deeper", count=3, size=100),
            traffic.duplicates(env.landing, count=3, size=2000),
        ]
        odd = traffic.content("odd", 500)
        (env.landing / ODD_NAME).write_bytes(odd)
        wait_for(lambda: len(env.records()) == 15, 30, "15 manifest lines")
        expected = invariants.expected_of(*reps)
        expected[hashlib.sha256(odd).hexdigest()] = 500
        invariants.check(env, expected)
    finally:
        assert d.stop() == 0, d.log_text()[-3000:]
    pristine = env.root.parent / "pristine"
    for name in ("warehouse", "manifests", "state"):
        shutil.copytree(env.root / name, pristine / name, symlinks=True)
    yield env, pristine


@pytest.fixture
def wh(gold: tuple[Env, Path]) -> Env:
    """The landed warehouse, restored to its pristine state (same absolute paths)."""
    env, pristine = gold
    for name in ("warehouse", "manifests", "state"):
        shutil.rmtree(env.root / name, ignore_errors=True)
        shutil.copytree(pristine / name, env.root / name, symlinks=True)
    return env


def ingested(env: Env) -> list[ManifestRecord]:
    """Ingested records with a UTF-8 name and no duplicate pointing at them, in path order: the plain ones."""
    recs = env.records()
    originals = {r.duplicate_of for r in recs}
    plain = [
        r for r in recs if r.status == "ingested" and r.id not in originals and r.warehouse_path_b64 is None
    ]
    return sorted(plain, key=lambda r: r.warehouse_path or "")


# ----------------------------------------------------------------- clean


def test_daemon_landing_verifies_clean_while_running_and_after(env: Env, daemon) -> None:
    d = daemon()
    reps = [
        traffic.rename_tmp(env.landing / "a", count=10, size=2000),
        traffic.duplicates(env.landing, count=3),
    ]
    wait_for(lambda: len(env.records()) == 13, 20, "13 manifest lines")
    wait_for(lambda: invariants.open_records(env) == 0, 10, "records to finish")
    res = run_ingestor("verify", *env.args()[2:])  # the daemon still runs
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1].startswith("OK: 13 lines, 13 files, 13 records verified")
    assert d.stop() == 0
    invariants.check(env, invariants.expected_of(*reps))
    res = run_ingestor("verify", "--json", *env.args()[2:])
    assert res.returncode == 0, res.stdout + res.stderr
    doc = orjson.loads(res.stdout)
    assert doc["ok"] is True and not found(doc)
    assert doc["checked"]["bytes_hashed"] == 10 * 2000 + 3 * 4096


def test_landed_warehouse_with_non_utf8_names_is_clean(wh: Env) -> None:
    odd = [r for r in wh.records() if r.warehouse_path_b64 is not None]
    assert len(odd) == 1 and os.path.exists(odd[0].warehouse or "")
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (0, {})
    assert doc["checked"] | {"seconds": 0} == {
        "lines": 15, "rejected": 0, "files": 15, "records": 15, "bytes_hashed": GOLD_BYTES, "seconds": 0
    }  # fmt: skip


def test_b64_line_path_is_decoded_exactly(wh: Env) -> None:
    odd = next(r for r in wh.records() if r.warehouse_path_b64 is not None)
    assert base64.b64decode(odd.warehouse_path_b64 or "").endswith(os.fsencode(ODD_NAME))
    os.unlink(odd.warehouse or "")
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"missing_file": 1})
    assert one(doc, "missing_file")["warehouse_path"].endswith("caf\\xe9 \\xff-raw.csv")


def test_synthetic_warehouse_in_many_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "_BATCH", 300)  # many batches of lines, paths and rows, partial last ones
    env = build_synthetic(tmp_path, 2_000)
    os.unlink(env.warehouse / "ingest_date=2026-01-01/d0001/f0001999.dat")
    rc, doc = audit(env)
    assert (rc, found(doc)) == (1, {"missing_file": 1})
    assert doc["checked"]["lines"] == doc["checked"]["records"] == 2_000 and doc["checked"]["files"] == 1_999
    assert len(list(env.manifests.rglob("manifest.jsonl"))) == 24


# ----------------------------------------------------------------- each inconsistency


def test_deleted_file_is_missing(wh: Env) -> None:
    rec = ingested(wh)[0]
    os.unlink(rec.warehouse or "")
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"missing_file": 1})
    assert one(doc, "missing_file")["id"] == rec.id


def test_one_corrupt_byte_is_a_sha_mismatch(wh: Env) -> None:
    rec = ingested(wh)[1]
    path = Path(rec.warehouse or "")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"sha_mismatch": 1})
    ex = one(doc, "sha_mismatch")
    assert ex["expected_sha256"] == rec.sha256 and ex["sha256"] == hashlib.sha256(data).hexdigest()


def test_truncated_file_is_a_size_mismatch_without_hashing(wh: Env) -> None:
    rec = ingested(wh)[2]
    os.truncate(rec.warehouse or "", 10)
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"sha_mismatch": 1})
    assert one(doc, "sha_mismatch") | {"manifest": "", "offset": 0} == {
        "id": rec.id, "warehouse_path": rec.warehouse, "size": 10, "expected_size": rec.size,
        "manifest": "", "offset": 0,
    }  # fmt: skip


def test_duplicate_line_with_new_id_is_content_landed_twice(wh: Env) -> None:
    rec = ingested(wh)[0]
    append_line(
        manifest_files(wh)[-1], ManifestRecord(**{**fields_of(rec), "id": str(ulid.ULID())}).to_json()
    )
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"duplicate_content": 1, "shared_path": 1, "line_without_ledger": 1})
    ex = one(doc, "duplicate_content")
    assert ex["sha256"] == rec.sha256 and ex["ingested"] == 2 and rec.id in ex["ids"]


def test_same_line_twice_is_a_duplicate_id(wh: Env) -> None:
    rec = ingested(wh)[3]
    append_line(manifest_files(wh)[-1], rec.to_json())
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"duplicate_id": 1})
    assert one(doc, "duplicate_id") | {"offset": 0} == {
        "id": rec.id, "lines": 2, "manifest": str(manifest_files(wh)[0]), "offset": 0
    }  # fmt: skip


def test_torn_last_line_is_reported_with_file_and_offset(wh: Env) -> None:
    path = manifest_files(wh)[-1]
    size = path.stat().st_size
    line = ingested(wh)[0].to_json()
    append_line(path, line[: len(line) // 2])
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"torn_line": 1})
    assert one(doc, "torn_line") == {"manifest": str(path), "offset": size, "bytes": len(line) // 2}


def test_malformed_complete_line_is_a_bad_line(wh: Env) -> None:
    path = manifest_files(wh)[-1]
    size = path.stat().st_size
    append_line(path, b'{"id": "not a record"}\n')
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"bad_line": 1})
    ex = one(doc, "bad_line")
    assert (ex["manifest"], ex["offset"]) == (str(path), size) and "not a manifest record" in ex["error"]


def test_file_no_line_names_is_an_orphan(wh: Env) -> None:
    extra = Path(ingested(wh)[0].warehouse or "").with_name("stray.bin")
    extra.write_bytes(b"x" * 7)
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"orphan_file": 1})
    assert one(doc, "orphan_file") == {"warehouse_path": str(extra), "size": 7}


def test_temporary_left_in_tmp_dir_is_reported_separately(wh: Env) -> None:
    tmp = wh.warehouse / ".ingestor-tmp"
    (tmp / "01DEADOWNER-1").write_bytes(b"half a copy")
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"leftover_temporary": 1})
    assert one(doc, "leftover_temporary") == {"path": str(tmp / "01DEADOWNER-1"), "owner_alive": False}


def test_symlink_and_fifo_in_warehouse_are_unexpected_and_not_followed(wh: Env, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"never read")
    os.symlink(outside, wh.warehouse / "link")
    os.mkfifo(wh.warehouse / "fifo")
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"unexpected_entry": 2})
    types = {ex["path"]: ex["type"] for ex in doc["problems"]["unexpected_entry"]}
    assert types == {str(wh.warehouse / "link"): "symlink", str(wh.warehouse / "fifo"): "fifo"}
    assert doc["checked"]["files"] == 15


def test_ledger_row_set_back_to_moved_is_unfinished(wh: Env) -> None:
    rec = ingested(wh)[0]
    sql(wh, "UPDATE files SET state = 'moved' WHERE id = ?", rec.id)
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"unfinished_record": 1})
    ex = one(doc, "unfinished_record")
    assert (ex["id"], ex["state"], ex["owner_alive"], ex["warehouse_path"]) == (
        rec.id, "moved", False, rec.warehouse,
    )  # fmt: skip


def test_deleted_ledger_row_is_a_line_without_ledger(wh: Env) -> None:
    rec = ingested(wh)[0]
    sql(wh, "DELETE FROM files WHERE id = ?", rec.id)
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"line_without_ledger": 1})
    assert one(doc, "line_without_ledger")["id"] == rec.id


def test_lost_manifest_line_is_a_record_without_line(wh: Env) -> None:
    rec = ingested(wh)[0]
    for path in manifest_files(wh):
        path.write_bytes(
            b"".join(ln for ln in path.read_bytes().splitlines(keepends=True) if rec.id.encode() not in ln)
        )
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"ledger_without_line": 1, "orphan_file": 1})
    assert one(doc, "ledger_without_line")["warehouse_path"] == rec.warehouse


def test_line_and_ledger_disagreeing_is_a_mismatch(wh: Env) -> None:
    rec = ingested(wh)[0]
    sql(
        wh,
        "UPDATE files SET sha256 = ?, manifest_rel = '1999/01/01/00/manifest.jsonl' WHERE id = ?",
        "0" * 64,
        rec.id,
    )
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"ledger_mismatch": 1})
    fields = one(doc, "ledger_mismatch")["fields"]
    assert fields["sha256"] == {"line": rec.sha256, "ledger": "0" * 64}
    assert fields["manifest"]["ledger"] == "1999/01/01/00/manifest.jsonl"


def test_duplicate_pointing_at_other_content_is_reported(wh: Env) -> None:
    dup = next(r for r in wh.records() if r.status == "duplicate")
    other = next(r for r in ingested(wh) if r.sha256 != dup.sha256)
    wrong = ManifestRecord(**{**fields_of(dup), "duplicate_of": other.id}).to_json()
    for path in manifest_files(wh):
        path.write_bytes(path.read_bytes().replace(dup.to_json(), wrong))
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"duplicate_mismatch": 1, "ledger_mismatch": 1})
    ex = one(doc, "duplicate_mismatch")
    assert (ex["id"], ex["duplicate_of"], ex["problem"]) == (dup.id, other.id, "original has other content")
    assert one(doc, "ledger_mismatch")["fields"] == {
        "duplicate_of": {"line": other.id, "ledger": dup.duplicate_of}
    }


def test_same_content_from_another_path_is_legal_only_under_path_content_dedup(wh: Env) -> None:
    rec = ingested(wh)[0]
    line, path = land_by_hand(wh, 7, Path(rec.warehouse or "").read_bytes())  # another source path
    append_line(path, line)
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"duplicate_content": 1})
    assert one(doc, "duplicate_content")["ingested"] == 2
    for key, rec_id in sql(wh, "SELECT key, id FROM content"):  # path+content keys: hash, NUL, source path
        sql(wh, "UPDATE content SET key = ? WHERE id = ?", key + b"\0" + rec_id.encode(), rec_id)
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (0, {}), doc["problems"]


# ----------------------------------------------------------------- races with a running daemon


def test_file_landed_during_the_audit_is_not_an_orphan(wh: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    walk = verify._Audit._walk

    def land_then_walk(self: verify._Audit) -> None:
        # the daemon lands a file after the manifests were read: its line comes late
        line, path = land_by_hand(wh, 1, b"landed during the audit\n")
        walk(self)
        append_line(path, line)

    monkeypatch.setattr(verify._Audit, "_walk", land_then_walk)
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (0, {})
    assert doc["checked"]["lines"] == 16  # the late line's file was hashed too:
    assert doc["checked"]["bytes_hashed"] == GOLD_BYTES + len(b"landed during the audit\n")


def test_file_that_cannot_be_read_is_reported(wh: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = ingested(wh)[0]
    walk = verify._Audit._walk

    def walk_then_swap(self: verify._Audit) -> None:
        walk(self)
        os.unlink(rec.warehouse or "")
        os.mkdir(rec.warehouse or "")  # a directory where the walk saw the file

    monkeypatch.setattr(verify._Audit, "_walk", walk_then_swap)
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (1, {"unreadable_file": 1})
    assert one(doc, "unreadable_file") == {"path": rec.warehouse, "error": "not a regular file"}


def test_record_and_torn_line_finished_during_the_audit_are_not_reported(
    wh: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = ingested(wh)[0]
    sql(wh, "UPDATE files SET state = 'moved' WHERE id = ?", rec.id)
    line, path = land_by_hand(wh, 2, b"torn while being written\n")
    append_line(path, line[:20])
    snapshot = verify._Audit._snapshot_ledger

    def snapshot_then_finish(self: verify._Audit) -> None:
        snapshot(self)
        sql(wh, "UPDATE files SET state = 'manifested' WHERE id = ?", rec.id)
        append_line(path, line[20:])

    monkeypatch.setattr(verify._Audit, "_snapshot_ledger", snapshot_then_finish)
    rc, doc = audit(wh)
    assert (rc, found(doc)) == (0, {})


def test_audits_during_traffic_report_nothing_but_work_in_flight(env: Env, daemon) -> None:
    daemon()
    rep = traffic.burst(env.landing, count=300, size=3000, subdirs=3)
    seen: set[str] = set()
    audits = 0
    deadline = time.monotonic() + 60
    # audits race the landing of the burst (an audit takes milliseconds: the
    # bound is a deadline, not a number of audits)
    while audits < 3 or len(env.records()) < 300:
        seen |= set(found(audit(env)[1]))
        audits += 1
        assert time.monotonic() < deadline, f"the burst never landed ({audits} audits)"
    assert seen <= {"unfinished_record", "leftover_temporary"}, seen
    wait_for(lambda: invariants.open_records(env) == 0, 10, "records to finish")
    invariants.check(env, invariants.expected_of(rep))
    rc, doc = audit(env)
    assert (rc, found(doc)) == (0, {})


def test_live_owner_is_reported_alive(wh: Env) -> None:
    rec = ingested(wh)[0]
    sql(wh, "UPDATE files SET state = 'hashed', owner = 'LIVEOWNER' WHERE id = ?", rec.id)
    owners = wh.state.parent / "owners"
    owners.mkdir(exist_ok=True)
    fd = os.open(owners / "LIVEOWNER.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rc, doc = audit(wh)
    finally:
        os.close(fd)
    assert rc == 1 and one(doc, "unfinished_record")["owner_alive"] is True


# ----------------------------------------------------------------- the command


def test_cli_json_is_one_object_matching_the_in_process_report(wh: Env) -> None:
    recs = ingested(wh)
    os.unlink(recs[0].warehouse or "")
    os.truncate(recs[1].warehouse or "", 1)
    res = run_ingestor("verify", "--json", *wh.args()[2:])
    assert res.returncode == 1, res.stderr
    doc = orjson.loads(res.stdout)  # exactly one JSON document: loads fails on anything after it
    assert set(doc) == {"ok", "counts", "problems", "checked"} and doc["ok"] is False
    assert found(doc) == {"missing_file": 1, "sha_mismatch": 1}
    assert set(doc["counts"]) == set(doc["problems"]) == set(verify_report.KINDS)
    _, mine = audit(wh)
    assert mine["problems"] == doc["problems"] and mine["counts"] == doc["counts"]


def test_cli_text_summary(wh: Env) -> None:
    rec = ingested(wh)[0]
    os.unlink(rec.warehouse or "")
    res = run_ingestor("verify", *wh.args()[2:])
    assert res.returncode == 1 and res.stderr == ""
    lines = res.stdout.splitlines()
    assert lines[0] == f"missing_file: 1  ({verify_report.KINDS['missing_file']})"
    assert lines[1].startswith(f"  id={rec.id} warehouse_path={rec.warehouse} manifest=")
    assert lines[-1].startswith("FAILED: 1 problem (missing_file 1) in 15 lines, 14 files, 15 records (")


@pytest.mark.parametrize("missing", ["warehouse", "manifests", "state"])
def test_missing_input_exits_2_with_one_line(wh: Env, missing: str) -> None:
    args = {"warehouse": wh.warehouse, "manifests": wh.manifests, "state": wh.state}
    args[missing] = wh.root / "nope"
    res = run_ingestor(
        "verify", "--warehouse", str(args["warehouse"]), "--manifests", str(args["manifests"]),
        "--state-path", str(args["state"]),
    )  # fmt: skip
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith("ingestor: error: ")
    assert "nope" in res.stderr


def test_unusable_ledger_exits_2(wh: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"this is not a database" * 100)
    out = io.StringIO()
    assert verify.run_verify(wh.warehouse, wh.manifests, bogus, as_json=False, out=out) == 2
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert verify.run_verify(other, wh.manifests, wh.state, as_json=False, out=out) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "not a database" in err[0] and "belongs to warehouse" in err[1]
    assert out.getvalue() == ""


# ----------------------------------------------------------------- bugs found in the product


@pytest.mark.parametrize("dirname", ["state#1", "state?x"])
def test_readonly_ledger_connection_with_uri_characters_in_path(tmp_path: Path, dirname: str) -> None:
    path = tmp_path / dirname / "ledger.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.close()
    ro = connect(path, readonly=True)
    try:
        assert ro.execute("SELECT count(*) FROM files").fetchone() == (0,)
    finally:
        ro.close()
        assert sorted(os.listdir(tmp_path)) == [dirname]  # and no stray database beside it


def test_content_changed_during_landing_is_registered_under_its_new_hash(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite", "owner1")
    ledger.open({})
    try:
        policy = PlanPolicy("{relpath}", Dedup.CONTENT, OnDuplicate.DELETE, tmp_path / "warehouse")
        first, landed = "a" * 64, "b" * 64

        def plan(name: str, inode: int, sha: str) -> Any:
            return ledger.plan(
                [Hashed(Candidate(name, 1, 0.0), Identity(1, inode, 1, 1), sha, None)], policy
            )[0]

        rec = plan("x.csv", 10, first)
        # the writer appended after the hash: the warehouse file holds `landed`, and so say ledger and line
        ledger.moved([MovedUpdate(rec.id, 0, changed=(Identity(1, 10, 2, 2), landed))])
        ledger.manifested([rec.id])
        # a later drop of the first content is not in the warehouse: deleting it as a duplicate loses it
        assert plan("y.csv", 11, first).status is Status.INGESTED
        assert plan("z.csv", 12, landed).status is Status.DUPLICATE
    finally:
        ledger.close()


def test_a_manifest_hour_removed_during_the_audit_is_reported_not_fatal(
    wh: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a retention job removing an hour directory while verify listed the manifests
    made it exit 2 (unusable input) instead of reporting."""
    line, path, row = by_hand(
        wh, 3, b"in an old hour\n", hour=manifest_rel_for(time.time_ns() - 7 * 86400 * 10**9)
    )
    insert_rows(wh, [row])
    append_line(path, line)
    old = path.parent  # its own hour directory, in its own day
    real_scandir = os.scandir

    class Listed:
        """What scandir listed, after the hour below it was removed."""

        def __init__(self, entries: list[os.DirEntry[str]]) -> None:
            self.entries = entries

        def __enter__(self) -> list[os.DirEntry[str]]:
            return self.entries

        def __exit__(self, *exc: object) -> None:
            return None

    def scandir_then_remove(p: Any) -> Any:
        if isinstance(p, str | os.PathLike) and Path(p) == old.parent and old.exists():
            with real_scandir(p) as it:
                entries = list(it)
            shutil.rmtree(old)  # between listing the day and entering the hour
            return Listed(entries)
        return real_scandir(p)

    monkeypatch.setattr(verify.os, "scandir", scandir_then_remove)
    rc, doc = audit(wh)
    monkeypatch.undo()
    assert rc == 1, doc
    assert one(doc, "manifest_vanished")["path"] == str(old)
    assert found(doc) == {"manifest_vanished": 1, "ledger_without_line": 1, "orphan_file": 1}
