"""HTTP plumbing shared by all ACME endpoints: JWS authentication, responses, logging.

Every endpoint is wrapped by :func:`acme_endpoint`, which turns an
:class:`AcmeProblem` into ``application/problem+json``, adds Replay-Nonce and the
Link to the directory to every response, and logs one event per request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from fleetca.acme import jws
from fleetca.acme.context import AcmeContext
from fleetca.acme.nonces import used_nonce
from fleetca.acme.problems import AcmeProblem, malformed, method_not_allowed, not_found, unauthorized
from fleetca.acme.urls import Urls
from fleetca.ca.registry import IssuingCa
from fleetca.domain import Account
from fleetca.logs import log_info_event
from fleetca.storage.repository import Repository

JOSE_CONTENT_TYPE = "application/jose+json"
PROBLEM_CONTENT_TYPE = "application/problem+json"
MAX_REQUEST_BYTES = 64 * 1024

request_log = logging.getLogger("fleetca.request")

Handler = Callable[[Request, AcmeContext, IssuingCa, Urls], Awaitable[Response]]


@dataclass
class PendingNonce:
    """A request's nonce, checked but not yet recorded as used; see :func:`authenticate`.

    ``account`` is the (id, key thumbprint) of the account that signed the
    request, which recording the nonce checks against the database.
    """

    value: str
    issued_at: datetime
    account: tuple[str, str] | None = None
    recorded: bool = False


@dataclass
class AuthenticatedRequest:
    """A POST whose JWS verified, with the account (kid) or bare key (jwk) that signed it."""

    jws: jws.ParsedJws
    key: jws.AccountKey
    account: Account | None
    ctx: AcmeContext
    pending_nonce: PendingNonce | None = None

    def record_nonce(self, repo: Repository) -> None:
        """Record the nonce as used in the handler's write transaction; badNonce if another request used it.

        unauthorized is raised instead if the account was deactivated or
        changed its key since this process cached it.
        """
        pending = self.pending_nonce
        if pending is not None and not pending.recorded:
            _record(self.ctx, repo, pending)
            pending.recorded = True

    @property
    def is_post_as_get(self) -> bool:
        return self.jws.is_post_as_get

    def payload(self) -> dict[str, Any]:
        return self.jws.payload_json()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status,
                    media_type="application/json", headers=headers)


def problem_response(problem: AcmeProblem) -> Response:
    headers = dict(problem.headers)
    return Response(orjson.dumps(problem.to_json()), status_code=problem.status,
                    media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def request_url(ctx: AcmeContext, request: Request) -> str:
    # Built from the ASGI scope: Starlette's request.url assembles a full URL
    # object, which the JWS 'url' check does not need.
    query = request.scope.get("query_string", b"").decode("latin-1")
    return ctx.base_url + request.scope["path"] + (f"?{query}" if query else "")


async def read_jws(request: Request) -> jws.ParsedJws:
    """Check the request's method, media type and size, then parse its JWS."""
    if request.method != "POST":
        raise method_not_allowed("this resource requires POST (POST-as-GET to read it)")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != JOSE_CONTENT_TYPE:
        raise AcmeProblem("malformed", f"Content-Type must be {JOSE_CONTENT_TYPE}, not {media_type or 'missing'}",
                          status=415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise AcmeProblem("malformed", f"request body is larger than {MAX_REQUEST_BYTES} bytes", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_BYTES:
            raise AcmeProblem("malformed", f"request body is larger than {MAX_REQUEST_BYTES} bytes", status=413)
    return jws.parse_flattened(bytes(body))


async def authenticate(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls, *,
                       jwk_allowed: bool = False, kid_allowed: bool = True, post_as_get_only: bool = False,
                       parsed: jws.ParsedJws | None = None,
                       nonce_in_handler_transaction: bool = False,
                       nonce_in_handler_read: bool = False) -> AuthenticatedRequest:
    """Verify a POST (RFC 8555 §6.2 to §6.5): key, signature, url, then nonce.

    The nonce is recorded as used here, in a transaction of its own, unless
    ``nonce_in_handler_transaction``. The handler then calls
    :meth:`AuthenticatedRequest.record_nonce` first thing in its write
    transaction, so a replay fails there with its changes rolled back. If the
    handler fails or returns without recording it, :func:`acme_endpoint`
    records it afterwards, and a request whose nonce turns out to be used
    gets badNonce whatever the handler returned.

    ``nonce_in_handler_read`` does the same for a handler that only reads,
    where the database allows a write in a read (``Database.writes_in_reads``):
    the used nonce then goes to PostgreSQL with the handler's first query.
    """
    parsed = parsed or await read_jws(request)

    # Find the key: an embedded jwk only where the RFC allows it, otherwise the account's.
    account: Account | None = None
    verified = False
    jws.check_account_alg(parsed.alg)
    if parsed.jwk is not None:
        if not jwk_allowed:
            raise malformed("this request must identify its account with 'kid', not 'jwk'")
        key = jws.import_account_key(parsed.jwk, parsed.alg)
    else:
        if not kid_allowed:
            raise malformed("this request must carry the account's public key in 'jwk', not 'kid'")
        account_id = urls.account_id_from_kid(parsed.kid or "")
        account = ctx.accounts.get(account_id) if account_id else None
        if account is not None and account.ca_name == ca.name:
            try:
                key = jws.import_account_key(account.jwk, parsed.alg)
                jws.verify_signature(parsed, key, jws.ACCOUNT_KEY_ALGORITHM_NAMES)
                verified = True
            except AcmeProblem:
                # Another process may have changed the account's key, so the stored key decides.
                account = None
        if account is None:
            account = _read_account(ctx, account_id)
        if account is None or account.ca_name != ca.name:
            raise AcmeProblem("accountDoesNotExist", f"no account at {parsed.kid!r}")
        if not verified:
            key = jws.import_account_key(account.jwk, parsed.alg)

    # The signature comes before any state-dependent check, so unauthenticated
    # requests learn nothing and burn no nonces.
    if not verified:
        jws.verify_signature(parsed, key, jws.ACCOUNT_KEY_ALGORITHM_NAMES)
    if parsed.url != request_url(ctx, request):
        raise unauthorized(f"JWS 'url' {parsed.url!r} does not match the request URL "
                           f"{request_url(ctx, request)!r}")
    nonce = parsed.nonce or ""
    # An account served from the cache is checked against the database when the nonce is recorded.
    checked = (account.id, account.key_thumbprint) if verified and account.status == "valid" else None
    pending = PendingNonce(nonce, ctx.nonces.check(nonce, ctx.now()), account=checked)
    if nonce_in_handler_read and ctx.database.writes_in_reads:
        nonce_in_handler_transaction = True
    if nonce_in_handler_transaction:
        request.state.pending_nonce = pending
    elif not await _record_alone(ctx, pending):
        raise used_nonce()

    if account is not None:
        request.state.account_id = account.id
        if account.status != "valid":
            raise unauthorized(f"account is {account.status}", status=401)
    if post_as_get_only and not parsed.is_post_as_get:
        # §6.3: resources that are only read take POST-as-GET, whose payload is empty.
        raise malformed("this resource is read with POST-as-GET; the JWS payload must be empty")
    return AuthenticatedRequest(jws=parsed, key=key, account=account, ctx=ctx,
                                pending_nonce=pending if nonce_in_handler_transaction else None)


def add_common_headers(response: Response, ctx: AcmeContext, directory_url: str | None) -> None:
    """Add Replay-Nonce, Cache-Control and the Link to the directory to any ACME response.

    The header list is rebuilt once instead of going through Starlette's
    MutableHeaders, which scans the whole list on every assignment. A Link
    the handler set is kept, joined with the directory's in one field.
    """
    raw = [(name, value) for name, value in response.raw_headers if name not in _COMMON_HEADER_NAMES]
    links = [value for name, value in response.raw_headers if name == b"link"]
    raw.append((b"replay-nonce", ctx.nonces.issue(ctx.now()).encode("latin-1")))
    raw.append((b"cache-control", b"no-store"))
    if directory_url is not None:
        links.append(f'<{directory_url}>;rel="index"'.encode("latin-1"))
    if links:
        raw.append((b"link", b", ".join(links)))
    response.raw_headers = raw


_COMMON_HEADER_NAMES = frozenset({b"replay-nonce", b"cache-control", b"link"})


async def _record_alone(ctx: AcmeContext, pending: PendingNonce, *, check_account: bool = True) -> bool:
    """Record a nonce as used in a transaction of its own; return False when it was already used.

    The commit skips the fsync, because it changes nothing but the used-nonce
    table. With ``check_account``, unauthorized is raised if the account
    changed (see :meth:`AuthenticatedRequest.record_nonce`).
    """
    try:
        async with ctx.database.transaction_async(durable=False, single_statement=True) as repo:
            _record(ctx, repo, pending, check_account=check_account)
    except AcmeProblem as problem:
        if problem.type != "badNonce":
            raise
        return False
    return True


def _record(ctx: AcmeContext, repo: Repository, pending: PendingNonce, *, check_account: bool = True) -> None:
    """Record the pending nonce.

    With ``check_account``, also check that its account is still valid and has the signing key.
    """
    if pending.account is None or not check_account:
        ctx.nonces.record(repo, pending.value, pending.issued_at)
        return
    account_id = pending.account[0]

    def account_changed() -> AcmeProblem:
        ctx.accounts.discard(account_id)
        return unauthorized("the account was deactivated or its key changed while this request was on its way; "
                            "send it again", status=401)

    ctx.nonces.record(repo, pending.value, pending.issued_at, pending.account, account_changed)


def _read_account(ctx: AcmeContext, account_id: str) -> Account | None:
    """Read the account from the database and cache it, or drop it from the cache when it is gone."""
    if not account_id:
        return None
    with ctx.database.read() as repo:
        account = repo.get_account(account_id)
    if account is None:
        ctx.accounts.discard(account_id)
    else:
        ctx.accounts.put(account)
    return account


def acme_endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with problem conversion, common headers and the request log."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        ctx: AcmeContext = request.app.state.ctx
        request.state.account_id = None
        request.state.pending_nonce = None
        problem_type = None
        ca_name = request.path_params.get("ca", "")
        urls = Urls(ctx.base_url, ca_name)
        try:
            ca = ctx.cas.get(ca_name)
            if ca is None:
                raise not_found(f"no issuing CA named {ca_name!r} on this server")
            response = await handler(request, ctx, ca, urls)
        except AcmeProblem as problem:
            problem_type = problem.type
            response = problem_response(problem)
        except ClientDisconnect:
            # The client closed the connection before its body arrived, so no
            # one reads this response. The request line below records it.
            problem_type = "malformed"
            response = problem_response(malformed("the client disconnected before the request body was complete"))
        except Exception:
            request_log.exception("unhandled error", extra={"path": request.url.path})
            problem_type = "serverInternal"
            response = problem_response(AcmeProblem("serverInternal", "internal server error; the event was logged"))
        # A handler that failed may have rolled back the transaction that recorded its nonce.
        pending: PendingNonce | None = request.state.pending_nonce
        if pending is not None and (problem_type is not None or not pending.recorded):
            try:
                fresh = await _record_alone(ctx, pending, check_account=False)
            except Exception:
                request_log.exception("recording a used nonce failed", extra={"path": request.url.path})
                problem_type = "serverInternal"
                response = problem_response(AcmeProblem("serverInternal",
                                                        "internal server error; the event was logged"))
            else:
                if not fresh and not pending.recorded:
                    problem_type = "badNonce"
                    response = problem_response(used_nonce())

        add_common_headers(response, ctx, urls.directory if ca_name in ctx.cas else None)
        log_info_event(request_log, "request", {
            "method": request.method,
            "path": request.scope["path"],
            "status": response.status_code,
            "account": request.state.account_id,
            "problem": problem_type,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        })
        return response

    endpoint.__name__ = handler.__name__
    return endpoint
