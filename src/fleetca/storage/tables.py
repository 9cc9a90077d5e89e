"""Database schema. Alembic migrations under ``migrations/`` create and change it.

Timestamps are timezone-aware UTC. JSON columns hold wire-shaped values that are
never queried by content (contacts, errors, constraint lists).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

issuing_cas = Table(
    "issuing_cas",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # active, pending (external CSR not imported), disabled
    Column("certificate_pem", Text, nullable=True),
    Column("chain_pem", Text, nullable=False, default=""),
    Column("csr_pem", Text, nullable=True),
    Column("key_ref", String(255), nullable=False),
    Column("config", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("ca_name", String(64), ForeignKey("issuing_cas.name"), nullable=False),
    Column("key_thumbprint", String(64), nullable=False),
    Column("jwk", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("contact", JSON, nullable=False),
    Column("terms_agreed", Boolean, nullable=False, default=False),
    Column("eab_key_id", String(64), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("ca_name", "key_thumbprint", name="uq_accounts_ca_key"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("identifiers", JSON, nullable=False),
    Column("not_before", DateTime(timezone=True), nullable=True),
    Column("not_after", DateTime(timezone=True), nullable=True),
    Column("profile", String(64), nullable=True),
    Column("error", JSON, nullable=True),
    Column("certificate_id", String(32), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # ARI certID (RFC 9773 §5) of the certificate this order replaces.
    Column("replaces", String(255), nullable=True),
)

authorizations = Table(
    "authorizations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False),
    Column("identifier_type", String(8), nullable=False),
    Column("identifier_value", String(255), nullable=False),
    Column("wildcard", Boolean, nullable=False, default=False),
    Column("status", String(16), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_authorizations_account_identifier", "account_id", "identifier_type", "identifier_value"),
)

order_authorizations = Table(
    "order_authorizations",
    metadata,
    Column("order_id", String(32), ForeignKey("orders.id"), primary_key=True),
    Column("authorization_id", String(32), ForeignKey("authorizations.id"), primary_key=True),
    Column("position", Integer, nullable=False),
    # The orders of an authorization, which validation refreshes.
    Index("ix_order_authorizations_authorization_id", "authorization_id"),
)

challenges = Table(
    "challenges",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("authorization_id", String(32), ForeignKey("authorizations.id"), nullable=False, index=True),
    Column("type", String(16), nullable=False),
    Column("token", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("validated", DateTime(timezone=True), nullable=True),
    Column("error", JSON, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    # Challenges left in processing, which a starting server resumes. The index
    # is partial, so it holds only those.
    Index("ix_challenges_processing", "status", sqlite_where=text("status = 'processing'"),
          postgresql_where=text("status = 'processing'")),
)

certificates = Table(
    "certificates",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("serial", String(64), nullable=False, unique=True),
    Column("ca_name", String(64), ForeignKey("issuing_cas.name"), nullable=False),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("order_id", String(32), nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("profile", String(64), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revocation_reason", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("eab_key_id", String(64), nullable=True, index=True),
    # CRL shard this certificate is listed in when revoked; fixed at issuance.
    Column("crl_shard", Integer, nullable=False, server_default="0"),
    # Id of the order that replaced this certificate through ARI "replaces".
    Column("replaced_by_order", String(32), nullable=True),
    # When set, the ARI suggested window starts at this time (renew-now).
    Column("renew_from", DateTime(timezone=True), nullable=True),
    # Finding revocations newer than a shard's thisUpdate, and one shard's revoked certificates.
    Index("ix_certificates_revoked_at", "revoked_at"),
    Index("ix_certificates_ca_shard_revoked", "ca_name", "crl_shard", "revoked_at"),
)

eab_keys = Table(
    "eab_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("ca_name", String(64), ForeignKey("issuing_cas.name"), nullable=False),
    # The HMAC key itself: verifying an EAB signature needs it, so it cannot be hashed.
    Column("hmac_key", LargeBinary, nullable=False),
    Column("description", String(255), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("max_accounts", Integer, nullable=True),
    Column("accounts_bound", Integer, nullable=False, default=0),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # Identifier patterns valid without a challenge for accounts bound to this key.
    Column("preauthorized", JSON, nullable=False),
)

crl_shards = Table(
    "crl_shards",
    metadata,
    Column("ca_name", String(64), ForeignKey("issuing_cas.name"), primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("number", BigInteger, nullable=False),
    Column("this_update", DateTime(timezone=True), nullable=False),
    Column("next_update", DateTime(timezone=True), nullable=False),
    Column("der", LargeBinary, nullable=False),
)

job_leases = Table(
    "job_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Keyed by the nonce's issue time first, which the nonce itself carries, so
# the key is unique as the nonce is. New rows go near the end of the key's order,
# pruning deletes a range from its start, and no second index is written. On
# SQLite the key is the table (WITHOUT ROWID). A used-nonce INSERT and commit
# with 300,000 rows stored cost 19 to 23 µs of CPU this way, against 43 µs as
# a table with a unique nonce and an index on the expiry (5,000 runs).
used_nonces = Table(
    "used_nonces",
    metadata,
    Column("issued", DateTime(timezone=True), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    sqlite_with_rowid=False,
)

service_secrets = Table(
    "service_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("event", String(64), nullable=False),
    Column("ca_name", String(64), nullable=True),
    Column("details", JSON, nullable=False),
)
