"""Challenge responses and the validation that follows (RFC 8555 §7.5.1, §8).

A POST with a JSON object to a pending challenge moves it to processing and
starts validation as a background task of this process; the client polls the
authorization. If the process stops before the task finishes, another fleetca
process takes the challenge up again once it has been in processing for longer
than a validation may take.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme.context import AcmeContext
from fleetca.acme.http import authenticate, json_response
from fleetca.acme.lifecycle import problem_json, refresh_order
from fleetca.acme.problems import PROBLEM_STATUS, not_found
from fleetca.acme.urls import Urls
from fleetca.acme.views import challenge_json
from fleetca.ca.registry import IssuingCa
from fleetca.domain import Account, Authorization, Challenge
from fleetca.validation.errors import ValidationFailed


log = logging.getLogger("fleetca.validation")
RETRY_AFTER_SECONDS = 1
INLINE_VALIDATION_WAIT_SECONDS = 0.5
# Added to the total validation timeout before a challenge counts as abandoned.
ABANDONED_MARGIN_SECONDS = 30


async def challenge(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls, nonce_in_handler_transaction=True)
    assert auth.account is not None
    challenge_id = request.path_params["id"]
    if not auth.is_post_as_get:
        auth.payload()  # must be a JSON object; its members are ignored (§7.5.1)
    now = ctx.now()
    started = False
    async with ctx.database.transaction_async(durable=False) as repo:
        auth.record_nonce(repo)
        if auth.is_post_as_get:
            authz = repo.get_authorization_of_challenge(challenge_id)
        else:
            # The move to processing, if the challenge and its authorization
            # allow it, and the read of the outcome end the transaction.
            repo.commit_with_next_statement()
            started, authz = repo.start_challenge(challenge_id, auth.account.id, now)
    current = next((c for c in authz.challenges if c.id == challenge_id), None) if authz else None
    if current is None or authz is None or authz.account_id != auth.account.id:
        raise not_found("no such challenge for this account")
    if started:
        # A validation on a reachable device takes milliseconds. Waiting briefly
        # lets this response already carry the outcome, which saves the client
        # its polls; a slow validation goes on in the background.
        task = start_validation(ctx, challenge_id, loaded=(current, authz, auth.account))
        await asyncio.wait({task}, timeout=INLINE_VALIDATION_WAIT_SECONDS)
        recorded = task.result() if task.done() and not task.cancelled() and not task.exception() else None
        if recorded is not None:
            current = recorded
        else:
            with ctx.database.read() as repo:
                current = repo.get_challenge(challenge_id)
            assert current is not None
    headers = {"Link": f'<{urls.authorization(current.authorization_id)}>;rel="up"'}
    if current.status == "processing":
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return json_response(challenge_json(current, urls), 200, headers)


def start_validation(ctx: AcmeContext, challenge_id: str,
                     loaded: tuple[Challenge, Authorization, Account] | None = None) -> asyncio.Task[Challenge | None]:
    task = asyncio.get_running_loop().create_task(validate_challenge(ctx, challenge_id, loaded))
    ctx.background_tasks.add(task)
    task.add_done_callback(ctx.background_tasks.discard)
    return task


async def validate_challenge(ctx: AcmeContext, challenge_id: str,
                             loaded: tuple[Challenge, Authorization, Account] | None = None) -> Challenge | None:
    """Validate one processing challenge and record the outcome on it, its authorization and orders.

    ``loaded`` is the challenge, already moved to processing, with its
    authorization and account, when the caller has just read them. Returns
    the challenge as recorded, or None when there was nothing to validate or
    another process recorded the outcome first.
    """
    if loaded is not None:
        current, authz, account = loaded
    else:
        with ctx.database.read() as repo:
            current = repo.get_challenge(challenge_id)
            authz = repo.get_authorization(current.authorization_id) if current else None
            account = repo.get_account(authz.account_id) if authz else None
    if current is None or authz is None or account is None or current.status != "processing":
        return None
    # The stored thumbprint is the account key's RFC 7638 thumbprint, kept with the key on key change.
    key_authorization = f"{current.token}.{account.key_thumbprint}"
    error = None
    total_timeout = ctx.settings.validation.total_timeout_seconds
    try:
        async with asyncio.timeout(total_timeout):
            await ctx.validator.validate(current.type, authz.identifier, current.token, key_authorization)
    except TimeoutError:
        error = problem_json("connection", f"validation did not finish within {total_timeout:g} seconds", 400)
    except ValidationFailed as failure:
        error = problem_json(failure.problem_type, failure.detail, PROBLEM_STATUS.get(failure.problem_type, 400))
    except Exception:
        log.exception("validation of challenge %s crashed", challenge_id)
        error = problem_json("serverInternal", "validation failed with an internal error", 500)

    now = ctx.now()
    if error is None:
        expires = now + ctx.settings.lifetimes.valid_authorization
        status, challenge_values, authz_values = "valid", {"validated": now}, {"expires": expires}
    else:
        expires = authz.expires
        status, challenge_values, authz_values = "invalid", {"error": error}, {}
    async with ctx.database.transaction_async(durable=False) as repo:
        recorded, authz_moved, orders = repo.record_challenge_outcome(
            challenge_id, authz.id, status, challenge_values, authz_values)
        # The authorization's new state, when this transaction set it, saves reading it back.
        known = {authz.id: (status, expires)} if authz_moved else {}
        for order in orders:
            refresh_order(repo, order, now, known, deferred=True)
    event = {
        "challenge": challenge_id, "type": current.type, "identifier": authz.identifier.value,
        "account": account.id, "result": "valid" if error is None else "invalid",
        "error": error["detail"] if error else None,
    }
    if not recorded:
        # Another process resumed this challenge and recorded its outcome first.
        log.info("challenge validation outcome discarded", extra={"event": event})
        return None
    log.info("challenge validated", extra={"event": event})
    return replace(current, status="valid" if error is None else "invalid",
                   validated=now if error is None else None, error=error)


async def resume_abandoned_challenges(ctx: AcmeContext) -> int:
    """Restart validation of challenges that a stopped process left in processing, and return how many.

    A live process records a validation's outcome within the total timeout,
    so only a challenge in processing for longer than that, plus a margin
    for recording it and for clocks of different machines, was abandoned.
    Each one is claimed with a conditional UPDATE, so one process takes it.
    """
    now = ctx.now()
    started_before = now - timedelta(seconds=ctx.settings.validation.total_timeout_seconds
                                     + ABANDONED_MARGIN_SECONDS)
    with ctx.database.read() as repo:
        ids = repo.abandoned_challenge_ids(started_before)
    resumed = 0
    for challenge_id in ids:
        async with ctx.database.transaction_async(durable=False) as repo:
            claimed = repo.claim_abandoned_challenge(challenge_id, started_before, now)
        if claimed:
            start_validation(ctx, challenge_id)
            resumed += 1
    return resumed
