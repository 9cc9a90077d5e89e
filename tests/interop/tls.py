"""Throwaway TLS certificates for the HTTPS listener of an ACME server under test.

ACME runs over HTTPS (RFC 8555, section 6.1) and the clients verify the server's
certificate, so every run gets a fresh test CA. Its certificate is the
``ca_bundle`` handed to the clients. Nothing here touches the certificates that
the ACME server issues.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ServerTls", "make_server_tls"]

# The clients reach the server by IP address, and "localhost" is there for a
# developer who types the URL by hand.
DEFAULT_SERVER_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServerTls:
    """PEM files for a server's HTTPS listener and the CA that clients trust."""

    ca_bundle: Path
    certificate: Path
    private_key: Path


def make_server_tls(
    directory: Path, server_names: tuple[str, ...] = DEFAULT_SERVER_NAMES
) -> ServerTls:
    """Write a new test CA and a server certificate signed by it into ``directory``.

    Each entry of ``server_names`` becomes an IP address SAN if it parses as one,
    otherwise a DNS name SAN. The certificates are valid for two days.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetca interop test CA")])
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in server_names]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    tls = ServerTls(
        ca_bundle=directory / "ca.pem",
        certificate=directory / "server-cert.pem",
        private_key=directory / "server-key.pem",
    )
    tls.ca_bundle.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    tls.certificate.write_bytes(server_certificate.public_bytes(serialization.Encoding.PEM))
    tls.private_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
