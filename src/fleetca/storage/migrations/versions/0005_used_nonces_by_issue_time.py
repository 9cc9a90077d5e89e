"""Key used nonces by their issue time and text, with no second index.

The rows keep their nonces: each row's issue time is its expiry less the one
hour that a nonce has always lived.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 14:30:00.000000

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# SQLite stores a time as text such as "2026-12-05 14:30:00.000000". strftime
# shifts the whole seconds, and the fraction from character 20 on is kept.
_SQLITE_SHIFTED = "strftime('%Y-%m-%d %H:%M:%S', {column}, '{shift}') || substr({column}, 20)"


def _shifted(column: str, hours: int) -> str:
    if op.get_bind().dialect.name == 'sqlite':
        return _SQLITE_SHIFTED.format(column=column, shift=f'{hours:+d} hours')
    return f"{column} + interval '{hours} hours'"


def _keep_rows(select_sql: str) -> None:
    op.create_table('used_nonces_kept',
                    sa.Column('nonce', sa.String(length=64), nullable=False),
                    sa.Column('moment', sa.DateTime(timezone=True), nullable=False))
    op.execute(f"INSERT INTO used_nonces_kept (nonce, moment) {select_sql}")
    op.drop_table('used_nonces')


def upgrade() -> None:
    """Upgrade schema."""
    _keep_rows(f"SELECT nonce, {_shifted('expires', -1)} FROM used_nonces")
    op.create_table('used_nonces',
                    sa.Column('issued', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('nonce', sa.String(length=64), nullable=False),
                    sa.PrimaryKeyConstraint('issued', 'nonce', name=op.f('pk_used_nonces')),
                    sqlite_with_rowid=False)
    op.execute("INSERT INTO used_nonces (issued, nonce) SELECT moment, nonce FROM used_nonces_kept")
    op.drop_table('used_nonces_kept')


def downgrade() -> None:
    """Downgrade schema."""
    _keep_rows(f"SELECT nonce, {_shifted('issued', 1)} FROM used_nonces")
    op.create_table('used_nonces',
                    sa.Column('nonce', sa.String(length=64), nullable=False),
                    sa.Column('expires', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('nonce', name=op.f('pk_used_nonces')))
    op.create_index(op.f('ix_used_nonces_expires'), 'used_nonces', ['expires'], unique=False)
    op.execute("INSERT INTO used_nonces (nonce, expires) SELECT nonce, moment FROM used_nonces_kept")
    op.drop_table('used_nonces_kept')
