"""The directory (RFC 8555 §7.1.1) and newNonce (§7.2) resources."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme.context import AcmeContext
from fleetca.acme.http import json_response
from fleetca.acme.problems import method_not_allowed
from fleetca.acme.renewal_info import renewal_info_url
from fleetca.acme.urls import Urls
from fleetca.ca.registry import IssuingCa


async def directory(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    if request.method != "GET":
        raise method_not_allowed("the directory is read with GET", allow="GET")
    meta = {
        "profiles": {name: profile.description for name, profile in ca.profiles.items()},
        "externalAccountRequired": ca.external_account_required,
    }
    return json_response({
        "newNonce": urls.new_nonce,
        "newAccount": urls.new_account,
        "newOrder": urls.new_order,
        "revokeCert": urls.revoke_cert,
        "keyChange": urls.key_change,
        "newAuthz": urls.new_authz,
        "renewalInfo": renewal_info_url(urls),
        "meta": meta,
    })


async def new_nonce(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    # §7.2: HEAD returns 200 and GET returns 204; the wrapper adds Replay-Nonce.
    if request.method == "HEAD":
        return Response(status_code=200)
    if request.method == "GET":
        return Response(status_code=204)
    raise method_not_allowed("newNonce is read with HEAD or GET", allow="GET, HEAD")
