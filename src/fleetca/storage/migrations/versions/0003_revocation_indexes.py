"""Add the indexes that CRL publication and operator revocation query by.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 20:45:00.000000

"""
from typing import Sequence, Union

from alembic import op

revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Finding revocations newer than a shard's thisUpdate.
    op.create_index('ix_certificates_revoked_at', 'certificates', ['revoked_at'], unique=False)
    # Listing one shard's revoked certificates, and the highest shard in use.
    op.create_index('ix_certificates_ca_shard_revoked', 'certificates', ['ca_name', 'crl_shard', 'revoked_at'],
                    unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_certificates_ca_shard_revoked', table_name='certificates')
    op.drop_index('ix_certificates_revoked_at', table_name='certificates')
