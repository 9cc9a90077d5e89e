"""Which verifiers and TLS stacks accept fleetca's CA profiles, and which enforce their constraints.

One fleetca runs three issuing CAs (strict, baseline, embedded). Each issues a
leaf over ACME for every certificate profile, and the test forges two more with
the CA key: one for a name outside the constraints, and a control inside them. Every certificate then goes through
OpenSSL, GnuTLS and pyca/cryptography, and through lighttpd (mod_mbedtls,
mod_wolfssl, mod_openssl) to curl and headless Chromium. The measured table is
written to docs/compatibility.md, then every cell is compared with the
expectations below, so a change in any verifier's behaviour fails a named case.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.interop.tls import make_server_tls
from tests.matrix.fleet import (
    CA_PROFILES,
    CERTIFICATE_PROFILES,
    FORGED_INSIDE,
    FORGED_OUTSIDE,
    CertificateProfileSpec,
    Fleet,
    Leaf,
    forge_leaf,
    issue_leaves,
)
from tests.matrix.https_peers import (
    TLS_MODULES,
    Chromium,
    Lighttpd,
    curl_fetch,
    with_server_errors,
)
from tests.matrix.outcomes import (
    CERT_INVALID,
    HANDSHAKE_FAILED,
    NOT_LOADED,
    NOT_RUN,
    OK,
    OUTSIDE,
    UNSUPPORTED,
    Outcome,
)
from tests.matrix.report import DOC_PATH, Matrix, tool_versions, write_report
from tests.matrix.verifiers import (
    cryptography_verify_ca,
    cryptography_verify_leaf,
    gnutls_verify_ca,
    gnutls_verify_leaf,
    openssl_verify_ca,
    openssl_verify_leaf,
)
from tests.support.responder import HttpResponder

pytestmark = pytest.mark.matrix

OFFLINE_COLUMNS = ("openssl", "gnutls", "cryptography")
# lighttpd's TLS module names without the "mod_" prefix, for column names.
SERVERS = tuple(module.removeprefix("mod_") for module in TLS_MODULES)
LEAF_COLUMNS = OFFLINE_COLUMNS + tuple(f"{server}-{step}" for server in SERVERS
                                       for step in ("load", "curl", "chromium"))

EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}

# The issuing CA certificate, verified under the root alone. pyca/cryptography
# rejects a critical Name Constraints extension that contains a directoryName,
# which the baseline profile needs for the Baseline Requirements.
EXPECTED_CA = {
    "strict": {"openssl": OK, "gnutls": OK, "cryptography": OK},
    "baseline": {"openssl": OK, "gnutls": OK, "cryptography": UNSUPPORTED},
    "embedded": {"openssl": OK, "gnutls": OK, "cryptography": OK},
}


def _row(openssl: str, gnutls: str, cryptography: str, mbedtls: tuple[str, str, str],
         wolfssl: tuple[str, str, str], openssl_server: tuple[str, str, str]) -> dict[str, str]:
    cells = (openssl, gnutls, cryptography, *mbedtls, *wolfssl, *openssl_server)
    return dict(zip(LEAF_COLUMNS, cells, strict=True))


# mbedTLS 2.28 cannot parse a certificate with a critical Name Constraints
# extension, so lighttpd's mod_mbedtls does not start with a strict or baseline
# chain. It starts with the embedded one, whose extension is non-critical.
MBEDTLS_CANNOT_LOAD = (NOT_LOADED, NOT_RUN, NOT_RUN)
# wolfSSL 5.5.4 fails every handshake in which the client requests OCSP stapling
# (status_request) and the server has no staple. The server log shows
# "-188 certificate verify failed". curl does not request a staple by default, and
# Chromium did on every connection here. The chain does not matter, as
# test_wolfssl_fails_stapling_request_for_any_chain shows.
WOLFSSL_SERVES = (OK, OK, HANDSHAKE_FAILED)
WOLFSSL_SERVES_FORGED = (OK, OUTSIDE, HANDSHAKE_FAILED)

STRICT_ISSUED = _row(OK, OK, OK, MBEDTLS_CANNOT_LOAD, WOLFSSL_SERVES, (OK, OK, OK))
BASELINE_ISSUED = _row(OK, OK, UNSUPPORTED, MBEDTLS_CANNOT_LOAD, WOLFSSL_SERVES, (OK, OK, OK))
EMBEDDED_ISSUED = _row(OK, OK, OK, (OK, OK, OK), WOLFSSL_SERVES, (OK, OK, OK))

# The leaf forged for a name inside the constraints behaves like the issued ones.
# The one outside must be rejected by every verifier that enforces the
# constraints. Chromium reports that as ERR_CERT_INVALID. pyca/cryptography
# rejects the baseline chain before it gets to the name, as it does the issued leaves.
STRICT_FORGED_OUTSIDE = _row(OUTSIDE, OUTSIDE, OUTSIDE, MBEDTLS_CANNOT_LOAD, WOLFSSL_SERVES_FORGED,
                             (OK, OUTSIDE, CERT_INVALID))
BASELINE_FORGED_OUTSIDE = _row(OUTSIDE, OUTSIDE, UNSUPPORTED, MBEDTLS_CANNOT_LOAD, WOLFSSL_SERVES_FORGED,
                               (OK, OUTSIDE, CERT_INVALID))
EMBEDDED_FORGED_OUTSIDE = _row(OUTSIDE, OUTSIDE, OUTSIDE, (OK, OUTSIDE, CERT_INVALID), WOLFSSL_SERVES_FORGED,
                               (OK, OUTSIDE, CERT_INVALID))

EXPECTED_LEAF = {
    ("strict", "default"): STRICT_ISSUED,
    ("strict", "server-rsa"): STRICT_ISSUED,
    ("strict", "no-cn"): STRICT_ISSUED,
    ("strict", FORGED_INSIDE): STRICT_ISSUED,
    ("strict", FORGED_OUTSIDE): STRICT_FORGED_OUTSIDE,
    ("baseline", "default"): BASELINE_ISSUED,
    ("baseline", "server-rsa"): BASELINE_ISSUED,
    ("baseline", "no-cn"): BASELINE_ISSUED,
    ("baseline", FORGED_INSIDE): BASELINE_ISSUED,
    ("baseline", FORGED_OUTSIDE): BASELINE_FORGED_OUTSIDE,
    ("embedded", "default"): EMBEDDED_ISSUED,
    ("embedded", "server-rsa"): EMBEDDED_ISSUED,
    ("embedded", "no-cn"): EMBEDDED_ISSUED,
    ("embedded", FORGED_INSIDE): EMBEDDED_ISSUED,
    ("embedded", FORGED_OUTSIDE): EMBEDDED_FORGED_OUTSIDE,
}

# The baseline CA's leaves carry no CN, so the CLI rejects the two profiles that request one.
EXPECTED_CLI_REJECTIONS = {("baseline", "default"), ("baseline", "server-rsa")}


# Measurement.

def _row_order(leaf: Leaf) -> tuple[int, int]:
    profiles = [spec.name for spec in CERTIFICATE_PROFILES] + [FORGED_INSIDE, FORGED_OUTSIDE]
    return CA_PROFILES.index(leaf.ca_profile), profiles.index(leaf.certificate_profile)


def describe_leaf(certificate: x509.Certificate) -> str:
    """Summarize the key, EKU and subject of a leaf for the table."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_text = f"RSA {key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_text = f"ECDSA {key.curve.name}"
    else:
        key_text = type(key).__name__
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    usages = "+".join(EKU_NAMES.get(usage, usage.dotted_string) for usage in eku)
    subject = "CN" if certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME) else "empty subject"
    return f"{key_text}, {usages}, {subject}"


