"""Bad input on every ACME endpoint gets a 4xx problem document and changes nothing stored.

Each case sends one fault to one endpoint of a fleetca started for this module.
It checks the exact HTTP status and problem type, the problem media type, and a
Replay-Nonce that the next request can use. It also checks that no database
table except used_nonces changed. The valid request that each fault starts from
would change stored data wherever the endpoint allows it (create an account or
order, finalize, deactivate, revoke), so a fault that the server wrongly accepts
shows up as a changed table.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwk
from jwcrypto.jwa import JWA

from tests.acme.test_flow import answer_http01, issue
from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.acme_client import JOSE, AcmeClient, Reply, b64url, make_csr, new_key
from tests.support.responder import HttpResponder
from tests.support.server import DEVICE_SUFFIX, FleetcaServer

PROBLEM_CONTENT_TYPE = "application/problem+json"
URN_PREFIX = "urn:ietf:params:acme:error:"
# fleetca rejects request bodies larger than 64 KiB.
MAX_BODY_BYTES = 64 * 1024
CHUNK_BYTES = 16 * 1024
# A well-formed resource id (16 base64url characters) that no resource has.
UNKNOWN_ID = "AAAAAAAAAAAAAAAA"
UNKNOWN_CA = "no-such-ca"

ISSUED_NAME = f"issued.{DEVICE_SUFFIX}"
READY_NAME = f"ready.{DEVICE_SUFFIX}"
PENDING_NAME = f"pending.{DEVICE_SUFFIX}"
OTHER_NAME = f"other.{DEVICE_SUFFIX}"


# Requests and JWS drafts.

@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request as sent on the wire."""

    method: str
    url: str
    body: bytes | None = None
    content_type: str | None = JOSE
    chunked: bool = False


@dataclass
class Draft:
    """The parts of a flattened JWS, for a fault to change before they are encoded and signed.

    ``alg`` is the algorithm that produces the signature, which a fault may set
    apart from the ``alg`` named in the protected header.
    """

    url: str
    protected: dict[str, Any]
    payload: bytes
    key: jwk.JWK
    alg: str = "ES256"
    encoded_protected: str | None = None

    def flattened(self) -> dict[str, str]:
        protected = self.encoded_protected or b64url(json.dumps(self.protected).encode())
        payload = b64url(self.payload)
        signing_input = f"{protected}.{payload}".encode()
        signature = b"" if self.alg == "none" else JWA.signing_alg(self.alg).sign(self.key, signing_input)
        return {"protected": protected, "payload": payload, "signature": b64url(signature)}

    def request(self, body: dict[str, Any] | None = None, content_type: str = JOSE) -> HttpRequest:
        encoded = json.dumps(body if body is not None else self.flattened()).encode()
        return HttpRequest("POST", self.url, encoded, content_type)


@functools.cache
def rsa_key() -> jwk.JWK:
    return new_key("RS256")


@functools.cache
def p521_key() -> jwk.JWK:
    return jwk.JWK.generate(kty="EC", crv="P-521")


# DER surgery for a CSR whose signature was made by a key other than its own.

def der_content_start(data: bytes, offset: int) -> int:
    first = data[offset + 1]
    return offset + 2 + (first & 0x7F if first & 0x80 else 0)


def der_element_end(data: bytes, offset: int) -> int:
    first = data[offset + 1]
    if not first & 0x80:
        return offset + 2 + first
    count = first & 0x7F
    length = int.from_bytes(data[offset + 2:offset + 2 + count], "big")
    return offset + 2 + count + length


def der_header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes([tag, length])
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big")


def csr_signed_by_other_key(names: list[str]) -> bytes:
    """Return a DER CSR for ``names`` whose signature was made by an unrelated P-256 key."""
    der, _ = make_csr(names)
    info_start = der_content_start(der, 0)
    info_end = der_element_end(der, info_start)
    algorithm_end = der_element_end(der, info_end)
    info, algorithm = der[info_start:info_end], der[info_end:algorithm_end]
    signature = ec.generate_private_key(ec.SECP256R1()).sign(info, ec.ECDSA(hashes.SHA256()))
    bit_string = der_header(0x03, len(signature) + 1) + b"\x00" + signature
    content = info + algorithm + bit_string
    return der_header(0x30, len(content)) + content


