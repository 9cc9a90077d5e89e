"""Reads and writes of ACME objects, converting between rows and domain objects.

A :class:`Repository` wraps one open transaction (a :class:`~fleetca.storage.sql.Session`).
State changes that race between processes (order and challenge transitions,
nonce use) are conditional UPDATEs or unique INSERTs whose row count decides the
winner, so they hold on SQLite and on PostgreSQL alike without explicit locks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Column, Table

from fleetca.domain import Account, Authorization, Challenge, Identifier, IssuedCertificate, Order
from fleetca.storage.sql import (
    Session,
    Statement,
    defaults_filled,
    insert_into,
    select_by,
)
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

A, O, Z, C, X = accounts.c, orders.c, authorizations.c, challenges.c, certificates.c

# Statements, built once. Each SELECT names its columns, so rows are read by position.
_ACCOUNT_COLUMNS = [A.id, A.ca_name, A.key_thumbprint, A.jwk, A.status, A.contact, A.terms_agreed, A.eab_key_id,
                    A.created_at]
_ACCOUNT_BY_ID = select_by(accounts, A.id, columns=_ACCOUNT_COLUMNS)
_ACCOUNT_BY_KEY = select_by(accounts, A.ca_name, A.key_thumbprint, columns=_ACCOUNT_COLUMNS)
_INSERT_ACCOUNT = insert_into(accounts, _ACCOUNT_COLUMNS, suffix=" ON CONFLICT (ca_name, key_thumbprint) DO NOTHING")
_ACCOUNT_IDS_FOR_EAB_KEY = select_by(accounts, A.eab_key_id, columns=[A.id])
# finalize's transition of a ready order, which must not certify an account key (RFC 8555 §11.1).
_START_PROCESSING_ORDER = Statement(
    "UPDATE orders SET status = ? WHERE id = ? AND status = ? "
    "AND NOT EXISTS (SELECT 1 FROM accounts WHERE ca_name = ? AND key_thumbprint = ?)",
    [orders.c.status, orders.c.id, orders.c.status, A.ca_name, A.key_thumbprint])

_ORDER_COLUMNS = [O.id, O.account_id, O.status, O.expires, O.identifiers, O.not_before, O.not_after, O.profile,
                  O.error, O.certificate_id, O.created_at, O.replaces]
# An order with its authorization ids, one row per authorization; the LEFT JOIN
# keeps an order without authorizations.
_ORDER_WITH_AUTHORIZATION_IDS = Statement(
    f"SELECT {', '.join('o.' + c.name for c in _ORDER_COLUMNS)}, oa.authorization_id "
    "FROM orders o LEFT JOIN order_authorizations oa ON oa.order_id = o.id WHERE o.id = ? ORDER BY oa.position",
    [O.id], [*_ORDER_COLUMNS, order_authorizations.c.authorization_id])
# The same with each authorization's status and expiry, which a poll needs to refresh the order.
_ORDER_WITH_AUTHORIZATION_STATES = Statement(
    f"SELECT {', '.join('o.' + c.name for c in _ORDER_COLUMNS)}, a.status, a.expires, oa.authorization_id "
    "FROM orders o LEFT JOIN order_authorizations oa ON oa.order_id = o.id "
    "LEFT JOIN authorizations a ON a.id = oa.authorization_id WHERE o.id = ? ORDER BY oa.position",
    [O.id], [*_ORDER_COLUMNS, Z.status, Z.expires, order_authorizations.c.authorization_id])
_INSERT_ORDER = insert_into(orders, _ORDER_COLUMNS)
# The pending and ready orders that include an authorization, each with all its
# authorization ids, one row per authorization id.
_OPEN_ORDERS_OF_AUTHORIZATION = Statement(
    f"SELECT {', '.join('o.' + c.name for c in _ORDER_COLUMNS)}, every.authorization_id "
    "FROM order_authorizations this JOIN orders o ON o.id = this.order_id "
    "JOIN order_authorizations every ON every.order_id = o.id "
    "WHERE this.authorization_id = ? AND o.status IN ('pending', 'ready') ORDER BY o.id, every.position",
    [order_authorizations.c.authorization_id], [*_ORDER_COLUMNS, order_authorizations.c.authorization_id])
_INSERT_ORDER_AUTHORIZATION = insert_into(order_authorizations)
_CANCEL_ORDERS = Statement(
    "UPDATE orders SET status = 'invalid', error = ? WHERE account_id = ? AND status IN ('pending', 'ready')",
    [O.error, O.account_id])
_DEACTIVATE_PENDING_AUTHORIZATIONS = Statement(
    "UPDATE authorizations SET status = 'deactivated' WHERE account_id = ? AND status = 'pending'", [Z.account_id])

_AUTHORIZATION_COLUMNS = [Z.id, Z.account_id, Z.identifier_type, Z.identifier_value, Z.wildcard, Z.status, Z.expires,
                          Z.created_at]
_CHALLENGE_COLUMNS = [C.id, C.authorization_id, C.type, C.token, C.status, C.validated, C.error, C.started_at]
_INSERT_AUTHORIZATION = insert_into(authorizations, _AUTHORIZATION_COLUMNS)
_CHALLENGE_INSERT_COLUMNS = [C.id, C.authorization_id, C.type, C.token, C.status]
# Multi-row INSERTs of an authorization's challenges, by their number.
_insert_challenges: dict[int, Statement] = {}
# One query for an authorization and its challenges: a LEFT JOIN keeps an
# authorization that has none.
_AUTHORIZATION_WITH_CHALLENGES = Statement(
    f"SELECT {', '.join('a.' + c.name for c in _AUTHORIZATION_COLUMNS)}, "
    f"{', '.join('c.' + c.name for c in _CHALLENGE_COLUMNS)} "
    "FROM authorizations a LEFT JOIN challenges c ON c.authorization_id = a.id WHERE a.id = ? ORDER BY c.type",
    [Z.id], _AUTHORIZATION_COLUMNS + _CHALLENGE_COLUMNS)
_REUSABLE_AUTHORIZATION = Statement(
    "SELECT id, expires FROM authorizations WHERE account_id = ? AND identifier_type = ? AND identifier_value = ? "
    "AND wildcard = ? AND status = 'valid' AND expires > ? ORDER BY expires DESC LIMIT 1",
    [Z.account_id, Z.identifier_type, Z.identifier_value, Z.wildcard, Z.expires], [Z.id, Z.expires])
# An authorization and its challenges, found by the id of one of them.
_AUTHORIZATION_OF_CHALLENGE = Statement(
    f"SELECT {', '.join('a.' + c.name for c in _AUTHORIZATION_COLUMNS)}, "
    f"{', '.join('c.' + c.name for c in _CHALLENGE_COLUMNS)} "
    "FROM challenges this JOIN authorizations a ON a.id = this.authorization_id "
    "JOIN challenges c ON c.authorization_id = a.id WHERE this.id = ? ORDER BY c.type",
    [C.id], _AUTHORIZATION_COLUMNS + _CHALLENGE_COLUMNS)
# A challenge POST's move to processing: only a pending challenge of the
# account's pending authorization that has not expired moves.
_START_CHALLENGE = Statement(
    "UPDATE challenges SET status = ?, started_at = ? WHERE id = ? AND status = ? AND EXISTS ("
    "SELECT 1 FROM authorizations a WHERE a.id = challenges.authorization_id AND a.account_id = ? "
    "AND a.status = ? AND a.expires > ?)",
    [C.status, C.started_at, C.id, C.status, authorizations.c.account_id, authorizations.c.status,
     authorizations.c.expires])
_CHALLENGE_ERRORS = Statement("SELECT error FROM challenges WHERE authorization_id = ? AND error IS NOT NULL",
                              [C.authorization_id], [C.error])
_CHALLENGE_BY_ID = select_by(challenges, C.id, columns=_CHALLENGE_COLUMNS)
# Challenges in processing that started before a time by which a live
# process would have recorded their outcome, so a stopped process left them.
_ABANDONED_CHALLENGE_IDS = Statement(
    "SELECT id FROM challenges WHERE status = 'processing' AND (started_at IS NULL OR started_at < ?)",
    [C.started_at])
_CLAIM_ABANDONED_CHALLENGE = Statement(
    "UPDATE challenges SET started_at = ? WHERE id = ? AND status = 'processing' "
    "AND (started_at IS NULL OR started_at < ?)",
    [C.started_at, C.id, C.started_at])

_CERTIFICATE_COLUMNS = [X.id, X.serial, X.ca_name, X.account_id, X.order_id, X.der, X.not_before, X.not_after,
                        X.profile, X.revoked_at, X.revocation_reason, X.eab_key_id, X.crl_shard, X.replaced_by_order,
                        X.renew_from]
_CERTIFICATE_BY_ID = select_by(certificates, X.id, columns=_CERTIFICATE_COLUMNS)
_CERTIFICATE_BY_SERIAL = select_by(certificates, X.serial, columns=_CERTIFICATE_COLUMNS)
_INSERT_CERTIFICATE = insert_into(certificates, [
    X.id, X.serial, X.ca_name, X.account_id, X.order_id, X.der, X.not_before, X.not_after, X.profile, X.created_at,
    X.eab_key_id, X.crl_shard])
_REVOKE_CERTIFICATE = Statement(
    "UPDATE certificates SET revoked_at = ?, revocation_reason = ? WHERE id = ? AND revoked_at IS NULL",
    [X.revoked_at, X.revocation_reason, X.id])
_COUNT_CERTIFICATES = Statement("SELECT count(*) FROM certificates")
_REVOKED_IN_SHARD = Statement(
    "SELECT serial, revoked_at, revocation_reason FROM certificates WHERE ca_name = ? AND crl_shard = ? "
    "AND revoked_at IS NOT NULL AND not_after >= ?",
    [X.ca_name, X.crl_shard, X.not_after], [X.serial, X.revoked_at, X.revocation_reason])
_REVOCATIONS_SINCE = Statement(
    "SELECT ca_name, crl_shard, serial, revoked_at FROM certificates WHERE revoked_at >= ?",
    [X.revoked_at], [X.ca_name, X.crl_shard, X.serial, X.revoked_at])
_HIGHEST_CRL_SHARD = Statement("SELECT max(crl_shard) FROM certificates WHERE ca_name = ?", [X.ca_name])
# EXISTS looks the earlier replacing order up by its key; an IN list of all
# failed orders would scan the orders table.
_MARK_CERTIFICATE_REPLACED = Statement(
    "UPDATE certificates SET replaced_by_order = ? WHERE id = ? AND (replaced_by_order IS NULL "
    "OR replaced_by_order = ? OR EXISTS (SELECT 1 FROM orders WHERE orders.id = certificates.replaced_by_order "
    "AND (orders.status = 'invalid' OR (orders.status IN ('pending', 'ready') AND orders.expires <= ?))))",
    [X.replaced_by_order, X.id, X.replaced_by_order, O.expires])

_ISSUING_CA_BY_NAME = select_by(issuing_cas, issuing_cas.c.name)
_ALL_ISSUING_CAS = select_by(issuing_cas, suffix=" ORDER BY name")

_EAB_KEY_BY_ID = select_by(eab_keys, eab_keys.c.key_id)
_EAB_KEYS_OF_CA = select_by(eab_keys, eab_keys.c.ca_name, suffix=" ORDER BY created_at")
_BIND_EAB_KEY = Statement(
    "UPDATE eab_keys SET accounts_bound = accounts_bound + 1 WHERE key_id = ? AND revoked_at IS NULL "
    "AND (max_accounts IS NULL OR accounts_bound < max_accounts)", [eab_keys.c.key_id])
_REVOKE_EAB_KEY = Statement("UPDATE eab_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                            [eab_keys.c.revoked_at, eab_keys.c.key_id])
_UPDATE_ACCOUNT_KEY = Statement("UPDATE accounts SET key_thumbprint = ?, jwk = ? WHERE id = ?",
                                [A.key_thumbprint, A.jwk, A.id])

# A used nonce makes this INSERT fail, which rolls its transaction back.
_RECORD_NONCE = insert_into(used_nonces)
# The same, unless the account is no longer valid or has another key. Then
# the issue time is NULL, which the key rejects.
_RECORD_NONCE_OF_ACCOUNT = Statement(
    "INSERT INTO used_nonces (issued, nonce) VALUES "
    "((SELECT ? FROM accounts WHERE id = ? AND status = 'valid' AND key_thumbprint = ?), ?)",
    [used_nonces.c.issued, A.id, A.key_thumbprint, used_nonces.c.nonce])
_PRUNE_NONCES = Statement("DELETE FROM used_nonces WHERE issued < ?", [used_nonces.c.issued])
_SECRET_BY_NAME = select_by(service_secrets, service_secrets.c.name, columns=[service_secrets.c.value])
_INSERT_SECRET = insert_into(service_secrets, suffix=" ON CONFLICT DO NOTHING")

_INSERT_AUDIT_EVENT = insert_into(audit_events)
# An audit event that is written only if the account with the given id exists.
_INSERT_AUDIT_EVENT_OF_ACCOUNT = Statement(
    "INSERT INTO audit_events (at, event, ca_name, details) SELECT ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?)",
    [audit_events.c.at, audit_events.c.event, audit_events.c.ca_name, audit_events.c.details, A.id])
_AUDIT_EVENTS = select_by(audit_events, suffix=" ORDER BY id")
_AUDIT_EVENTS_OF_KIND = select_by(audit_events, audit_events.c.event, suffix=" ORDER BY id")

_CRL_SHARD_STATES = select_by(crl_shards, crl_shards.c.ca_name, columns=[
    crl_shards.c.shard, crl_shards.c.number, crl_shards.c.this_update, crl_shards.c.next_update])
_CRL_SHARD = select_by(crl_shards, crl_shards.c.ca_name, crl_shards.c.shard)
_INSERT_CRL_SHARD = insert_into(crl_shards, suffix=" ON CONFLICT DO NOTHING")
_FIRST_CRL_SHARD = Statement("SELECT shard, der FROM crl_shards WHERE ca_name = ? ORDER BY shard LIMIT 1",
                             [crl_shards.c.ca_name], [crl_shards.c.shard, crl_shards.c.der])
_REPLACE_CRL_SHARD = Statement(
    "UPDATE crl_shards SET number = ?, this_update = ?, next_update = ?, der = ? "
    "WHERE ca_name = ? AND shard = ? AND number = ?",
    [crl_shards.c.number, crl_shards.c.this_update, crl_shards.c.next_update, crl_shards.c.der,
     crl_shards.c.ca_name, crl_shards.c.shard, crl_shards.c.number])

_TAKE_LEASE = Statement(
    "UPDATE job_leases SET holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR expires_at <= ?)",
    [job_leases.c.holder, job_leases.c.expires_at, job_leases.c.name, job_leases.c.holder, job_leases.c.expires_at])
_INSERT_LEASE = insert_into(job_leases, suffix=" ON CONFLICT DO NOTHING")
_RELEASE_LEASE = Statement("DELETE FROM job_leases WHERE name = ? AND holder = ?",
                           [job_leases.c.name, job_leases.c.holder])
_LEASE = select_by(job_leases, job_leases.c.name, columns=[job_leases.c.holder, job_leases.c.expires_at])

# WHERE columns of the status transitions, looked up once instead of through
# the table's column collection on every call.
_ORDER_ID, _ORDER_STATUS = O.id, O.status
_AUTHORIZATION_ID_AND_STATUS = [Z.id, Z.status]
_CHALLENGE_ID_AND_STATUS = [C.id, C.status]
# A pending authorization whose challenge has the given status.
_PENDING_WITH_CHALLENGE_IN = ("id = ? AND status = 'pending' AND "
                              "EXISTS (SELECT 1 FROM challenges WHERE id = ? AND status = ?)")
_PENDING_WITH_CHALLENGE_COLUMNS = [Z.id, C.id, C.status]
# The status query of an order's authorizations, by their number.
_authorization_states: dict[int, Statement] = {}

# UPDATE ... SET statements built from the changed column names, once per combination.
_updates: dict[tuple[str, tuple[str, ...], str], Statement] = {}


def _update(table: Table, values: dict[str, Any], where: str, where_columns: Sequence[Column]) -> Statement:
    key = (table.name, tuple(values), where)
    statement = _updates.get(key)
    if statement is None:
        columns = [table.c[name] for name in values]
        assignments = ", ".join(f"{c.name} = ?" for c in columns)
        statement = Statement(f"UPDATE {table.name} SET {assignments} WHERE {where}", [*columns, *where_columns])
        _updates[key] = statement
    return statement


def _challenge_transition(challenge_id: str, from_status: str, to_status: str,
                          values: dict[str, Any]) -> tuple[Statement, list[Any]]:
    changes = {"status": to_status, **values}
    statement = _update(challenges, changes, "id = ? AND status = ?", _CHALLENGE_ID_AND_STATUS)
    return statement, [*changes.values(), challenge_id, from_status]


def _order_transition(order_id: str, from_status: str | Iterable[str], to_status: str,
                      values: dict[str, Any]) -> tuple[Statement, list[Any]]:
    allowed = [from_status] if isinstance(from_status, str) else list(from_status)
    changes = {"status": to_status, **values}
    statement = _update(orders, changes, "id = ? AND status IN " + _in_list(len(allowed)),
                        [_ORDER_ID, *[_ORDER_STATUS] * len(allowed)])
    return statement, [*changes.values(), order_id, *allowed]


def _in_list(count: int) -> str:
    return "(" + ", ".join("?" for _ in range(count)) + ")"


def _account(row: Sequence[Any]) -> Account:
    return Account(
        id=row[0], ca_name=row[1], key_thumbprint=row[2], jwk=row[3], status=row[4], contact=list(row[5]),
        terms_agreed=row[6], eab_key_id=row[7], created_at=row[8],
    )


def _account_values(account: Account) -> list[Any]:
    """Return the account's values in the order of _ACCOUNT_COLUMNS."""
    return [account.id, account.ca_name, account.key_thumbprint, account.jwk, account.status, account.contact,
            account.terms_agreed, account.eab_key_id, account.created_at]


