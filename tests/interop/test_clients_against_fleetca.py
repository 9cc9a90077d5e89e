"""Real, unmodified ACME clients obtain certificates from fleetca, and only for permitted names.

Each issuance case starts a freshly initialised fleetca that permits DNS names under
devices.example.test and no IP addresses. The IP identifier case uses the session
server, which also permits 127.0.0.0/8. The clients are driven by clients.py, the
same harness that test_clients_against_pebble.py proves against Pebble.

Every issued chain is checked the way a relying party checks it, with
``openssl verify`` and with pyca/cryptography's verifier, both trusting only
root.pem. The issuing CA in the chain must be technically constrained.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.server import DEVICE_SUFFIX, FleetcaServer
from tests.support.verify import verify_with_cryptography, verify_with_openssl

from .challtestsrv import ChallengePorts, ChallTestSrv
from .clients import ClientError, run_acme_tiny, run_certbot, run_dehydrated, run_lego, run_uacme

pytestmark = pytest.mark.interop

REJECTED_IDENTIFIER = "urn:ietf:params:acme:error:rejectedIdentifier"
# Outside devices.example.test, so outside every issuing CA's name constraints here.
OUTSIDE_NAME = "dev1.other.example"
ALL_IPV4 = ipaddress.ip_network("0.0.0.0/0")
ALL_IPV6 = ipaddress.ip_network("::/0")


def device_name(case: str) -> str:
    """Return the DNS name requested in one test case."""
    return f"{case}.{DEVICE_SUFFIX}"


def count_certificates(server: FleetcaServer) -> int:
    """Count the rows of the certificates table, read-only."""
    return server.query("SELECT COUNT(*) FROM certificates")[0][0]


def subject_alternative_names(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(value) for value in san.get_values_for_type(x509.DNSName) + san.get_values_for_type(x509.IPAddress)]


def expected_name_constraints(server: FleetcaServer) -> tuple[set[x509.GeneralName], set[x509.GeneralName]]:
    """Return the permitted and excluded subtrees that ``server``'s issuing CA must carry.

    fleetca excludes the whole of each IP family that has no permitted range.
    """
    networks = [ipaddress.ip_network(text) for text in server.permit_ip]
    permitted: set[x509.GeneralName] = {x509.DNSName(suffix) for suffix in server.permit_dns}
    permitted |= {x509.IPAddress(network) for network in networks}
    excluded: set[x509.GeneralName] = set()
    if not any(network.version == 4 for network in networks):
        excluded.add(x509.IPAddress(ALL_IPV4))
    if not any(network.version == 6 for network in networks):
        excluded.add(x509.IPAddress(ALL_IPV6))
    return permitted, excluded


def assert_constrained_issuing_ca(issuer: x509.Certificate, server: FleetcaServer) -> None:
    """Check that ``issuer`` is a technically constrained CA for ``server``'s permitted names."""
    constraints = issuer.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical, "Name Constraints of the issuing CA must be critical"
    permitted, excluded = expected_name_constraints(server)
    assert set(constraints.value.permitted_subtrees or ()) == permitted
    assert set(constraints.value.excluded_subtrees or ()) == excluded

    basic_constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic_constraints.critical
    assert basic_constraints.value.ca is True
    assert basic_constraints.value.path_length == 0

    extended_key_usage = issuer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(extended_key_usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def assert_chain_issued_for(chain_path: Path, name: str, server: FleetcaServer, workdir: Path) -> None:
    """Check that the saved chain is leaf first, names only ``name`` and verifies to root.pem.

    Both OpenSSL and pyca/cryptography must accept the chain, and the leaf's issuer
    must be a technically constrained CA.
    """
    chain_pem = chain_path.read_bytes()
    certificates = x509.load_pem_x509_certificates(chain_pem)
    assert len(certificates) >= 2, f"{chain_path} has {len(certificates)} certificate(s), expected leaf and issuer"
    leaf, issuer = certificates[0], certificates[1]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert subject_alternative_names(leaf) == [name]
    assert leaf.issuer == issuer.subject, "the certificate after the leaf is not its issuer"

    openssl_dir = workdir / "openssl-verify"
    openssl_dir.mkdir()
    openssl = verify_with_openssl(chain_pem, server.root_pem, name, openssl_dir)
    assert openssl.returncode == 0, f"openssl verify failed:\n{openssl.stdout}\n{openssl.stderr}"
    assert openssl.stdout.strip().endswith(": OK")

    verified = verify_with_cryptography(chain_pem, server.root_pem, name)
    assert verified[0] == leaf
    assert verified[1] == issuer
    assert verified[-1] == x509.load_pem_x509_certificate(server.root_pem.read_bytes())

    assert_constrained_issuing_ca(issuer, server)


# Each case obtains a certificate over http-01 with one client. The arguments are
# the server, the challenge ports, the name and the work directory.
Http01Case = Callable[[FleetcaServer, ChallengePorts, str, Path], Path]
HTTP01_CASES: dict[str, Http01Case] = {
    "certbot": lambda server, ports, name, workdir: run_certbot(
        server.directory_url(), server.root_pem, name, workdir, ports.http01
    ),
    "lego": lambda server, ports, name, workdir: run_lego(
        server.directory_url(), server.root_pem, name, workdir, challenge="http-01", http01_port=ports.http01
    ),
    "uacme": lambda server, ports, name, workdir: run_uacme(
        server.directory_url(), server.root_pem, name, workdir, ports.http01
    ),
    "dehydrated": lambda server, ports, name, workdir: run_dehydrated(
        server.directory_url(), server.root_pem, name, workdir, ports.http01
    ),
    "acme-tiny": lambda server, ports, name, workdir: run_acme_tiny(
        server.directory_url(), server.root_pem, name, workdir, ports.http01
    ),
}


@pytest.mark.parametrize("client", sorted(HTTP01_CASES))
def test_http01_issues_constrained_chain(
    client: str, fleetca: FleetcaServer, validation_ports: ChallengePorts, tmp_path: Path
) -> None:
    name = device_name(f"{client}-http01")
    assert count_certificates(fleetca) == 0

    chain = HTTP01_CASES[client](fleetca, validation_ports, name, tmp_path)

    assert_chain_issued_for(chain, name, fleetca, tmp_path)
    assert count_certificates(fleetca) == 1


def test_lego_dns01_issues_constrained_chain(
    fleetca: FleetcaServer, dns_server: ChallTestSrv, tmp_path: Path
) -> None:
    name = device_name("lego-dns01")

    chain = run_lego(fleetca.directory_url(), fleetca.root_pem, name, tmp_path, challenge="dns-01", dns=dns_server)

    assert_chain_issued_for(chain, name, fleetca, tmp_path)
    log = dns_server.read_log()
    assert f'Added DNS-01 TXT challenge for Host "_acme-challenge.{name}."' in log
    assert f'Removed DNS-01 TXT challenge for Host "_acme-challenge.{name}."' in log


def test_lego_tlsalpn01_issues_constrained_chain(
    fleetca: FleetcaServer, validation_ports: ChallengePorts, tmp_path: Path
) -> None:
    name = device_name("lego-tlsalpn01")

    chain = run_lego(
        fleetca.directory_url(),
        fleetca.root_pem,
        name,
        tmp_path,
        challenge="tls-alpn-01",
        tlsalpn01_port=validation_ports.tlsalpn01,
    )

    assert_chain_issued_for(chain, name, fleetca, tmp_path)


def test_acme_tiny_name_only_in_cn(
    fleetca: FleetcaServer, validation_ports: ChallengePorts, tmp_path: Path
) -> None:
    name = device_name("acme-tiny-cn-only")

    chain = run_acme_tiny(
        fleetca.directory_url(), fleetca.root_pem, name, tmp_path, validation_ports.http01, csr_with_san=False
    )

    csr = x509.load_pem_x509_csr((tmp_path / "acme-tiny" / "domain.csr").read_bytes())
    assert csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == name
    with pytest.raises(x509.ExtensionNotFound):
        csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    # pyca/cryptography's verifier ignores the CN, so the leaf must carry the name in its SAN.
    assert_chain_issued_for(chain, name, fleetca, tmp_path)


def test_uacme_ip_identifier(
    shared_fleetca: FleetcaServer, validation_ports: ChallengePorts, tmp_path: Path
) -> None:
    address = "127.0.0.1"
    assert "127.0.0.0/8" in shared_fleetca.permit_ip

    chain = run_uacme(shared_fleetca.directory_url(), shared_fleetca.root_pem, address, tmp_path,
                      validation_ports.http01)

    assert_chain_issued_for(chain, address, shared_fleetca, tmp_path)


# Each case orders a certificate for a name outside the issuing CA's constraints.
# The arguments are the server, the challenge ports, the name and the work directory.
OUTSIDE_NAME_CASES: dict[str, Http01Case] = {
    "certbot": HTTP01_CASES["certbot"],
    "lego": HTTP01_CASES["lego"],
}


@pytest.mark.parametrize("client", sorted(OUTSIDE_NAME_CASES))
def test_outside_name_rejected_without_issuance(
    client: str, shared_fleetca: FleetcaServer, validation_ports: ChallengePorts, tmp_path: Path
) -> None:
    issued_before = count_certificates(shared_fleetca)

    with pytest.raises(ClientError) as raised:
        OUTSIDE_NAME_CASES[client](shared_fleetca, validation_ports, OUTSIDE_NAME, tmp_path)

    error = raised.value
    assert error.client == client
    assert "exit status" in error.problem
    # certbot prints only the problem's detail and keeps its type in the debug log.
    # The type proves that fleetca rejected the name, not the client's own checks.
    client_output = error.stdout + error.stderr + "".join(error.log_excerpts.values())
    assert REJECTED_IDENTIFIER in client_output
    assert OUTSIDE_NAME in error.stderr
    assert count_certificates(shared_fleetca) == issued_before
