"""Offline chain verification with OpenSSL, GnuTLS and pyca/cryptography, trusting only the root.

Each function verifies either the issuing CA certificate under the root, or a
leaf for its DNS name with the issuing CA as an untrusted intermediate. It returns
an :class:`Outcome` instead of raising, so one rejection does not stop the rest
of the matrix.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from tests.matrix.outcomes import (
    OK,
    OTHER,
    OUTSIDE,
    UNSUPPORTED,
    Outcome,
    first_line_with,
)

COMMAND_TIMEOUT_SECONDS = 30
SERVER_AUTH_OID = "1.3.6.1.5.5.7.3.1"

OPENSSL_OUTSIDE = ("permitted subtree violation", "excluded subtree violation")
OPENSSL_UNSUPPORTED = ("unsupported name constraint", "unhandled critical extension")
GNUTLS_OUTSIDE = ("violates the signer's constraints",)
CRYPTOGRAPHY_OUTSIDE = ("no permitted name constraints matched", "excluded name constraint")
CRYPTOGRAPHY_UNSUPPORTED = ("unsupported directoryName constraint",)


def _classify(text: str, outside: tuple[str, ...], unsupported: tuple[str, ...] = ()) -> str:
    lowered = text.lower()
    if any(needle.lower() in lowered for needle in outside):
        return OUTSIDE
    if any(needle.lower() in lowered for needle in unsupported):
        return UNSUPPORTED
    return OTHER


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)


def split_chain(chain_pem: bytes, workdir: Path) -> tuple[Path, Path]:
    """Write the leaf and the rest of ``chain_pem`` to separate files and return their paths."""
    certificates = x509.load_pem_x509_certificates(chain_pem)
    leaf = workdir / "leaf.pem"
    intermediates = workdir / "intermediates.pem"
    leaf.write_bytes(certificates[0].public_bytes(Encoding.PEM))
    intermediates.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certificates[1:]))
    return leaf, intermediates


# OpenSSL: `openssl verify`, with the issuing CA passed as untrusted.

def openssl_verify_ca(root: Path, ca: Path) -> Outcome:
    result = _run(["openssl", "verify", "-CAfile", str(root), str(ca)])
    return _openssl_outcome(result)


def openssl_verify_leaf(root: Path, chain_pem: bytes, name: str, workdir: Path) -> Outcome:
    leaf, intermediates = split_chain(chain_pem, workdir)
    result = _run(["openssl", "verify", "-CAfile", str(root), "-untrusted", str(intermediates),
                   "-purpose", "sslserver", "-verify_hostname", name, str(leaf)])
    return _openssl_outcome(result)


def _openssl_outcome(result: subprocess.CompletedProcess[str]) -> Outcome:
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return Outcome(OK)
    line = first_line_with(output, "error")
    return Outcome(_classify(output, OPENSSL_OUTSIDE, OPENSSL_UNSUPPORTED), line)


# GnuTLS: `certtool --verify` with the root loaded as the only trusted CA.

def gnutls_verify_ca(root: Path, ca: Path) -> Outcome:
    result = _run(["certtool", "--verify", "--verify-profile", "medium", "--load-ca-certificate", str(root),
                   "--infile", str(ca)])
    return _gnutls_outcome(result)


def gnutls_verify_leaf(root: Path, chain_pem: bytes, name: str, workdir: Path) -> Outcome:
    chain = workdir / "chain.pem"
    chain.write_bytes(chain_pem)
    result = _run(["certtool", "--verify", "--verify-profile", "medium", "--load-ca-certificate", str(root),
                   "--verify-hostname", name, "--verify-purpose", SERVER_AUTH_OID, "--infile", str(chain)])
    return _gnutls_outcome(result)


def _gnutls_outcome(result: subprocess.CompletedProcess[str]) -> Outcome:
    output = result.stdout + result.stderr
    if result.returncode == 0 and "Chain verification output: Verified" in output:
        return Outcome(OK)
    line = first_line_with(output, "Chain verification output", "error")
    return Outcome(_classify(output, GNUTLS_OUTSIDE), line.removeprefix("Chain verification output: "))


# pyca/cryptography: the RFC 5280 / CA/B Forum verifier in cryptography.x509.verification.

def cryptography_verify_ca(root: Path, ca: Path) -> Outcome:
    """Verify the issuing CA as the end of its own chain, checked with the CA extension policy.

    The server and client verifiers reject a CA certificate as the end entity with
    the default policies, so the CA policy applies to both positions here. The
    chain is the root and the CA alone.
    """
    store = Store(x509.load_pem_x509_certificates(root.read_bytes()))
    ca_policy = ExtensionPolicy.webpki_defaults_ca()
    verifier = (PolicyBuilder().store(store).time(datetime.now(UTC))
                .extension_policies(ca_policy=ca_policy, ee_policy=ca_policy).build_client_verifier())
    try:
        verifier.verify(x509.load_pem_x509_certificate(ca.read_bytes()), [])
    except VerificationError as exc:
        return Outcome(_classify(str(exc), CRYPTOGRAPHY_OUTSIDE, CRYPTOGRAPHY_UNSUPPORTED), _short(exc))
    return Outcome(OK)


def cryptography_verify_leaf(root: Path, chain_pem: bytes, name: str) -> Outcome:
    store = Store(x509.load_pem_x509_certificates(root.read_bytes()))
    certificates = x509.load_pem_x509_certificates(chain_pem)
    verifier = PolicyBuilder().store(store).time(datetime.now(UTC)).build_server_verifier(x509.DNSName(name))
    try:
        verifier.verify(certificates[0], certificates[1:])
    except VerificationError as exc:
        return Outcome(_classify(str(exc), CRYPTOGRAPHY_OUTSIDE, CRYPTOGRAPHY_UNSUPPORTED), _short(exc))
    return Outcome(OK)


def _short(exc: Exception) -> str:
    # The message ends with a repr of the certificate it stopped at, which only adds noise to a table.
    return str(exc).split(" (encountered processing", 1)[0]
