"""Create the initial schema: issuing CAs, accounts, orders, authorizations,
challenges, certificates, used nonces, service secrets and the audit log.

Revision ID: 0001
Revises: 
Create Date: 2026-12-04 20:08:03.709204

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('ca_name', sa.String(length=64), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    op.create_table('issuing_cas',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=True),
    sa.Column('chain_pem', sa.Text(), nullable=False),
    sa.Column('csr_pem', sa.Text(), nullable=True),
    sa.Column('key_ref', sa.String(length=255), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_issuing_cas'))
    )
    op.create_table('service_secrets',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_service_secrets'))
    )
    op.create_table('used_nonces',
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('expires', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('nonce', name=op.f('pk_used_nonces'))
    )
    with op.batch_alter_table('used_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_used_nonces_expires'), ['expires'], unique=False)

    op.create_table('accounts',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('ca_name', sa.String(length=64), nullable=False),
    sa.Column('key_thumbprint', sa.String(length=64), nullable=False),
    sa.Column('jwk', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('contact', sa.JSON(), nullable=False),
    sa.Column('terms_agreed', sa.Boolean(), nullable=False),
    sa.Column('eab_key_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ca_name'], ['issuing_cas.name'], name=op.f('fk_accounts_ca_name_issuing_cas')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    sa.UniqueConstraint('ca_name', 'key_thumbprint', name='uq_accounts_ca_key')
    )
    op.create_table('authorizations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.String(length=32), nullable=False),
    sa.Column('identifier_type', sa.String(length=8), nullable=False),
    sa.Column('identifier_value', sa.String(length=255), nullable=False),
    sa.Column('wildcard', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('expires', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_authorizations_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_authorizations'))
    )
    with op.batch_alter_table('authorizations', schema=None) as batch_op:
        batch_op.create_index('ix_authorizations_account_identifier', ['account_id', 'identifier_type', 'identifier_value'], unique=False)

    op.create_table('certificates',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('ca_name', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=32), nullable=False),
    sa.Column('order_id', sa.String(length=32), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('profile', sa.String(length=64), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_certificates_account_id_accounts')),
    sa.ForeignKeyConstraint(['ca_name'], ['issuing_cas.name'], name=op.f('fk_certificates_ca_name_issuing_cas')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_certificates')),
    sa.UniqueConstraint('serial', name=op.f('uq_certificates_serial'))
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_account_id'), ['account_id'], unique=False)

    op.create_table('orders',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('expires', sa.DateTime(timezone=True), nullable=False),
    sa.Column('identifiers', sa.JSON(), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('profile', sa.String(length=64), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('certificate_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_orders_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders'))
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orders_account_id'), ['account_id'], unique=False)

    op.create_table('challenges',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('authorization_id', sa.String(length=32), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('validated', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['authorization_id'], ['authorizations.id'], name=op.f('fk_challenges_authorization_id_authorizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenges'))
    )
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenges_authorization_id'), ['authorization_id'], unique=False)

    op.create_table('order_authorizations',
    sa.Column('order_id', sa.String(length=32), nullable=False),
    sa.Column('authorization_id', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['authorization_id'], ['authorizations.id'], name=op.f('fk_order_authorizations_authorization_id_authorizations')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_authorizations_order_id_orders')),
    sa.PrimaryKeyConstraint('order_id', 'authorization_id', name=op.f('pk_order_authorizations'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('order_authorizations')
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenges_authorization_id'))

    op.drop_table('challenges')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orders_account_id'))

    op.drop_table('orders')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_account_id'))

    op.drop_table('certificates')
    with op.batch_alter_table('authorizations', schema=None) as batch_op:
        batch_op.drop_index('ix_authorizations_account_identifier')

    op.drop_table('authorizations')
    op.drop_table('accounts')
    with op.batch_alter_table('used_nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_used_nonces_expires'))

    op.drop_table('used_nonces')
    op.drop_table('service_secrets')
    op.drop_table('issuing_cas')
    op.drop_table('audit_events')
