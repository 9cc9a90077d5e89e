"""Account key rollover (RFC 8555 §7.3.5).

The outer JWS is signed by the current key (kid); its payload is an inner JWS
signed by the new key (jwk) whose payload names the account and the old key.
Pending orders and authorizations stay with the account, because they belong
to the account, not to its key.
"""

from __future__ import annotations

from jwcrypto import jwk
from jwcrypto.common import JWException
from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme import jws
from fleetca.acme.context import AcmeContext, emit_audit
from fleetca.acme.http import authenticate, json_response
from fleetca.acme.problems import AcmeProblem, malformed, unauthorized
from fleetca.acme.urls import Urls
from fleetca.acme.views import account_json
from fleetca.ca.registry import IssuingCa


async def key_change(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls)
    assert auth.account is not None
    account = auth.account

    # Check 2 and 3: the inner JWS is a flattened JWS with a jwk and no kid. Its
    # nonce, which the RFC says it must omit, is ignored if present rather than
    # refused, because deployed clients differ.
    inner = jws.parse_flattened(auth.jws.payload_bytes, require_nonce=False)
    if inner.jwk is None:
        raise malformed("the inner JWS of a key change must carry the new key in 'jwk'")
    new_key = jws.import_account_key(inner.jwk, inner.alg)

    # Check 4: the inner signature is made by the new key.
    jws.verify_signature(inner, new_key, list(jws.ACCOUNT_KEY_ALGORITHMS))

    # Checks 5 to 8: object shape, equal URLs, the account, and the old key.
    if inner.url != auth.jws.url:
        raise malformed("the inner JWS 'url' must equal the outer JWS 'url'")
    payload = inner.payload_json()
    if payload.get("account") != urls.account(account.id):
        raise malformed("the inner payload 'account' must be the URL of the account signing the request")
    old_key = payload.get("oldKey")
    if not isinstance(old_key, dict):
        raise malformed("the inner payload must contain 'oldKey' as a JWK object")
    try:
        old_thumbprint = jwk.JWK(**old_key).thumbprint()
    except (ValueError, TypeError, KeyError, JWException) as exc:
        raise malformed("'oldKey' is not a valid JWK") from exc
    if old_thumbprint != account.key_thumbprint:
        raise unauthorized("'oldKey' is not the account's current key")

    # Check 9: the new key must not belong to any account, this one included.
    new_thumbprint = jws.thumbprint(new_key)
    now = ctx.now()
    async with ctx.database.transaction_async(durable=True) as repo:
        holder = repo.find_account_by_key(ca.name, new_thumbprint)
        if holder is not None:
            raise AcmeProblem("malformed", "the new key is already in use by an account", status=409,
                              headers={"Location": urls.account(holder.id)})
        if not repo.update_account_key(account.id, new_thumbprint, new_key.export_public()):
            raise AcmeProblem("malformed", "the new key was taken by another account meanwhile", status=409)
        repo.audit(now, "account.key-changed", ca.name,
                   {"account": account.id, "old_key": old_thumbprint, "new_key": new_thumbprint})
        updated = repo.get_account(account.id)
    ctx.accounts.discard(account.id)
    emit_audit("account.key-changed", ca.name, {"account": account.id})
    assert updated is not None
    return json_response(account_json(updated, urls), 200, {"Location": urls.account(account.id)})