def measure_ca(fleet: Fleet, ca_profile: str) -> dict[str, Outcome]:
    """Verify the issuing CA certificate under the root with each offline verifier."""
    ca = fleet.ca_pem(ca_profile)
    return {
        "openssl": openssl_verify_ca(fleet.root_pem, ca),
        "gnutls": gnutls_verify_ca(fleet.root_pem, ca),
        "cryptography": cryptography_verify_ca(fleet.root_pem, ca),
    }


def measure_leaf(fleet: Fleet, leaf: Leaf, chromium: Chromium, workdir: Path) -> dict[str, Outcome]:
    """Verify a leaf offline, then serve its chain from lighttpd with each TLS module to curl and Chromium."""
    workdir.mkdir(parents=True)
    row = {
        "openssl": openssl_verify_leaf(fleet.root_pem, leaf.chain_pem, leaf.name, workdir),
        "gnutls": gnutls_verify_leaf(fleet.root_pem, leaf.chain_pem, leaf.name, workdir),
        "cryptography": cryptography_verify_leaf(fleet.root_pem, leaf.chain_pem, leaf.name),
    }
    for module, server_name in zip(TLS_MODULES, SERVERS, strict=True):
        marker = f"fleetca matrix page: {leaf.ca_profile}/{leaf.certificate_profile} via {module}"
        with Lighttpd(workdir / module, module, leaf.chain_pem, leaf.key_pem, marker) as server:
            not_loaded = server.start()
            if not_loaded is not None:
                row[f"{server_name}-load"] = not_loaded
                row[f"{server_name}-curl"] = row[f"{server_name}-chromium"] = Outcome(NOT_RUN)
                continue
            row[f"{server_name}-load"] = Outcome(OK)
            row[f"{server_name}-curl"] = with_server_errors(
                curl_fetch(fleet.root_pem, leaf.name, server.port, marker), server)
            row[f"{server_name}-chromium"] = with_server_errors(
                chromium.fetch(leaf.name, server.port, marker), server)
    return row


