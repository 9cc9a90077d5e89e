"""Add the indexes that validation, server start and EAB revocation look rows up by.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 02:00:00.000000

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

PROCESSING = sa.text("status = 'processing'")


def upgrade() -> None:
    """Upgrade schema."""
    # The orders of an authorization: without it, every validation scanned the orders.
    op.create_index('ix_order_authorizations_authorization_id', 'order_authorizations', ['authorization_id'],
                    unique=False)
    # Challenges left in processing, resumed when a server starts.
    op.create_index('ix_challenges_processing', 'challenges', ['status'], unique=False,
                    sqlite_where=PROCESSING, postgresql_where=PROCESSING)
    # The accounts bound to an EAB key, which revocation by EAB key finds.
    op.create_index('ix_accounts_eab_key_id', 'accounts', ['eab_key_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_accounts_eab_key_id', table_name='accounts')
    op.drop_index('ix_challenges_processing', table_name='challenges')
    op.drop_index('ix_order_authorizations_authorization_id', table_name='order_authorizations')
