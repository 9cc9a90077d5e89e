"""Authorization reads and deactivation (RFC 8555 §7.5, §7.5.2)."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme.context import AcmeContext
from fleetca.acme.http import authenticate, json_response
from fleetca.acme.lifecycle import expire_authorizations, refresh_orders_of_authorization
from fleetca.acme.problems import malformed, not_found
from fleetca.acme.urls import Urls
from fleetca.acme.views import authorization_json
from fleetca.ca.registry import IssuingCa
from fleetca.storage.repository import Repository

VALIDATION_RETRY_AFTER_SECONDS = 1


def deactivate(repo: Repository, ca: IssuingCa, account_id: str, authz_id: str, now: datetime) -> None:
    """Deactivate a pending or valid authorization (§7.5.2) and invalidate its open orders."""
    for from_status in ("pending", "valid"):
        if repo.transition_authorization(authz_id, from_status, "deactivated"):
            repo.audit(now, "authorization.deactivated", ca.name, {"account": account_id, "authorization": authz_id})
            refresh_orders_of_authorization(repo, authz_id, now)
            return
    current = repo.get_authorization(authz_id)
    raise malformed(f"authorization is {current.status if current else 'gone'} and cannot be deactivated")


async def authorization(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls, nonce_in_handler_read=True)
    assert auth.account is not None
    authz_id = request.path_params["id"]
    payload = None if auth.is_post_as_get else auth.payload()
    if payload is not None and payload.get("status") != "deactivated":
        raise malformed("an authorization update may only set status to \"deactivated\"")
    now = ctx.now()
    # Polls are the common case: read without a write lock, and write only to
    # record an expiry or a deactivation.
    with ctx.database.read() as repo:
        auth.record_nonce(repo)
        current = repo.get_authorization(authz_id)
    if current is None or current.account_id != auth.account.id:
        raise not_found("no such authorization for this account")
    expired = current.status in ("pending", "valid") and current.expires <= now
    if expired or payload is not None:
        async with ctx.database.transaction_async(durable=True) as repo:
            expire_authorizations(repo, [authz_id], now)
            if payload is not None:
                deactivate(repo, ca, auth.account.id, authz_id, now)
            current = repo.get_authorization(authz_id)
    assert current is not None
    headers = {}
    if any(c.status == "processing" for c in current.challenges):
        headers["Retry-After"] = str(VALIDATION_RETRY_AFTER_SECONDS)
    return json_response(authorization_json(current, urls), 200, headers)
