"""The Alembic migrations build exactly the schema that tables.py declares, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fleetca.storage.database import make_engine, migrate, sqlite_url
from fleetca.storage.tables import metadata
from tests.support.databases import drop_postgres_database, new_database_url


def test_migrations_match_tables(tmp_path: Path) -> None:
    url = new_database_url() or sqlite_url(tmp_path / "schema.db")
    migrate(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
        if url.startswith("postgresql"):
            drop_postgres_database(url)

    assert differences == []
