"""HTTP routes for CRL shards and OCSP, served on the plain-HTTP listener (and on HTTPS too).

    GET  /crl/{ca}/{shard}.crl        the shard's DER CRL (application/pkix-crl)
    GET  /ocsp/{ca}/{base64 request}  RFC 5019 GET form
    POST /ocsp/{ca}                   RFC 6960 Appendix A POST form

OCSP errors travel inside an OCSP response with HTTP status 200, as RFC 6960
Appendix A specifies; only an unknown path gets a plain 404.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Awaitable, Callable, Sequence

from cryptography.x509 import ocsp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from fleetca.logs import log_info_event
from fleetca.revocation.responder import OcspAnswer
from fleetca.revocation.service import RevocationService
from fleetca.settings import MAX_CRL_SHARDS
from fleetca.signing.ocsp import unsuccessful_response

CRL_CONTENT_TYPE = "application/pkix-crl"
OCSP_REQUEST_CONTENT_TYPE = "application/ocsp-request"
OCSP_RESPONSE_CONTENT_TYPE = "application/ocsp-response"
MAX_OCSP_REQUEST_BYTES = 10 * 1024
# Relying parties and HTTP caches may keep a CRL for this long before asking again.
CRL_MAX_AGE_SECONDS = 3600

request_log = logging.getLogger("fleetca.request")

Endpoint = Callable[[Request], Awaitable[Response]]


def _logged(endpoint: Endpoint) -> Endpoint:
    """Log one event per request, as the ACME endpoints do."""

    async def wrapper(request: Request) -> Response:
        started = time.perf_counter()
        response = await endpoint(request)
        log_info_event(request_log, "request", {
            "method": request.method, "path": request.url.path, "status": response.status_code,
            "ms": round((time.perf_counter() - started) * 1000, 2)})
        return response

    wrapper.__name__ = endpoint.__name__
    return wrapper


def _service(request: Request) -> RevocationService:
    return request.app.state.revocation


def _cache_headers(this_update: datetime, next_update: datetime, now: datetime, max_age_cap: int,
                   body: bytes) -> dict[str, str]:
    # RFC 5019 caching: HTTP caches keep the response no longer than it is valid.
    max_age = max(0, min(max_age_cap, int((next_update - now).total_seconds())))
    # PostgreSQL returns times in the session's zone; HTTP dates are always GMT.
    return {
        "Cache-Control": f"public, max-age={max_age}, no-transform, must-revalidate",
        "Last-Modified": format_datetime(this_update.astimezone(UTC), usegmt=True),
        "Expires": format_datetime(next_update.astimezone(UTC), usegmt=True),
        "ETag": f'"{hashlib.sha256(body).hexdigest()[:32]}"',
    }


async def crl_shard(request: Request) -> Response:
    service = _service(request)
    ca_name, shard = request.path_params["ca"], request.path_params["shard"]
    row = None
    if ca_name in service.cas and shard < MAX_CRL_SHARDS:
        with service.database.transaction() as repo:
            row = repo.get_crl_shard(ca_name, shard)
    if row is None:
        return PlainTextResponse(f"no CRL shard {shard} for issuing CA {ca_name!r}\n", status_code=404)
    headers = _cache_headers(row["this_update"], row["next_update"], service.clock.now(), CRL_MAX_AGE_SECONDS,
                             row["der"])
    return Response(row["der"], media_type=CRL_CONTENT_TYPE, headers=headers)


def _ocsp_response(service: RevocationService, answer: OcspAnswer, cacheable: bool) -> Response:
    headers = {}
    if cacheable and answer.this_update is not None and answer.next_update is not None:
        headers = _cache_headers(answer.this_update, answer.next_update, service.clock.now(),
                                 service.settings.ocsp.max_age_seconds, answer.der)
    return Response(answer.der, media_type=OCSP_RESPONSE_CONTENT_TYPE, headers=headers)


def _malformed() -> Response:
    return Response(unsuccessful_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
                    media_type=OCSP_RESPONSE_CONTENT_TYPE)


def decode_get_request(encoded: str) -> bytes | None:
    """Decode the base64 request of an OCSP GET; None when it is not base64.

    Starlette has already undone the URL encoding. Clients differ in the rest, so
    a '+' that a proxy turned into a space, missing padding and the URL-safe
    alphabet are all accepted.
    """
    # No stripping of "/": it is a base64 character, and a request whose encoding
    # starts or ends with one (about one in 32) would otherwise be corrupted.
    text = encoded.replace(" ", "+").replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


async def ocsp_get(request: Request) -> Response:
    service = _service(request)
    der = decode_get_request(request.path_params["encoded"])
    if der is None or len(der) > MAX_OCSP_REQUEST_BYTES:
        return _malformed()
    answer = service.responder.respond(request.path_params["ca"], der)
    return _ocsp_response(service, answer, cacheable=True)


async def ocsp_post(request: Request) -> Response:
    service = _service(request)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != OCSP_REQUEST_CONTENT_TYPE:
        return _malformed()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OCSP_REQUEST_BYTES:
            return _malformed()
    answer = service.responder.respond(request.path_params["ca"], bytes(body))
    # Responses to POST are not meant for HTTP caches (RFC 5019).
    return _ocsp_response(service, answer, cacheable=False)


def revocation_routes() -> list[Route]:
    return [
        Route("/crl/{ca}/{shard:int}.crl", _logged(crl_shard), methods=["GET", "HEAD"]),
        Route("/ocsp/{ca}", _logged(ocsp_post), methods=["POST"]),
        Route("/ocsp/{ca}/", _logged(ocsp_post), methods=["POST"]),
        Route("/ocsp/{ca}/{encoded:path}", _logged(ocsp_get), methods=["GET", "HEAD"]),
    ]


def create_http_app(service: RevocationService, extra_routes: Sequence[Route] = ()) -> Starlette:
    """Build the plain-HTTP application: CRL shards, OCSP and ``extra_routes``, never ACME."""
    app = Starlette(routes=revocation_routes() + list(extra_routes))
    app.state.revocation = service
    return app
