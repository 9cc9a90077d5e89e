"""Account key rollover (RFC 8555 §7.3.5): the nine checks, conflicts, and what survives the change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk

from tests.support.acme_client import AcmeClient, Reply, new_key
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer

from .helpers import answer_http01, assert_problem, device_name, inner_jws, new_client


def change_key(client: AcmeClient, inner: dict[str, str], **sign_options: Any) -> Reply:
    return client.post(client.directory["keyChange"], inner, **sign_options)


def assert_key_unchanged(client: AcmeClient) -> None:
    assert client.post(client.account_url, None).status == 200


def old_key_payload(client: AcmeClient, **changes: Any) -> dict[str, Any]:
    payload = {"account": client.account_url, "oldKey": client.key.export_public(as_dict=True)}
    payload.update(changes)
    return payload


# Each case makes the inner JWS to send for ``client``; ``other`` is a second account on the server.
InnerCase = Callable[[AcmeClient, AcmeClient], dict[str, str]]
BAD_INNER: dict[str, tuple[InnerCase, str, int]] = {
    "inner-kid-instead-of-jwk": (lambda c, o: inner_jws(c, new_key(), drop=("jwk",),
                                                        protected={"kid": c.account_url}), "malformed", 400),
    "inner-jwk-and-kid": (lambda c, o: inner_jws(c, new_key(), protected={"kid": c.account_url}), "malformed", 400),
    "inner-url-missing": (lambda c, o: inner_jws(c, new_key(), drop=("url",)), "malformed", 400),
    "inner-url-differs": (lambda c, o: inner_jws(c, new_key(), protected={"url": c.directory["newOrder"]}),
                          "malformed", 400),
    "inner-signed-by-other-key": (lambda c, o: inner_jws(c, new_key(), signing_key=new_key()), "malformed", 400),
    "inner-signed-by-old-key": (lambda c, o: inner_jws(c, new_key(), signing_key=c.key), "malformed", 400),
    "inner-alg-none": (lambda c, o: inner_jws(c, new_key(), "none"), "badSignatureAlgorithm", 400),
    "inner-alg-hs256": (lambda c, o: inner_jws(c, new_key(), "HS256",
                                               signing_key=jwk.JWK.generate(kty="oct", size=256)),
                        "badSignatureAlgorithm", 400),
    "inner-rsa-1024": (lambda c, o: inner_jws(c, jwk.JWK.from_pyca(rsa.generate_private_key(65537, 1024)), "RS256"),
                       "badPublicKey", 400),
    "inner-payload-not-json": (lambda c, o: inner_jws(c, new_key(), payload=b"not json"), "malformed", 400),
    "inner-payload-not-object": (lambda c, o: inner_jws(c, new_key(), payload=b"[]"), "malformed", 400),
    "account-missing": (lambda c, o: inner_jws(c, new_key(), payload={"oldKey": c.key.export_public(as_dict=True)}),
                        "malformed", 400),
    "account-of-other": (lambda c, o: inner_jws(c, new_key(), payload=old_key_payload(c, account=o.account_url)),
                         "malformed", 400),
    "old-key-missing": (lambda c, o: inner_jws(c, new_key(), payload={"account": c.account_url}), "malformed", 400),
    "old-key-not-object": (lambda c, o: inner_jws(c, new_key(), payload=old_key_payload(c, oldKey="key")),
                           "malformed", 400),
    "old-key-not-jwk": (lambda c, o: inner_jws(c, new_key(), payload=old_key_payload(c, oldKey={"kty": "bogus"})),
                        "malformed", 400),
    "old-key-not-current": (lambda c, o: inner_jws(c, new_key(), payload=old_key_payload(
        c, oldKey=new_key().export_public(as_dict=True))), "unauthorized", 403),
    "old-key-of-other-account": (lambda c, o: inner_jws(c, new_key(), payload=old_key_payload(
        c, oldKey=o.key.export_public(as_dict=True))), "unauthorized", 403),
}


@pytest.mark.parametrize("case", sorted(BAD_INNER))
def test_key_change_bad_inner_rejected(client: AcmeClient, other_client: AcmeClient, case: str) -> None:
    make_inner, problem, status = BAD_INNER[case]

    reply = change_key(client, make_inner(client, other_client))

    assert_problem(reply, problem, status)
    assert_key_unchanged(client)


def test_key_change_inner_not_a_jws(client: AcmeClient) -> None:
    reply = change_key(client, old_key_payload(client))

    assert_problem(reply, "malformed", 400)
    assert_key_unchanged(client)


def test_key_change_outer_with_jwk_rejected(client: AcmeClient) -> None:
    reply = change_key(client, inner_jws(client, new_key()), use_jwk=True)

    assert_problem(reply, "malformed", 400)
    assert_key_unchanged(client)


def test_key_change_to_current_key_conflict(client: AcmeClient) -> None:
    reply = change_key(client, inner_jws(client, client.key))

    assert_problem(reply, "malformed", 409)
    assert reply.headers["Location"] == client.account_url


def test_key_change_to_other_accounts_key_conflict(client: AcmeClient, other_client: AcmeClient) -> None:
    reply = change_key(client, inner_jws(client, other_client.key))

    assert_problem(reply, "malformed", 409)
    assert reply.headers["Location"] == other_client.account_url
    assert_key_unchanged(client)
    assert_key_unchanged(other_client)


def test_key_change_deactivated_account(shared_fleetca: FleetcaServer) -> None:
    client = new_client(shared_fleetca)
    assert client.post(client.account_url, {"status": "deactivated"}).status == 200

    reply = change_key(client, inner_jws(client, new_key()))

    assert_problem(reply, "unauthorized", 401)


KEY_CHANGES = [("ES256", "ES256"), ("ES256", "EdDSA"), ("ES256", "RS256"), ("EdDSA", "ES384"), ("RS256", "ES256")]


@pytest.mark.parametrize("old_alg,new_alg", KEY_CHANGES, ids=[f"{a}-to-{b}" for a, b in KEY_CHANGES])
def test_key_change_rolls_key(shared_fleetca: FleetcaServer, old_alg: str, new_alg: str) -> None:
    client = new_client(shared_fleetca, key=new_key(old_alg), alg=old_alg)
    old, account_url = client.key, client.account_url
    new = new_key(new_alg)

    reply = change_key(client, inner_jws(client, new, new_alg))

    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "valid"
    assert reply.headers["Location"] == account_url
    # The old key no longer signs for the account, and looks up nothing. Its signature fails to
    # verify, or, when the key types differ, the alg it names no longer fits the account key.
    same_type = old.export_public(as_dict=True)["kty"] == new.export_public(as_dict=True)["kty"]
    assert_problem(client.post(account_url, None), "malformed" if same_type else "badPublicKey", 400)
    assert_problem(client.new_account({"onlyReturnExisting": True}), "accountDoesNotExist", 400)
    # The new key does both.
    client.key, client.alg = new, new_alg
    assert client.post(account_url, None).status == 200
    lookup = client.new_account({"onlyReturnExisting": True})
    assert lookup.status == 200
    assert lookup.headers["Location"] == account_url


def test_key_change_inner_nonce_ignored(client: AcmeClient) -> None:
    # RFC 8555 §7.3.5 lets the inner JWS omit the nonce; one that is present must not break the change.
    new = new_key()

    reply = change_key(client, inner_jws(client, new, protected={"nonce": client.nonce()}))

    assert reply.status == 200, reply.body


def test_key_change_keeps_pending_order(shared_fleetca: FleetcaServer, http_responder: HttpResponder) -> None:
    client = new_client(shared_fleetca)
    name = device_name("survives-key-change")
    created = client.new_order([name])
    order_url = created.headers["Location"]
    new = new_key()

    assert change_key(client, inner_jws(client, new)).status == 200
    client.key = new

    order = client.post(order_url, None)
    assert order.status == 200, order.body
    assert order.json()["status"] == "pending"
    # Validation now expects the key authorization made with the new key's thumbprint.
    answer_http01(client, http_responder, order.json())
    assert client.poll(order_url, ("ready", "invalid"))["status"] == "ready"
