"""Reads and writes of ACME objects, converting between rows and domain objects.

A :class:`Repository` wraps one open transaction. State changes that race between
processes (order and challenge transitions, nonce use) are conditional UPDATEs or
unique INSERTs whose row count decides the winner, so they hold on SQLite and on
PostgreSQL alike without explicit locks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Iterable

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from fleetca.domain import Account, Authorization, Challenge, Identifier, IssuedCertificate, Order
from fleetca.storage.tables import (
    accounts,
    audit_events,
    authorizations,
    certificates,
    challenges,
    crl_shards,
    eab_keys,
    issuing_cas,
    job_leases,
    order_authorizations,
    orders,
    service_secrets,
    used_nonces,
)


_USE_NONCE = text("INSERT INTO used_nonces (nonce, expires) VALUES (:nonce, :expires) ON CONFLICT DO NOTHING")
_USE_NONCE = _USE_NONCE.bindparams(bindparam("expires", type_=used_nonces.c.expires.type))


# Statements on the request path, built once: building a statement and its
# cache key costs more than running it on SQLite.
_ACCOUNT_BY_ID = select(accounts).where(accounts.c.id == bindparam("id"))
_ACCOUNT_BY_KEY = select(accounts).where(and_(accounts.c.ca_name == bindparam("ca"),
                                              accounts.c.key_thumbprint == bindparam("thumbprint")))
_ORDER_BY_ID = select(orders).where(orders.c.id == bindparam("id"))
_ORDER_AUTHORIZATION_IDS = (select(order_authorizations.c.authorization_id)
                            .where(order_authorizations.c.order_id == bindparam("id"))
                            .order_by(order_authorizations.c.position))
_AUTHORIZATION_BY_ID = select(authorizations).where(authorizations.c.id == bindparam("id"))
_CHALLENGES_OF_AUTHORIZATION = (select(challenges).where(challenges.c.authorization_id == bindparam("id"))
                                .order_by(challenges.c.type))
_CHALLENGE_BY_ID = select(challenges).where(challenges.c.id == bindparam("id"))
_AUTHORIZATION_STATES = (select(authorizations.c.id, authorizations.c.status, authorizations.c.expires)
                         .where(authorizations.c.id.in_(bindparam("ids", expanding=True))))


def utc(value: datetime | None) -> datetime | None:
    """Attach UTC to a naive datetime read back from SQLite."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _account(row: Any) -> Account:
    return Account(
        id=row.id, ca_name=row.ca_name, key_thumbprint=row.key_thumbprint, jwk=row.jwk,
        status=row.status, contact=list(row.contact), terms_agreed=row.terms_agreed,
        eab_key_id=row.eab_key_id, created_at=utc(row.created_at),
    )


def _challenge(row: Any) -> Challenge:
    return Challenge(
        id=row.id, authorization_id=row.authorization_id, type=row.type, token=row.token,
        status=row.status, validated=utc(row.validated), error=row.error, started_at=utc(row.started_at),
    )


def _certificate(row: Any) -> IssuedCertificate:
    return IssuedCertificate(
        id=row.id, serial=row.serial, ca_name=row.ca_name, account_id=row.account_id,
        order_id=row.order_id, der=row.der, not_before=utc(row.not_before), not_after=utc(row.not_after),
        profile=row.profile, revoked_at=utc(row.revoked_at), revocation_reason=row.revocation_reason,
        eab_key_id=row.eab_key_id, crl_shard=row.crl_shard, replaced_by_order=row.replaced_by_order,
        renew_from=utc(row.renew_from),
    )


