"""Shared steps of the conformance tests: problem checks, EAB keys and bindings, DNS records, orders."""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.jwa import JWA

from tests.interop.challtestsrv import ChallTestSrv
from tests.support.acme_client import AcmeClient, Reply, b64url, make_csr
from tests.support.responder import HttpResponder
from tests.support.server import DEVICE_SUFFIX, FleetcaServer, run_fleetca

URN_PREFIX = "urn:ietf:params:acme:error:"
PROBLEM_CONTENT_TYPE = "application/problem+json"
BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")
# The problem types of RFC 8555 §6.7 and the later ACME RFCs; a server sends no others.
REGISTERED_PROBLEM_TYPES = frozenset({
    "accountDoesNotExist", "alreadyReplaced", "alreadyRevoked", "badCSR", "badNonce", "badPublicKey",
    "badRevocationReason", "badSignatureAlgorithm", "caa", "compound", "connection", "dns",
    "externalAccountRequired", "incorrectResponse", "invalidContact", "invalidProfile", "malformed",
    "orderNotReady", "rateLimited", "rejectedIdentifier", "serverInternal", "tls", "unauthorized",
    "unsupportedContact", "unsupportedIdentifier", "userActionRequired",
})


def device_name(label: str) -> str:
    """Return a DNS name under the suffix every test server permits."""
    return f"{label}.{DEVICE_SUFFIX}"


def assert_problem(reply: Reply, problem_type: str, status: int) -> dict[str, Any]:
    """Check that ``reply`` is a problem document of ``problem_type`` with HTTP ``status``; return its body."""
    assert reply.status == status, reply.body
    assert reply.headers.get("content-type") == PROBLEM_CONTENT_TYPE, reply.headers
    body = reply.json()
    assert body.get("type") == URN_PREFIX + problem_type, body
    assert problem_type in REGISTERED_PROBLEM_TYPES
    assert body.get("status", status) == status, body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    # RFC 8555 §6.5: the server SHOULD send a fresh nonce with an error too.
    assert BASE64URL.match(reply.headers.get("Replay-Nonce", "")), reply.headers
    return body


def has_link(reply: Reply, url: str, relation: str) -> bool:
    """Return whether a Link header of ``reply`` points at ``url`` with ``rel=relation``."""
    links = ", ".join(reply.headers.get_list("Link"))
    return re.search(rf'<{re.escape(url)}>\s*;\s*rel="?{re.escape(relation)}"?', links) is not None


def new_client(server: FleetcaServer, **options: Any) -> AcmeClient:
    """Return a raw client with a freshly registered account on ``server``."""
    client = AcmeClient(server.directory_url(), server.root_pem, **options)
    reply = client.new_account()
    assert reply.status == 201, reply.body
    return client


# External Account Binding.

@dataclass(frozen=True)
class EabKey:
    key_id: str
    hmac_key: str  # base64url as `fleetca eab create` prints it


def create_eab_key(server: FleetcaServer, *options: str) -> EabKey:
    """Create an EAB key with `fleetca eab create` and return the id and MAC key it prints."""
    result = run_fleetca("eab", "create", "--ca", server.ca_name, "--data-dir", str(server.data_dir), *options)
    lines = result.stdout.split()
    assert len(lines) == 2, result.stdout
    return EabKey(lines[0], lines[1])


def eab_binding(eab: EabKey, account_key: jwk.JWK, url: str, *, alg: str = "HS256",
                signing_key: jwk.JWK | None = None, protected: dict[str, Any] | None = None,
                drop: tuple[str, ...] = (), payload: bytes | None = None) -> dict[str, str]:
    """Build the externalAccountBinding JWS of RFC 8555 §7.3.4, with overrides for negative cases."""
    header: dict[str, Any] = {"alg": alg, "kid": eab.key_id, "url": url}
    header.update(protected or {})
    for name in drop:
        header.pop(name, None)
    if signing_key is None:
        signing_key = jwk.JWK(kty="oct", k=eab.hmac_key)
    body = payload if payload is not None else json.dumps(account_key.export_public(as_dict=True)).encode()
    token = jws.JWS(body)
    token.add_signature(signing_key, alg=None, protected=json.dumps(header))
    return json.loads(token.serialize(compact=False))


