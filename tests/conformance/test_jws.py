"""JWS and transport rules that every POST obeys (RFC 8555 §6.1 to §6.5, §6.7)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk
from jwcrypto.jwa import JWA

from tests.support.acme_client import AcmeClient, Reply, b64url, new_key
from tests.support.server import FleetcaServer

from .helpers import assert_problem, device_name, has_link

ACCEPTED_ALGORITHMS = {"ES256", "ES384", "RS256", "EdDSA"}
MAX_BODY_BYTES = 64 * 1024


def flattened(protected: dict[str, Any] | str, payload: bytes, key: jwk.JWK | None, alg: str,
              *, pad: bool = False) -> dict[str, str]:
    """Sign a flattened JWS by hand; ``pad`` keeps base64 '=' padding, as some embedded clients send it."""
    def encode(data: bytes) -> str:
        text = b64url(data)
        return text + "=" * (-len(text) % 4) if pad else text

    encoded_protected = protected if isinstance(protected, str) else encode(json.dumps(protected).encode())
    encoded_payload = encode(payload)
    signing_input = f"{encoded_protected}.{encoded_payload}".encode()
    signature = b"" if key is None else JWA.signing_alg(alg).sign(key, signing_input)
    return {"protected": encoded_protected, "payload": encoded_payload, "signature": encode(signature)}


def kid_header(client: AcmeClient, url: str, **fields: Any) -> dict[str, Any]:
    return {"alg": "ES256", "nonce": client.nonce(), "url": url, "kid": client.account_url, **fields}


def post_json(client: AcmeClient, url: str, body: Any) -> Reply:
    return client.post_raw(url, json.dumps(body))


# Malformed request bodies, each built from a valid POST-as-GET to the account.
BodyCase = Callable[[AcmeClient], str | bytes]
MALFORMED_BODIES: dict[str, BodyCase] = {
    "not-json": lambda c: b"this is not JSON",
    "json-array": lambda c: json.dumps([valid_jws(c)]),
    "compact-serialization": lambda c: json.dumps(".".join(valid_jws(c).values())),
    "general-serialization": lambda c: json.dumps(general_serialization(valid_jws(c))),
    "unprotected-header": lambda c: json.dumps({**valid_jws(c), "header": {"kid": c.account_url}}),
    "missing-signature": lambda c: json.dumps({k: v for k, v in valid_jws(c).items() if k != "signature"}),
    "missing-payload": lambda c: json.dumps({k: v for k, v in valid_jws(c).items() if k != "payload"}),
    "extra-member": lambda c: json.dumps({**valid_jws(c), "extra": "x"}),
    "protected-not-base64url": lambda c: json.dumps({**valid_jws(c), "protected": "eyJ*bad*"}),
    "protected-not-json": lambda c: json.dumps({**valid_jws(c), "protected": b64url(b"{not json")}),
    "protected-not-object": lambda c: json.dumps(flattened(b64url(b"[1]"), b"", c.key, "ES256")),
    "signature-not-base64url": lambda c: json.dumps({**valid_jws(c), "signature": "***"}),
    "invalid-utf8": lambda c: b"\xff\xfe" + json.dumps(valid_jws(c)).encode(),
    "nan": lambda c: b"NaN",
    "nested-2000-deep": lambda c: b"[" * 2000 + b"]" * 2000,
    # Signed correctly, so only the unpaired surrogate in an unknown header field is wrong.
    "protected-lone-surrogate": lambda c: json.dumps(flattened(kid_header(c, c.account_url, note="\ud800"), b"",
                                                               c.key, "ES256")),
}


def valid_jws(client: AcmeClient) -> dict[str, str]:
    return json.loads(client.sign(client.account_url, None))


def general_serialization(token: dict[str, str]) -> dict[str, Any]:
    return {"payload": token["payload"],
            "signatures": [{"protected": token["protected"], "signature": token["signature"]}]}


@pytest.mark.parametrize("case", sorted(MALFORMED_BODIES))
def test_malformed_body_rejected(client: AcmeClient, case: str) -> None:
    reply = client.post_raw(client.account_url, MALFORMED_BODIES[case](client))

    assert_problem(reply, "malformed", 400)


# Protected headers that break one rule of §6.2, signed correctly by the account key.
HeaderCase = Callable[[AcmeClient], dict[str, Any]]
MALFORMED_HEADERS: dict[str, HeaderCase] = {
    "alg-missing": lambda c: without(kid_header(c, c.account_url), "alg"),
    "url-missing": lambda c: without(kid_header(c, c.account_url), "url"),
    "jwk-and-kid": lambda c: kid_header(c, c.account_url, jwk=c.key.export_public(as_dict=True)),
    "neither-jwk-nor-kid": lambda c: without(kid_header(c, c.account_url), "kid"),
    "kid-not-string": lambda c: kid_header(c, c.account_url, kid=7),
    "jwk-not-object": lambda c: {**without(kid_header(c, c.account_url), "kid"), "jwk": "key"},
    "crit-present": lambda c: kid_header(c, c.account_url, crit=["b64"], b64=False),
    "b64-present": lambda c: kid_header(c, c.account_url, b64=True),
}


def without(header: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in header.items() if k != name}


@pytest.mark.parametrize("case", sorted(MALFORMED_HEADERS))
def test_malformed_header_rejected(client: AcmeClient, case: str) -> None:
    header = MALFORMED_HEADERS[case](client)

    reply = post_json(client, client.account_url, flattened(header, b"", client.key, "ES256"))

    assert_problem(reply, "malformed", 400)


@pytest.mark.parametrize("alg", ["none", "HS256", "RS1", "ES512"])
def test_unsupported_alg_lists_algorithms(client: AcmeClient, alg: str) -> None:
    header = kid_header(client, client.account_url, alg=alg)
    if alg == "HS256":
        token = flattened(header, b"", jwk.JWK.generate(kty="oct", size=256), alg)
    else:
        token = flattened(header, b"", None, alg)

    reply = post_json(client, client.account_url, token)

    body = assert_problem(reply, "badSignatureAlgorithm", 400)
    # RFC 8555 §6.2: the problem lists the accepted algorithms, so a client can fall back.
    assert set(body["algorithms"]) == ACCEPTED_ALGORITHMS


def test_unsupported_alg_on_new_account(client: AcmeClient) -> None:
    key = jwk.JWK.generate(kty="oct", size=256)
    header = {"alg": "HS256", "nonce": client.nonce(), "url": client.directory["newAccount"],
              "jwk": new_key().export_public(as_dict=True)}

    reply = post_json(client, client.directory["newAccount"], flattened(header, b"{}", key, "HS256"))

    body = assert_problem(reply, "badSignatureAlgorithm", 400)
    assert set(body["algorithms"]) == ACCEPTED_ALGORITHMS


def rsa_jwk(bits: int, exponent: int = 65537) -> jwk.JWK:
    return jwk.JWK.from_pyca(rsa.generate_private_key(exponent, bits))


# Account keys that newAccount must reject with badPublicKey, and the alg each is sent with.
BAD_PUBLIC_KEYS: dict[str, Callable[[], tuple[jwk.JWK, str, dict[str, Any]]]] = {
    "rsa-1024": lambda: (key := rsa_jwk(1024), "RS256", key.export_public(as_dict=True)),
    "rsa-exponent-3": lambda: (key := rsa_jwk(2048, 3), "RS256", key.export_public(as_dict=True)),
    "p384-key-with-es256": lambda: (key := new_key("ES384"), "ES256", key.export_public(as_dict=True)),
    "ec-key-with-rs256": lambda: (key := new_key("ES256"), "RS256", key.export_public(as_dict=True)),
    "private-key-in-jwk": lambda: (key := new_key("ES256"), "ES256", key.export_private(as_dict=True)),
    "p521-key": lambda: (key := jwk.JWK.generate(kty="EC", crv="P-521"), "ES256",
                         key.export_public(as_dict=True)),
}


@pytest.mark.parametrize("case", sorted(BAD_PUBLIC_KEYS))
def test_bad_public_key_rejected(client: AcmeClient, case: str) -> None:
    key, alg, public = BAD_PUBLIC_KEYS[case]()
    url = client.directory["newAccount"]
    header = {"alg": alg, "nonce": client.nonce(), "url": url, "jwk": public}
    # The signature is made with whatever the key can do; the key check comes first.
    sign_alg = {"RSA": "RS256", "EC": {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}}
    kty = key.export_public(as_dict=True)["kty"]
    signer = sign_alg["RSA"] if kty == "RSA" else sign_alg["EC"][key.export_public(as_dict=True)["crv"]]

    reply = post_json(client, url, flattened(header, b'{"termsOfServiceAgreed":true}', key, signer))

    assert_problem(reply, "badPublicKey", 400)


def test_jwk_rejected_outside_new_account(client: AcmeClient) -> None:
    identifiers = {"identifiers": [{"type": "dns", "value": device_name("jwk-on-order")}]}

    reply = client.post(client.directory["newOrder"], identifiers, use_jwk=True)

    assert_problem(reply, "malformed", 400)


def test_kid_rejected_on_new_account(client: AcmeClient) -> None:
    reply = client.post(client.directory["newAccount"], {"termsOfServiceAgreed": True})

    assert_problem(reply, "malformed", 400)


def test_unknown_kid_rejected(client: AcmeClient) -> None:
    unknown = client.account_url.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAA"

    reply = client.post(client.account_url, None, extra_protected={"kid": unknown})

    assert_problem(reply, "accountDoesNotExist", 400)


def test_bad_signature_rejected(client: AcmeClient) -> None:
    token = valid_jws(client)
    token["signature"] = b64url(b"\x00" * 64)

    reply = post_json(client, client.account_url, token)

    assert_problem(reply, "malformed", 400)


def test_signature_by_other_key_rejected(client: AcmeClient) -> None:
    reply = client.post(client.account_url, None, key=new_key())

    assert_problem(reply, "malformed", 400)


def test_url_mismatch_unauthorized(client: AcmeClient) -> None:
    reply = client.post(client.account_url, None, extra_protected={"url": client.directory["newOrder"]})

    assert_problem(reply, "unauthorized", 403)


def test_url_with_extra_query_unauthorized(client: AcmeClient) -> None:
    reply = client.post(client.account_url, None, extra_protected={"url": client.account_url + "?x=1"})

    assert_problem(reply, "unauthorized", 403)


def test_signature_checked_before_url(client: AcmeClient) -> None:
    token = json.loads(client.sign(client.account_url, None, extra_protected={"url": "https://elsewhere.test/"}))
    token["signature"] = b64url(b"\x00" * 64)

    reply = post_json(client, client.account_url, token)

    assert_problem(reply, "malformed", 400)


def test_signature_checked_before_nonce(client: AcmeClient) -> None:
    nonce = client.nonce()
    assert client.post(client.account_url, None, nonce=nonce).status == 200
    token = json.loads(client.sign(client.account_url, None, nonce=nonce))
    token["signature"] = b64url(b"\x00" * 64)

    reply = post_json(client, client.account_url, token)

    assert_problem(reply, "malformed", 400)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", ""])
def test_wrong_content_type_415(client: AcmeClient, content_type: str) -> None:
    body = client.sign(client.account_url, None)

    reply = client.post_raw(client.account_url, body, content_type=content_type)

    assert_problem(reply, "malformed", 415)


def test_content_type_parameters_accepted(client: AcmeClient) -> None:
    body = client.sign(client.account_url, None)

    reply = client.post_raw(client.account_url, body, content_type="application/jose+json; charset=utf-8")

    assert reply.status == 200, reply.body


def test_oversized_body_413(client: AcmeClient) -> None:
    payload = {"contact": [], "padding": "x" * MAX_BODY_BYTES}

    reply = client.post(client.account_url, payload)

    assert_problem(reply, "malformed", 413)


def test_padded_base64url_accepted(client: AcmeClient) -> None:
    # docs/divergences.md: fleetca accepts '=' padding in JWS members, for embedded clients.
    header = kid_header(client, client.account_url)

    reply = post_json(client, client.account_url, flattened(header, b"{}", client.key, "ES256", pad=True))

    assert reply.status == 200, reply.body


def test_post_as_get_on_new_order_rejected(client: AcmeClient) -> None:
    # newOrder needs a payload; an empty one (POST-as-GET) is not an order.
    reply = client.post(client.directory["newOrder"], None)

    assert_problem(reply, "malformed", 400)


@pytest.mark.parametrize("resource", ["account", "orders", "newOrder", "newAccount", "revokeCert", "keyChange",
                                      "newAuthz"])
def test_get_on_post_resource_405(client: AcmeClient, resource: str) -> None:
    urls = {"account": client.account_url, "orders": client.account_url + "/orders", **client.directory}

    reply = client.http.get(urls[resource])

    assert reply.status_code == 405
    assert reply.headers["content-type"] == "application/problem+json"
    assert "POST" in reply.headers.get("Allow", "")
    assert reply.json()["type"] == "urn:ietf:params:acme:error:malformed"


def test_error_carries_index_link(client: AcmeClient) -> None:
    reply = client.post(client.directory["newOrder"], {"identifiers": []})

    assert_problem(reply, "malformed", 400)
    assert has_link(reply, client.directory_url, "index")


def test_unknown_ca_404(shared_fleetca: FleetcaServer, client: AcmeClient) -> None:
    reply = client.http.get(f"{shared_fleetca.base_url}/acme/no-such-ca/directory")

    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/problem+json"
