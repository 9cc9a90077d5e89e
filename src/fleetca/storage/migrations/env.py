"""Alembic environment: runs migrations against the URL set by fleetca."""

from alembic import context
from fleetca.storage.database import make_engine
from fleetca.storage.tables import metadata

url = context.config.get_main_option("sqlalchemy.url")
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
