"""newOrder and order reads (RFC 8555 §7.4, §7.1.3)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme.accounts import new_id
from fleetca.acme.context import AcmeContext
from fleetca.acme.http import AuthenticatedRequest, authenticate, json_response
from fleetca.acme.identifiers import parse_identifiers
from fleetca.acme.lifecycle import order_needs_refresh, refresh_order
from fleetca.acme.renewal_info import check_replaces, mark_replaced
from fleetca.acme.problems import AcmeProblem, malformed, not_found
from fleetca.acme.urls import Urls
from fleetca.acme.views import authorization_json, order_json
from fleetca.ca.profiles import CertificateProfile
from fleetca.ca.registry import IssuingCa
from fleetca.acme.eab import EabKey, eab_key_from_row
from fleetca.domain import Account, Authorization, Challenge, Identifier, Order
from fleetca.settings import LifetimeSettings
from fleetca.storage.repository import Repository

# The wire-level ceiling; each issuing CA sets its own lower limit in its policy.
MAX_IDENTIFIERS_PER_ORDER = 1000
# How far in the past a requested notBefore may lie; devices with a skewed clock ask for it.
MAX_NOT_BEFORE_BACKDATE = timedelta(hours=24)
PROCESSING_RETRY_AFTER_SECONDS = 1


def challenge_types_for(identifier: Identifier, wildcard: bool) -> list[str]:
    """Challenge types offered: dns-01 only for wildcards, never dns-01 for IPs (RFC 8738 §7)."""
    if wildcard:
        return ["dns-01"]
    if identifier.type == "ip":
        return ["http-01", "tls-alpn-01"]
    return ["http-01", "dns-01", "tls-alpn-01"]


def new_authorization(account_id: str, ident: Identifier, now: datetime, lifetime: timedelta) -> Authorization:
    wildcard = ident.type == "dns" and ident.value.startswith("*.")
    base = Identifier(ident.type, ident.value.removeprefix("*.")) if wildcard else ident
    authz_id = new_id()
    token = secrets.token_urlsafe(32)  # 256 bits; RFC 8555 §8.1 requires at least 128
    challenges = [Challenge(id=new_id(), authorization_id=authz_id, type=t, token=token, status="pending")
                  for t in challenge_types_for(base, wildcard)]
    return Authorization(id=authz_id, account_id=account_id, identifier=base, wildcard=wildcard, status="pending",
                         expires=now + lifetime, created_at=now, challenges=challenges)


def preauthorized_authorization(account_id: str, ident: Identifier, now: datetime,
                                lifetime: timedelta) -> Authorization:
    """Build a valid authorization without challenges, for an identifier the account's EAB key pre-authorizes."""
    wildcard = ident.type == "dns" and ident.value.startswith("*.")
    base = Identifier(ident.type, ident.value.removeprefix("*."))
    return Authorization(id=new_id(), account_id=account_id, identifier=base, wildcard=wildcard, status="valid",
                         expires=now + lifetime, created_at=now, challenges=[])


def account_eab_key(repo: Repository, account: Account) -> EabKey | None:
    if account.eab_key_id is None:
        return None
    return eab_key_from_row(repo.get_eab_key(account.eab_key_id))


def authorization_for(repo: Repository, account: Account, ident: Identifier, eab_key: EabKey | None,
                      now: datetime, lifetimes: LifetimeSettings, valid_until: datetime, *,
                      reuse: bool = True) -> tuple[str, tuple[str, datetime]]:
    """Return the id, status and expiry of the authorization for ``ident``, which is reused, pre-authorized or new.

    ``reuse=False`` skips the search for a valid authorization to reuse.
    """
    wildcard = ident.type == "dns" and ident.value.startswith("*.")
    base = Identifier(ident.type, ident.value.removeprefix("*."))
    reused = repo.find_reusable_authorization(account.id, base, wildcard, valid_until) if reuse else None
    if reused is not None:
        return reused[0], ("valid", reused[1])
    if eab_key is not None and eab_key.preauthorizes(base, wildcard, now):
        authz = preauthorized_authorization(account.id, ident, now, lifetimes.valid_authorization)
        repo.audit(now, "authorization.preauthorized", account.ca_name,
                   {"account": account.id, "identifier": ident.value, "eab_key": eab_key.key_id})
    else:
        authz = new_authorization(account.id, ident, now, lifetimes.pending_authorization)
    repo.add_authorization(authz)
    return authz.id, (authz.status, authz.expires)