def new_account_with_eab(client: AcmeClient, eab: EabKey, **payload: Any) -> Reply:
    url = client.directory["newAccount"]
    binding = eab_binding(eab, client.key, url)
    return client.new_account({"termsOfServiceAgreed": True, "externalAccountBinding": binding, **payload})


def configure_eab_required(server: FleetcaServer) -> None:
    run_fleetca("ca", "configure", server.ca_name, "--data-dir", str(server.data_dir),
                "--external-account-required")


# Key change.

def inner_jws(client: AcmeClient, new: jwk.JWK, new_alg: str = "ES256", *,
              protected: dict[str, Any] | None = None, drop: tuple[str, ...] = (),
              payload: dict[str, Any] | bytes | None = None, signing_key: jwk.JWK | None = None) -> dict[str, str]:
    """Build the inner JWS of a keyChange request, signed by the new key unless ``signing_key`` is given."""
    header: dict[str, Any] = {"alg": new_alg, "jwk": new.export_public(as_dict=True),
                              "url": client.directory["keyChange"]}
    header.update(protected or {})
    for name in drop:
        header.pop(name, None)
    if payload is None:
        payload = {"account": client.account_url, "oldKey": client.key.export_public(as_dict=True)}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    encoded = f"{b64url(json.dumps(header).encode())}.{b64url(body)}"
    signature = b"" if new_alg == "none" else JWA.signing_alg(new_alg).sign(signing_key or new, encoded.encode())
    protected_part, payload_part = encoded.split(".")
    return {"protected": protected_part, "payload": payload_part, "signature": b64url(signature)}


# DNS records on the loopback challtestsrv.

def dns_management(dns_server: ChallTestSrv, path: str, body: dict[str, str]) -> None:
    """POST one request to challtestsrv's management API on loopback."""
    request = urllib.request.Request(dns_server.management_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        assert response.status == 200, f"challtestsrv {path} returned {response.status}"


# Orders.

def authorizations_of(client: AcmeClient, order: dict) -> list[dict]:
    return [client.post(url).json() for url in order["authorizations"]]


def challenge_of(authz: dict, challenge_type: str) -> dict:
    return next(c for c in authz["challenges"] if c["type"] == challenge_type)


def answer_http01(client: AcmeClient, responder: HttpResponder, order: dict) -> None:
    """Serve the key authorization of every pending authorization of ``order`` and start validation."""
    for authz in authorizations_of(client, order):
        if authz["status"] != "pending":
            continue
        challenge = challenge_of(authz, "http-01")
        responder.serve_key_authorization(challenge["token"], client.key_authorization(challenge["token"]))
        reply = client.post(challenge["url"], {})
        assert reply.status == 200, reply.body


def ready_order(client: AcmeClient, responder: HttpResponder, names: list[str], **extra: Any) -> tuple[str, dict]:
    """Create an order for ``names``, pass its http-01 challenges and return its URL and ready body."""
    reply = client.new_order(names, **extra)
    assert reply.status == 201, reply.body
    order_url = reply.headers["Location"]
    answer_http01(client, responder, reply.json())
    order = client.poll(order_url, ("ready", "invalid"))
    assert order["status"] == "ready", order
    return order_url, order


def finalize_order(client: AcmeClient, order_url: str, order: dict, names: list[str],
                   csr_der: bytes | None = None) -> tuple[dict, bytes]:
    """Finalize a ready order and download its certificate chain; return the valid order and the PEM chain."""
    reply = client.finalize(order, csr_der or make_csr(names)[0])
    assert reply.status == 200, reply.body
    order = client.poll(order_url, ("valid", "invalid"))
    assert order["status"] == "valid", order
    chain = client.post(order["certificate"])
    assert chain.status == 200, chain.body
    return order, chain.body


def issue(client: AcmeClient, responder: HttpResponder, names: list[str], **extra: Any) -> tuple[dict, bytes]:
    """Obtain a certificate for ``names`` over http-01; return the valid order and the PEM chain."""
    order_url, order = ready_order(client, responder, names, **extra)
    return finalize_order(client, order_url, order, names)


def revoke_payload(certificate_der: bytes, reason: int | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"certificate": b64url(certificate_der)}
    if reason is not None:
        payload["reason"] = reason
    return payload


def write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
