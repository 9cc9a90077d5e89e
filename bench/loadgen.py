"""The closed-loop load: CONCURRENCY workers, each running device flows back to back.

One device flow is what a device does to get its first certificate:

1. GET the directory and HEAD newNonce;
2. newAccount with the device's own fresh key (jwk);
3. newOrder for the device's one name, then POST-as-GET its authorization;
4. register the key authorization with the responder and POST the http-01 challenge;
5. poll the authorization until it is valid, unless the challenge response already shows valid;
6. finalize with the device's P-256 CSR, then poll the order until it is valid if it is not yet;
7. POST-as-GET the certificate URL.

Polls wait 25 ms, then twice as long each time up to 400 ms. They ignore
Retry-After, because a server that requests a 1 s pause would otherwise be
measured by its pause. Each worker keeps one TLS connection open across its
flows.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from acme_client import AcmeError, AcmeSession, Device, b64url
from http11 import HttpConnection, HttpError, client_ssl_context
from responder import Http01Responder

FIRST_POLL_SECONDS = 0.025
MAX_POLL_SECONDS = 0.4
MAX_POLL_WAIT_SECONDS = 60.0


@dataclass
class FlowResult:
    device: Device
    started: float
    seconds: float
    requests: int
    certificate_pem: bytes | None = None
    error: str | None = None


@dataclass
class LoadResult:
    flows: list[FlowResult]
    wall_seconds: float
    generator_cpu_seconds: float
    connects: int
    bad_nonce_retries: int
    stopped_early: bool = False
    unstarted: int = 0

    @property
    def issued(self) -> list[FlowResult]:
        return [f for f in self.flows if f.error is None]

    @property
    def failed(self) -> list[FlowResult]:
        return [f for f in self.flows if f.error is not None]


@dataclass
class _Shared:
    queue: list[Device]
    deadline: float
    max_failures_in_a_row: int
    results: list[FlowResult] = field(default_factory=list)
    stopped_early: bool = False
    failures_in_a_row: int = 0


async def run_device_flow(session: AcmeSession, device: Device, responder: Http01Responder) -> bytes:
    """Run one device's flow; return the certificate chain in PEM."""
    await session.get_directory()
    await session.fetch_nonce()
    directory = session.directory

    response = await session.post(directory["newAccount"], {"termsOfServiceAgreed": True}, device, None,
                                  expected=(201,))
    kid = response.headers["location"]

    response = await session.post(directory["newOrder"],
                                  {"identifiers": [{"type": "dns", "value": device.name}]}, device, kid,
                                  expected=(201,))
    order_url = response.headers["location"]
    order = json.loads(response.body)
    if len(order["authorizations"]) != 1:
        raise AcmeError(f"order {order_url} has {len(order['authorizations'])} authorizations, expected 1")
    authz_url = order["authorizations"][0]

    authz = json.loads((await session.post(authz_url, None, device, kid)).body)
    challenge = next((c for c in authz["challenges"] if c["type"] == "http-01"), None)
    if challenge is None:
        raise AcmeError(f"authorization {authz_url} offers no http-01 challenge")
    token = challenge["token"]
    responder.add(token, device.name, f"{token}.{device.thumbprint}")
    try:
        challenge_state = json.loads((await session.post(challenge["url"], {}, device, kid)).body)
        if challenge_state.get("status") != "valid":
            await _poll(session, authz_url, device, kid, done="valid", failed=("invalid", "deactivated",
                                                                                "expired", "revoked"))
    finally:
        responder.remove(token)

    csr = {"csr": b64url(device.csr_der)}
    order = json.loads((await session.post(order["finalize"], csr, device, kid)).body)
    if order.get("status") != "valid":
        order = await _poll(session, order_url, device, kid, done="valid", failed=("invalid",))

    response = await session.post(order["certificate"], None, device, kid)
    if not response.body.startswith(b"-----BEGIN CERTIFICATE-----"):
        raise AcmeError(f"certificate {order['certificate']} is not a PEM chain: {response.body[:80]!r}")
    return response.body


