"""Issuance policy rules of an issuing CA, each with the exact ACME error it produces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.acme_client import AcmeClient, make_csr
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer, run_fleetca
from tests.acme.test_flow import answer_http01


@pytest.fixture(scope="module")
def policy_fleetca(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
                   validation_ports: ChallengePorts) -> Iterator[FleetcaServer]:
    server = FleetcaServer(tmp_path_factory.mktemp("policy") / "data", dns_server.dns_address, validation_ports,
                           permit_dns=("routers.example.test",), permit_ip=("10.0.0.0/8",))
    server.init()
    data_dir = str(server.data_dir)
    run_fleetca("ca", "configure", "default", "--data-dir", data_dir, "--no-wildcards", "--no-ip-identifiers",
                "--allow", "**.lab.routers.example.test", "--allow", "*.prod.routers.example.test",
                "--deny", "blocked.lab.routers.example.test", "--max-identifiers", "3")
    run_fleetca("ca", "profile", "set", "default", "rsa-only", "--data-dir", data_dir, "--key-type", "rsa2048",
                "--lifetime", "24h")
    server.start()
    yield server
    server.stop()
    server.drop_database()


ORDER_CASES = [
    ("ok/allowed-any-depth", ["a.b.lab.routers.example.test"], {}, None),
    ("ok/allowed-one-label", ["r1.prod.routers.example.test"], {}, None),
    ("fail/wildcards-off", ["*.lab.routers.example.test"], {}, "rejectedIdentifier"),
    ("fail/ip-identifiers-off", ["10.0.0.1"], {}, "rejectedIdentifier"),
    ("fail/denied-pattern", ["blocked.lab.routers.example.test"], {}, "rejectedIdentifier"),
    ("fail/no-allowed-pattern", ["r1.test.routers.example.test"], {}, "rejectedIdentifier"),
    ("fail/one-label-pattern-depth", ["a.r1.prod.routers.example.test"], {}, "rejectedIdentifier"),
    ("fail/outside-constraints", ["r1.devices.example.test"], {}, "rejectedIdentifier"),
    ("fail/too-many-identifiers", [f"r{i}.lab.routers.example.test" for i in range(4)], {}, "rejectedIdentifier"),
    ("fail/unknown-profile", ["r9.lab.routers.example.test"], {"profile": "nope"}, "invalidProfile"),
    ("fail/profile-not-string", ["r9.lab.routers.example.test"], {"profile": 7}, "malformed"),
]


@pytest.mark.parametrize(("names", "extra", "problem"), [c[1:] for c in ORDER_CASES],
                         ids=[c[0] for c in ORDER_CASES])
def test_order_policy(policy_fleetca: FleetcaServer, names: list[str], extra: dict, problem: str | None) -> None:
    client = AcmeClient(policy_fleetca.directory_url(), policy_fleetca.root_pem)
    assert client.new_account().status == 201
    reply = client.new_order(names, **extra)
    if problem is None:
        assert reply.status == 201, reply.body
        return
    assert reply.status == 400, reply.body
    assert reply.problem_type == problem


def test_directory_lists_profiles(policy_fleetca: FleetcaServer) -> None:
    client = AcmeClient(policy_fleetca.directory_url(), policy_fleetca.root_pem)
    assert set(client.directory["meta"]["profiles"]) == {"default", "rsa-only"}


def _rsa(bits: int, exponent: int = 65537) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(exponent, bits)


def _account_key_csr(client: AcmeClient, names: list[str]) -> bytes:
    private = jwk.JWK.from_json(client.key.export_private()).get_op_key("sign")
    return make_csr(names, private)[0]


CSR_CASES = [
    ("fail/rsa-1024", "default", lambda c, n: make_csr(n, _rsa(1024))[0], "RSA key size 1024"),
    ("fail/rsa-exponent-3", "default", lambda c, n: make_csr(n, _rsa(2048, 3))[0], "exponent 3"),
    ("fail/secp256k1", "default", lambda c, n: make_csr(n, ec.generate_private_key(ec.SECP256K1()))[0],
     "secp256k1"),
    ("fail/account-key", "default", _account_key_csr, "account key"),
    ("fail/key-type-not-in-profile", "rsa-only", lambda c, n: make_csr(n)[0], "does not certify ec256"),
    ("ok/rsa-profile", "rsa-only", lambda c, n: make_csr(n, _rsa(2048))[0], None),
]


@pytest.mark.parametrize(("profile", "make", "message"), [c[1:] for c in CSR_CASES], ids=[c[0] for c in CSR_CASES])
def test_csr_policy(policy_fleetca: FleetcaServer, responder: HttpResponder, profile: str,
                    make, message: str | None, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    client = AcmeClient(policy_fleetca.directory_url(), policy_fleetca.root_pem)
    assert client.new_account().status == 201
    names = [f"{request.node.callspec.id.replace('/', '-')}.lab.routers.example.test"]
    reply = client.new_order(names, profile=profile)
    assert reply.status == 201, reply.body
    order_url = reply.headers["Location"]
    answer_http01(client, responder, reply.json())
    order = client.poll(order_url, ("ready", "invalid"))
    reply = client.finalize(order, make(client, names))
    if message is None:
        assert reply.status == 200, reply.body
        assert client.poll(order_url, ("valid", "invalid"))["status"] == "valid"
        return
    assert reply.status == 400
    assert reply.problem_type == "badCSR"
    assert message in reply.json()["detail"]
    assert client.post(order_url).json()["status"] == "ready"