@pytest.fixture(scope="module")
def leaves(fleet: Fleet) -> list[Leaf]:
    """A leaf per CA and certificate profile from fleetca over ACME, and the two forged leaves per CA."""
    with HttpResponder(fleet.server.ports.http01) as responder:
        issued = issue_leaves(fleet, responder)
    forged = [forge_leaf(fleet, ca_profile, inside) for ca_profile in CA_PROFILES for inside in (True, False)]
    return sorted(issued + forged, key=_row_order)


@pytest.fixture(scope="module")
def matrix(fleet: Fleet, leaves: list[Leaf], tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    """Measure every cell, then write docs/compatibility.md whatever the outcome."""
    workdir = tmp_path_factory.mktemp("matrix-peers")
    chromium = Chromium(workdir / "chromium", fleet.root_pem)
    measured = Matrix(
        ca_rows={ca_profile: measure_ca(fleet, ca_profile) for ca_profile in CA_PROFILES},
        leaf_rows={(leaf.ca_profile, leaf.certificate_profile):
                   measure_leaf(fleet, leaf, chromium, workdir / f"{leaf.ca_profile}-{leaf.certificate_profile}")
                   for leaf in leaves},
        leaf_descriptions={(leaf.ca_profile, leaf.certificate_profile): describe_leaf(leaf.certificate)
                           for leaf in leaves},
        cli_rejections=fleet.cli_rejections,
    )
    measured.runtime_seconds = time.monotonic() - fleet.started
    write_report(measured, tool_versions(chromium.version()))
    return measured


# Expectations, one case per cell.

@pytest.mark.parametrize(("ca_profile", "column"),
                         [(ca, column) for ca, row in EXPECTED_CA.items() for column in row],
                         ids=[f"{ca}-{column}" for ca, row in EXPECTED_CA.items() for column in row])
def test_issuing_ca_cell(matrix: Matrix, ca_profile: str, column: str) -> None:
    outcome = matrix.ca_rows[ca_profile][column]
    assert outcome.code == EXPECTED_CA[ca_profile][column], f"{column} on the {ca_profile} CA: {outcome}"


@pytest.mark.parametrize(("row", "column"),
                         [(row, column) for row in EXPECTED_LEAF for column in LEAF_COLUMNS],
                         ids=[f"{ca}-{profile}-{column}" for ca, profile in EXPECTED_LEAF for column in LEAF_COLUMNS])
def test_leaf_cell(matrix: Matrix, row: tuple[str, str], column: str) -> None:
    outcome = matrix.leaf_rows[row][column]
    ca_profile, certificate_profile = row
    assert outcome.code == EXPECTED_LEAF[row][column], \
        f"{column} on the {certificate_profile} leaf of the {ca_profile} CA: {outcome}"


def test_matrix_covers_every_leaf(matrix: Matrix) -> None:
    assert set(matrix.leaf_rows) == set(EXPECTED_LEAF)


# What fleetca put in the leaves, so that each row matches its name.

@pytest.mark.parametrize("ca_profile", CA_PROFILES)
@pytest.mark.parametrize("spec", CERTIFICATE_PROFILES, ids=[spec.name for spec in CERTIFICATE_PROFILES])
def test_issued_leaf_follows_profile(leaves: list[Leaf], ca_profile: str, spec: CertificateProfileSpec) -> None:
    leaf = next(leaf for leaf in leaves if (leaf.ca_profile, leaf.certificate_profile) == (ca_profile, spec.name))
    certificate = leaf.certificate
    key = certificate.public_key()
    if spec.key_type == "rsa2048":
        assert isinstance(key, rsa.RSAPublicKey), describe_leaf(certificate)
        assert key.key_size == 2048
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey), describe_leaf(certificate)
        assert key.curve.name == "secp256r1"

    eku = list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert [EKU_NAMES[usage] for usage in eku] == list(spec.eku)

    common_names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    with_cn = spec.common_name and ca_profile != "baseline"
    assert common_names == ([leaf.name] if with_cn else [])
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [leaf.name]
    assert san.critical == (not with_cn), "RFC 5280 4.2.1.6: the SAN must be critical with an empty subject"
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == timedelta(days=7)


