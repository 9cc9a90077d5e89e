"""Each real ACME client obtains a certificate from Pebble through the interop harness.

Pebble is the reference ACME server here. These tests prove that the harness in
clients.py drives every client to a valid certificate, so the same calls can be
pointed at fleetca's directory.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from .challtestsrv import ChallengePorts, ChallTestSrv
from .clients import (
    ClientError,
    ExternalAccountBinding,
    run_acme_tiny,
    run_certbot,
    run_dehydrated,
    run_lego,
    run_uacme,
)
from .pebble import Pebble

pytestmark = pytest.mark.pebble

EAB_KEY_ID = "interop-eab"


def device_name(case: str) -> str:
    """Return the DNS name requested in one test case."""
    return f"{case}.devices.example.test"


@pytest.fixture(scope="module")
def pebble(
    challtestsrv: ChallTestSrv,
    challenge_ports: ChallengePorts,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pebble]:
    with Pebble(
        tmp_path_factory.mktemp("pebble"),
        dns_address=challtestsrv.dns_address,
        http01_port=challenge_ports.http01,
        tlsalpn01_port=challenge_ports.tlsalpn01,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def eab_credentials() -> ExternalAccountBinding:
    return ExternalAccountBinding(key_id=EAB_KEY_ID, hmac_key=secrets.token_urlsafe(32))


@pytest.fixture(scope="module")
def pebble_with_eab(
    challtestsrv: ChallTestSrv,
    challenge_ports: ChallengePorts,
    eab_credentials: ExternalAccountBinding,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pebble]:
    with Pebble(
        tmp_path_factory.mktemp("pebble-eab"),
        dns_address=challtestsrv.dns_address,
        http01_port=challenge_ports.http01,
        tlsalpn01_port=challenge_ports.tlsalpn01,
        eab_mac_keys={eab_credentials.key_id: eab_credentials.hmac_key},
    ) as server:
        yield server


def assert_chain_for_name(chain_path: Path, name: str, pebble: Pebble) -> None:
    """Check that the chain is leaf first, names only ``name`` and leads to Pebble's root."""
    certificates = x509.load_pem_x509_certificates(chain_path.read_bytes())
    assert len(certificates) >= 2, f"{chain_path} has {len(certificates)} certificate(s), expected leaf and issuer"

    leaf = certificates[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    basic_constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic_constraints.ca is False, "first certificate in the chain is a CA, not the leaf"

    for child, issuer in zip(certificates, certificates[1:]):
        child.verify_directly_issued_by(issuer)
    root = x509.load_pem_x509_certificate(pebble.issuing_root_pem())
    certificates[-1].verify_directly_issued_by(root)


# Each case obtains a certificate over http-01 with one client. The arguments are
# Pebble, the challenge ports, the name and the work directory.
Http01Case = Callable[[Pebble, ChallengePorts, str, Path], Path]
HTTP01_CASES: dict[str, Http01Case] = {
    "certbot": lambda pebble, ports, name, workdir: run_certbot(
        pebble.directory_url, pebble.ca_bundle, name, workdir, ports.http01
    ),
    "lego": lambda pebble, ports, name, workdir: run_lego(
        pebble.directory_url, pebble.ca_bundle, name, workdir, challenge="http-01", http01_port=ports.http01
    ),
    "uacme": lambda pebble, ports, name, workdir: run_uacme(
        pebble.directory_url, pebble.ca_bundle, name, workdir, ports.http01
    ),
    "dehydrated": lambda pebble, ports, name, workdir: run_dehydrated(
        pebble.directory_url, pebble.ca_bundle, name, workdir, ports.http01
    ),
    "acme-tiny": lambda pebble, ports, name, workdir: run_acme_tiny(
        pebble.directory_url, pebble.ca_bundle, name, workdir, ports.http01
    ),
}


@pytest.mark.parametrize("client", sorted(HTTP01_CASES))
def test_http01_issues_certificate(
    client: str, pebble: Pebble, challenge_ports: ChallengePorts, tmp_path: Path
) -> None:
    name = device_name(f"{client}-http01")

    chain = HTTP01_CASES[client](pebble, challenge_ports, name, tmp_path)

    assert_chain_for_name(chain, name, pebble)


def test_lego_dns01_issues_certificate(
    pebble: Pebble, challtestsrv: ChallTestSrv, tmp_path: Path
) -> None:
    name = device_name("lego-dns01")

    chain = run_lego(pebble.directory_url, pebble.ca_bundle, name, tmp_path, challenge="dns-01", dns=challtestsrv)

    assert_chain_for_name(chain, name, pebble)
    log = challtestsrv.read_log()
    assert f'Added DNS-01 TXT challenge for Host "_acme-challenge.{name}."' in log
    assert f'Removed DNS-01 TXT challenge for Host "_acme-challenge.{name}."' in log


def test_lego_tlsalpn01_issues_certificate(
    pebble: Pebble, challenge_ports: ChallengePorts, tmp_path: Path
) -> None:
    name = device_name("lego-tlsalpn01")

    chain = run_lego(
        pebble.directory_url,
        pebble.ca_bundle,
        name,
        tmp_path,
        challenge="tls-alpn-01",
        tlsalpn01_port=challenge_ports.tlsalpn01,
    )

    assert_chain_for_name(chain, name, pebble)


def test_second_run_reuses_account(
    pebble: Pebble, challenge_ports: ChallengePorts, tmp_path: Path
) -> None:
    name = device_name("certbot-renewal")

    first = run_certbot(pebble.directory_url, pebble.ca_bundle, name, tmp_path, challenge_ports.http01)
    first_serial = x509.load_pem_x509_certificates(first.read_bytes())[0].serial_number
    second = run_certbot(pebble.directory_url, pebble.ca_bundle, name, tmp_path, challenge_ports.http01)

    assert_chain_for_name(second, name, pebble)
    second_serial = x509.load_pem_x509_certificates(second.read_bytes())[0].serial_number
    assert second_serial != first_serial
    accounts = list((tmp_path / "certbot" / "config" / "accounts").rglob("regr.json"))
    assert len(accounts) == 1


# Each case obtains a certificate over http-01 from a Pebble that requires external
# account binding. The arguments are Pebble, the challenge ports, the name, the
# work directory and the binding credentials.
EabCase = Callable[[Pebble, ChallengePorts, str, Path, ExternalAccountBinding], Path]
EAB_CASES: dict[str, EabCase] = {
    "certbot": lambda pebble, ports, name, workdir, eab: run_certbot(
        pebble.directory_url, pebble.ca_bundle, name, workdir, ports.http01, eab=eab
    ),
    "lego": lambda pebble, ports, name, workdir, eab: run_lego(
        pebble.directory_url, pebble.ca_bundle, name, workdir, challenge="http-01", http01_port=ports.http01, eab=eab
    ),
    "uacme": lambda pebble, ports, name, workdir, eab: run_uacme(
        pebble.directory_url, pebble.ca_bundle, name, workdir, ports.http01, eab=eab
    ),
    "dehydrated": lambda pebble, ports, name, workdir, eab: run_dehydrated(
        pebble.directory_url, pebble.ca_bundle, name, workdir, ports.http01, eab=eab
    ),
}


@pytest.mark.parametrize("client", sorted(EAB_CASES))
def test_eab_account_issues_certificate(
    client: str,
    pebble_with_eab: Pebble,
    challenge_ports: ChallengePorts,
    eab_credentials: ExternalAccountBinding,
    tmp_path: Path,
) -> None:
    name = device_name(f"{client}-eab")

    chain = EAB_CASES[client](pebble_with_eab, challenge_ports, name, tmp_path, eab_credentials)

    assert_chain_for_name(chain, name, pebble_with_eab)


def test_missing_eab_reports_server_problem(
    pebble_with_eab: Pebble, challenge_ports: ChallengePorts, tmp_path: Path
) -> None:
    # acme-tiny has no EAB support, so it sends newAccount without a binding. The
    # other clients read meta.externalAccountRequired and stop before sending it.
    name = device_name("acme-tiny-no-eab")

    with pytest.raises(ClientError) as raised:
        run_acme_tiny(pebble_with_eab.directory_url, pebble_with_eab.ca_bundle, name, tmp_path, challenge_ports.http01)

    error = raised.value
    assert error.client == "acme-tiny"
    assert "exit status" in error.problem
    # RFC 8555, section 7.3.4 names this problem type for a missing binding.
    assert "urn:ietf:params:acme:error:externalAccountRequired" in error.stderr
    assert "externalAccountRequired" in str(error)
