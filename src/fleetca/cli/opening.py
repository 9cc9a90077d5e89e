"""The settings and database of a data directory, as the operator commands open them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from fleetca.settings import SETTINGS_FILE, Settings, load_settings
from fleetca.storage.database import Database

DatabaseUrlOption: Optional[str] = typer.Option(
    None, "--database-url", help="SQLAlchemy database URL; by default database_url from the data directory's "
    "fleetca.toml or FLEETCA_DATABASE_URL, else the directory's SQLite file.")


def missing_database(settings: Settings) -> str | None:
    """Return why the settings name no existing database, or None when they do."""
    if settings.database_url:
        return None
    path = settings.data_dir / "fleetca.db"
    if path.exists():
        return None
    return (f"no database at {path}: pass --database-url, set database_url in "
            f"{settings.data_dir / SETTINGS_FILE} or FLEETCA_DATABASE_URL, or create a data directory with "
            "`fleetca init`")


def open_data_dir(data_dir: Path, database_url: str | None = None, **overrides: Any) -> tuple[Settings, Database]:
    """Load the settings of ``data_dir`` and open its database.

    When the settings name a SQLite file that does not exist, print why and
    exit with status 1, instead of working on a new, empty database.
    """
    settings = load_settings(data_dir, database_url=database_url, **overrides)
    message = missing_database(settings)
    if message:
        Console(stderr=True).print(f"[red]error:[/red] {message}")
        raise typer.Exit(code=1)
    return settings, Database.of(settings)