class Repository:
    """Storage operations within one transaction (``conn`` is already in a transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # Issuing CAs

    def get_issuing_ca(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute(select(issuing_cas).where(issuing_cas.c.name == name)).first()
        return dict(row._mapping) if row else None

    def list_issuing_cas(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(select(issuing_cas).order_by(issuing_cas.c.name)).all()
        return [dict(r._mapping) for r in rows]

    def add_issuing_ca(self, **values: Any) -> None:
        self.conn.execute(insert(issuing_cas).values(**values))

    def update_issuing_ca(self, name: str, **values: Any) -> None:
        self.conn.execute(update(issuing_cas).where(issuing_cas.c.name == name).values(**values))

    # Accounts

    def add_account(self, account: Account) -> None:
        self.conn.execute(insert(accounts).values(
            id=account.id, ca_name=account.ca_name, key_thumbprint=account.key_thumbprint,
            jwk=account.jwk, status=account.status, contact=account.contact,
            terms_agreed=account.terms_agreed, eab_key_id=account.eab_key_id, created_at=account.created_at,
        ))

    def get_account(self, account_id: str) -> Account | None:
        row = self.conn.execute(_ACCOUNT_BY_ID, {"id": account_id}).first()
        return _account(row) if row else None

    def find_account_by_key(self, ca_name: str, key_thumbprint: str) -> Account | None:
        row = self.conn.execute(_ACCOUNT_BY_KEY, {"ca": ca_name, "thumbprint": key_thumbprint}).first()
        return _account(row) if row else None

    def update_account(self, account_id: str, **values: Any) -> None:
        self.conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))

    # Orders and authorizations

    def add_order(self, order: Order) -> None:
        self.conn.execute(insert(orders).values(
            id=order.id, account_id=order.account_id, status=order.status, expires=order.expires,
            identifiers=[i.to_json() for i in order.identifiers], not_before=order.not_before,
            not_after=order.not_after, profile=order.profile, error=order.error,
            certificate_id=order.certificate_id, created_at=order.created_at, replaces=order.replaces,
        ))
        if not order.authorization_ids:
            return
        self.conn.execute(insert(order_authorizations), [
            {"order_id": order.id, "authorization_id": authz_id, "position": n}
            for n, authz_id in enumerate(order.authorization_ids)
        ])

    def get_order(self, order_id: str) -> Order | None:
        row = self.conn.execute(_ORDER_BY_ID, {"id": order_id}).first()
        if row is None:
            return None
        authz_ids = self.conn.execute(_ORDER_AUTHORIZATION_IDS, {"id": order_id}).scalars().all()
        return Order(
            id=row.id, account_id=row.account_id, status=row.status, expires=utc(row.expires),
            identifiers=[Identifier(i["type"], i["value"]) for i in row.identifiers],
            authorization_ids=list(authz_ids), not_before=utc(row.not_before), not_after=utc(row.not_after),
            profile=row.profile, error=row.error, certificate_id=row.certificate_id, created_at=utc(row.created_at),
            replaces=row.replaces,
        )

    def list_order_ids(self, account_id: str, *, after: str | None, limit: int) -> list[str]:
        """Ids of the account's orders that are not invalid, in id order (RFC 8555 §7.1.2.1)."""
        query = select(orders.c.id).where(and_(orders.c.account_id == account_id, orders.c.status != "invalid"))
        if after is not None:
            query = query.where(orders.c.id > after)
        return list(self.conn.execute(query.order_by(orders.c.id).limit(limit)).scalars())

    def transition_order(self, order_id: str, from_status: str | Iterable[str], to_status: str, **values: Any) -> bool:
        """Move an order between states; False when another request moved it first."""
        allowed = [from_status] if isinstance(from_status, str) else list(from_status)
        result = self.conn.execute(
            update(orders).where(and_(orders.c.id == order_id, orders.c.status.in_(allowed)))
            .values(status=to_status, **values)
        )
        return result.rowcount == 1

    def cancel_pending_work(self, account_id: str, error: dict[str, Any]) -> int:
        """Invalidate the account's pending and ready orders and deactivate its pending authorizations."""
        cancelled = self.conn.execute(
            update(orders).where(and_(orders.c.account_id == account_id, orders.c.status.in_(["pending", "ready"])))
            .values(status="invalid", error=error)
        ).rowcount
        self.conn.execute(
            update(authorizations)
            .where(and_(authorizations.c.account_id == account_id, authorizations.c.status == "pending"))
            .values(status="deactivated")
        )
        return cancelled

    def order_ids_for_authorization(self, authz_id: str) -> list[str]:
        return list(self.conn.execute(
            select(order_authorizations.c.order_id).where(order_authorizations.c.authorization_id == authz_id)
        ).scalars())

    def add_authorization(self, authz: Authorization) -> None:
        self.conn.execute(insert(authorizations).values(
            id=authz.id, account_id=authz.account_id, identifier_type=authz.identifier.type,
            identifier_value=authz.identifier.value, wildcard=authz.wildcard, status=authz.status,
            expires=authz.expires, created_at=authz.created_at,
        ))
        if authz.challenges:
            self.conn.execute(insert(challenges), [
                {"id": c.id, "authorization_id": authz.id, "type": c.type, "token": c.token, "status": c.status}
                for c in authz.challenges
            ])

    def get_authorization(self, authz_id: str) -> Authorization | None:
        row = self.conn.execute(_AUTHORIZATION_BY_ID, {"id": authz_id}).first()
        if row is None:
            return None
        chall_rows = self.conn.execute(_CHALLENGES_OF_AUTHORIZATION, {"id": authz_id}).all()
        return Authorization(
            id=row.id, account_id=row.account_id,
            identifier=Identifier(row.identifier_type, row.identifier_value), wildcard=row.wildcard,
            status=row.status, expires=utc(row.expires), created_at=utc(row.created_at),
            challenges=[_challenge(c) for c in chall_rows],
        )

    def find_reusable_authorization(self, account_id: str, identifier: Identifier, wildcard: bool,
                                    valid_until: datetime) -> str | None:
        """Return a valid authorization of this account for the identifier that lasts long enough."""
        return self.conn.execute(
            select(authorizations.c.id).where(and_(
                authorizations.c.account_id == account_id,
                authorizations.c.identifier_type == identifier.type,
                authorizations.c.identifier_value == identifier.value,
                authorizations.c.wildcard == wildcard,
                authorizations.c.status == "valid",
                authorizations.c.expires > valid_until,
            )).order_by(authorizations.c.expires.desc()).limit(1)
        ).scalar()

    def transition_authorization(self, authz_id: str, from_status: str, to_status: str, **values: Any) -> bool:
        result = self.conn.execute(
            update(authorizations).where(and_(authorizations.c.id == authz_id, authorizations.c.status == from_status))
            .values(status=to_status, **values)
        )
        return result.rowcount == 1

    def authorization_states(self, authz_ids: list[str]) -> list[tuple[str, str, datetime]]:
        """(id, status, expires) of each authorization, without its challenges."""
        rows = self.conn.execute(_AUTHORIZATION_STATES, {"ids": list(authz_ids)}).all()
        return [(r.id, r.status, utc(r.expires)) for r in rows]

    def challenge_errors(self, authz_id: str) -> list[dict[str, Any]]:
        return [e for e in self.conn.execute(
            select(challenges.c.error).where(and_(challenges.c.authorization_id == authz_id,
                                                  challenges.c.error.is_not(None)))
        ).scalars() if e]

    def get_challenge(self, challenge_id: str) -> Challenge | None:
        row = self.conn.execute(_CHALLENGE_BY_ID, {"id": challenge_id}).first()
        return _challenge(row) if row else None

    def transition_challenge(self, challenge_id: str, from_status: str, to_status: str, **values: Any) -> bool:
        result = self.conn.execute(
            update(challenges).where(and_(challenges.c.id == challenge_id, challenges.c.status == from_status))
            .values(status=to_status, **values)
        )
        return result.rowcount == 1

    def processing_challenge_ids(self) -> list[str]:
        return list(self.conn.execute(select(challenges.c.id).where(challenges.c.status == "processing")).scalars())

    # Certificates

    def add_certificate(self, cert: IssuedCertificate, created_at: datetime) -> None:
        self.conn.execute(insert(certificates).values(
            id=cert.id, serial=cert.serial, ca_name=cert.ca_name, account_id=cert.account_id,
            order_id=cert.order_id, der=cert.der, not_before=cert.not_before, not_after=cert.not_after,
            profile=cert.profile, revoked_at=None, revocation_reason=None, created_at=created_at,
            eab_key_id=cert.eab_key_id, crl_shard=cert.crl_shard,
        ))

    def get_certificate(self, cert_id: str) -> IssuedCertificate | None:
        row = self.conn.execute(select(certificates).where(certificates.c.id == cert_id)).first()
        return _certificate(row) if row else None

    def get_certificate_by_serial(self, serial: str) -> IssuedCertificate | None:
        row = self.conn.execute(select(certificates).where(certificates.c.serial == serial)).first()
        return _certificate(row) if row else None

    def revoke_certificate(self, cert_id: str, at: datetime, reason: int | None) -> bool:
        result = self.conn.execute(
            update(certificates).where(and_(certificates.c.id == cert_id, certificates.c.revoked_at.is_(None)))
            .values(revoked_at=at, revocation_reason=reason)
        )
        return result.rowcount == 1

    def count_certificates(self) -> int:
        return self.conn.execute(select(func.count()).select_from(certificates)).scalar_one()

    # External account binding keys

    def add_eab_key(self, **values: Any) -> None:
        self.conn.execute(insert(eab_keys).values(**values))

    def get_eab_key(self, key_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(select(eab_keys).where(eab_keys.c.key_id == key_id)).first()
        return dict(row._mapping) if row else None

    def list_eab_keys(self, ca_name: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(select(eab_keys).where(eab_keys.c.ca_name == ca_name)
                                 .order_by(eab_keys.c.created_at)).all()
        return [dict(r._mapping) for r in rows]

    def bind_eab_key(self, key_id: str) -> bool:
        """Count one more account on the key; False when its account limit was reached meanwhile."""
        result = self.conn.execute(
            update(eab_keys).where(and_(
                eab_keys.c.key_id == key_id,
                eab_keys.c.revoked_at.is_(None),
                (eab_keys.c.max_accounts.is_(None)) | (eab_keys.c.accounts_bound < eab_keys.c.max_accounts),
            )).values(accounts_bound=eab_keys.c.accounts_bound + 1)
        )
        return result.rowcount == 1

    def revoke_eab_key(self, key_id: str, at: datetime) -> bool:
        result = self.conn.execute(update(eab_keys).where(and_(eab_keys.c.key_id == key_id,
                                                               eab_keys.c.revoked_at.is_(None)))
                                   .values(revoked_at=at))
        return result.rowcount == 1

    def account_ids_for_eab_key(self, key_id: str) -> list[str]:
        return list(self.conn.execute(select(accounts.c.id).where(accounts.c.eab_key_id == key_id)).scalars())

    def update_account_key(self, account_id: str, key_thumbprint: str, jwk: dict[str, Any]) -> bool:
        """Replace the account's key; return False when another account already has the new key."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(update(accounts).where(accounts.c.id == account_id)
                                  .values(key_thumbprint=key_thumbprint, jwk=jwk))
        except IntegrityError:
            return False
        return True

    # Nonces and service secrets

    def use_nonce(self, nonce: str, expires: datetime) -> bool:
        """Record a nonce as used; False when it was used before."""
        # ON CONFLICT DO NOTHING works on SQLite and PostgreSQL and needs no savepoint.
        result = self.conn.execute(_USE_NONCE, {"nonce": nonce, "expires": expires})
        return result.rowcount == 1

    def prune_used_nonces(self, now: datetime) -> int:
        return self.conn.execute(delete(used_nonces).where(used_nonces.c.expires < now)).rowcount

    def get_or_create_secret(self, name: str, make: Any) -> bytes:
        value = self.conn.execute(select(service_secrets.c.value).where(service_secrets.c.name == name)).scalar()
        if value is not None:
            return value
        try:
            with self.conn.begin_nested():
                self.conn.execute(insert(service_secrets).values(name=name, value=make()))
        except IntegrityError:
            pass  # another process created it first; read theirs
        return self.conn.execute(select(service_secrets.c.value).where(service_secrets.c.name == name)).scalar_one()

    # Audit log: insert only, never updated or deleted.

    def audit(self, at: datetime, event: str, ca_name: str | None, details: dict[str, Any]) -> None:
        self.conn.execute(insert(audit_events).values(at=at, event=event, ca_name=ca_name, details=details))

    def audit_events(self, event: str | None = None) -> list[dict[str, Any]]:
        query = select(audit_events).order_by(audit_events.c.id)
        if event is not None:
            query = query.where(audit_events.c.event == event)
        return [dict(r._mapping) for r in self.conn.execute(query).all()]

    # Revocation: CRL shards, single-runner leases, operator selections and ARI.

    def revoked_in_shard(self, ca_name: str, shard: int,
                         expired_before: datetime) -> list[tuple[str, datetime, int | None]]:
        """(serial, revoked_at, reason) of the shard's revoked certificates not expired before ``expired_before``."""
        rows = self.conn.execute(
            select(certificates.c.serial, certificates.c.revoked_at, certificates.c.revocation_reason)
            .where(and_(certificates.c.ca_name == ca_name, certificates.c.crl_shard == shard,
                        certificates.c.revoked_at.is_not(None), certificates.c.not_after >= expired_before))
        ).all()
        return [(r.serial, utc(r.revoked_at), r.revocation_reason) for r in rows]

    def revocations_since(self, since: datetime) -> list[tuple[str, int, str, datetime]]:
        """(ca_name, crl_shard, serial, revoked_at) of every revocation at or after ``since``."""
        rows = self.conn.execute(
            select(certificates.c.ca_name, certificates.c.crl_shard, certificates.c.serial, certificates.c.revoked_at)
            .where(certificates.c.revoked_at >= since)
        ).all()
        return [(r.ca_name, r.crl_shard, r.serial, utc(r.revoked_at)) for r in rows]

    def highest_crl_shard(self, ca_name: str) -> int | None:
        """The highest shard any certificate of the CA was assigned, or None without certificates."""
        return self.conn.execute(
            select(func.max(certificates.c.crl_shard)).where(certificates.c.ca_name == ca_name)
        ).scalar()

    def crl_shard_states(self, ca_name: str) -> dict[int, tuple[int, datetime, datetime]]:
        """Shard -> (number, this_update, next_update) of the CA's published shards."""
        rows = self.conn.execute(
            select(crl_shards.c.shard, crl_shards.c.number, crl_shards.c.this_update, crl_shards.c.next_update)
            .where(crl_shards.c.ca_name == ca_name)
        ).all()
        return {r.shard: (r.number, utc(r.this_update), utc(r.next_update)) for r in rows}

    def get_crl_shard(self, ca_name: str, shard: int) -> dict[str, Any] | None:
        row = self.conn.execute(
            select(crl_shards).where(and_(crl_shards.c.ca_name == ca_name, crl_shards.c.shard == shard))
        ).first()
        if row is None:
            return None
        values = dict(row._mapping)
        values["this_update"], values["next_update"] = utc(row.this_update), utc(row.next_update)
        return values

    def store_crl_shard(self, ca_name: str, shard: int, previous_number: int | None, number: int,
                        this_update: datetime, next_update: datetime, der: bytes) -> bool:
        """Replace the shard's CRL if its number is still ``previous_number`` (None: not yet published).

        False means another process published this shard first, and nothing was written.
        """
        values = {"number": number, "this_update": this_update, "next_update": next_update, "der": der}
        if previous_number is None:
            try:
                with self.conn.begin_nested():
                    self.conn.execute(insert(crl_shards).values(ca_name=ca_name, shard=shard, **values))
            except IntegrityError:
                return False
            return True
        result = self.conn.execute(
            update(crl_shards).where(and_(crl_shards.c.ca_name == ca_name, crl_shards.c.shard == shard,
                                          crl_shards.c.number == previous_number)).values(**values)
        )
        return result.rowcount == 1

    def acquire_lease(self, name: str, holder: str, now: datetime, expires_at: datetime) -> bool:
        """Take or extend the lease ``name`` until ``expires_at``; False while another holder has it."""
        taken = self.conn.execute(
            update(job_leases).where(and_(job_leases.c.name == name,
                                          (job_leases.c.holder == holder) | (job_leases.c.expires_at <= now)))
            .values(holder=holder, expires_at=expires_at)
        ).rowcount
        if taken == 1:
            return True
        try:
            with self.conn.begin_nested():
                self.conn.execute(insert(job_leases).values(name=name, holder=holder, expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    def release_lease(self, name: str, holder: str) -> None:
        self.conn.execute(delete(job_leases).where(and_(job_leases.c.name == name, job_leases.c.holder == holder)))

    def get_lease(self, name: str) -> tuple[str, datetime] | None:
        row = self.conn.execute(select(job_leases).where(job_leases.c.name == name)).first()
        return (row.holder, utc(row.expires_at)) if row else None

    def select_certificates(self, *, ca_name: str | None = None, profile: str | None = None,
                            eab_key_id: str | None = None, account_id: str | None = None,
                            serials: list[str] | None = None, valid_at: datetime | None = None,
                            unrevoked: bool = False) -> list[tuple[str, str, str]]:
        """(id, serial, ca_name) of the certificates matching every given criterion."""
        query = select(certificates.c.id, certificates.c.serial, certificates.c.ca_name)
        if ca_name is not None:
            query = query.where(certificates.c.ca_name == ca_name)
        if profile is not None:
            query = query.where(certificates.c.profile == profile)
        if eab_key_id is not None:
            query = query.where(certificates.c.eab_key_id == eab_key_id)
        if account_id is not None:
            query = query.where(certificates.c.account_id == account_id)
        if serials is not None:
            query = query.where(certificates.c.serial.in_(serials))
        if valid_at is not None:
            query = query.where(certificates.c.not_after > valid_at)
        if unrevoked:
            query = query.where(certificates.c.revoked_at.is_(None))
        return [(r.id, r.serial, r.ca_name) for r in self.conn.execute(query.order_by(certificates.c.id)).all()]

    def set_renew_from(self, certificate_ids: list[str], renew_from: datetime) -> int:
        return self.conn.execute(
            update(certificates).where(certificates.c.id.in_(certificate_ids)).values(renew_from=renew_from)
        ).rowcount

    def mark_certificate_replaced(self, certificate_id: str, order_id: str, now: datetime) -> bool:
        """Record ``order_id`` as the certificate's replacement (RFC 9773 §5).

        It succeeds when no order replaces the certificate yet, or when the order
        that did is invalid or expired unfinished; False means another order holds it.
        """
        dead_orders = select(orders.c.id).where(
            (orders.c.status == "invalid")
            | (orders.c.status.in_(["pending", "ready"]) & (orders.c.expires <= now)))
        result = self.conn.execute(
            update(certificates).where(and_(
                certificates.c.id == certificate_id,
                certificates.c.replaced_by_order.is_(None)
                | (certificates.c.replaced_by_order == order_id)
                | certificates.c.replaced_by_order.in_(dead_orders),
            )).values(replaced_by_order=order_id)
        )
        return result.rowcount == 1
