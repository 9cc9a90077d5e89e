"""The benchmark's ANALYZE thread, which keeps a growing table's statistics current while autovacuum is off."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from servers import Analyzer  # noqa: E402
from tests.support.databases import create_postgres_database, drop_postgres_database  # noqa: E402


@pytest.fixture
def database_url():
    try:
        url = create_postgres_database()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield url
    drop_postgres_database(url)


def planner_row_estimate(url: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT reltuples FROM pg_class WHERE relname = 'grown'").fetchone()[0]


def test_analyzer_runs_until_stopped(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE grown (id integer PRIMARY KEY)")
        conn.execute("INSERT INTO grown SELECT generate_series(1, 5000)")

    analyzer = Analyzer(psycopg, database_url, interval=0.1)
    deadline = time.monotonic() + 10
    while analyzer.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    analyzer.stop()
    runs_at_stop = analyzer.runs
    time.sleep(0.3)

    assert runs_at_stop >= 2
    assert analyzer.runs == runs_at_stop  # no ANALYZE after stop()
    # The row estimate of a table never analyzed is -1 (PostgreSQL 14 and later).
    assert planner_row_estimate(database_url) == 5000