def _challenge(row: Sequence[Any]) -> Challenge:
    return Challenge(
        id=row[0], authorization_id=row[1], type=row[2], token=row[3], status=row[4], validated=row[5],
        error=row[6], started_at=row[7],
    )


def _certificate(row: Sequence[Any]) -> IssuedCertificate:
    return IssuedCertificate(
        id=row[0], serial=row[1], ca_name=row[2], account_id=row[3], order_id=row[4], der=bytes(row[5]),
        not_before=row[6], not_after=row[7], profile=row[8], revoked_at=row[9], revocation_reason=row[10],
        eab_key_id=row[11], crl_shard=row[12], replaced_by_order=row[13], renew_from=row[14],
    )


def _orders(rows: list[list[Any]]) -> list[Order]:
    """Build orders from the rows of several orders, in which each order's rows are adjacent."""
    by_order: dict[str, list[list[Any]]] = {}
    for row in rows:
        by_order.setdefault(row[0], []).append(row)
    return [_order(order_rows) for order_rows in by_order.values()]


def _order(rows: list[list[Any]]) -> Order:
    """Build an order from its rows: _ORDER_COLUMNS, then one authorization id each (None when it has none)."""
    row = rows[0]
    return Order(
        id=row[0], account_id=row[1], status=row[2], expires=row[3],
        identifiers=[Identifier(i["type"], i["value"]) for i in row[4]],
        authorization_ids=[r[-1] for r in rows if r[-1] is not None],
        not_before=row[5], not_after=row[6], profile=row[7], error=row[8], certificate_id=row[9],
        created_at=row[10], replaces=row[11],
    )