def test_baseline_rejects_cn_profiles(fleet: Fleet) -> None:
    assert set(fleet.cli_rejections) == EXPECTED_CLI_REJECTIONS
    for message in fleet.cli_rejections.values():
        assert "--no-common-name" in message


def test_compatibility_doc_lists_every_row(matrix: Matrix) -> None:
    text = DOC_PATH.read_text()
    assert "Generated by `tests/matrix/test_verifier_matrix.py`" in text
    for ca_profile, certificate_profile in matrix.leaf_rows:
        assert f"| {ca_profile} | {certificate_profile} |" in text


def test_wolfssl_fails_stapling_request_for_any_chain(tmp_path: Path) -> None:
    """The wolfssl-chromium column fails for a cause outside fleetca's certificates.

    A chain from a CA without Name Constraints fails the same way as soon as the
    client requests a stapled OCSP response, as Chromium does.
    """
    name = "plain.example.test"
    tls = make_server_tls(tmp_path / "plain", (name,))
    chain = tls.certificate.read_bytes() + tls.ca_bundle.read_bytes()
    marker = "fleetca matrix page: chain without Name Constraints"
    with Lighttpd(tmp_path / "wolfssl", "mod_wolfssl", chain, tls.private_key.read_bytes(), marker) as server:
        assert server.start() is None, server.read_logs()

        plain = curl_fetch(tls.ca_bundle, name, server.port, marker)
        assert plain.code == OK, str(plain)
        stapling = curl_fetch(tls.ca_bundle, name, server.port, marker, status_request=True)
        assert stapling.code == HANDSHAKE_FAILED, str(stapling)
        assert "-188 certificate verify failed" in server.new_errors()
