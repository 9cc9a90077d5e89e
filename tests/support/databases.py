"""Databases for test servers: SQLite in the data directory, or a fresh PostgreSQL database.

Set FLEETCA_TEST_DATABASE=postgresql to run every test server on its own new
PostgreSQL database (dropped afterwards) instead of SQLite. The server is
FLEETCA_TEST_POSTGRES_URL, by default the local one this machine type runs.
"""

from __future__ import annotations

import os
import secrets

import psycopg

BACKEND_VARIABLE = "FLEETCA_TEST_DATABASE"
SERVER_VARIABLE = "FLEETCA_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def backend() -> str:
    value = os.environ.get(BACKEND_VARIABLE, "sqlite").lower()
    if value not in ("sqlite", "postgresql"):
        raise ValueError(f"{BACKEND_VARIABLE} must be sqlite or postgresql, not {value!r}")
    return value


def _admin_url() -> str:
    return os.environ.get(SERVER_VARIABLE, DEFAULT_POSTGRES_URL)


def create_postgres_database() -> str:
    """Create an empty database and return its URL."""
    name = f"fleetca_test_{secrets.token_hex(6)}"
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = _admin_url().rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_database_url() -> str | None:
    """A database URL for a new test server, or None for SQLite in its data directory."""
    return create_postgres_database() if backend() == "postgresql" else None
