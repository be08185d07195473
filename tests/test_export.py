"""``ingestor manifest export | schema``: hourly JSONL manifests → one typed Parquet file.

The manifests are real files under ``tmp_path`` (written here line by line, or by
a real ``ingestor replay``); the commands run as real processes; the Parquet
file is read back by DuckDB, polars and pandas, each with its one documented
line, and every column's type is checked in each.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestor import export
from tests.conftest import Env, run_ingestor

UTC = dt.UTC
START = dt.datetime(2026, 3, 1, tzinfo=UTC)
# null in every hour file but the last in the three-library test
LATE_COLUMNS = ("duplicate_of", "source_path_b64", "warehouse_path_b64", "detected_at", "reason", "hint",
                "warehouse_path", "warehouse_relpath")  # fmt: skip
NEW_KEYS = export.KEYS[export.KEYS.index("detected_at") :]  # what lines older than them lack
STRINGS = [c.name for c in export.COLUMNS if c.type == pa.string()]
INTS = ["size", "device", "inode"]
TIMES = ["mtime", "ingested_at", "detected_at"]
DUCKDB_TYPES = {"string": "VARCHAR", "int64": "BIGINT", "timestamp[us, tz=UTC]": "TIMESTAMP WITH TIME ZONE",
                "map<string, string>": "MAP(VARCHAR, VARCHAR)"}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def polars_runtime(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start polars' I/O runtime once, before the tests' fd check: its first read opens an epoll
    and an eventfd that live as long as the process (as the resource tracker's pipe does)."""
    path = tmp_path_factory.mktemp("polars") / "empty.parquet"
    pq.write_table(export.SCHEMA.empty_table(), path)
    pl.read_parquet(path)


