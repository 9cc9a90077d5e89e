"""revokeCert (RFC 8555 §7.6): who may revoke, reason codes, and repeated revocation."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from jwcrypto import jwk

from tests.interop.challtestsrv import ChallengePorts
from tests.support.acme_client import AcmeClient, Reply, b64url, make_csr, new_key
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer

from .helpers import assert_problem, device_name, has_link, new_client, ready_order, revoke_payload

NAME_ONE = device_name("revoke-one")
NAME_TWO = device_name("revoke-two")
# RFC 5280 §5.3.1 reasons that a subscriber may give; the others are for the CA to decide.
ALLOWED_REASONS = (0, 1, 3, 4, 5)
REJECTED_REASONS = (2, 6, 7, 8, 9, 10, 11, -1)


@dataclass
class Issued:
    der: bytes
    key: CertificateIssuerPrivateKeyTypes


@dataclass
class Owner:
    """An account with valid authorizations for NAME_ONE and NAME_TWO, which issues certificates at once."""

    client: AcmeClient

    def issue(self, names: list[str], key: CertificateIssuerPrivateKeyTypes | None = None) -> Issued:
        reply = self.client.new_order(names)
        assert reply.json()["status"] == "ready", reply.body
        csr, key = make_csr(names, key)
        finalized = self.client.finalize(reply.json(), csr)
        assert finalized.status == 200, finalized.body
        chain = self.client.post(finalized.json()["certificate"]).body
        leaf = x509.load_pem_x509_certificates(chain)[0]
        return Issued(leaf.public_bytes(serialization.Encoding.DER), key)


@pytest.fixture(scope="module")
def owner(shared_fleetca: FleetcaServer, validation_ports: ChallengePorts) -> Iterator[Owner]:
    client = new_client(shared_fleetca)
    with HttpResponder(validation_ports.http01) as responder:
        ready_order(client, responder, [NAME_ONE, NAME_TWO])
    yield Owner(client)
    client.close()


def revoke(client: AcmeClient, issued: Issued, reason: object = None, **sign_options: object) -> Reply:
    payload = revoke_payload(issued.der)
    if reason is not None:
        payload["reason"] = reason
    return client.post(client.directory["revokeCert"], payload, **sign_options)


def certificate_jwk(issued: Issued) -> tuple[jwk.JWK, str]:
    key = jwk.JWK.from_pyca(issued.key)
    if isinstance(issued.key, rsa.RSAPrivateKey):
        return key, "RS256"
    return key, {"secp256r1": "ES256", "secp384r1": "ES384"}[issued.key.curve.name]


def revoke_with_certificate_key(client: AcmeClient, issued: Issued, reason: object = None) -> Reply:
    key, alg = certificate_jwk(issued)
    payload = revoke_payload(issued.der)
    if reason is not None:
        payload["reason"] = reason
    return client.post(client.directory["revokeCert"], payload, use_jwk=True, key=key, alg=alg)


def test_revoke_by_issuing_account(owner: Owner) -> None:
    issued = owner.issue([NAME_ONE])

    reply = revoke(owner.client, issued)

    assert reply.status == 200, reply.body
    assert reply.headers["Replay-Nonce"]
    assert has_link(reply, owner.client.directory_url, "index")


def test_revoke_twice(owner: Owner) -> None:
    issued = owner.issue([NAME_ONE])
    assert revoke(owner.client, issued).status == 200

    reply = revoke(owner.client, issued)

    assert_problem(reply, "alreadyRevoked", 400)


@pytest.mark.parametrize("key_type", ["p256", "p384", "rsa2048"])
def test_revoke_by_certificate_key(owner: Owner, key_type: str) -> None:
    key = {"p256": lambda: ec.generate_private_key(ec.SECP256R1()),
           "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
           "rsa2048": lambda: rsa.generate_private_key(65537, 2048)}[key_type]()
    issued = owner.issue([NAME_ONE], key)

    reply = revoke_with_certificate_key(owner.client, issued)

    assert reply.status == 200, reply.body
    assert_problem(revoke(owner.client, issued), "alreadyRevoked", 400)


def test_revoke_by_authorization_holder(owner: Owner, other_client: AcmeClient, http_responder: HttpResponder) -> None:
    issued = owner.issue([NAME_ONE])
    ready_order(other_client, http_responder, [NAME_ONE])

    reply = revoke(other_client, issued)

    assert reply.status == 200, reply.body
    assert_problem(revoke(owner.client, issued), "alreadyRevoked", 400)


def test_revoke_by_partial_authorization_holder(owner: Owner, other_client: AcmeClient,
                                                http_responder: HttpResponder) -> None:
    issued = owner.issue([NAME_ONE, NAME_TWO])
    ready_order(other_client, http_responder, [NAME_ONE])

    reply = revoke(other_client, issued)

    assert_problem(reply, "unauthorized", 403)
    assert revoke(owner.client, issued).status == 200


def test_revoke_after_authorization_deactivated(owner: Owner, other_client: AcmeClient,
                                                http_responder: HttpResponder) -> None:
    issued = owner.issue([NAME_ONE])
    _, order = ready_order(other_client, http_responder, [NAME_ONE])
    assert other_client.post(order["authorizations"][0], {"status": "deactivated"}).status == 200

    reply = revoke(other_client, issued)

    assert_problem(reply, "unauthorized", 403)


def test_revoke_by_unrelated_account(owner: Owner, other_client: AcmeClient) -> None:
    issued = owner.issue([NAME_ONE])

    reply = revoke(other_client, issued)

    assert_problem(reply, "unauthorized", 403)
    assert revoke(owner.client, issued).status == 200


def test_revoke_by_unrelated_key(owner: Owner) -> None:
    issued = owner.issue([NAME_ONE])

    reply = revoke(owner.client, issued, use_jwk=True, key=new_key())

    assert_problem(reply, "unauthorized", 403)


def test_revoke_by_account_key_as_jwk(owner: Owner) -> None:
    # The issuing account must sign with its kid; its key in a jwk header is just some other key.
    issued = owner.issue([NAME_ONE])

    reply = revoke(owner.client, issued, use_jwk=True)

    assert_problem(reply, "unauthorized", 403)


@pytest.mark.parametrize("reason", ALLOWED_REASONS)
def test_revoke_allowed_reason(owner: Owner, reason: int) -> None:
    issued = owner.issue([NAME_ONE])

    reply = revoke(owner.client, issued, reason)

    assert reply.status == 200, reply.body


@pytest.mark.parametrize("reason", REJECTED_REASONS)
def test_revoke_rejected_reason(owner: Owner, reason: int) -> None:
    issued = owner.issue([NAME_ONE])

    reply = revoke(owner.client, issued, reason)

    body = assert_problem(reply, "badRevocationReason", 400)
    # The problem names the reasons that are accepted, so the client can choose one.
    named = {int(n) for n in re.findall(r"\d+", body["detail"])}
    assert set(ALLOWED_REASONS) <= named
    # Nothing was revoked.
    assert revoke(owner.client, issued).status == 200


@pytest.mark.parametrize("reason", ["1", True, 1.5, [1]], ids=["string", "boolean", "float", "array"])
def test_revoke_reason_not_integer(owner: Owner, reason: object) -> None:
    issued = owner.issue([NAME_ONE])

    reply = revoke(owner.client, issued, reason)

    assert_problem(reply, "malformed", 400)


def self_signed_der(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.DER)


def test_revoke_certificate_not_issued_here(owner: Owner) -> None:
    reply = owner.client.post(owner.client.directory["revokeCert"], revoke_payload(self_signed_der(NAME_ONE)))

    # docs/divergences.md: a resource fleetca does not know gets malformed with 404.
    assert_problem(reply, "malformed", 404)


@pytest.mark.parametrize("payload", [{}, {"certificate": b64url(b"not DER")}, {"certificate": "***"},
                                     {"certificate": 5}], ids=["missing", "not-der", "not-base64url", "not-string"])
def test_revoke_payload_malformed(owner: Owner, payload: dict) -> None:
    reply = owner.client.post(owner.client.directory["revokeCert"], payload)

    assert_problem(reply, "malformed", 400)


def test_revoke_by_deactivated_account(shared_fleetca: FleetcaServer, owner: Owner) -> None:
    issued = owner.issue([NAME_ONE])
    other = new_client(shared_fleetca)
    assert other.post(other.account_url, {"status": "deactivated"}).status == 200

    reply = revoke(other, issued)

    assert_problem(reply, "unauthorized", 401)
    assert revoke(owner.client, issued).status == 200
