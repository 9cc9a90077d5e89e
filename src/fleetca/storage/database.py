"""Engine creation and schema migration for SQLite and PostgreSQL."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

from fleetca.storage.repository import Repository

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


READ_ONLY = "fleetca_read_only"


def make_engine(url: str, *, durable: bool = True) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and, when ``durable``, fully synchronous commits."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # The sqlite3 module's own transaction handling is turned off so that
            # SQLAlchemy's BEGIN (below) is the only one.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL makes each commit durable across power loss. NORMAL skips the
            # fsync of a commit, so the commit survives a process crash but not a
            # power loss. Only the used-nonce table is written that way.
            cursor.execute("PRAGMA synchronous=" + ("FULL" if durable else "NORMAL"))
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # The driver connection runs BEGIN directly: through SQLAlchemy's
            # execution path it cost as much as the query that followed.
            driver = conn.connection.driver_connection
            if conn.get_execution_options().get(READ_ONLY):
                # A read needs no lock in WAL mode, because it reads the last committed state.
                driver.execute("BEGIN")
            else:
                # IMMEDIATE takes the write lock up front, so two writers queue on the
                # busy timeout instead of failing later with "database is locked".
                driver.execute("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # No pool_pre_ping: it costs a round trip per transaction. After a database
    # restart, SQLAlchemy detects the disconnect on first use, fails that one request
    # and drops the pool's stale connections.
    engine = create_engine(url, pool_size=10, max_overflow=10, pool_recycle=3600)
    if not durable:
        @event.listens_for(engine, "begin")
        def _postgres_begin(conn):  # type: ignore[no-untyped-def]
            # The commit returns before the WAL reaches disk; a crash loses at most
            # the last few hundred milliseconds of such commits.
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    return engine


def migrate(url: str) -> None:
    """Bring the schema up to the newest Alembic revision."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


class Database:
    """The engine plus a transaction helper that yields a :class:`Repository`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._fast_engine: Engine | None = None

    @property
    def fast_engine(self) -> Engine:
        """The engine whose commits skip waiting for the disk, created on first use."""
        if self._fast_engine is None:
            self._fast_engine = make_engine(self.url, durable=False)
        return self._fast_engine

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Repository]:
        """Open a read-write transaction; ``durable=False`` trades power-loss safety of its commit for speed."""
        with (self.engine if durable else self.fast_engine).begin() as conn:
            yield Repository(conn)

    @contextmanager
    def read(self) -> Iterator[Repository]:
        """Open a read-only transaction that takes no write lock."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                yield Repository(conn)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._fast_engine is not None:
            self._fast_engine.dispose()
