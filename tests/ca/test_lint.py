"""pkilint finds no errors in the issuing CA and leaf certificates of each CA profile."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetca.ca.lint import lint_certificate
from tests.acme.test_flow import issue
from tests.support.acme_client import AcmeClient
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer

NOT_CRITICAL = "pkix.certificate_name_constraints_extension_not_critical"

# (CA, a name it permits, whether the CA/B Forum server-auth rules apply, the
# findings expected on the CA certificate). The embedded profile's non-critical
# Name Constraints break RFC 5280 §4.2.1.10 on purpose; docs/divergences.md gives the reason.
CASES = [
    ("strict", "default", "l1.devices.example.test", False, []),
    ("routers", "routers", "l1.routers.example.test", False, []),
    ("baseline", "baseline", "l1.devices.example.com", True, []),
    ("embedded", "embedded", "l2.devices.example.test", False, [NOT_CRITICAL]),
]


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(("ca", "name", "serverauth_rules", "ca_findings"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_issuing_ca_and_leaf_lint_clean(multi_ca: FleetcaServer, responder: HttpResponder, ca: str,
                                        name: str, serverauth_rules: bool, ca_findings: list[str]) -> None:
    client = AcmeClient(multi_ca.directory_url(ca), multi_ca.root_pem)
    assert client.new_account().status == 201
    _, chain = issue(client, responder, [name])
    leaf, issuing = x509.load_pem_x509_certificates(chain)[:2]

    assert [str(f) for f in lint_certificate(der(leaf), serverauth_rules=serverauth_rules)] == []
    assert [str(f) for f in lint_certificate(der(leaf), serverauth_rules=False)] == []
    findings = lint_certificate(der(issuing), serverauth_rules=serverauth_rules)
    assert [f.code for f in findings] == ca_findings, [str(f) for f in findings]


def test_baseline_leaf_shape(multi_ca: FleetcaServer, responder: HttpResponder) -> None:
    client = AcmeClient(multi_ca.directory_url("baseline"), multi_ca.root_pem)
    assert client.new_account().status == 201
    _, chain = issue(client, responder, ["l2.devices.example.com"])
    leaf = x509.load_pem_x509_certificates(chain)[0]
    assert leaf.subject == x509.Name([])
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == ["2.23.140.1.2.1"]
    access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in access] == ["http://pki.example.com/pki/ca/baseline.crt"]


@pytest.fixture(scope="module")
def linted(tmp_path_factory: pytest.TempPathFactory, dns_server, validation_ports):  # type: ignore[no-untyped-def]
    """A strict CA and a baseline CA for internal .test names, both linting before they sign."""
    from tests.ca.conftest import PUBLIC_HTTP_URL
    from tests.support.server import run_fleetca

    server = FleetcaServer(tmp_path_factory.mktemp("linted") / "data", dns_server.dns_address, validation_ports,
                           http_public_url=PUBLIC_HTTP_URL)
    server.init()
    data_dir = str(server.data_dir)
    run_fleetca("ca", "create", "internal", "--data-dir", data_dir, "--profile", "baseline", "--country", "DE",
                "--permit-dns", "devices.example.test", "--http-public-url", PUBLIC_HTTP_URL)
    for ca in ("default", "internal"):
        run_fleetca("ca", "configure", ca, "--data-dir", data_dir, "--lint")
    server.start()
    yield server
    server.stop()
    server.drop_database()


def test_lint_in_issuance_path_passes_clean_certificate(linted: FleetcaServer,
                                                         responder: HttpResponder) -> None:
    client = AcmeClient(linted.directory_url("default"), linted.root_pem)
    assert client.new_account().status == 201
    order, chain = issue(client, responder, ["ok.devices.example.test"])
    assert order["status"] == "valid"
    assert chain.count(b"BEGIN CERTIFICATE") == 2


def test_lint_in_issuance_path_refuses_failing_certificate(linted: FleetcaServer,
                                                           responder: HttpResponder) -> None:
    from tests.acme.test_flow import answer_http01
    from tests.support.acme_client import make_csr

    client = AcmeClient(linted.directory_url("internal"), linted.root_pem)
    assert client.new_account().status == 201
    reply = client.new_order(["bad.devices.example.test"])
    order_url = reply.headers["Location"]
    answer_http01(client, responder, reply.json())
    order = client.poll(order_url, ("ready", "invalid"))
    before = linted.query("SELECT count(*) FROM certificates")[0][0]

    reply = client.finalize(order, make_csr(["bad.devices.example.test"])[0])
    assert reply.status == 200, reply.body
    order = reply.json()
    assert order["status"] == "invalid"
    assert "pre-issuance lint failed" in order["error"]["detail"]
    assert "cabf.internal_domain_name" in order["error"]["detail"]
    assert linted.query("SELECT count(*) FROM certificates")[0][0] == before
    refusals = linted.query("SELECT ca_name FROM audit_events WHERE event = 'certificate.refused'")
    assert ("internal",) in refusals
