"""Wire representations of ACME objects (RFC 8555 §7.1.2 to §7.1.6).

Field names are the RFC's camelCase; timestamps are RFC 3339 in UTC with a "Z".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleetca.acme.urls import Urls
from fleetca.domain import Account, Authorization, Challenge, Order


def rfc3339(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def account_json(account: Account, urls: Urls) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": account.status,
        "contact": account.contact,
        "orders": urls.account_orders(account.id),
        "createdAt": rfc3339(account.created_at),
    }
    if account.terms_agreed:
        body["termsOfServiceAgreed"] = True
    return body


def order_json(order: Order, urls: Urls) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": order.status,
        "expires": rfc3339(order.expires),
        "identifiers": [i.to_json() for i in order.identifiers],
        "authorizations": [urls.authorization(a) for a in order.authorization_ids],
        "finalize": urls.finalize(order.id),
    }
    if order.not_before is not None:
        body["notBefore"] = rfc3339(order.not_before)
    if order.not_after is not None:
        body["notAfter"] = rfc3339(order.not_after)
    if order.profile is not None:
        body["profile"] = order.profile
    if order.error is not None:
        body["error"] = order.error
    if order.replaces is not None:
        body["replaces"] = order.replaces
    if order.status == "valid" and order.certificate_id:
        body["certificate"] = urls.certificate(order.certificate_id)
    return body


def challenge_json(challenge: Challenge, urls: Urls) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": challenge.type,
        "url": urls.challenge(challenge.id),
        "status": challenge.status,
        "token": challenge.token,
    }
    if challenge.validated is not None:
        body["validated"] = rfc3339(challenge.validated)
    if challenge.error is not None:
        body["error"] = challenge.error
    return body


def authorization_json(authz: Authorization, urls: Urls) -> dict[str, Any]:
    challenges = authz.challenges
    if authz.status == "valid":
        # RFC 8555 §7.1.4: a valid authorization lists the challenge that was validated.
        challenges = [c for c in challenges if c.status == "valid"] or challenges
    body: dict[str, Any] = {
        "identifier": authz.identifier.to_json(),
        "status": authz.status,
        "expires": rfc3339(authz.expires),
        "challenges": [challenge_json(c, urls) for c in challenges],
    }
    if authz.wildcard:
        body["wildcard"] = True
    return body
