"""Every statement of the request path finds its rows through an index, not by scanning a table.

SQLite's planner, without ANALYZE statistics, reports for each statement
whether it scans a table. A scan of a table that grows with the fleet would
cost time in proportion to the number of certificates issued.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import fleetca.storage.repository as repository
from fleetca.storage.database import Database, migrate, sqlite_url
from fleetca.storage.sql import SQLITE, Statement

# Statements allowed to scan: operator listings, a counter for tests, and a table with one row per CA.
SCANS_ALLOWED = {"_COUNT_CERTIFICATES", "_ALL_ISSUING_CAS", "_EAB_KEYS_OF_CA", "_AUDIT_EVENTS",
                 "_AUDIT_EVENTS_OF_KIND"}
STATEMENTS = {name: value for name, value in vars(repository).items() if isinstance(value, Statement)}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    url = sqlite_url(tmp_path_factory.mktemp("plans") / "plans.db")
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


def query_plan(database: Database, statement: Statement) -> list[str]:
    text = statement.compiled(SQLITE)[0]
    with database.engine.connect() as conn:
        cursor = conn.connection.driver_connection.execute("EXPLAIN QUERY PLAN " + text, [None] * text.count("?"))
        return [row[3] for row in cursor.fetchall()]


@pytest.mark.parametrize("name", sorted(set(STATEMENTS) - SCANS_ALLOWED))
def test_statement_uses_index(database: Database, name: str) -> None:
    plan = query_plan(database, STATEMENTS[name])

    # "SCAN CONSTANT ROW" is the one row of a SELECT without FROM, not a table.
    scans = [step for step in plan if step.startswith("SCAN") and step != "SCAN CONSTANT ROW"]
    assert scans == [], plan


def test_allowed_scans_still_exist() -> None:
    assert SCANS_ALLOWED <= set(STATEMENTS)
