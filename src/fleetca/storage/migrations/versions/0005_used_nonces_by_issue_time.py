"""Key used nonces by their issue time and text, with no second index.

The rows keep their nonces: each row's issue time is its expiry less the one
hour that a nonce has always lived.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 14:30:00.000000

"""
from datetime import UTC, datetime, timedelta
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BATCH_ROWS = 10_000


def _keep_rows(column: str, hours: int) -> None:
    """Copy each used nonce into ``used_nonces_kept`` with ``column`` moved by ``hours``, then drop the table."""
    op.create_table('used_nonces_kept',
                    sa.Column('nonce', sa.String(length=64), nullable=False),
                    sa.Column('moment', sa.DateTime(timezone=True), nullable=False))
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        # SQLite keeps times as text, so the shift is done here and written as fleetca writes them.
        rows = bind.execute(sa.text(f"SELECT nonce, {column} FROM used_nonces"))
        for batch in rows.partitions(BATCH_ROWS):
            bind.execute(sa.text("INSERT INTO used_nonces_kept (nonce, moment) VALUES (:nonce, :moment)"),
                         [{"nonce": nonce, "moment": _sqlite_text(_utc(value) + timedelta(hours=hours))}
                          for nonce, value in batch])
    else:
        op.execute(f"INSERT INTO used_nonces_kept (nonce, moment) "
                   f"SELECT nonce, {column} + interval '{hours} hours' FROM used_nonces")
    op.drop_table('used_nonces')


def _utc(value: str | datetime) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _sqlite_text(moment: datetime) -> str:
    # The form of fleetca's own SQLite writes: UTC, no offset, six fraction digits.
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def upgrade() -> None:
    """Upgrade schema."""
    _keep_rows('expires', -1)
    op.create_table('used_nonces',
                    sa.Column('issued', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('nonce', sa.String(length=64), nullable=False),
                    sa.PrimaryKeyConstraint('issued', 'nonce', name=op.f('pk_used_nonces')),
                    sqlite_with_rowid=False)
    op.execute("INSERT INTO used_nonces (issued, nonce) SELECT moment, nonce FROM used_nonces_kept")
    op.drop_table('used_nonces_kept')


def downgrade() -> None:
    """Downgrade schema."""
    _keep_rows('issued', 1)
    op.create_table('used_nonces',
                    sa.Column('nonce', sa.String(length=64), nullable=False),
                    sa.Column('expires', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('nonce', name=op.f('pk_used_nonces')))
    op.create_index(op.f('ix_used_nonces_expires'), 'used_nonces', ['expires'], unique=False)
    op.execute("INSERT INTO used_nonces (nonce, expires) SELECT nonce, moment FROM used_nonces_kept")
    op.drop_table('used_nonces_kept')