# The server and the resources the cases point at.

@dataclass
class World:
    """A fleetca of this module's own, with one account's resources in every state the cases need."""

    server: FleetcaServer
    owner: AcmeClient
    other: AcmeClient
    ids: dict[str, str]
    cert_der: bytes
    ready_order_url: str
    ready_csr: bytes
    baseline: dict[str, list[tuple]] = field(default_factory=dict)

    def url(self, path: str, ca_name: str | None = None) -> str:
        return f"{self.server.base_url}/acme/{ca_name or self.server.ca_name}/{path}"

    def nonce(self) -> str:
        return self.owner.http.head(self.url("new-nonce")).headers["Replay-Nonce"]

    def send(self, request: HttpRequest) -> Reply:
        headers = {"Content-Type": request.content_type} if request.content_type else {}
        content: bytes | Iterator[bytes] | None = request.body
        if request.chunked and request.body is not None:
            body = request.body
            content = iter([body[i:i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)])
        response = self.owner.http.request(request.method, request.url, content=content, headers=headers)
        return Reply(response.status_code, response.headers, response.content)

    def snapshot(self) -> dict[str, list[tuple]]:
        """Read every table except used_nonces, read-only, on SQLite or PostgreSQL."""
        return self.server.snapshot()


def changed_tables(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> list[str]:
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
          validation_ports: ChallengePorts) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("bad-input") / "data"
    with FleetcaServer(data_dir, dns_server.dns_address, validation_ports) as server:
        owner = AcmeClient(server.directory_url(), server.root_pem)
        other = AcmeClient(server.directory_url(), server.root_pem)
        try:
            assert owner.new_account().status == 201
            assert other.new_account().status == 201

            # One order valid with a certificate, one ready, one pending.
            with HttpResponder(validation_ports.http01) as responder:
                issued_order, chain = issue(owner, responder, [ISSUED_NAME])
                reply = owner.new_order([READY_NAME])
                assert reply.status == 201, reply.body
                ready_order_url = reply.headers["Location"]
                answer_http01(owner, responder, reply.json())
                assert owner.poll(ready_order_url, ("ready", "invalid"))["status"] == "ready"
            reply = owner.new_order([PENDING_NAME])
            assert reply.status == 201, reply.body
            pending_order_url = reply.headers["Location"]
            authz_url = reply.json()["authorizations"][0]
            authz = owner.post(authz_url).json()
            challenge_url = next(c["url"] for c in authz["challenges"] if c["type"] == "http-01")

            cert_der = x509.load_pem_x509_certificates(chain)[0].public_bytes(serialization.Encoding.DER)
            ids = {
                "account": last_segment(owner.account_url or ""),
                "issued-order": last_segment(issued_order["finalize"].removesuffix("/finalize")),
                "ready-order": last_segment(ready_order_url),
                "pending-order": last_segment(pending_order_url),
                "authz": last_segment(authz_url),
                "challenge": last_segment(challenge_url),
                "cert": last_segment(issued_order["certificate"]),
            }
            state = World(server, owner, other, ids, cert_der, ready_order_url, make_csr([READY_NAME])[0])
            state.baseline = state.snapshot()
            yield state
        finally:
            owner.close()
            other.close()


# Endpoints, each with the valid request that a fault starts from.

def key_change_payload(world: World, url: str) -> dict[str, str]:
    """Build the inner JWS of a key change (RFC 8555 §7.3.5) to a fresh key."""
    new = new_key()
    inner = Draft(url, {"alg": "ES256", "jwk": new.export_public(as_dict=True), "url": url},
                  json.dumps({"account": world.owner.account_url,
                              "oldKey": world.owner.key.export_public(as_dict=True)}).encode(), new)
    return inner.flattened()


