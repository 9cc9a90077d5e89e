"""Accounts: newAccount, account update and deactivation, the orders list (RFC 8555 §7.3, §7.1.2.1)."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme import jws
from fleetca.acme.context import AcmeContext, emit_audit
from fleetca.acme.eab import EabKey, eab_key_from_row, verify_binding
from fleetca.acme.http import authenticate, json_response
from fleetca.acme.problems import AcmeProblem, malformed, not_found, unauthorized
from fleetca.acme.urls import Urls
from fleetca.acme.views import account_json
from fleetca.ca.registry import IssuingCa
from fleetca.domain import Account

MAX_CONTACTS = 10
ORDERS_PAGE_SIZE = 100


def new_id() -> str:
    """Return a random resource id: 96 bits, base64url."""
    return secrets.token_urlsafe(12)


def parse_contacts(raw: Any) -> list[str]:
    """Check the ``contact`` array: mailto URIs with one plain address each (§7.3)."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise malformed("'contact' must be an array of strings")
    if len(raw) > MAX_CONTACTS:
        raise AcmeProblem("invalidContact", f"at most {MAX_CONTACTS} contacts are accepted")
    contacts = []
    for uri in raw:
        scheme, _, address = uri.partition(":")
        if scheme.lower() != "mailto":
            raise AcmeProblem("unsupportedContact", f"contact {uri!r} is not supported; use a mailto: URI")
        local, at, domain = address.partition("@")
        if not at or not local or "." not in domain or any(c in address for c in "?,;<> ") \
                or any(ord(c) < 0x20 or ord(c) == 0x7F for c in address) or len(uri) > 254:
            raise AcmeProblem("invalidContact", f"contact {uri!r} is not a single plain e-mail address")
        contacts.append(f"mailto:{address}")
    return contacts


async def new_account(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls, jwk_allowed=True, kid_allowed=False,
                              nonce_in_handler_transaction=True)
    payload = auth.payload()
    thumbprint = jws.thumbprint(auth.key)

    # §7.3.1: a known key gets its existing account back, whatever else was
    # sent. A request for a plain new account, the common case, skips the
    # lookup, because the INSERT's conflict on the unique key shows a known key.
    try:
        only_existing, contacts, terms = _new_account_fields(payload)
    except AcmeProblem:
        known = _existing_account(request, ctx, ca, urls, thumbprint)
        if known is not None:
            return known
        raise
    binding = payload.get("externalAccountBinding")
    if only_existing or binding is not None or ca.external_account_required:
        known = _existing_account(request, ctx, ca, urls, thumbprint)
        if known is not None:
            return known
    if only_existing:
        raise AcmeProblem("accountDoesNotExist", "no account exists for this key")

    now = ctx.now()
    eab_key_id = None
    if binding is not None:
        def lookup(key_id: str) -> EabKey | None:
            with ctx.database.read() as repo:
                return eab_key_from_row(repo.get_eab_key(key_id))

        eab_key_id = verify_binding(binding, urls.new_account, auth.key, ca.name, lookup, now).key_id
    elif ca.external_account_required:
        raise AcmeProblem("externalAccountRequired",
                          "this CA requires an externalAccountBinding with a key issued by the operator")

    account = Account(id=new_id(), ca_name=ca.name, key_thumbprint=thumbprint, jwk=auth.key.export_public(),
                      status="valid", contact=contacts, terms_agreed=terms, eab_key_id=eab_key_id, created_at=now)
    async with ctx.database.transaction_async(durable=False) as repo:
        auth.record_nonce(repo)
        if eab_key_id is not None and not repo.bind_eab_key(eab_key_id):
            raise unauthorized(f"EAB key {eab_key_id} reached its account limit or was revoked")
        # Without an EAB binding to undo, a key that has an account commits only the used nonce.
        added = repo.add_account_with_audit(account, now, {"account": account.id, "key": thumbprint,
                                                           "eab_key": eab_key_id},
                                            commit_with_it=eab_key_id is None)
        if not added and eab_key_id is not None:
            # The key has an account already, made since the lookup above by
            # a concurrent request. The EAB key must stay unbound, so the
            # transaction rolls back.
            raise AcmeProblem("malformed", "an account for this key was created concurrently; retry", status=409)
    if not added:
        known = _existing_account(request, ctx, ca, urls, thumbprint)
        if known is None:
            raise AcmeProblem("malformed", "the account for this key was not found after a conflict; retry", status=409)
        return known
    emit_audit("account.created", ca.name, {"account": account.id, "eab_key": eab_key_id})
    ctx.accounts.put(account, created=True)
    request.state.account_id = account.id
    body = account_json(account, urls)
    if binding is not None:
        body["externalAccountBinding"] = binding
    return json_response(body, 201, {"Location": urls.account(account.id)})


