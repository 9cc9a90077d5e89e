"""External Account Binding (RFC 8555 §7.3.4), EAB keys, and the pre-authorizations they carry.

The required-binding cases run on a server whose CA requires EAB; the others run
on the shared server, where a binding is optional but still verified when sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from jwcrypto import jwk

from tests.support.acme_client import AcmeClient, Reply, b64url, make_csr, new_key
from tests.support.server import FleetcaServer, run_fleetca

from .helpers import (
    BASE64URL,
    EabKey,
    assert_problem,
    create_eab_key,
    device_name,
    eab_binding,
    new_account_with_eab,
)

PREAUTH_NAME = device_name("exact.preauth")
PREAUTH_ZONE = "zone.preauth.devices.example.test"


def fresh_client(server: FleetcaServer) -> AcmeClient:
    return AcmeClient(server.directory_url(), server.root_pem)


def assert_no_account(client: AcmeClient) -> None:
    assert_problem(client.new_account({"onlyReturnExisting": True}), "accountDoesNotExist", 400)


@pytest.fixture(scope="module")
def eab_key(eab_fleetca: FleetcaServer) -> EabKey:
    """An EAB key without limits on the EAB-only server; rejected bindings never consume it."""
    return create_eab_key(eab_fleetca)


# Binding and key format.

def test_eab_key_is_unpadded_base64url(eab_key: EabKey) -> None:
    assert BASE64URL.match(eab_key.hmac_key), eab_key.hmac_key
    assert "=" not in eab_key.hmac_key
    raw = base64.urlsafe_b64decode(eab_key.hmac_key + "=" * (-len(eab_key.hmac_key) % 4))
    # A MAC key shorter than the HS256 output would weaken the binding (RFC 7518 §3.2).
    assert len(raw) >= 32
    assert BASE64URL.match(eab_key.key_id)


def test_eab_required_without_binding(eab_fleetca: FleetcaServer) -> None:
    client = fresh_client(eab_fleetca)

    reply = client.new_account({"termsOfServiceAgreed": True})

    assert_problem(reply, "externalAccountRequired", 400)
    assert_no_account(client)


def test_eab_binding_accepted(eab_fleetca: FleetcaServer, eab_key: EabKey) -> None:
    client = fresh_client(eab_fleetca)
    # HS256 only: the key is 256 bits, and RFC 7518 §3.2 forbids HS384 and HS512 with a shorter key.
    binding = eab_binding(eab_key, client.key, client.directory["newAccount"], alg="HS256")

    reply = client.new_account({"termsOfServiceAgreed": True, "externalAccountBinding": binding})

    assert reply.status == 201, reply.body
    assert reply.json()["externalAccountBinding"] == binding


def test_eab_lookup_needs_no_binding(eab_fleetca: FleetcaServer, eab_key: EabKey) -> None:
    client = fresh_client(eab_fleetca)
    assert new_account_with_eab(client, eab_key).status == 201
    account_url = client.account_url

    again = client.new_account({"termsOfServiceAgreed": True})
    lookup = client.new_account({"onlyReturnExisting": True})

    assert again.status == 200, again.body
    assert again.headers["Location"] == account_url
    assert lookup.status == 200, lookup.body
    assert lookup.headers["Location"] == account_url


def test_eab_lookup_of_unknown_key(eab_fleetca: FleetcaServer) -> None:
    client = fresh_client(eab_fleetca)

    reply = client.new_account({"onlyReturnExisting": True})

    assert_problem(reply, "accountDoesNotExist", 400)


def none_binding(eab: EabKey, client: AcmeClient) -> dict[str, str]:
    header = {"alg": "none", "kid": eab.key_id, "url": client.directory["newAccount"]}
    payload = json.dumps(client.key.export_public(as_dict=True)).encode()
    return {"protected": b64url(json.dumps(header).encode()), "payload": b64url(payload), "signature": ""}


# Each case returns the binding to send with a fresh client's newAccount, and the problem expected.
BindingCase = Callable[[EabKey, AcmeClient], Any]
BAD_BINDINGS: dict[str, tuple[BindingCase, str, int]] = {
    "alg-es256": (lambda eab, c: eab_binding(eab, c.key, c.directory["newAccount"], alg="ES256",
                                             signing_key=new_key("ES256")), "badSignatureAlgorithm", 400),
    "alg-none": (none_binding, "badSignatureAlgorithm", 400),
    "nonce-present": (lambda eab, c: eab_binding(eab, c.key, c.directory["newAccount"],
                                                 protected={"nonce": c.nonce()}), "malformed", 400),
    "kid-missing": (lambda eab, c: eab_binding(eab, c.key, c.directory["newAccount"], drop=("kid",)),
                    "malformed", 400),
    "jwk-instead-of-kid": (lambda eab, c: eab_binding(eab, c.key, c.directory["newAccount"], drop=("kid",),
                                                      protected={"jwk": c.key.export_public(as_dict=True)}),
                           "malformed", 400),
    "url-missing": (lambda eab, c: eab_binding(eab, c.key, c.directory["newAccount"], drop=("url",)),
                    "malformed", 400),
    "url-differs": (lambda eab, c: eab_binding(eab, c.key, c.directory["newOrder"]), "malformed", 400),
    "unknown-kid": (lambda eab, c: eab_binding(EabKey("no-such-key", eab.hmac_key), c.key,
                                               c.directory["newAccount"]), "unauthorized", 403),
    "wrong-mac-key": (lambda eab, c: eab_binding(EabKey(eab.key_id, b64url(b"\x07" * 32)), c.key,
                                                 c.directory["newAccount"]), "unauthorized", 403),
    "payload-other-key": (lambda eab, c: eab_binding(eab, new_key(), c.directory["newAccount"]),
                          "unauthorized", 403),
    "payload-not-jwk": (lambda eab, c: eab_binding(eab, c.key, c.directory["newAccount"], payload=b'{"x":1}'),
                        "malformed", 400),
    "payload-not-json": (lambda eab, c: eab_binding(eab, c.key, c.directory["newAccount"], payload=b"jwk"),
                         "malformed", 400),
    "payload-nested-2000-deep": (lambda eab, c: eab_binding(eab, c.key, c.directory["newAccount"],
                                                            payload=b"[" * 2000 + b"]" * 2000),
                                 "malformed", 400),
    "not-an-object": (lambda eab, c: "a.b.c", "malformed", 400),
    "signature-missing": (lambda eab, c: {k: v for k, v in eab_binding(eab, c.key, c.directory["newAccount"])
                                          .items() if k != "signature"}, "malformed", 400),
    "tampered-payload": (lambda eab, c: {**eab_binding(eab, c.key, c.directory["newAccount"]),
                                         "payload": b64url(json.dumps(new_key().export_public(as_dict=True))
                                                           .encode())}, "unauthorized", 403),
}


@pytest.mark.parametrize("case", sorted(BAD_BINDINGS))
def test_eab_bad_binding_rejected(eab_fleetca: FleetcaServer, eab_key: EabKey, case: str) -> None:
    make_binding, problem, status = BAD_BINDINGS[case]
    client = fresh_client(eab_fleetca)

    reply = client.new_account({"termsOfServiceAgreed": True, "externalAccountBinding": make_binding(eab_key, client)})

    assert_problem(reply, problem, status)
    assert_no_account(client)


def test_eab_optional_binding_verified(shared_fleetca: FleetcaServer) -> None:
    eab = create_eab_key(shared_fleetca)
    client = fresh_client(shared_fleetca)
    bad = eab_binding(EabKey(eab.key_id, b64url(b"\x01" * 32)), client.key, client.directory["newAccount"])

    rejected = client.new_account({"termsOfServiceAgreed": True, "externalAccountBinding": bad})
    accepted = new_account_with_eab(client, eab)

    assert_problem(rejected, "unauthorized", 403)
    assert accepted.status == 201, accepted.body
    assert "externalAccountBinding" in accepted.json()


# Key lifecycle through the operator CLI.

def test_eab_max_accounts(eab_fleetca: FleetcaServer) -> None:
    eab = create_eab_key(eab_fleetca, "--max-accounts", "1")
    first, second = fresh_client(eab_fleetca), fresh_client(eab_fleetca)

    assert new_account_with_eab(first, eab).status == 201
    reply = new_account_with_eab(second, eab)

    assert_problem(reply, "unauthorized", 403)
    assert_no_account(second)


def test_eab_revoked_key_binds_nothing(eab_fleetca: FleetcaServer) -> None:
    eab = create_eab_key(eab_fleetca)
    bound = fresh_client(eab_fleetca)
    assert new_account_with_eab(bound, eab).status == 201
    run_fleetca("eab", "revoke", eab.key_id, "--data-dir", str(eab_fleetca.data_dir))
    client = fresh_client(eab_fleetca)

    reply = new_account_with_eab(client, eab)

    assert_problem(reply, "unauthorized", 403)
    assert_no_account(client)
    # Without --deactivate-accounts, accounts already bound keep working.
    assert bound.post(bound.account_url, None).status == 200


def test_eab_revoke_deactivates_accounts(eab_fleetca: FleetcaServer) -> None:
    eab = create_eab_key(eab_fleetca)
    client = fresh_client(eab_fleetca)
    assert new_account_with_eab(client, eab).status == 201

    run_fleetca("eab", "revoke", eab.key_id, "--data-dir", str(eab_fleetca.data_dir), "--deactivate-accounts")

    assert_problem(client.post(client.account_url, None), "unauthorized", 401)


def test_eab_zero_lifetime_never_binds(eab_fleetca: FleetcaServer) -> None:
    # A key asked to live zero hours must be rejected by the CLI or be expired at once, never live forever.
    result = run_fleetca("eab", "create", "--ca", eab_fleetca.ca_name, "--data-dir", str(eab_fleetca.data_dir),
                         "--expires-in", "0h", check=False)
    if result.returncode != 0:
        return
    key_id, hmac_key = result.stdout.split()
    client = fresh_client(eab_fleetca)

    reply = new_account_with_eab(client, EabKey(key_id, hmac_key))

    assert_problem(reply, "unauthorized", 403)


# Pre-authorization: accounts bound to a key with patterns get valid authorizations without challenges.

@pytest.fixture(scope="module")
def preauth_key(shared_fleetca: FleetcaServer) -> EabKey:
    return create_eab_key(shared_fleetca, "--preauthorize", PREAUTH_NAME, "--preauthorize", f"*.{PREAUTH_ZONE}",
                          "--preauthorize", "ip:127.0.0.0/8")


@pytest.fixture
def preauth_client(shared_fleetca: FleetcaServer, preauth_key: EabKey) -> AcmeClient:
    client = fresh_client(shared_fleetca)
    assert new_account_with_eab(client, preauth_key).status == 201
    return client


PREAUTH_CASES = {
    "exact-name": (PREAUTH_NAME, "valid"),
    "one-label-below-zone": (f"dev1.{PREAUTH_ZONE}", "valid"),
    "ip-in-range": ("127.0.0.9", "valid"),
    "wildcard-of-zone": (f"*.{PREAUTH_ZONE}", "valid"),
    "zone-itself": (PREAUTH_ZONE, "pending"),
    "two-labels-below-zone": (f"a.b.{PREAUTH_ZONE}", "pending"),
    "below-exact-name": (f"sub.{PREAUTH_NAME}", "pending"),
    "unrelated-name": (device_name("not-preauthorized"), "pending"),
}


@pytest.mark.parametrize("case", sorted(PREAUTH_CASES))
def test_preauthorized_identifiers(preauth_client: AcmeClient, case: str) -> None:
    name, expected = PREAUTH_CASES[case]

    reply = preauth_client.new_order([name])

    assert reply.status == 201, reply.body
    order = reply.json()
    authz = preauth_client.post(order["authorizations"][0]).json()
    assert authz["status"] == expected
    if expected == "valid":
        assert order["status"] == "ready"
        assert authz["challenges"] == []
    else:
        assert order["status"] == "pending"
        assert authz["challenges"]


def test_preauthorized_order_issues_without_challenge(preauth_client: AcmeClient) -> None:
    names = [f"device42.{PREAUTH_ZONE}"]
    reply = preauth_client.new_order(names)
    assert reply.json()["status"] == "ready"

    final = preauth_client.finalize(reply.json(), make_csr(names)[0])

    assert final.status == 200, final.body
    assert final.json()["status"] == "valid"


def test_preauthorized_new_authz(preauth_client: AcmeClient) -> None:
    reply = preauth_client.post(preauth_client.directory["newAuthz"],
                                {"identifier": {"type": "dns", "value": PREAUTH_NAME}})

    assert reply.status == 201, reply.body
    assert reply.json()["status"] == "valid"
    assert reply.headers["Location"].startswith("https://")


def test_account_without_eab_not_preauthorized(client: AcmeClient) -> None:
    reply = client.new_order([f"dev2.{PREAUTH_ZONE}"])

    assert reply.json()["status"] == "pending"


def test_revoked_key_stops_preauthorizing(shared_fleetca: FleetcaServer) -> None:
    zone = "revoked.preauth.devices.example.test"
    eab = create_eab_key(shared_fleetca, "--preauthorize", f"*.{zone}")
    client = fresh_client(shared_fleetca)
    assert new_account_with_eab(client, eab).status == 201
    assert client.new_order([f"before.{zone}"]).json()["status"] == "ready"

    run_fleetca("eab", "revoke", eab.key_id, "--data-dir", str(shared_fleetca.data_dir))
    reply: Reply = client.new_order([f"after.{zone}"])

    assert reply.status == 201, reply.body
    assert reply.json()["status"] == "pending"


def test_cli_rejects_pattern_outside_constraints(shared_fleetca: FleetcaServer) -> None:
    result = run_fleetca("eab", "create", "--ca", shared_fleetca.ca_name, "--data-dir", str(shared_fleetca.data_dir),
                         "--preauthorize", "*.other.example", check=False)

    assert result.returncode != 0
    assert result.stdout == ""
    assert "other.example" in result.stderr


def test_hmac_key_usable_by_jwcrypto(eab_key: EabKey) -> None:
    # The printed key is the JWK "k" value of an oct key, which is what clients build from it.
    key = jwk.JWK(kty="oct", k=eab_key.hmac_key)

    assert key.export(as_dict=True)["k"] == eab_key.hmac_key