@dataclass(frozen=True)
class Endpoint:
    """A POST endpoint: its path under /acme/<ca>/ ("{id}" is the resource id) and how it is signed."""

    name: str
    path: str
    key_form: str
    payload: Callable[[World, str], Any]
    resource: str | None = None
    jwk_allowed: bool = False

    def url(self, world: World, *, ca_name: str | None = None, resource_id: str | None = None) -> str:
        path = self.path.format(id=resource_id or world.ids.get(self.resource or "", ""))
        return world.url(path, ca_name)


ENDPOINTS = [
    Endpoint("new-account", "new-account", "jwk", lambda w, u: {"termsOfServiceAgreed": True}, jwk_allowed=True),
    Endpoint("new-order", "new-order", "kid",
             lambda w, u: {"identifiers": [{"type": "dns", "value": f"new-order.{DEVICE_SUFFIX}"}]}),
    Endpoint("new-authz", "new-authz", "kid",
             lambda w, u: {"identifier": {"type": "dns", "value": f"new-authz.{DEVICE_SUFFIX}"}}),
    Endpoint("revoke-cert", "revoke-cert", "kid", lambda w, u: {"certificate": b64url(w.cert_der)},
             jwk_allowed=True),
    Endpoint("key-change", "key-change", "kid", key_change_payload),
    Endpoint("account", "account/{id}", "kid", lambda w, u: {"contact": ["mailto:changed@example.com"]}, "account"),
    Endpoint("account-orders", "account/{id}/orders", "kid", lambda w, u: None, "account"),
    Endpoint("order", "order/{id}", "kid", lambda w, u: None, "ready-order"),
    Endpoint("finalize", "order/{id}/finalize", "kid", lambda w, u: {"csr": b64url(w.ready_csr)}, "ready-order"),
    Endpoint("authz", "authz/{id}", "kid", lambda w, u: {"status": "deactivated"}, "authz"),
    Endpoint("challenge", "challenge/{id}", "kid", lambda w, u: {}, "challenge"),
    Endpoint("cert", "cert/{id}", "kid", lambda w, u: None, "cert"),
]
ENDPOINT_BY_NAME = {endpoint.name: endpoint for endpoint in ENDPOINTS}
RESOURCE_ENDPOINTS = tuple(e.name for e in ENDPOINTS if e.resource)
KID_ONLY_ENDPOINTS = tuple(e.name for e in ENDPOINTS if e.key_form == "kid" and not e.jwk_allowed)


def draft(world: World, endpoint: Endpoint, *, url: str | None = None, signer: AcmeClient | None = None,
          nonce: str | None = None, payload: Any = ...) -> Draft:
    """Build the valid request to ``endpoint``: a fresh key for jwk endpoints, else the owner's account.

    ``payload`` replaces the endpoint's own payload when given, and None sends a POST-as-GET.
    """
    url = url or endpoint.url(world)
    protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce or world.nonce(), "url": url}
    if endpoint.key_form == "jwk":
        key = new_key()
        protected["jwk"] = key.export_public(as_dict=True)
    else:
        signer = signer or world.owner
        key = signer.key
        protected["kid"] = signer.account_url
    body = endpoint.payload(world, url) if payload is ... else payload
    return Draft(url, protected, b"" if body is None else json.dumps(body).encode(), key)


# Faults: each builds one bad request to an endpoint from its valid request.

Build = Callable[[World, Endpoint], HttpRequest]


def change_header(change: Callable[[Draft, World], None]) -> Build:
    def build(world: World, endpoint: Endpoint) -> HttpRequest:
        request = draft(world, endpoint)
        change(request, world)
        return request.request()
    return build


