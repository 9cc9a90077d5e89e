"""The Alembic migrations build exactly the schema that tables.py declares, and keep the rows they move, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
import pytest
from sqlalchemy import text

from fleetca.acme.nonces import DEFAULT_LIFETIME, NonceService
from fleetca.acme.problems import AcmeProblem
from fleetca.clock import ManualClock
from fleetca.storage.database import MIGRATIONS_DIR, Database, make_engine, migrate, sqlite_url
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


def test_nonce_used_before_upgrade_stays_used(tmp_path: Path) -> None:
    url = new_database_url() or sqlite_url(tmp_path / "nonces.db")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "0004")
    database = Database(url)
    clock = ManualClock()
    nonces = NonceService(database)
    used, fresh = nonces.issue(clock.now()), nonces.issue(clock.now())
    issued = nonces.check(used, clock.now())
    try:
        # The row that fleetca wrote for a used nonce before migration 0005: the nonce and its expiry.
        with database.engine.begin() as conn:
            conn.execute(text("INSERT INTO used_nonces (nonce, expires) VALUES (:nonce, :expires)"),
                         {"nonce": used, "expires": _stored(url, issued + DEFAULT_LIFETIME)})

        command.upgrade(config, "head")
        with database.engine.connect() as conn:
            upgraded = conn.execute(text("SELECT nonce, issued FROM used_nonces")).all()
        with pytest.raises(AcmeProblem) as caught:
            nonces.consume(used, clock.now())
        nonces.consume(fresh, clock.now())
        database.dispose()
        command.downgrade(config, "0004")
        with database.engine.connect() as conn:
            downgraded = dict(conn.execute(text("SELECT nonce, expires FROM used_nonces")).all())
    finally:
        database.dispose()
        if url.startswith("postgresql"):
            drop_postgres_database(url)

    assert upgraded == [(used, _stored(url, issued))]
    assert caught.value.type == "badNonce"
    assert downgraded == {used: _stored(url, issued + DEFAULT_LIFETIME),
                          fresh: _stored(url, nonces.check(fresh, clock.now()) + DEFAULT_LIFETIME)}


def _stored(url: str, moment: datetime) -> datetime | str:
    """Return ``moment`` as a raw query reads it back: fleetca's text on SQLite, a datetime on PostgreSQL."""
    if url.startswith("sqlite"):
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return moment