async def _poll(session: AcmeSession, url: str, device: Device, kid: str, *, done: str,
                failed: tuple[str, ...]) -> dict[str, Any]:
    delay = FIRST_POLL_SECONDS
    give_up = time.monotonic() + MAX_POLL_WAIT_SECONDS
    while True:
        await asyncio.sleep(delay)
        current = json.loads((await session.post(url, None, device, kid)).body)
        status = current.get("status")
        if status == done:
            return current
        if status in failed:
            raise AcmeError(f"{url} became {status}: {json.dumps(current.get('error') or current)[:300]}")
        if time.monotonic() > give_up:
            raise AcmeError(f"{url} still {status} after {MAX_POLL_WAIT_SECONDS:.0f} s")
        delay = min(delay * 2, MAX_POLL_SECONDS)


async def _worker(shared: _Shared, origin: str, directory_url: str, ca_file: str,
                  responder: Http01Responder, stats: list[AcmeSession]) -> None:
    connection = HttpConnection(origin, client_ssl_context(ca_file))
    session = AcmeSession(connection, directory_url)
    stats.append(session)
    try:
        while shared.queue:
            # A server that fails every flow, or has stopped answering, is not measured further.
            if time.monotonic() > shared.deadline or shared.failures_in_a_row > shared.max_failures_in_a_row:
                shared.stopped_early = True
                return
            device = shared.queue.pop()
            before = session.requests
            started = time.monotonic()
            result = FlowResult(device=device, started=started, seconds=0.0, requests=0)
            try:
                result.certificate_pem = await run_device_flow(session, device, responder)
            except (AcmeError, HttpError, KeyError, ValueError) as exc:
                result.error = f"{exc.__class__.__name__}: {exc}"
                # The next flow starts on a clean connection and a fresh nonce.
                connection.abort()
                session.nonce = None
            result.seconds = time.monotonic() - started
            result.requests = session.requests - before
            shared.results.append(result)
            shared.failures_in_a_row = 0 if result.error is None else shared.failures_in_a_row + 1
    finally:
        await connection.close()


async def run_load(directory_url: str, ca_file: str, devices: list[Device], concurrency: int,
                   responder: Http01Responder, time_limit: float,
                   watch: Callable[[int], None] | None = None, watch_every: float = 0.0) -> LoadResult:
    """Run every device's flow with ``concurrency`` workers.

    No new flow starts after ``time_limit`` seconds, or after more than
    ``concurrency`` flows in a row have failed. When ``watch`` is given, it is
    called with the number of finished flows every ``watch_every`` seconds
    and once at the end.
    """
    scheme, _, netloc = directory_url.split("/", 3)[:3]
    origin = f"{scheme}//{netloc}"
    shared = _Shared(queue=list(reversed(devices)), deadline=time.monotonic() + time_limit,
                     max_failures_in_a_row=concurrency)
    sessions: list[AcmeSession] = []
    cpu_before = _own_cpu_seconds()
    started = time.monotonic()
    watcher = asyncio.create_task(_watch(shared, watch, watch_every)) if watch and watch_every > 0 else None
    try:
        await asyncio.gather(*(_worker(shared, origin, directory_url, ca_file, responder,
                                       sessions) for _ in range(concurrency)))
    finally:
        if watcher is not None:
            watcher.cancel()
    wall = time.monotonic() - started
    if watch is not None:
        watch(len(shared.results))
    return LoadResult(
        flows=sorted(shared.results, key=lambda f: f.started),
        wall_seconds=wall,
        generator_cpu_seconds=_own_cpu_seconds() - cpu_before,
        connects=sum(s.connection.connects for s in sessions),
        bad_nonce_retries=sum(s.bad_nonce_retries for s in sessions),
        stopped_early=shared.stopped_early,
        unstarted=len(shared.queue),
    )


async def _watch(shared: _Shared, watch: Callable[[int], None], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        watch(len(shared.results))


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