def change_body(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Build:
    def build(world: World, endpoint: Endpoint) -> HttpRequest:
        request = draft(world, endpoint)
        return request.request(change(request.flattened()))
    return build


def raw_body(body: bytes) -> Build:
    return lambda world, endpoint: HttpRequest("POST", endpoint.url(world), body)


def wrong_content_type(world: World, endpoint: Endpoint) -> HttpRequest:
    return draft(world, endpoint).request(content_type="application/json")


def get_request(world: World, endpoint: Endpoint) -> HttpRequest:
    return HttpRequest("GET", endpoint.url(world), content_type=None)


def oversized(chunked: bool) -> Build:
    def build(world: World, endpoint: Endpoint) -> HttpRequest:
        request = draft(world, endpoint, payload={"padding": "A" * MAX_BODY_BYTES})
        return replace(request.request(), chunked=chunked)
    return build


def general_serialization(flattened: dict[str, Any]) -> dict[str, Any]:
    return {"payload": flattened["payload"],
            "signatures": [{"protected": flattened["protected"], "signature": flattened["signature"]}]}


def with_unprotected_header(flattened: dict[str, Any]) -> dict[str, Any]:
    return {**flattened, "header": {"alg": "ES256"}}


def without_member(member: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda flattened: {k: v for k, v in flattened.items() if k != member}


def flip_signature(flattened: dict[str, Any]) -> dict[str, Any]:
    signature = bytes(b ^ 0xFF for b in _b64url_decode(flattened["signature"]))
    return {**flattened, "signature": b64url(signature)}


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def protected_not_base64url(request: Draft, world: World) -> None:
    request.encoded_protected = "%%% not base64url %%%"


def protected_not_json(request: Draft, world: World) -> None:
    request.encoded_protected = b64url(b"alg=ES256&url=" + request.url.encode())


def drop_header(name: str) -> Callable[[Draft, World], None]:
    def change(request: Draft, world: World) -> None:
        del request.protected[name]
    return change


def add_other_key_form(request: Draft, world: World) -> None:
    if "jwk" in request.protected:
        request.protected["kid"] = world.owner.account_url
    else:
        request.protected["jwk"] = request.key.export_public(as_dict=True)


def drop_key_forms(request: Draft, world: World) -> None:
    request.protected.pop("jwk", None)
    request.protected.pop("kid", None)


def alg_none(request: Draft, world: World) -> None:
    request.protected["alg"] = request.alg = "none"


def alg_hs256(request: Draft, world: World) -> None:
    request.protected["alg"] = request.alg = "HS256"
    request.key = jwk.JWK.generate(kty="oct", size=256)


def alg_es512(request: Draft, world: World) -> None:
    request.protected["alg"] = request.alg = "ES512"
    request.key = p521_key()
    if "jwk" in request.protected:
        request.protected["jwk"] = request.key.export_public(as_dict=True)


def alg_key_mismatch(request: Draft, world: World) -> None:
    """Sign with RS256 by an RSA key while the header names an RSA jwk under ES256, or RS256 for the EC account key."""
    request.key, request.alg = rsa_key(), "RS256"
    if "jwk" in request.protected:
        request.protected["jwk"] = request.key.export_public(as_dict=True)
    else:
        request.protected["alg"] = "RS256"


def url_mismatch(request: Draft, world: World) -> None:
    request.protected["url"] = world.url("new-nonce")


def made_up_nonce(request: Draft, world: World) -> None:
    request.protected["nonce"] = b64url(os.urandom(32))


def replayed_nonce(world: World, endpoint: Endpoint) -> HttpRequest:
    nonce = world.nonce()
    used = world.owner.post(world.owner.account_url, nonce=nonce)
    assert used.status == 200, used.body
    return draft(world, endpoint, nonce=nonce).request()


def unknown_account(request: Draft, world: World) -> None:
    request.protected.pop("jwk", None)
    request.protected["kid"] = world.url(f"account/{UNKNOWN_ID}")


def jwk_instead_of_kid(request: Draft, world: World) -> None:
    del request.protected["kid"]
    request.protected["jwk"] = request.key.export_public(as_dict=True)


def kid_instead_of_jwk(request: Draft, world: World) -> None:
    del request.protected["jwk"]
    request.protected["kid"] = world.owner.account_url
    request.key = world.owner.key


def set_payload(payload: bytes) -> Callable[[Draft, World], None]:
    def change(request: Draft, world: World) -> None:
        request.payload = payload
    return change


def other_account(world: World, endpoint: Endpoint) -> HttpRequest:
    return draft(world, endpoint, signer=world.other).request()


def unknown_resource(world: World, endpoint: Endpoint) -> HttpRequest:
    return draft(world, endpoint, url=endpoint.url(world, resource_id=UNKNOWN_ID)).request()


def unknown_ca(world: World, endpoint: Endpoint) -> HttpRequest:
    return draft(world, endpoint, url=endpoint.url(world, ca_name=UNKNOWN_CA)).request()


@dataclass(frozen=True)
class Fault:
    """One kind of bad request, the problem it must get, and the endpoints it applies to (None: all).

    ``overrides`` maps an endpoint name to the (status, problem type) it gets instead.
    """

    name: str
    build: Build
    status: int
    type: str
    endpoints: tuple[str, ...] | None = None
    overrides: dict[str, tuple[int, str]] = field(default_factory=dict)


FAULTS = [
    # RFC 8555 §6.2: any Content-Type other than application/jose+json gets 415.
    Fault("wrong-content-type", wrong_content_type, 415, "malformed"),
    # RFC 8555 §6.3: resources other than the directory and newNonce are read with POST-as-GET.
    Fault("get-on-post-resource", get_request, 405, "malformed"),
    Fault("oversized-body", oversized(chunked=False), 413, "malformed"),
    Fault("oversized-chunked-body", oversized(chunked=True), 413, "malformed"),
    Fault("body-not-json", raw_body(b"this is not JSON"), 400, "malformed"),
    Fault("json-not-object", raw_body(b'["protected", "payload", "signature"]'), 400, "malformed"),
    # RFC 8555 §6.2: flattened serialization only, no unprotected header.
    Fault("general-serialization", change_body(general_serialization), 400, "malformed"),
    Fault("unprotected-header", change_body(with_unprotected_header), 400, "malformed"),
    Fault("missing-protected", change_body(without_member("protected")), 400, "malformed"),
    Fault("missing-payload", change_body(without_member("payload")), 400, "malformed"),
    Fault("missing-signature", change_body(without_member("signature")), 400, "malformed"),
    Fault("protected-not-base64url", change_header(protected_not_base64url), 400, "malformed"),
    Fault("protected-not-json", change_header(protected_not_json), 400, "malformed"),
    Fault("missing-alg", change_header(drop_header("alg")), 400, "malformed"),
    # RFC 8555 §6.5: a request without a valid nonce gets badNonce.
    Fault("missing-nonce", change_header(drop_header("nonce")), 400, "badNonce"),
    Fault("missing-url", change_header(drop_header("url")), 400, "malformed"),
    Fault("both-jwk-and-kid", change_header(add_other_key_form), 400, "malformed"),
    Fault("neither-jwk-nor-kid", change_header(drop_key_forms), 400, "malformed"),
    # RFC 8555 §6.2: "none", MAC and other unsupported algorithms get badSignatureAlgorithm with an algorithms list.
    Fault("alg-none", change_header(alg_none), 400, "badSignatureAlgorithm"),
    Fault("alg-hs256", change_header(alg_hs256), 400, "badSignatureAlgorithm"),
    Fault("alg-unsupported-es512", change_header(alg_es512), 400, "badSignatureAlgorithm"),
    Fault("alg-does-not-fit-key", change_header(alg_key_mismatch), 400, "badPublicKey"),
    Fault("bad-signature", change_body(flip_signature), 400, "malformed"),
    # RFC 8555 §6.4: a url header other than the request URL gets unauthorized.
    Fault("url-mismatch", change_header(url_mismatch), 403, "unauthorized"),
    Fault("replayed-nonce", replayed_nonce, 400, "badNonce"),
    Fault("made-up-nonce", change_header(made_up_nonce), 400, "badNonce"),
    # RFC 8555 §6.2: newAccount takes only jwk, so a kid there is malformed before any lookup.
    Fault("unknown-account", change_header(unknown_account), 400, "accountDoesNotExist",
          overrides={"new-account": (400, "malformed")}),
    Fault("jwk-instead-of-kid", change_header(jwk_instead_of_kid), 400, "malformed", KID_ONLY_ENDPOINTS),
    Fault("kid-instead-of-jwk", change_header(kid_instead_of_jwk), 400, "malformed", ("new-account",)),
    # RFC 8555 §6.3: a POST-as-GET payload is empty. Like Boulder, a read-only resource rejects any other
    # payload as malformed rather than ignoring it.
    Fault("payload-not-json", change_header(set_payload(b"this is not JSON")), 400, "malformed"),
    Fault("payload-not-object", change_header(set_payload(b'["not", "an", "object"]')), 400, "malformed"),
    # Another account's resource gets the same 404 as a missing one. An account URL and
    # revokeCert get unauthorized instead, because the signer is known but not allowed.
    Fault("other-account", other_account, 404, "malformed", RESOURCE_ENDPOINTS + ("revoke-cert",),
          overrides={"account": (403, "unauthorized"), "revoke-cert": (403, "unauthorized")}),
    Fault("unknown-id", unknown_resource, 404, "malformed", RESOURCE_ENDPOINTS,
          overrides={"account": (403, "unauthorized")}),
    Fault("unknown-ca", unknown_ca, 404, "malformed"),
]


# Cases that only make sense on one endpoint.

SingleBuild = Callable[[World], HttpRequest]


def with_payload(endpoint_name: str, payload: Callable[[World], Any], resource: str | None = None) -> SingleBuild:
    def build(world: World) -> HttpRequest:
        target = ENDPOINT_BY_NAME[endpoint_name]
        url = target.url(world, resource_id=world.ids[resource]) if resource else None
        return draft(world, target, url=url, payload=payload(world)).request()
    return build


def csr_payload(make: Callable[[World], bytes]) -> Callable[[World], dict[str, str]]:
    return lambda world: {"csr": b64url(make(world))}


def get_path(path: str, ca_name: str | None = None) -> SingleBuild:
    return lambda world: HttpRequest("GET", world.url(path, ca_name), content_type=None)


def post_to_unknown_path(world: World) -> HttpRequest:
    return draft(world, ENDPOINT_BY_NAME["new-order"], url=world.url("no-such-resource")).request()


def get_outside_acme(world: World) -> HttpRequest:
    return HttpRequest("GET", f"{world.server.base_url}/no-such-path", content_type=None)


def account_key_csr(world: World) -> bytes:
    return make_csr([READY_NAME], world.owner.key.get_op_key("sign"))[0]


# (id, endpoint, build, status, type)
SINGLE_CASES: list[tuple[str, str, SingleBuild, int, str]] = [
    ("fail/identifiers-missing/new-order", "new-order", with_payload("new-order", lambda w: {}), 400, "malformed"),
    ("fail/identifier-type-email/new-order", "new-order",
     with_payload("new-order", lambda w: {"identifiers": [{"type": "email", "value": "device@example.com"}]}),
     400, "unsupportedIdentifier"),
    # RFC 8555 §7.3.1: onlyReturnExisting with a key that has no account.
    ("fail/only-return-existing-unknown-key/new-account", "new-account",
     with_payload("new-account", lambda w: {"onlyReturnExisting": True}), 400, "accountDoesNotExist"),
    ("fail/contact-not-mailto/new-account", "new-account",
     with_payload("new-account", lambda w: {"termsOfServiceAgreed": True, "contact": ["tel:+15555550100"]}),
     400, "unsupportedContact"),
    ("fail/contact-not-mailto/account", "account",
     with_payload("account", lambda w: {"contact": ["tel:+15555550100"]}), 400, "unsupportedContact"),
    ("fail/status-not-deactivated/authz", "authz", with_payload("authz", lambda w: {"status": "valid"}),
     400, "malformed"),
    ("fail/certificate-not-der/revoke-cert", "revoke-cert",
     with_payload("revoke-cert", lambda w: {"certificate": b64url(b"not a certificate")}), 400, "malformed"),
    # fleetca accepts only the subscriber reasons 0, 1, 3, 4 and 5, so privilegeWithdrawn (9) is rejected.
    ("fail/reason-not-allowed/revoke-cert", "revoke-cert",
     with_payload("revoke-cert", lambda w: {"certificate": b64url(w.cert_der), "reason": 9}),
     400, "badRevocationReason"),
    ("fail/csr-missing/finalize", "finalize", with_payload("finalize", lambda w: {}), 400, "malformed"),
    # RFC 8555 §7.4: a CSR that cannot be used gets badCSR and leaves the order ready.
    ("fail/csr-not-base64url/finalize", "finalize",
     with_payload("finalize", lambda w: {"csr": "%%% not base64url %%%"}), 400, "badCSR"),
    ("fail/csr-not-der/finalize", "finalize",
     with_payload("finalize", csr_payload(lambda w: b"not a DER CSR")), 400, "badCSR"),
    ("fail/csr-signed-by-other-key/finalize", "finalize",
     with_payload("finalize", csr_payload(lambda w: csr_signed_by_other_key([READY_NAME]))), 400, "badCSR"),
    ("fail/csr-names-other-name/finalize", "finalize",
     with_payload("finalize", csr_payload(lambda w: make_csr([OTHER_NAME])[0])), 400, "badCSR"),
    ("fail/csr-names-extra-name/finalize", "finalize",
     with_payload("finalize", csr_payload(lambda w: make_csr([READY_NAME, OTHER_NAME])[0])), 400, "badCSR"),
    ("fail/csr-key-is-account-key/finalize", "finalize",
     with_payload("finalize", csr_payload(account_key_csr)), 400, "badCSR"),
    # RFC 8555 §7.4: finalize of an order that is not ready gets 403 orderNotReady.
    ("fail/finalize-before-ready/finalize", "finalize",
     with_payload("finalize", csr_payload(lambda w: make_csr([PENDING_NAME])[0]), "pending-order"),
     403, "orderNotReady"),
    ("fail/finalize-valid-order/finalize", "finalize",
     with_payload("finalize", csr_payload(lambda w: make_csr([ISSUED_NAME])[0]), "issued-order"),
     403, "orderNotReady"),
    ("fail/unknown-ca/directory", "directory", get_path("directory", UNKNOWN_CA), 404, "malformed"),
    ("fail/unknown-ca/new-nonce", "new-nonce", get_path("new-nonce", UNKNOWN_CA), 404, "malformed"),
    ("fail/unknown-path/post", "none", post_to_unknown_path, 404, "malformed"),
    ("fail/unknown-path/get", "none", get_path("no-such-resource"), 404, "malformed"),
    ("fail/unknown-path/outside-acme", "none", get_outside_acme, 404, "malformed"),
]


@dataclass(frozen=True)
class Case:
    id: str
    endpoint: str
    build: SingleBuild
    status: int
    type: str


def matrix_cases() -> list[Case]:
    cases = []
    for fault in FAULTS:
        for endpoint in ENDPOINTS:
            if fault.endpoints is not None and endpoint.name not in fault.endpoints:
                continue
            status, problem_type = fault.overrides.get(endpoint.name, (fault.status, fault.type))
            build = functools.partial(fault.build, endpoint=endpoint)
            cases.append(Case(f"fail/{fault.name}/{endpoint.name}", endpoint.name, build, status, problem_type))
    return cases


CASES = matrix_cases() + [Case(*fields) for fields in SINGLE_CASES]


def media_type(reply: Reply) -> str:
    return reply.headers.get("content-type", "").split(";")[0].strip()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_request_gets_problem(world: World, case: Case) -> None:
    request = case.build(world)
    before = world.snapshot()
    reply = world.send(request)
    after = world.snapshot()

    assert reply.status == case.status, reply.body
    assert media_type(reply) == PROBLEM_CONTENT_TYPE
    problem = reply.json()
    assert problem.get("type") == URN_PREFIX + case.type, problem
    assert problem.get("status") == case.status, problem
    if case.type == "badSignatureAlgorithm":
        assert "ES256" in problem.get("algorithms", []), problem
    if case.status == 405:
        assert "POST" in reply.headers.get("Allow", "")

    # The error's Replay-Nonce must be fresh and usable (RFC 8555 §6.5).
    assert "Replay-Nonce" in reply.headers
    retry = world.owner.post(world.owner.account_url, nonce=reply.headers["Replay-Nonce"])
    assert retry.status == 200, retry.body

    assert changed_tables(before, after) == []
    if case.endpoint == "finalize":
        assert world.owner.post(world.ready_order_url).json()["status"] == "ready"


@pytest.mark.parametrize("fault", ["replayed-nonce", "made-up-nonce"], ids=lambda f: f"fail/{f}")
def test_bad_nonce_retry_with_replay_nonce(client: AcmeClient, fault: str) -> None:
    new_order = client.directory["newOrder"]
    payload = {"identifiers": [{"type": "dns", "value": f"{fault}.{DEVICE_SUFFIX}"}]}
    if fault == "replayed-nonce":
        nonce = client.nonce()
        assert client.post(client.account_url, nonce=nonce).status == 200
    else:
        nonce = b64url(os.urandom(32))

    reply = client.post(new_order, payload, nonce=nonce)
    assert reply.status == 400, reply.body
    assert reply.problem_type == "badNonce"

    retry = client.post(new_order, payload, nonce=reply.headers["Replay-Nonce"])
    assert retry.status == 201, retry.body


def test_bad_csr_then_corrected_csr_issues(client: AcmeClient, responder: HttpResponder) -> None:
    names = [f"csr-retry.{DEVICE_SUFFIX}"]
    reply = client.new_order(names)
    assert reply.status == 201, reply.body
    order_url = reply.headers["Location"]
    answer_http01(client, responder, reply.json())
    order = client.poll(order_url, ("ready", "invalid"))
    assert order["status"] == "ready", order

    bad_csrs = [make_csr([OTHER_NAME])[0], csr_signed_by_other_key(names), b"not a DER CSR"]
    for csr in bad_csrs:
        reply = client.finalize(order, csr)
        assert reply.status == 400, reply.body
        assert reply.problem_type == "badCSR"
        assert client.post(order_url).json()["status"] == "ready"

    reply = client.finalize(order, make_csr(names)[0])
    assert reply.status == 200, reply.body
    assert client.poll(order_url, ("valid", "invalid"))["status"] == "valid"


def test_bad_requests_leave_stored_data_unchanged(world: World) -> None:
    # Runs after the cases above, so a change that a bad request set off in the
    # background (a challenge validation, say) shows up here too.
    assert changed_tables(world.baseline, world.snapshot()) == []


# Controls: the unchanged request that every fault starts from is accepted, and a
# request that changes stored data shows up in the snapshot, so the checks above
# can fail. They run last, in this order, because they use up the module's
# resources: the authz is deactivated before the challenge POST, and the key
# change replaces the owner's key.
CONTROLS = [
    ("account-orders", False),
    ("order", False),
    ("cert", False),
    ("account", True),
    ("new-order", True),
    ("new-authz", True),
    ("new-account", True),
    ("authz", True),
    ("challenge", False),
    ("finalize", True),
    ("revoke-cert", True),
    ("key-change", True),
]


@pytest.mark.parametrize(("endpoint_name", "changes_data"), CONTROLS, ids=[f"ok/{name}" for name, _ in CONTROLS])
def test_unchanged_request_is_accepted(world: World, endpoint_name: str, changes_data: bool) -> None:
    request = draft(world, ENDPOINT_BY_NAME[endpoint_name]).request()
    before = world.snapshot()
    reply = world.send(request)
    after = world.snapshot()

    assert reply.status in (200, 201), reply.body
    assert bool(changed_tables(before, after)) == changes_data
