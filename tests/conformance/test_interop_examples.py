"""Faults that broke deployed ACME clients elsewhere, one test per example, each asserting the right behaviour.

The examples fall into kinds: nonce lifecycle, account identity, JWS encoding,
HTTP framing, order states, CSR acceptance, name normalisation, challenge
channel and revocation. The other modules of this suite cover the rest of each kind.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.acme_client import AcmeClient, dns01_value, make_csr, new_key
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer

from .helpers import (
    BASE64URL,
    assert_problem,
    authorizations_of,
    challenge_of,
    create_eab_key,
    device_name,
    finalize_order,
    inner_jws,
    new_account_with_eab,
    new_client,
    ready_order,
    revoke_payload,
)

from .responders import ChallengeCertificate, TlsAlpnResponder

PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n")


def test_example_01_replayed_nonce_then_retry(client: AcmeClient) -> None:
    nonce = client.nonce()
    assert client.post(client.account_url, None, nonce=nonce).status == 200
    payload = {"identifiers": [{"type": "dns", "value": device_name("example-01")}]}

    replay = client.post(client.directory["newOrder"], payload, nonce=nonce)

    assert_problem(replay, "badNonce", 400)
    retry = client.post(client.directory["newOrder"], payload, nonce=replay.headers["Replay-Nonce"])
    assert retry.status == 201, retry.body


def test_example_02_error_nonce_works(client: AcmeClient) -> None:
    failure = client.new_order(["host.other.example"])
    assert_problem(failure, "rejectedIdentifier", 400)

    retry = client.post(client.account_url, None, nonce=failure.headers["Replay-Nonce"])

    assert retry.status == 200, retry.body


def test_example_03_eab_lookup_without_binding(eab_fleetca: FleetcaServer) -> None:
    client = AcmeClient(eab_fleetca.directory_url(), eab_fleetca.root_pem)
    created = new_account_with_eab(client, create_eab_key(eab_fleetca))
    assert created.status == 201, created.body

    again = client.new_account({"termsOfServiceAgreed": True})

    assert again.status == 200, again.body
    assert again.headers["Location"] == created.headers["Location"]


def test_example_04_eab_key_unpadded_base64url(eab_fleetca: FleetcaServer) -> None:
    for _ in range(3):
        eab = create_eab_key(eab_fleetca)

        assert BASE64URL.match(eab.hmac_key), eab.hmac_key
        assert not eab.hmac_key.endswith("=")


def test_example_05_key_change_without_inner_nonce(shared_fleetca: FleetcaServer) -> None:
    client = new_client(shared_fleetca)
    account_url = client.account_url
    new = new_key()
    inner = inner_jws(client, new)
    protected = inner["protected"]
    assert "nonce" not in json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))

    reply = client.post(client.directory["keyChange"], inner)

    assert reply.status == 200, reply.body
    assert_problem(client.post(account_url, None), "malformed", 400)
    client.key = new
    assert client.post(account_url, None).status == 200


def test_example_06_json_content_type_415(client: AcmeClient) -> None:
    body = client.sign(client.directory["newOrder"], {"identifiers": [{"type": "dns",
                                                                       "value": device_name("example-06")}]})

    reply = client.post_raw(client.directory["newOrder"], body, content_type="application/json")

    assert_problem(reply, "malformed", 415)


def test_example_07_certificate_media_type(client: AcmeClient, http_responder: HttpResponder) -> None:
    name = device_name("example-07")
    order_url, order = ready_order(client, http_responder, [name])
    order, _ = finalize_order(client, order_url, order, [name])

    reply = client.post(order["certificate"])

    assert reply.headers["content-type"] == "application/pem-certificate-chain"
    assert PEM_BLOCK.sub(b"", reply.body) == b""
    leaf = x509.load_pem_x509_certificates(reply.body)[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [name]


def test_example_08_rejected_csr_then_corrected(client: AcmeClient, http_responder: HttpResponder) -> None:
    names = [device_name("example-08a"), device_name("example-08b")]
    order_url, order = ready_order(client, http_responder, names)

    rejected = client.finalize(order, make_csr(names[:1])[0])

    assert_problem(rejected, "badCSR", 400)
    assert client.post(order_url).json()["status"] == "ready"
    corrected = client.finalize(order, make_csr(names)[0])
    assert corrected.status == 200, corrected.body
    assert client.post(order_url).json()["status"] == "valid"


def test_example_09_duplicate_name_completes(client: AcmeClient, http_responder: HttpResponder) -> None:
    name = device_name("example-09")
    reply = client.post(client.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name},
                                                                       {"type": "dns", "value": name}]})
    assert reply.status == 201, reply.body
    assert reply.json()["identifiers"] == [{"type": "dns", "value": name}]
    assert len(reply.json()["authorizations"]) == 1

    order_url, order = ready_order(client, http_responder, [name])
    valid, _ = finalize_order(client, order_url, order, [name])

    assert valid["status"] == "valid"


def test_example_10_wildcard_authorization(client: AcmeClient, dns_server: ChallTestSrv) -> None:
    reply = client.new_order(["*.devices.example.test"])
    assert reply.status == 201, reply.body

    [authz] = authorizations_of(client, reply.json())

    assert authz["identifier"] == {"type": "dns", "value": "devices.example.test"}
    assert authz["wildcard"] is True
    assert [c["type"] for c in authz["challenges"]] == ["dns-01"]
    challenge = challenge_of(authz, "dns-01")
    dns_server.set_txt("_acme-challenge.devices.example.test",
                       dns01_value(client.key_authorization(challenge["token"])))
    assert client.post(challenge["url"], {}).status == 200
    order = client.poll(reply.headers["Location"], ("ready", "invalid"))
    assert order["status"] == "ready"
    valid, chain = finalize_order(client, reply.headers["Location"], order, ["*.devices.example.test"])
    leaf = x509.load_pem_x509_certificates(chain)[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["*.devices.example.test"]


def test_example_11_u_label_rejected_a_label_accepted(client: AcmeClient) -> None:
    rejected = client.new_order([device_name("bücher")])
    accepted = client.new_order([device_name("xn--bcher-kva")])

    body = assert_problem(rejected, "rejectedIdentifier", 400)
    assert "A-label" in body["detail"] or "xn--" in body["detail"]
    assert body["subproblems"][0]["identifier"] == {"type": "dns", "value": device_name("bücher")}
    assert accepted.status == 201, accepted.body


def test_example_12_tls_alpn_client_hello(client: AcmeClient, validation_ports: ChallengePorts,
                                          tmp_path: Path) -> None:
    name = device_name("example-12")
    reply = client.new_order([name])
    authz_url = reply.json()["authorizations"][0]
    challenge = challenge_of(client.post(authz_url).json(), "tls-alpn-01")

    with TlsAlpnResponder(validation_ports.tlsalpn01, tmp_path) as responder:
        responder.add_certificate(ChallengeCertificate(name, client.key_authorization(challenge["token"])))
        assert client.post(challenge["url"], {}).status == 200
        authz = client.poll(authz_url, ("valid", "invalid"))

    assert authz["status"] == "valid", authz
    assert responder.hellos
    for hello in responder.hellos:
        assert hello.alpn_protocols == ["acme-tls/1"]
        assert hello.server_name == name


def test_example_13_rejected_reason_then_revoke_twice(client: AcmeClient, http_responder: HttpResponder) -> None:
    name = device_name("example-13")
    order_url, order = ready_order(client, http_responder, [name])
    _, chain = finalize_order(client, order_url, order, [name])
    der = x509.load_pem_x509_certificates(chain)[0].public_bytes(serialization.Encoding.DER)

    rejected = client.post(client.directory["revokeCert"], revoke_payload(der, reason=6))

    body = assert_problem(rejected, "badRevocationReason", 400)
    assert {0, 1, 3, 4, 5} <= {int(n) for n in re.findall(r"\d+", body["detail"])}
    assert client.post(client.directory["revokeCert"], revoke_payload(der, reason=1)).status == 200
    assert_problem(client.post(client.directory["revokeCert"], revoke_payload(der, reason=1)), "alreadyRevoked", 400)
