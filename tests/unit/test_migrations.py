"""The Alembic migrations build exactly the schema that tables.py declares, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from fleetca.storage.database import MIGRATIONS_DIR, make_engine, migrate, sqlite_url
from fleetca.storage.tables import metadata, used_nonces
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


def test_used_nonces_keep_their_rows(tmp_path: Path) -> None:
    url = new_database_url() or sqlite_url(tmp_path / "nonces.db")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "0004")
    engine = make_engine(url)
    expires = [datetime(2026, 12, 5, 0, 30, 5, tzinfo=UTC), datetime(2026, 12, 5, 14, 0, 0, 250000, tzinfo=UTC)]
    try:
        with engine.begin() as conn:
            for n, moment in enumerate(expires):
                conn.execute(text("INSERT INTO used_nonces (nonce, expires) VALUES (:nonce, :expires)"),
                             {"nonce": f"nonce{n}", "expires": moment})

        command.upgrade(config, "head")
        with engine.connect() as conn:
            issued = conn.execute(select(used_nonces.c.nonce, used_nonces.c.issued)
                                  .order_by(used_nonces.c.nonce)).all()
        command.downgrade(config, "0004")
        with engine.connect() as conn:
            restored = conn.execute(text("SELECT nonce, expires FROM used_nonces ORDER BY nonce")).all()
    finally:
        engine.dispose()
        if url.startswith("postgresql"):
            drop_postgres_database(url)

    assert [(nonce, _utc(moment)) for nonce, moment in issued] == [
        ("nonce0", datetime(2026, 12, 4, 23, 30, 5, tzinfo=UTC)),
        ("nonce1", datetime(2026, 12, 5, 13, 0, 0, 250000, tzinfo=UTC)),
    ]
    assert [(nonce, _utc(moment)) for nonce, moment in restored] == [("nonce0", expires[0]), ("nonce1", expires[1])]


def _utc(moment: datetime | str) -> datetime:
    # SQLAlchemy reads SQLite's text as a naive datetime, and a raw SQLite query returns the text.
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