def rfc(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(n: int, at: dt.datetime, **over: Any) -> dict[str, Any]:
    """A manifest line as the daemon writes it now (every key, in the line's order)."""
    rec: dict[str, Any] = {
        "id": f"01KF{n:022d}",
        "status": "ingested",
        "action": "landed",
        "source_path": f"/data/landing/f{n}.csv",
        "source_path_b64": None,
        "warehouse_path": f"/data/warehouse/ingest_date={at:%Y-%m-%d}/f{n}.csv",
        "warehouse_path_b64": None,
        "sha256": f"{n:064x}",
        "size": 1000 + n,
        "mtime": rfc(at - dt.timedelta(seconds=5)),
        "device": 65024,
        "inode": 2_000_000 + n,
        "ingested_at": rfc(at),
        "duplicate_of": None,
        "ingestor_version": "0.1.0",
        "detected_at": rfc(at - dt.timedelta(seconds=2)),
        "source_relpath": f"f{n}.csv",
        "warehouse_relpath": f"ingest_date={at:%Y-%m-%d}/f{n}.csv",
        "reason": None,
        "hint": None,
        "source": "default",
        "dataset": {},
        "host": "ingest-01",
        "run_id": "6f1c3c2e-8f7a-4d0e-9b1a-2c3d4e5f6a7b",
    }
    rec.update(over)
    return rec


def hour_file(manifests: Path, hour: dt.datetime) -> Path:
    return manifests / f"{hour:%Y/%m/%d/%H}" / "manifest.jsonl"


def write_hour(manifests: Path, hour: dt.datetime, lines: list[Any], tail: bytes = b"") -> Path:
    """One hour file: each line a record (dict) or raw bytes (newline added), then ``tail``."""
    path = hour_file(manifests, hour)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(x + b"\n" if isinstance(x, bytes) else orjson.dumps(x) + b"\n" for x in lines)
    path.write_bytes(data + tail)
    return path


def run_export(*args: str) -> tuple[int, str, str]:
    done = run_ingestor("manifest", "export", *args)
    return done.returncode, done.stdout, done.stderr


def export_json(*args: str) -> dict[str, Any]:
    rc, out, err = run_export(*args, "--json")
    assert rc == 0, err
    doc: dict[str, Any] = orjson.loads(out)
    return doc


# ----------------------------------------------------------------- the three readers, one line each


def load_duckdb(path: Path) -> duckdb.DuckDBPyRelation:
    return duckdb.sql(f"select * from '{path}'")


def load_polars(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path)


def load_pandas(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path, dtype_backend="numpy_nullable")


def check_types(path: Path) -> None:
    """Every column typed as the schema says, in each of the three libraries."""
    rel = load_duckdb(path)
    duck = dict(zip(rel.columns, (str(t) for t in rel.types), strict=True))
    assert duck == {c.name: DUCKDB_TYPES[str(c.type)] for c in export.COLUMNS}

    df = load_polars(path)
    assert df.columns == list(export.KEYS)
    for name in STRINGS:
        assert df.schema[name] == pl.String, name
    for name in INTS:
        assert df.schema[name] == pl.Int64, name
    for name in TIMES:
        assert df.schema[name] == pl.Datetime("us", "UTC"), name
    assert df.schema["dataset"] == pl.Map(pl.String, pl.String)

    pdf = load_pandas(path)
    assert list(pdf.columns) == list(export.KEYS)
    for name in STRINGS:
        assert pd.api.types.is_string_dtype(pdf[name].dtype) and pdf[name].dtype != object, name
        assert all(isinstance(v, str) for v in pdf[name].dropna()), name
    for name in INTS:
        assert pdf[name].dtype == pd.Int64Dtype(), name
    for name in TIMES:
        assert pdf[name].dtype == pd.DatetimeTZDtype("us", "UTC"), name
    assert pdf["dataset"].dtype == object
    assert all(isinstance(v, list) and all(isinstance(k, str) for k, _ in v) for v in pdf["dataset"].dropna())


# ----------------------------------------------------------------- the test


def sixty_hours(manifests: Path) -> dict[str, int]:
    """60 hour files over 3 days, 5 lines each; LATE_COLUMNS null in all but the last file.

    Returns the non-null count each late column must have."""
    n = 0
    for h in range(59):
        hour = START + dt.timedelta(hours=h)
        lines = []
        for i in range(5):
            n += 1
            lines.append(record(n, hour + dt.timedelta(minutes=i), **dict.fromkeys(LATE_COLUMNS)))
        write_hour(manifests, hour, lines)
    last = START + dt.timedelta(hours=59)
    odd = b"/data/landing/caf\xe9.csv"  # not UTF-8
    lines = [
        record(n + 1, last),
        record(n + 2, last, status="duplicate", action="quarantined", duplicate_of=record(n + 1, last)["id"],
               warehouse_path="/data/warehouse/_duplicates/f.csv", warehouse_relpath="_duplicates/f.csv"),
        record(n + 3, last, source_path=odd.decode(errors="replace"), source_path_b64=base64.b64encode(odd).decode(),
               warehouse_path="/data/warehouse/caf\ufffd.csv", warehouse_path_b64=base64.b64encode(b"/data/warehouse/caf\xe9.csv").decode()),
        record(n + 4, last, status="rejected", action="none", sha256=None, size=None, mtime=None, device=None, inode=None,
               warehouse_path=None, warehouse_relpath=None, reason="a FIFO is never opened", hint="write a regular file"),
        record(n + 5, last, source="acme", dataset={"vendor": "acme", "version": "1.0"}),
    ]  # fmt: skip
    write_hour(manifests, last, lines)
    return {"duplicate_of": 1, "source_path_b64": 1, "warehouse_path_b64": 1, "detected_at": 5,
            "reason": 1, "hint": 1, "warehouse_path": 4, "warehouse_relpath": 4}  # fmt: skip


def test_sixty_hourly_files_null_but_in_the_last_load_typed_in_duckdb_polars_and_pandas(
    tmp_path: Path,
) -> None:
    manifests = tmp_path / "manifests"
    late = sixty_hours(manifests)
    out = tmp_path / "out" / "manifests.parquet"
    out.parent.mkdir()
    doc = export_json("--manifests", str(manifests), "--output", str(out))
    assert doc | {"seconds": 0} == {
        "files": 60, "lines": 300, "bad_lines": 0, "unfinished": 0, "vanished": 0, "rows": 300, "output": str(out),
        "seconds": 0, "manifests": [str(manifests)], "since": None, "until": None,
    }  # fmt: skip
    assert sorted(os.listdir(out.parent)) == ["manifests.parquet"]  # no temporary left
    assert pq.read_schema(out).equals(export.SCHEMA)
    check_types(out)

    # the counts, in each library
    rel = load_duckdb(out)
    counts = duckdb.sql(
        "select count(*), " + ", ".join(f"count({c})" for c in late) + ", count(size), "
        "count(dataset), max(ingested_at) - min(ingested_at) from rel"
    ).fetchall()[0]
    assert counts[: 2 + len(late)] == (300, *late.values(), 299)
    assert counts[-2:] == (300, dt.timedelta(hours=59))
    df = load_polars(out)
    assert df.height == 300
    assert {c: df[c].len() - df[c].null_count() for c in late} == late
    assert df.filter(pl.col("source") == "acme")["dataset"].map.get("vendor").to_list() == ["acme"]
    pdf = load_pandas(out)
    assert len(pdf) == 300 and pdf[list(late)].notna().sum().to_dict() == late
    assert pdf["ingested_at"].iloc[0] == pd.Timestamp("2026-03-01T00:00:00Z")
    assert dict(pdf["dataset"].iloc[-1]) == {"vendor": "acme", "version": "1.0"}
    rejected = pdf[pdf["status"] == "rejected"].iloc[0]
    assert rejected["size"] is pd.NA and rejected["reason"] == "a FIFO is never opened"

    # the documented live query over the same JSONL: the same types and counts
    live = duckdb.sql(export.duckdb_query(f"{manifests}/*/*/*/*/manifest.jsonl"))
    assert [str(t) for t in live.types] == [str(t) for t in rel.types] and live.columns == rel.columns
    for query in ("select count(*), count(duplicate_of), count(detected_at), count(size), sum(size), "
                  "count(warehouse_path_b64), min(ingested_at), max(mtime) from {}",
                  "select status, count(*) from {} group by all order by all"):  # fmt: skip
        assert duckdb.sql(query.format("live")).fetchall() == duckdb.sql(query.format("rel")).fetchall()


def test_schema_command_prints_every_column_and_the_duckdb_columns() -> None:
    done = run_ingestor("manifest", "schema")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == list(export.KEYS)
    assert lines[export.KEYS.index("mtime")].split()[1:3] == ["timestamp[us,", "tz=UTC]"]
    assert "not null" in lines[0] and "2^63" in lines[export.KEYS.index("inode")]
    done = run_ingestor("manifest", "schema", "--json")
    rows = orjson.loads(done.stdout)
    assert [(r["column"], r["type"], r["nullable"]) for r in rows] == [
        (c.name, str(c.type), c.nullable) for c in export.COLUMNS
    ]
    done = run_ingestor("manifest", "schema", "--duckdb")
    assert done.stdout == export.duckdb_columns() + "\n"
    assert "'dataset': 'MAP(VARCHAR, VARCHAR)'" in done.stdout and "'mtime': 'TIMESTAMPTZ'" in done.stdout


# ----------------------------------------------------------------- lines as they come


def test_old_lines_without_the_newer_keys_export_with_nulls(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    old = {k: v for k, v in record(1, START).items() if k not in (*NEW_KEYS, "source", "dataset")}
    old["ingested_at"] = "2026-03-01T00:00:00.508Z"  # milliseconds, as early lines had
    write_hour(manifests, START, [old, record(2, START)])
    out = tmp_path / "m.parquet"
    assert export_json("--manifests", str(manifests), "-o", str(out))["rows"] == 2
    rows = pq.read_table(out).to_pylist()
    assert all(rows[0][k] is None for k in NEW_KEYS) and rows[0]["source"] is None
    assert rows[0]["ingested_at"] == dt.datetime(2026, 3, 1, 0, 0, 0, 508000, tzinfo=UTC)
    assert rows[1]["detected_at"] == START - dt.timedelta(seconds=2) and rows[1]["dataset"] == []
    check_types(out)


def test_a_torn_last_line_is_not_yet_written_and_skipped(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    write_hour(
        manifests, START, [record(1, START), record(2, START)], tail=orjson.dumps(record(3, START))[:40]
    )
    write_hour(
        manifests, START + dt.timedelta(hours=1), [record(4, START)], tail=orjson.dumps(record(5, START))
    )
    out = tmp_path / "m.parquet"
    doc = export_json("--manifests", str(manifests), "-o", str(out))
    assert (doc["lines"], doc["rows"], doc["bad_lines"], doc["unfinished"]) == (3, 3, 0, 2)
    assert pq.read_table(out, columns=["id"])["id"].to_pylist() == [record(n, START)["id"] for n in (1, 2, 4)]
    rc, text, _ = run_export("--manifests", str(manifests), "-o", str(out))
    assert rc == 0 and "2 unfinished last lines skipped" in text and "3 rows" in text


def test_bad_lines_are_reported_with_file_and_offset_and_exit_1(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    good = [record(n, START) for n in range(1, 4)]
    bad: list[tuple[bytes | dict[str, Any], str]] = [  # reported in this order, the file's
        (record(10, START, size="big"), 'size is not an integer below 2^64: "big"'),
        (b"not json at all", "not JSON"),
        (b"[1, 2]", "not a JSON object: [1,2]"),
        (b"", "not JSON"),
        (record(11, START, size=1.5), "size is not an integer below 2^64: 1.5"),
        (record(12, START, id=None), "id is missing or null"),
        (
            {k: v for k, v in record(13, START).items() if k != "ingested_at"},
            "ingested_at is missing or null",
        ),
        (record(14, START, mtime="yesterday"), 'mtime is not an RFC 3339 timestamp: "yesterday"'),
        (record(15, START, dataset={"vendor": 1}), "dataset is not an object of strings"),
        (record(16, START, source=["a"]), 'source is not a string: ["a"]'),
    ]
    lines: list[Any] = [good[0], *(b for b, _ in bad), good[1], good[2]]
    path = write_hour(manifests, START, lines)
    data = path.read_bytes()
    starts = [0, *(i + 1 for i, c in enumerate(data) if c == ord("\n"))]
    out = tmp_path / "m.parquet"
    rc, text, err = run_export("--manifests", str(manifests), "-o", str(out))
    assert rc == 1, err
    assert "13 lines (10 bad)" in text and "3 rows" in text
    reported = err.splitlines()
    assert len(reported) == len(bad)
    for (_, why), start, shown in zip(bad, starts[1 : 1 + len(bad)], reported, strict=True):
        assert shown.startswith(f"ingestor: bad manifest line {path}:{start}: "), shown
        assert why in shown, shown
    assert pq.read_table(out, columns=["id"])["id"].to_pylist() == [r["id"] for r in good]


def test_many_bad_lines_are_shown_up_to_a_bound_and_counted(tmp_path: Path) -> None:
    from ingestor.cli_export import SHOWN_BAD

    manifests = tmp_path / "manifests"
    write_hour(manifests, START, [b"garbage"] * (SHOWN_BAD + 5) + [record(1, START)])
    rc, text, err = run_export("--manifests", str(manifests), "-o", str(tmp_path / "m.parquet"))
    assert rc == 1
    assert len(err.splitlines()) == SHOWN_BAD + 1
    assert err.splitlines()[-1] == "ingestor: 5 more bad manifest lines not shown"
    assert f"({SHOWN_BAD + 5} bad)" in text and "1 rows" in text


def test_an_inode_above_2_63_is_kept_as_its_twos_complement(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    beyond = orjson.dumps(record(2, START, inode=0)).replace(b'"inode":0', b'"inode":%d' % 2**64)
    write_hour(manifests, START, [record(1, START, inode=2**64 - 1, device=2**63), beyond])
    seen: list[export.BadLine] = []
    report = export.export([manifests], tmp_path / "m.parquet", on_bad=seen.append)
    assert (report.rows, report.bad_lines) == (1, 1)
    assert "inode is not an integer below 2^64" in seen[0].why  # 2^64 is beyond even the kernel's type
    row = pq.read_table(tmp_path / "m.parquet").to_pylist()[0]
    assert (row["inode"], row["device"]) == (-1, -(2**63))
    assert (row["inode"] + 2**64, row["device"] + 2**64) == (2**64 - 1, 2**63)


def test_a_batch_boundary_keeps_rows_and_order(tmp_path: Path) -> None:
    """Batches cut inside an hour file and across files: every line once, in order."""
    manifests = tmp_path / "manifests"
    ids = []
    for h in range(3):
        recs = [record(h * 10 + i, START + dt.timedelta(hours=h)) for i in range(7)]
        write_hour(manifests, START + dt.timedelta(hours=h), [*recs[:3], b"{oops", *recs[3:]])
        ids += [r["id"] for r in recs]
    out = tmp_path / "m.parquet"
    report = export.export([manifests], out, batch_lines=4)
    assert (report.rows, report.bad_lines, report.lines) == (21, 3, 24)
    assert pq.read_table(out, columns=["id"])["id"].to_pylist() == ids
    assert pq.ParquetFile(out).metadata.num_row_groups == 6


def test_an_hour_file_removed_before_it_is_read_is_counted_not_fatal(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    write_hour(manifests, START, [b"bad", record(1, START)])
    doomed = write_hour(manifests, START + dt.timedelta(hours=1), [record(2, START)])
    write_hour(manifests, START + dt.timedelta(hours=2), [record(3, START)])
    # told of the bad line while the first file is read (a batch of one): a retention job strikes
    report = export.export(
        [manifests], tmp_path / "m.parquet", batch_lines=1, on_bad=lambda _: doomed.unlink()
    )
    assert (report.files, report.vanished, report.rows, report.bad_lines) == (2, 1, 2, 1)


# ----------------------------------------------------------------- which files


def test_since_and_until_choose_hours_by_their_directory_and_read_no_other(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    for h in range(72):  # three days; every file outside the range holds a bad line
        hour = START + dt.timedelta(hours=h)
        inside = dt.datetime(2026, 3, 2, 5, tzinfo=UTC) <= hour <= dt.datetime(2026, 3, 2, 23, tzinfo=UTC)
        write_hour(manifests, hour, [record(h, hour)] + ([] if inside else [b"not read"]))
    out = tmp_path / "m.parquet"
    doc = export_json(
        "--manifests", str(manifests), "-o", str(out), "--since", "2026-03-02T05", "--until", "2026-03-02"
    )
    assert (doc["files"], doc["rows"], doc["bad_lines"]) == (19, 19, 0)
    times = pq.read_table(out, columns=["ingested_at"])["ingested_at"].to_pylist()
    assert times == [dt.datetime(2026, 3, 2, h, tzinfo=UTC) for h in range(5, 24)]
    doc = export_json(
        "--manifests",
        str(manifests),
        "-o",
        str(out),
        "--since",
        "2026-03-02 07:00Z",
        "--until",
        "2026/03/02/07",
    )
    assert (doc["files"], doc["rows"]) == (1, 1)


@pytest.mark.parametrize(
    ("text", "end", "hour"),
    [
        ("2026-11-23T15", False, (2026, 11, 23, 15)),
        ("2026-11-23T15:00:00Z", True, (2026, 11, 23, 15)),
        ("2026-11-23", False, (2026, 11, 23, 0)),
        ("2026-11-23", True, (2026, 11, 23, 23)),
        ("2026/11/23/04", False, (2026, 11, 23, 4)),
    ],
)
def test_parse_hour(text: str, end: bool, hour: export.Hour) -> None:
    assert export.parse_hour(text, end=end) == hour


@pytest.mark.parametrize("text", ["2026-11-23T15:30", "2026-02-30", "2026-11-23T24", "yesterday", "2026-11"])
def test_parse_hour_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        export.parse_hour(text)


def test_an_empty_manifests_dir_gives_an_empty_file_with_the_schema(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    (manifests / "2026" / "03").mkdir(parents=True)  # a directory with no hour file yet
    (manifests / ".ingestor-ledger").write_text("{}")
    out = tmp_path / "m.parquet"
    doc = export_json("--manifests", str(manifests), "-o", str(out))
    assert (doc["files"], doc["rows"]) == (0, 0)
    assert pq.read_schema(out).equals(export.SCHEMA)
    check_types(out)
    assert load_polars(out).height == 0 and len(load_pandas(out)) == 0


def test_the_output_is_replaced_whole_and_left_alone_on_error(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    write_hour(manifests, START, [record(1, START), b"bad"])
    out = tmp_path / "m.parquet"
    out.write_bytes(b"the previous export")

    def stop(line: export.BadLine) -> None:
        raise KeyboardInterrupt  # an export stopped half-way

    with pytest.raises(KeyboardInterrupt):
        export.export([manifests], out, on_bad=stop)
    assert out.read_bytes() == b"the previous export" and sorted(os.listdir(tmp_path)) == [
        "m.parquet",
        "manifests",
    ]
    os.umask(old := os.umask(0o022))
    report = export.export([manifests], out)
    assert report.rows == 1 and pq.read_table(out).num_rows == 1
    assert out.stat().st_mode & 0o777 == 0o666 & ~old  # as if written in place, not mkstemp's 0600


def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    out = str(tmp_path / "m.parquet")
    for args, says in [
        (["-o", out], "needs --manifests DIR"),
        (["--manifests", str(tmp_path / "nope"), "-o", out], "does not exist"),
        (["--manifests", str(manifests)], "Missing option '--output'"),
        (["--manifests", str(manifests), "-o", str(tmp_path / "no" / "m.parquet")], "does not exist"),
        (["--manifests", str(manifests), "-o", str(tmp_path)], "is a directory"),
        (["--manifests", str(manifests), "-o", out, "--since", "soon"], "invalid value of --since"),
        (
            ["--manifests", str(manifests), "-o", out, "--since", "2026-03-02", "--until", "2026-03-01"],
            "is after",
        ),
    ]:
        rc, text, err = run_export(*args)
        assert rc == 2 and text == "", (args, err)
        assert len(err.splitlines()) == 1 and err.startswith("ingestor: error: ") and says in err, (args, err)
    assert not (tmp_path / "m.parquet").exists()


# ----------------------------------------------------------------- manifests the ingestor wrote


def test_a_manifest_written_by_replay_exports_line_for_line(tmp_path: Path) -> None:
    env = Env.under(tmp_path)
    (env.landing / "eu").mkdir()
    for rel, body in (("a.csv", b"id\n1\n"), ("eu/b.txt", b"hello\n"), ("a-again.csv", b"id\n1\n")):
        (env.landing / rel).write_bytes(body)
    done = run_ingestor("replay", *env.args(), "--stability-seconds", "0")
    assert done.returncode == 0, done.stderr
    lines = [
        orjson.loads(ln)
        for p in sorted(env.manifests.rglob("manifest.jsonl"))
        for ln in p.read_bytes().splitlines()
    ]
    assert len(lines) == 3 and all(set(line) <= set(export.KEYS) for line in lines)  # every key has a column
    out = tmp_path / "m.parquet"
    doc = export_json("--input", str(env.landing), "-o", str(out))  # the manifests dir beside the landing dir
    assert doc["manifests"] == [str(env.manifests)] and doc["rows"] == 3
    rows = pq.read_table(out).to_pylist()
    for line, row in zip(lines, rows, strict=True):
        for key, value in line.items():
            col = export.SCHEMA.field(key)
            if col.type == export.TIMESTAMP:
                assert row[key] == dt.datetime.fromisoformat(value), key
            elif col.type == export.DATASET:
                assert row[key] == list(value.items()), key
            else:
                assert row[key] == value, key
    dup = next(r for r in rows if r["status"] == "duplicate")
    original = next(r for r in rows if r["id"] == dup["duplicate_of"])
    assert {original["source_path"], dup["source_path"]} == {
        str(env.landing / n) for n in ("a.csv", "a-again.csv")
    }
    assert dup["sha256"] == original["sha256"]
    check_types(out)


def test_every_manifests_dir_of_the_sources_goes_into_one_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for vendor, names in (("acme", ["a.csv", "b.csv"]), ("globex", ["g.csv"])):
        (data / vendor / "raw").mkdir(parents=True)
        for name in names:
            (data / vendor / "raw" / name).write_text(f"{vendor} {name}\n")
    (tmp_path / "drop" / "orders").mkdir(parents=True)
    (tmp_path / "drop" / "orders" / "o.csv").write_text("order\n")
    config = tmp_path / "ingestor.toml"
    config.write_text(
        f'state_path = "{tmp_path}/state/ledger.sqlite"\nstability_seconds = 0\n'
        f'[[source]]\nname = "vendors"\npath = "{data}/{{vendor}}/raw"\n'
        f'warehouse = "{data}/{{vendor}}/bronze"\nmanifests = "{data}/{{vendor}}/manifests"\n'
        f'[[source]]\nname = "orders"\npath = "{tmp_path}/drop/orders"\n'
    )
    done = run_ingestor("replay", "--config", str(config))
    assert done.returncode == 0, done.stderr
    shutil.rmtree(data / "globex" / "raw")  # a dataset retired: the ledger still knows its manifests
    out = tmp_path / "m.parquet"
    doc = export_json("--config", str(config), "-o", str(out))
    assert sorted(doc["manifests"]) == sorted(
        str(p)
        for p in (data / "acme" / "manifests", data / "globex" / "manifests", tmp_path / "drop" / "manifests")
    )
    got = duckdb.sql(
        f"select source, dataset['vendor'], count(*) from '{out}' group by all order by all"
    ).fetchall()
    assert got == [("orders", None, 1), ("vendors", "acme", 2), ("vendors", "globex", 1)]
    doc = export_json("--config", str(config), "--source", "orders", "-o", str(out))
    assert doc["manifests"] == [str(tmp_path / "drop" / "manifests")] and doc["rows"] == 1