def parse_timestamp(payload: dict[str, Any], field: str) -> datetime | None:
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise malformed(f"'{field}' must be an RFC 3339 timestamp string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise malformed(f"'{field}' is not an RFC 3339 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        raise malformed(f"'{field}' must carry a time zone offset, such as Z")
    return parsed


def select_profile(ca: IssuingCa, payload: dict[str, Any]) -> CertificateProfile:
    name = payload.get("profile", ca.default_profile)
    if not isinstance(name, str):
        raise malformed("'profile' must be a string")
    profile = ca.profiles.get(name)
    if profile is None:
        raise AcmeProblem("invalidProfile",
                          f"profile {name!r} is not offered; choose one of {', '.join(sorted(ca.profiles))}")
    return profile


def check_validity_request(ca: IssuingCa, profile: CertificateProfile, not_before: datetime | None,
                           not_after: datetime | None, now: datetime) -> None:
    """Refuse a notBefore/notAfter that fleetca could not honour exactly (§7.4)."""
    if not_before is None and not_after is None:
        return
    start = not_before or now
    if not_before is not None and not_before < now - MAX_NOT_BEFORE_BACKDATE:
        raise malformed("'notBefore' is more than 24 hours in the past")
    if not_before is not None and not_before >= ca.certificate.not_valid_after_utc:
        raise malformed("'notBefore' is later than the issuing CA's own expiry")
    if not_after is not None:
        if not_after <= start:
            raise malformed("'notAfter' must be later than 'notBefore' and than now")
        if not_after - start > profile.lifetime:
            raise malformed(f"the requested validity exceeds the {profile.name} profile's maximum of {profile.lifetime}")
        if not_after > ca.certificate.not_valid_after_utc:
            raise malformed("'notAfter' is later than the issuing CA's own expiry")


async def new_order(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls, nonce_in_handler_transaction=True)
    assert auth.account is not None
    payload = auth.payload()
    now = ctx.now()

    identifiers = parse_identifiers(payload.get("identifiers"), max_count=MAX_IDENTIFIERS_PER_ORDER)
    ca.policy.check_identifiers(ca.name, identifiers)
    profile = select_profile(ca, payload)
    not_before, not_after = parse_timestamp(payload, "notBefore"), parse_timestamp(payload, "notAfter")
    check_validity_request(ca, profile, not_before, not_after, now)

    lifetimes = ctx.settings.lifetimes
    order_expires = now + lifetimes.order
    async with ctx.database.transaction_async(durable=False) as repo:
        auth.record_nonce(repo)
        # A valid authorization of the same account that outlives the order is reused.
        eab_key = account_eab_key(repo, auth.account)
        replaces = payload.get("replaces")
        replaced_id = check_replaces(repo, auth.account.id, replaces, identifiers, now) if replaces is not None \
            else None
        # An account that this process created and has made no authorization
        # for has none to reuse, unless another process made one. A new
        # authorization is then as valid, so the search is skipped.
        reuse = not ctx.accounts.first_authorizations(auth.account.id)
        found = [authorization_for(repo, auth.account, ident, eab_key, now, lifetimes, order_expires, reuse=reuse)
                 for ident in identifiers]
        authz_ids = [authz_id for authz_id, _ in found]
        # refresh_order below takes the authorizations' states from here instead of reading them back.
        states = dict(found)
        order = Order(id=new_id(), account_id=auth.account.id, status="pending", expires=order_expires,
                      identifiers=identifiers, authorization_ids=authz_ids, not_before=not_before,
                      not_after=not_after, profile=profile.name, error=None, certificate_id=None, created_at=now,
                      replaces=replaces)
        repo.add_order(order)
        if replaced_id is not None:
            mark_replaced(repo, replaced_id, order.id, now)
        order = refresh_order(repo, order, now, states)
    return json_response(order_json(order, urls), 201, {"Location": urls.order(order.id)})


async def load_order(ctx: AcmeContext, order_id: str, account_id: str, now: datetime,
                     auth: AuthenticatedRequest | None = None) -> Order:
    """Read the account's order with expiry and authorization outcomes applied, or raise not found.

    Polls are the common case: they read without a write lock, and take one
    only when the order's state has to change. The nonce of ``auth``, when
    given, is recorded with the read (see ``authenticate``).
    """
    with ctx.database.read() as repo:
        if auth is not None:
            auth.record_nonce(repo)
        found = repo.get_order_with_states(order_id)
    if found is None or found[0].account_id != account_id:
        raise not_found("no such order for this account")
    current, states = found
    if order_needs_refresh(current, states, now):
        async with ctx.database.transaction_async(durable=False) as repo:
            fresh = repo.get_order(current.id)
            assert fresh is not None
            current = refresh_order(repo, fresh, now)
    return current


async def order(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls, post_as_get_only=True, nonce_in_handler_read=True)
    assert auth.account is not None
    current = await load_order(ctx, request.path_params["id"], auth.account.id, ctx.now(), auth)
    headers = {"Location": urls.order(current.id)}
    if current.status == "processing":
        headers["Retry-After"] = str(PROCESSING_RETRY_AFTER_SECONDS)
    return json_response(order_json(current, urls), 200, headers)


async def new_authz(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    """Pre-authorization (RFC 8555 §7.4.1): an authorization requested before any order."""
    auth = await authenticate(request, ctx, ca, urls)
    assert auth.account is not None
    payload = auth.payload()
    identifiers = parse_identifiers([payload.get("identifier")], max_count=1)
    if identifiers[0].value.startswith("*."):
        raise AcmeProblem("rejectedIdentifier", "newAuthz cannot pre-authorize a wildcard; order it instead",
                          subproblems=[])
    ca.policy.check_identifiers(ca.name, identifiers)
    now = ctx.now()
    lifetimes = ctx.settings.lifetimes
    # This request makes an authorization, so the account's next order
    # searches for one to reuse.
    ctx.accounts.first_authorizations(auth.account.id)
    async with ctx.database.transaction_async(durable=False) as repo:
        eab_key = account_eab_key(repo, auth.account)
        authz_id = authorization_for(repo, auth.account, identifiers[0], eab_key, now, lifetimes, now)[0]
        authz = repo.get_authorization(authz_id)
    assert authz is not None
    return json_response(authorization_json(authz, urls), 201, {"Location": urls.authorization(authz_id)})
