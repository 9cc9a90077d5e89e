"""Add EAB keys, CRL shards and job leases; ARI and CRL columns on certificates
and orders.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 20:19:06.457189

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('job_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_job_leases'))
    )
    op.create_table('crl_shards',
    sa.Column('ca_name', sa.String(length=64), nullable=False),
    sa.Column('shard', sa.Integer(), nullable=False),
    sa.Column('number', sa.BigInteger(), nullable=False),
    sa.Column('this_update', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_update', sa.DateTime(timezone=True), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['ca_name'], ['issuing_cas.name'], name=op.f('fk_crl_shards_ca_name_issuing_cas')),
    sa.PrimaryKeyConstraint('ca_name', 'shard', name=op.f('pk_crl_shards'))
    )
    op.create_table('eab_keys',
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('ca_name', sa.String(length=64), nullable=False),
    sa.Column('hmac_key', sa.LargeBinary(), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('max_accounts', sa.Integer(), nullable=True),
    sa.Column('accounts_bound', sa.Integer(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('preauthorized', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['ca_name'], ['issuing_cas.name'], name=op.f('fk_eab_keys_ca_name_issuing_cas')),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_eab_keys'))
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('eab_key_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('crl_shard', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('replaced_by_order', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('renew_from', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_certificates_eab_key_id'), ['eab_key_id'], unique=False)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replaces', sa.String(length=255), nullable=True))



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('replaces')

    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_eab_key_id'))
        batch_op.drop_column('renew_from')
        batch_op.drop_column('replaced_by_order')
        batch_op.drop_column('crl_shard')
        batch_op.drop_column('eab_key_id')

    op.drop_table('eab_keys')
    op.drop_table('crl_shards')
    op.drop_table('job_leases')
