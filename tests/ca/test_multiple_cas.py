"""Several issuing CAs in one server, each with its own directory and constraints."""

from __future__ import annotations

import pytest
from cryptography import x509

from tests.acme.test_flow import issue
from tests.support.acme_client import AcmeClient
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer
from tests.support.verify import verify_with_cryptography

CASES = [
    ("ok/default-device", "default", "a1.devices.example.test", None),
    ("ok/routers-name", "routers", "r1.routers.example.test", None),
    ("ok/routers-ip", "routers", "10.1.2.3", None),
    ("fail/default-refuses-router", "default", "r1.routers.example.test", "rejectedIdentifier"),
    ("fail/routers-refuses-device", "routers", "a1.devices.example.test", "rejectedIdentifier"),
    ("fail/default-refuses-ip", "default", "10.1.2.3", "rejectedIdentifier"),
]


@pytest.mark.parametrize(("ca", "name", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_new_order_per_ca(multi_ca: FleetcaServer, ca: str, name: str, problem: str | None) -> None:
    client = AcmeClient(multi_ca.directory_url(ca), multi_ca.root_pem)
    assert client.new_account().status == 201
    reply = client.new_order([name])
    if problem is None:
        assert reply.status == 201, reply.body
    else:
        assert reply.status == 400
        assert reply.problem_type == problem
        assert reply.json()["subproblems"][0]["identifier"]["value"] == name


def test_accounts_are_per_ca(multi_ca: FleetcaServer) -> None:
    client = AcmeClient(multi_ca.directory_url("default"), multi_ca.root_pem)
    assert client.new_account().status == 201
    other = AcmeClient(multi_ca.directory_url("routers"), multi_ca.root_pem, key=client.key)
    reply = other.new_account({"onlyReturnExisting": True})
    assert reply.status == 400
    assert reply.problem_type == "accountDoesNotExist"


def test_certificate_chains_to_its_own_ca(multi_ca: FleetcaServer, responder: HttpResponder) -> None:
    client = AcmeClient(multi_ca.directory_url("routers"), multi_ca.root_pem)
    assert client.new_account().status == 201
    _, chain = issue(client, responder, ["r2.routers.example.test"])
    path = verify_with_cryptography(chain, multi_ca.root_pem, "r2.routers.example.test")
    routers = x509.load_pem_x509_certificate((multi_ca.data_dir / "cas" / "routers.pem").read_bytes())
    assert path[1] == routers


def test_pending_external_ca_serves_nothing(multi_ca: FleetcaServer) -> None:
    import httpx
    import ssl

    http = httpx.Client(verify=ssl.create_default_context(cafile=str(multi_ca.root_pem)), trust_env=False)
    assert http.get(multi_ca.directory_url("routers")).status_code == 200
    reply = http.get(multi_ca.directory_url("no-such-ca"))
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/problem+json"
