"""Certificate download (RFC 8555 §7.4.2)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme.context import AcmeContext
from fleetca.acme.http import authenticate
from fleetca.acme.problems import not_found
from fleetca.acme.urls import Urls
from fleetca.ca.registry import IssuingCa

PEM_CHAIN_CONTENT_TYPE = "application/pem-certificate-chain"


def leaf_pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


async def certificate(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls, post_as_get_only=True, nonce_in_handler_read=True)
    assert auth.account is not None
    with ctx.database.read() as repo:
        auth.record_nonce(repo)
        issued = repo.get_certificate(request.path_params["id"])
    if issued is None or issued.account_id != auth.account.id or issued.ca_name != ca.name:
        raise not_found("no such certificate for this account")
    # Leaf first, then the issuing CA and any intermediates; the root is left out.
    body = leaf_pem(issued.der) + ca.chain_pem
    # Starlette would append "; charset=utf-8" to a text type; this media type is
    # sent bare because some clients compare it exactly.
    response = Response(body, status_code=200)
    response.headers["Content-Type"] = PEM_CHAIN_CONTENT_TYPE
    return response
