"""The ledger's PostgreSQL schema (issue 15, first part), on a real server started by the tests."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingestor import ledger_pg
from ingestor.errors import Refused
from ingestor.ledger_db import SCHEMA


def columns_pg(conn: psycopg.Connection[Any], schema: str) -> dict[str, list[str]]:
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
        "ORDER BY table_name, ordinal_position",
        (schema,),
    ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def columns_sqlite(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    out = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    conn.close()
    return out


def test_the_schema_is_the_sqlite_ledgers_tables_made_once_whoever_starts_first(
    pg_url: str, tmp_path: Path
) -> None:
    versions: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def starter() -> None:  # four hosts starting at once
        try:
            with ledger_pg.connect(pg_url) as conn:
                start.wait(10)
                versions.append(ledger_pg.create(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=starter) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and versions == [ledger_pg.SCHEMA_VERSION] * 4
    with ledger_pg.connect(pg_url) as conn:
        assert columns_pg(conn, "ingestor") == columns_sqlite(tmp_path / "ledger.sqlite")
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchall() == [("1",)]
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname='ingestor'")}
        assert {"files_dest_wh", "files_live", "files_source", "files_sha256", "rejections_once"} <= indexes


def test_a_schema_made_by_a_newer_ingestor_is_refused_with_one_line(pg_url: str) -> None:
    with ledger_pg.connect(pg_url, schema="ops") as conn:
        ledger_pg.create(conn, "ops")
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(Refused, match="version 99, newer than this ingestor's 1") as info:
            ledger_pg.create(conn, "ops")
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["Ingestor", "1st", "a-b", "a;drop table x", "x" * 64, ""])
def test_a_schema_name_that_is_not_a_plain_identifier_is_refused(bad: str) -> None:
    with pytest.raises(Refused):
        ledger_pg.check_schema_name(bad)


def test_content_is_claimed_by_exactly_one_of_many_hosts_at_once(pg_url: str) -> None:
    """The claim a daemon wins: a row in ``content``, inserted by many connections at once."""
    with ledger_pg.connect(pg_url) as conn:
        ledger_pg.create(conn)
    winners: list[str] = []
    start = threading.Barrier(8)

    def claim(n: int) -> None:
        with ledger_pg.connect(pg_url) as conn, conn.transaction():
            start.wait(10)
            row = conn.execute(
                "INSERT INTO content(key, id) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING id",
                (bytes.fromhex("ab" * 32), f"host{n}"),
            ).fetchone()
            if row is not None:
                winners.append(row[0])

    for _ in range(5):
        threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        with ledger_pg.connect(pg_url) as conn:
            (owner,) = conn.execute("SELECT id FROM content").fetchone() or ("",)
            conn.execute("DELETE FROM content")
        assert len(winners) == 1 and winners[0] == owner, winners
        winners.clear()


def test_a_url_is_shown_without_its_password() -> None:
    shown = ledger_pg.display("postgresql://ingest:s3cret@db.example:5433/ledger?sslmode=require")
    assert shown == "postgresql://ingest:***@db.example:5433/ledger?sslmode=require"
    assert ledger_pg.display("postgresql:///ledger?host=/run/pg") == "postgresql:///ledger?host=/run/pg"
    assert ledger_pg.is_url("postgresql://x/y") and not ledger_pg.is_url("/var/lib/ingestor/ledger.sqlite")