def _new_account_fields(payload: dict[str, Any]) -> tuple[bool, list[str], bool]:
    """Check a newAccount payload and return its onlyReturnExisting, contact and termsOfServiceAgreed values."""
    only_existing = payload.get("onlyReturnExisting", False)
    if not isinstance(only_existing, bool):
        raise malformed("'onlyReturnExisting' must be a boolean")
    if only_existing:
        return True, [], False
    contacts = parse_contacts(payload.get("contact"))
    terms = payload.get("termsOfServiceAgreed", False)
    if not isinstance(terms, bool):
        raise malformed("'termsOfServiceAgreed' must be a boolean")
    return only_existing, contacts, terms


def _existing_account(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls,
                      thumbprint: str) -> Response | None:
    """Return the response for the CA's account with this key, or None when the key has no account."""
    with ctx.database.read() as repo:
        existing = repo.find_account_by_key(ca.name, thumbprint)
    if existing is None:
        return None
    request.state.account_id = existing.id
    if existing.status != "valid":
        raise unauthorized(f"the account for this key is {existing.status}", status=401)
    return json_response(account_json(existing, urls), 200, {"Location": urls.account(existing.id)})


async def account(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls)
    assert auth.account is not None
    if auth.account.id != request.path_params["id"]:
        raise unauthorized("an account can only be read or changed with its own key")
    current = auth.account
    if auth.is_post_as_get:
        # The account may come from this process's cache; the response shows the stored one.
        with ctx.database.read() as repo:
            stored = repo.get_account(current.id)
        assert stored is not None
        return json_response(account_json(stored, urls), 200, {"Location": urls.account(stored.id)})

    # §7.3.2: only contact and a change to "deactivated" take effect; other
    # fields, including other status values and orders, are ignored.
    payload = auth.payload()
    changes: dict[str, Any] = {}
    if "contact" in payload:
        changes["contact"] = parse_contacts(payload["contact"])
    deactivate = payload.get("status") == "deactivated"
    now = ctx.now()
    async with ctx.database.transaction_async(durable=True) as repo:
        if changes:
            repo.update_account(current.id, **changes)
        if deactivate:
            repo.update_account(current.id, status="deactivated")
            cancelled = repo.cancel_pending_work(current.id, {
                "type": "urn:ietf:params:acme:error:unauthorized", "detail": "account was deactivated", "status": 403,
            })
            repo.audit(now, "account.deactivated", ca.name, {"account": current.id, "cancelled_orders": cancelled})
        updated = repo.get_account(current.id)
    ctx.accounts.discard(current.id)
    assert updated is not None
    return json_response(account_json(updated, urls), 200, {"Location": urls.account(updated.id)})


async def account_orders(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls, post_as_get_only=True)
    assert auth.account is not None
    if auth.account.id != request.path_params["id"]:
        raise not_found("no such orders list for this account")
    cursor = request.query_params.get("cursor")
    with ctx.database.read() as repo:
        ids = repo.list_order_ids(auth.account.id, after=cursor, limit=ORDERS_PAGE_SIZE + 1)
    headers = {}
    if len(ids) > ORDERS_PAGE_SIZE:
        ids = ids[:ORDERS_PAGE_SIZE]
        headers["Link"] = f'<{urls.account_orders(auth.account.id)}?cursor={ids[-1]}>;rel="next"'
    return json_response({"orders": [urls.order(i) for i in ids]}, 200, headers)