def _authorization(rows: list[list[Any]]) -> Authorization:
    """Build an authorization from its rows: _AUTHORIZATION_COLUMNS, then one challenge's columns each."""
    row = rows[0]
    width = len(_AUTHORIZATION_COLUMNS)
    return Authorization(
        id=row[0], account_id=row[1], identifier=Identifier(row[2], row[3]), wildcard=row[4], status=row[5],
        expires=row[6], created_at=row[7],
        challenges=[_challenge(r[width:]) for r in rows if r[width] is not None],
    )


def _mapping(table: Table, row: Sequence[Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {column.name: value for column, value in zip(table.columns, row)}


class Repository:
    """Storage operations within one transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def commit_with_next_statement(self) -> None:
        """Commit the transaction with the next statement, which must be its last (see Session)."""
        self.session.commit_with_next_statement()

    # Issuing CAs

    def get_issuing_ca(self, name: str) -> dict[str, Any] | None:
        return _mapping(issuing_cas, self.session.first(_ISSUING_CA_BY_NAME, [name]))

    def list_issuing_cas(self) -> list[dict[str, Any]]:
        return [_mapping(issuing_cas, row) for row in self.session.rows(_ALL_ISSUING_CAS)]  # type: ignore[misc]

    def add_issuing_ca(self, **values: Any) -> None:
        self._insert(issuing_cas, values)

    def update_issuing_ca(self, name: str, **values: Any) -> None:
        self.session.execute(_update(issuing_cas, values, "name = ?", [issuing_cas.c.name]), [*values.values(), name])

    def _insert(self, table: Table, values: dict[str, Any]) -> None:
        values = defaults_filled(table, values)
        columns = [table.c[name] for name in values]
        self.session.execute(insert_into(table, columns), list(values.values()))

    # Accounts

    def add_account(self, account: Account) -> bool:
        """Insert the account; False when the CA already has an account with its key, and nothing was written."""
        return self.session.rowcount(_INSERT_ACCOUNT, _account_values(account)) == 1

    def add_account_with_audit(self, account: Account, at: datetime, details: dict[str, Any], *,
                               commit_with_it: bool = False) -> bool:
        """Insert the account and its account.created audit event; return False if the key already has an account.

        The event is written only if the account was, so the event's row
        count gives the outcome and both go out with one statement's round
        trip. ``commit_with_it`` lets the COMMIT travel with them too, which
        commits the transaction's other writes whatever the outcome.
        """
        self.session.defer(_INSERT_ACCOUNT, _account_values(account))
        if commit_with_it:
            self.session.commit_with_next_statement()
        return self.session.rowcount(_INSERT_AUDIT_EVENT_OF_ACCOUNT,
                                     [at, "account.created", account.ca_name, details, account.id]) == 1

    def get_account(self, account_id: str) -> Account | None:
        row = self.session.first(_ACCOUNT_BY_ID, [account_id])
        return _account(row) if row else None

    def find_account_by_key(self, ca_name: str, key_thumbprint: str) -> Account | None:
        row = self.session.first(_ACCOUNT_BY_KEY, [ca_name, key_thumbprint])
        return _account(row) if row else None

    def update_account(self, account_id: str, **values: Any) -> None:
        self.session.execute(_update(accounts, values, "id = ?", [A.id]), [*values.values(), account_id])

    # Orders and authorizations

    def add_order(self, order: Order) -> None:
        self.session.defer(_INSERT_ORDER, [
            order.id, order.account_id, order.status, order.expires, [i.to_json() for i in order.identifiers],
            order.not_before, order.not_after, order.profile, order.error, order.certificate_id, order.created_at,
            order.replaces,
        ])
        for position, authz_id in enumerate(order.authorization_ids):
            self.session.defer(_INSERT_ORDER_AUTHORIZATION, [order.id, authz_id, position])

    def get_order(self, order_id: str) -> Order | None:
        rows = self.session.rows(_ORDER_WITH_AUTHORIZATION_IDS, [order_id])
        return _order(rows) if rows else None

    def get_order_with_states(self, order_id: str) -> tuple[Order, dict[str, tuple[str, datetime]]] | None:
        """Return the order and the (status, expires) of each of its authorizations, in one query."""
        rows = self.session.rows(_ORDER_WITH_AUTHORIZATION_STATES, [order_id])
        if not rows:
            return None
        states = {row[-1]: (row[-3], row[-2]) for row in rows if row[-1] is not None and row[-3] is not None}
        return _order(rows), states

    def open_orders_of_authorization(self, authz_id: str) -> list[Order]:
        """Return the pending and ready orders that include ``authz_id``, in id order."""
        return _orders(self.session.rows(_OPEN_ORDERS_OF_AUTHORIZATION, [authz_id]))

    def list_order_ids(self, account_id: str, *, after: str | None, limit: int) -> list[str]:
        """Ids of the account's orders that are not invalid, in id order (RFC 8555 §7.1.2.1)."""
        text = "SELECT id FROM orders WHERE account_id = ? AND status <> 'invalid'"
        params: list[Any] = [account_id]
        columns = [O.account_id]
        if after is not None:
            text += " AND id > ?"
            params.append(after)
            columns.append(O.id)
        return self.session.scalars(Statement(text + f" ORDER BY id LIMIT {int(limit)}", columns), params)

    def transition_order(self, order_id: str, from_status: str | Iterable[str], to_status: str, **values: Any) -> bool:
        """Move an order between states; False when another request moved it first."""
        statement, params = _order_transition(order_id, from_status, to_status, values)
        return self.session.rowcount(statement, params) == 1

    def start_processing_order(self, order_id: str, ca_name: str, csr_key_thumbprint: str) -> bool:
        """Move a ready order to processing unless the CSR's key is an account key of the CA.

        Return False when the order was not ready or the key belongs to an
        account, and nothing changed. :meth:`find_account_by_key` then shows
        which. This is one statement where a lookup and the transition were two.
        """
        return self.session.rowcount(_START_PROCESSING_ORDER, ["processing", order_id, "ready", ca_name,
                                                               csr_key_thumbprint]) == 1

    def defer_transition_order(self, order_id: str, from_status: str, to_status: str, **values: Any) -> None:
        """Move an order between states with the transaction's next statement, for a caller that ignores the outcome."""
        self.session.defer(*_order_transition(order_id, from_status, to_status, values))

    def cancel_pending_work(self, account_id: str, error: dict[str, Any]) -> int:
        """Invalidate the account's pending and ready orders and deactivate its pending authorizations."""
        cancelled = self.session.rowcount(_CANCEL_ORDERS, [error, account_id])
        self.session.execute(_DEACTIVATE_PENDING_AUTHORIZATIONS, [account_id])
        return cancelled

    def add_authorization(self, authz: Authorization) -> None:
        self.session.defer(_INSERT_AUTHORIZATION, [
            authz.id, authz.account_id, authz.identifier.type, authz.identifier.value, authz.wildcard, authz.status,
            authz.expires, authz.created_at,
        ])
        if not authz.challenges:
            return
        count = len(authz.challenges)
        statement = _insert_challenges.get(count)
        if statement is None:
            row = "(" + ", ".join("?" for _ in _CHALLENGE_INSERT_COLUMNS) + ")"
            statement = Statement(
                f"INSERT INTO challenges ({', '.join(c.name for c in _CHALLENGE_INSERT_COLUMNS)}) "
                f"VALUES {', '.join([row] * count)}", _CHALLENGE_INSERT_COLUMNS * count)
            _insert_challenges[count] = statement
        self.session.defer(statement, [value for c in authz.challenges
                                       for value in (c.id, authz.id, c.type, c.token, c.status)])

    def get_authorization(self, authz_id: str) -> Authorization | None:
        rows = self.session.rows(_AUTHORIZATION_WITH_CHALLENGES, [authz_id])
        return _authorization(rows) if rows else None

    def get_authorization_of_challenge(self, challenge_id: str) -> Authorization | None:
        """Return the authorization that ``challenge_id`` belongs to, with all its challenges."""
        rows = self.session.rows(_AUTHORIZATION_OF_CHALLENGE, [challenge_id])
        return _authorization(rows) if rows else None

    def start_challenge(self, challenge_id: str, account_id: str, now: datetime) -> tuple[bool, Authorization | None]:
        """Move a pending challenge to processing if its authorization is the account's, pending and not expired.

        Return whether the challenge moved, and its authorization with all
        its challenges as they are afterwards (None when the challenge does
        not exist). On PostgreSQL the two statements go out as one query.
        """
        counts, rows = self.session.row_counts_then_rows(
            [(_START_CHALLENGE, ["processing", now, challenge_id, "pending", account_id, "pending", now])],
            _AUTHORIZATION_OF_CHALLENGE, [challenge_id])
        return counts[0] == 1, (_authorization(rows) if rows else None)

    def find_reusable_authorization(self, account_id: str, identifier: Identifier, wildcard: bool,
                                    valid_until: datetime) -> tuple[str, datetime] | None:
        """Return the id and expiry of a valid authorization of this account for the identifier that lasts long enough."""
        row = self.session.first(_REUSABLE_AUTHORIZATION,
                                 [account_id, identifier.type, identifier.value, wildcard, valid_until])
        return (row[0], row[1]) if row else None

    def transition_authorization(self, authz_id: str, from_status: str, to_status: str, **values: Any) -> bool:
        changes = {"status": to_status, **values}
        statement = _update(authorizations, changes, "id = ? AND status = ?", _AUTHORIZATION_ID_AND_STATUS)
        return self.session.rowcount(statement, [*changes.values(), authz_id, from_status]) == 1

    def authorization_states(self, authz_ids: list[str]) -> list[tuple[str, str, datetime]]:
        """(id, status, expires) of each authorization, without its challenges."""
        if not authz_ids:
            return []
        statement = _authorization_states.get(len(authz_ids))
        if statement is None:
            statement = Statement(
                f"SELECT id, status, expires FROM authorizations WHERE id IN {_in_list(len(authz_ids))}",
                [Z.id] * len(authz_ids), [Z.id, Z.status, Z.expires])
            _authorization_states[len(authz_ids)] = statement
        return [(r[0], r[1], r[2]) for r in self.session.rows(statement, authz_ids)]

    def challenge_errors(self, authz_id: str) -> list[dict[str, Any]]:
        return [e for e in self.session.scalars(_CHALLENGE_ERRORS, [authz_id]) if e]

    def get_challenge(self, challenge_id: str) -> Challenge | None:
        row = self.session.first(_CHALLENGE_BY_ID, [challenge_id])
        return _challenge(row) if row else None

    def transition_challenge(self, challenge_id: str, from_status: str, to_status: str, **values: Any) -> bool:
        return self.session.rowcount(*_challenge_transition(challenge_id, from_status, to_status, values)) == 1

    def record_challenge_outcome(self, challenge_id: str, authz_id: str, status: str, challenge_values: dict[str, Any],
                                 authz_values: dict[str, Any]) -> tuple[bool, bool, list[Order]]:
        """Move a challenge from processing to ``status``, and its pending authorization with it.

        Return whether the challenge moved, whether the authorization moved,
        and the authorization's pending and ready orders as they are after
        both. The authorization moves only while its challenge has
        ``status``: when another validation recorded a different outcome
        first, neither row changes. On PostgreSQL the three statements go
        out as one query.
        """
        authz_changes = {"status": status, **authz_values}
        authz_update = _update(authorizations, authz_changes, _PENDING_WITH_CHALLENGE_IN,
                               _PENDING_WITH_CHALLENGE_COLUMNS)
        counts, rows = self.session.row_counts_then_rows([
            _challenge_transition(challenge_id, "processing", status, challenge_values),
            (authz_update, [*authz_changes.values(), authz_id, challenge_id, status]),
        ], _OPEN_ORDERS_OF_AUTHORIZATION, [authz_id])
        return counts[0] == 1, counts[1] == 1, _orders(rows)

    def abandoned_challenge_ids(self, started_before: datetime) -> list[str]:
        return self.session.scalars(_ABANDONED_CHALLENGE_IDS, [started_before])

    def claim_abandoned_challenge(self, challenge_id: str, started_before: datetime, now: datetime) -> bool:
        """Restart an abandoned challenge's clock at ``now``, or return False when another process claimed it first."""
        return self.session.rowcount(_CLAIM_ABANDONED_CHALLENGE, [now, challenge_id, started_before]) == 1

    # Certificates

    def add_certificate(self, cert: IssuedCertificate, created_at: datetime) -> None:
        self.session.defer(_INSERT_CERTIFICATE, [
            cert.id, cert.serial, cert.ca_name, cert.account_id, cert.order_id, cert.der, cert.not_before,
            cert.not_after, cert.profile, created_at, cert.eab_key_id, cert.crl_shard,
        ])

    def get_certificate(self, cert_id: str) -> IssuedCertificate | None:
        row = self.session.first(_CERTIFICATE_BY_ID, [cert_id])
        return _certificate(row) if row else None

    def get_certificate_by_serial(self, serial: str) -> IssuedCertificate | None:
        row = self.session.first(_CERTIFICATE_BY_SERIAL, [serial])
        return _certificate(row) if row else None

    def revoke_certificate(self, cert_id: str, at: datetime, reason: int | None) -> bool:
        return self.session.rowcount(_REVOKE_CERTIFICATE, [at, reason, cert_id]) == 1

    def count_certificates(self) -> int:
        return self.session.scalars(_COUNT_CERTIFICATES)[0]

    # External account binding keys

    def add_eab_key(self, **values: Any) -> None:
        self._insert(eab_keys, values)

    def get_eab_key(self, key_id: str) -> dict[str, Any] | None:
        return _mapping(eab_keys, self.session.first(_EAB_KEY_BY_ID, [key_id]))

    def list_eab_keys(self, ca_name: str) -> list[dict[str, Any]]:
        return [_mapping(eab_keys, row) for row in self.session.rows(_EAB_KEYS_OF_CA, [ca_name])]  # type: ignore[misc]

    def bind_eab_key(self, key_id: str) -> bool:
        """Count one more account on the key; False when its account limit was reached meanwhile."""
        return self.session.rowcount(_BIND_EAB_KEY, [key_id]) == 1

    def revoke_eab_key(self, key_id: str, at: datetime) -> bool:
        return self.session.rowcount(_REVOKE_EAB_KEY, [at, key_id]) == 1

    def account_ids_for_eab_key(self, key_id: str) -> list[str]:
        return self.session.scalars(_ACCOUNT_IDS_FOR_EAB_KEY, [key_id])

    def update_account_key(self, account_id: str, key_thumbprint: str, jwk: dict[str, Any]) -> bool:
        """Replace the account's key; return False when another account already has the new key."""
        return not self.session.savepoint_violates_integrity(_UPDATE_ACCOUNT_KEY, [key_thumbprint, jwk, account_id])

    # Nonces and service secrets

    def defer_use_nonce(self, nonce: str, issued: datetime, used: Callable[[], Exception],
                        account: tuple[str, str] | None = None,
                        account_changed: Callable[[], Exception] | None = None) -> None:
        """Record a nonce as used with the transaction's next statement (see Session.defer).

        If the nonce was used before, that statement raises ``used()`` and the
        transaction rolls back. With ``account``, an (id, key thumbprint)
        pair, it raises ``account_changed()`` instead when that account is no
        longer valid or has another key.
        """
        if account is None:
            self.session.defer(_RECORD_NONCE, [issued, nonce], on_unique_violation=used)
            return
        self.session.defer(_RECORD_NONCE_OF_ACCOUNT, [issued, *account, nonce], on_unique_violation=used,
                           on_not_null_violation=account_changed)

    def prune_used_nonces(self, issued_before: datetime) -> int:
        """Delete the used nonces issued before ``issued_before``; return how many."""
        return self.session.rowcount(_PRUNE_NONCES, [issued_before])

    def get_or_create_secret(self, name: str, make: Any) -> bytes:
        values = self.session.scalars(_SECRET_BY_NAME, [name])
        if values:
            return bytes(values[0])
        # Another process may create it first; then the INSERT does nothing and theirs is read.
        self.session.execute(_INSERT_SECRET, [name, make()])
        return bytes(self.session.scalars(_SECRET_BY_NAME, [name])[0])

    # Audit log: insert only, never updated or deleted.

    def audit(self, at: datetime, event: str, ca_name: str | None, details: dict[str, Any]) -> None:
        self.session.defer(_INSERT_AUDIT_EVENT, [at, event, ca_name, details])

    def audit_events(self, event: str | None = None) -> list[dict[str, Any]]:
        rows = self.session.rows(_AUDIT_EVENTS) if event is None else self.session.rows(_AUDIT_EVENTS_OF_KIND, [event])
        return [_mapping(audit_events, row) for row in rows]  # type: ignore[misc]

    # Revocation: CRL shards, single-runner leases, operator selections and ARI.

    def revoked_in_shard(self, ca_name: str, shard: int,
                         expired_before: datetime) -> list[tuple[str, datetime, int | None]]:
        """(serial, revoked_at, reason) of the shard's revoked certificates not expired before ``expired_before``."""
        return [(r[0], r[1], r[2]) for r in self.session.rows(_REVOKED_IN_SHARD, [ca_name, shard, expired_before])]

    def revocations_since(self, since: datetime) -> list[tuple[str, int, str, datetime]]:
        """(ca_name, crl_shard, serial, revoked_at) of every revocation at or after ``since``."""
        return [(r[0], r[1], r[2], r[3]) for r in self.session.rows(_REVOCATIONS_SINCE, [since])]

    def highest_crl_shard(self, ca_name: str) -> int | None:
        """The highest shard any certificate of the CA was assigned, or None without certificates."""
        return self.session.scalars(_HIGHEST_CRL_SHARD, [ca_name])[0]

    def crl_shard_states(self, ca_name: str) -> dict[int, tuple[int, datetime, datetime]]:
        """Shard -> (number, this_update, next_update) of the CA's published shards."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.session.rows(_CRL_SHARD_STATES, [ca_name])}

    def get_crl_shard(self, ca_name: str, shard: int) -> dict[str, Any] | None:
        values = _mapping(crl_shards, self.session.first(_CRL_SHARD, [ca_name, shard]))
        if values is not None:
            values["der"] = bytes(values["der"])
        return values

    def first_crl_shard(self, ca_name: str) -> tuple[int, bytes] | None:
        """Return the lowest published shard number of ``ca_name`` and its CRL, or None before the first publication."""
        row = self.session.first(_FIRST_CRL_SHARD, [ca_name])
        return (row[0], bytes(row[1])) if row else None

    def store_crl_shard(self, ca_name: str, shard: int, previous_number: int | None, number: int,
                        this_update: datetime, next_update: datetime, der: bytes) -> bool:
        """Replace the shard's CRL if its number is still ``previous_number`` (None: not yet published).

        False means another process published this shard first, and nothing was written.
        """
        if previous_number is None:
            return self.session.rowcount(_INSERT_CRL_SHARD,
                                         [ca_name, shard, number, this_update, next_update, der]) == 1
        return self.session.rowcount(_REPLACE_CRL_SHARD, [number, this_update, next_update, der,
                                                          ca_name, shard, previous_number]) == 1

    def acquire_lease(self, name: str, holder: str, now: datetime, expires_at: datetime) -> bool:
        """Take or extend the lease ``name`` until ``expires_at``; False while another holder has it."""
        if self.session.rowcount(_TAKE_LEASE, [holder, expires_at, name, holder, now]) == 1:
            return True
        return self.session.rowcount(_INSERT_LEASE, [name, holder, expires_at]) == 1

    def release_lease(self, name: str, holder: str) -> None:
        self.session.execute(_RELEASE_LEASE, [name, holder])

    def get_lease(self, name: str) -> tuple[str, datetime] | None:
        row = self.session.first(_LEASE, [name])
        return (row[0], row[1]) if row else None

    def select_certificates(self, *, ca_name: str | None = None, profile: str | None = None,
                            eab_key_id: str | None = None, account_id: str | None = None,
                            serials: list[str] | None = None, valid_at: datetime | None = None,
                            unrevoked: bool = False) -> list[tuple[str, str, str]]:
        """(id, serial, ca_name) of the certificates matching every given criterion."""
        conditions: list[str] = []
        columns: list[Column] = []
        params: list[Any] = []
        for column, value in ((X.ca_name, ca_name), (X.profile, profile), (X.eab_key_id, eab_key_id),
                              (X.account_id, account_id)):
            if value is not None:
                conditions.append(f"{column.name} = ?")
                columns.append(column)
                params.append(value)
        if serials is not None:
            if not serials:
                return []
            conditions.append("serial IN " + _in_list(len(serials)))
            columns.extend([X.serial] * len(serials))
            params.extend(serials)
        if valid_at is not None:
            conditions.append("not_after > ?")
            columns.append(X.not_after)
            params.append(valid_at)
        if unrevoked:
            conditions.append("revoked_at IS NULL")
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        statement = Statement(f"SELECT id, serial, ca_name FROM certificates{where} ORDER BY id", columns)
        return [(r[0], r[1], r[2]) for r in self.session.rows(statement, params)]

    def set_renew_from(self, certificate_ids: list[str], renew_from: datetime) -> int:
        if not certificate_ids:
            return 0
        statement = Statement(f"UPDATE certificates SET renew_from = ? WHERE id IN {_in_list(len(certificate_ids))}",
                              [X.renew_from, *[X.id] * len(certificate_ids)])
        return self.session.rowcount(statement, [renew_from, *certificate_ids])

    def mark_certificate_replaced(self, certificate_id: str, order_id: str, now: datetime) -> bool:
        """Record ``order_id`` as the certificate's replacement (RFC 9773 §5).

        It succeeds when no order replaces the certificate yet, or when the order
        that did is invalid or expired unfinished; False means another order holds it.
        """
        return self.session.rowcount(_MARK_CERTIFICATE_REPLACED, [order_id, certificate_id, order_id, now]) == 1
