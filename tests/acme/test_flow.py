"""The whole RFC 8555 flow over raw HTTP + JWS, with stored state checked across a restart."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.acme_client import AcmeClient, make_csr
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer
from tests.support.verify import verify_with_cryptography, verify_with_openssl


def answer_http01(client: AcmeClient, responder: HttpResponder, order: dict) -> None:
    for authz_url in order["authorizations"]:
        authz = client.post(authz_url).json()
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        responder.serve_key_authorization(challenge["token"], client.key_authorization(challenge["token"]))
        reply = client.post(challenge["url"], {})
        assert reply.status == 200, reply.body


def issue(client: AcmeClient, responder: HttpResponder, names: list[str]) -> tuple[dict, bytes]:
    reply = client.new_order(names)
    assert reply.status == 201, reply.body
    order_url = reply.headers["Location"]
    answer_http01(client, responder, reply.json())
    order = client.poll(order_url, ("ready", "invalid"))
    assert order["status"] == "ready", order
    csr, _ = make_csr(names)
    reply = client.finalize(order, csr)
    assert reply.status == 200, reply.body
    order = client.poll(order_url, ("valid", "invalid"))
    assert order["status"] == "valid", order
    cert = client.post(order["certificate"])
    assert cert.status == 200
    return order, cert.body


def test_flow_issues_verifiable_chain(client: AcmeClient, responder: HttpResponder,
                                      shared_fleetca: FleetcaServer, tmp_path: Path) -> None:
    name = "flow1.devices.example.test"
    _, chain = issue(client, responder, [name])

    path = verify_with_cryptography(chain, shared_fleetca.root_pem, name)
    assert len(path) == 3
    result = verify_with_openssl(chain, shared_fleetca.root_pem, name, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    leaf = path[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 7
    assert leaf.serial_number.bit_length() >= 64


def test_flow_ip_identifier(client: AcmeClient, responder: HttpResponder,
                            shared_fleetca: FleetcaServer, tmp_path: Path) -> None:
    _, chain = issue(client, responder, ["127.0.0.1"])
    path = verify_with_cryptography(chain, shared_fleetca.root_pem, "127.0.0.1")
    san = path[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert path[0].subject.rfc4514_string() == ""


def test_flow_survives_restart_before_finalize(fleetca: FleetcaServer,
                                               responder: HttpResponder) -> None:
    client = AcmeClient(fleetca.directory_url(), fleetca.root_pem)
    assert client.new_account().status == 201
    name = "restart.devices.example.test"
    reply = client.new_order([name])
    order_url = reply.headers["Location"]
    answer_http01(client, responder, reply.json())
    assert client.poll(order_url, ("ready", "invalid"))["status"] == "ready"

    fleetca.restart()
    client = AcmeClient(fleetca.directory_url(), fleetca.root_pem, key=client.key, account_url=client.account_url)

    order = client.post(order_url).json()
    assert order["status"] == "ready"
    reply = client.finalize(order, make_csr([name])[0])
    assert reply.status == 200, reply.body
    assert client.poll(order_url, ("valid", "invalid"))["status"] == "valid"


def test_flow_survives_restart_after_new_order(fleetca: FleetcaServer,
                                               responder: HttpResponder) -> None:
    client = AcmeClient(fleetca.directory_url(), fleetca.root_pem)
    assert client.new_account().status == 201
    name = "restart2.devices.example.test"
    reply = client.new_order([name])
    order_url = reply.headers["Location"]

    fleetca.restart()
    client = AcmeClient(fleetca.directory_url(), fleetca.root_pem, key=client.key, account_url=client.account_url)

    answer_http01(client, responder, client.post(order_url).json())
    order = client.poll(order_url, ("ready", "invalid"))
    assert order["status"] == "ready", order
    assert client.finalize(order, make_csr([name])[0]).status == 200
    assert client.poll(order_url, ("valid", "invalid"))["status"] == "valid"
