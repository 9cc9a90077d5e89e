"""Status transitions of orders and authorizations (RFC 8555 §7.1.6).

Expiry is applied lazily whenever an object is read, and an order moves to
ready in the same transaction that makes its last authorization valid, so a
client never sees a valid authorization while its order is still pending.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleetca.acme.problems import URN_PREFIX
from fleetca.domain import Order
from fleetca.storage.repository import Repository

FAILED_AUTHORIZATION_STATES = ("invalid", "deactivated", "expired", "revoked")


def problem_json(problem_type: str, detail: str, status: int) -> dict[str, Any]:
    return {"type": URN_PREFIX + problem_type, "detail": detail, "status": status}


def expire_authorizations(repo: Repository, authz_ids: list[str], now: datetime,
                          known: dict[str, tuple[str, datetime]] | None = None) -> dict[str, str]:
    """Mark pending or valid authorizations past their expiry as expired; return id -> status.

    ``known`` maps ids to the (status, expires) that this transaction just
    wrote, which need not be read again.
    """
    known = known or {}
    rows = [(authz_id, *known[authz_id]) for authz_id in authz_ids if authz_id in known]
    unknown = [authz_id for authz_id in authz_ids if authz_id not in known]
    if unknown:
        rows += repo.authorization_states(unknown)
    states = {}
    for authz_id, status, expires in rows:
        if status in ("pending", "valid") and expires <= now:
            if repo.transition_authorization(authz_id, status, "expired"):
                status = "expired"
        states[authz_id] = status
    return states


def refresh_order(repo: Repository, order: Order, now: datetime,
                  known: dict[str, tuple[str, datetime]] | None = None, *, deferred: bool = False) -> Order:
    """Apply expiry and authorization outcomes to a pending or ready order; ``known`` as in expire_authorizations.

    With ``deferred``, the order's own transition goes out with the
    transaction's next statement or its COMMIT, for a caller that does not
    use the returned order. The returned state is then the one requested,
    which a concurrent request may have changed first.
    """
    if order.status not in ("pending", "ready"):
        return order

    def transition(from_status: str, to_status: str, **values: Any) -> bool:
        if deferred:
            repo.defer_transition_order(order.id, from_status, to_status, **values)
            return True
        return repo.transition_order(order.id, from_status, to_status, **values)

    if order.expires <= now:
        error = problem_json("malformed", "order expired before it was finalized", 400)
        transition(order.status, "invalid", error=error)
        order.status, order.error = "invalid", error
        return order
    # A ready order also becomes invalid when one of its authorizations is
    # deactivated or expires before finalize (RFC 8555 §7.1.6).
    states = expire_authorizations(repo, order.authorization_ids, now, known)
    failed = [a for a in order.authorization_ids if states.get(a) in FAILED_AUTHORIZATION_STATES]
    if failed:
        errors = repo.challenge_errors(failed[0])
        error = errors[0] if errors else problem_json(
            "unauthorized", f"authorization {failed[0]} is {states[failed[0]]}", 403)
        if transition(order.status, "invalid", error=error):
            order.status, order.error = "invalid", error
    elif order.status == "pending" and all(states.get(a) == "valid" for a in order.authorization_ids):
        if transition("pending", "ready"):
            order.status = "ready"
    return order


def order_needs_refresh(order: Order, states: dict[str, tuple[str, datetime]], now: datetime) -> bool:
    """True when reading ``order`` would change it: expiry, a failed authorization, or all valid."""
    if order.status not in ("pending", "ready"):
        return False
    if order.expires <= now:
        return True
    statuses = []
    for authz_id in order.authorization_ids:
        status, expires = states.get(authz_id, ("missing", now))
        if status in ("pending", "valid") and expires <= now:
            return True
        statuses.append(status)
    if any(s in FAILED_AUTHORIZATION_STATES for s in statuses):
        return True
    return order.status == "pending" and all(s == "valid" for s in statuses)


def refresh_orders_of_authorization(repo: Repository, authz_id: str, now: datetime,
                                    known: dict[str, tuple[str, datetime]] | None = None) -> None:
    """Refresh the pending and ready orders that include ``authz_id``; ``known`` as in expire_authorizations."""
    for order in repo.open_orders_of_authorization(authz_id):
        refresh_order(repo, order, now, known)
