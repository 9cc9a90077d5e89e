"""Creation of the private root CA, issuing CAs and the ACME server's TLS certificate."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetca.ca.ca_profiles import IssuingCaSpec
from fleetca.signing.keys import generate_ec_key, read_private_key, write_private_key

ROOT_LIFETIME = timedelta(days=3650)
ISSUING_CA_LIFETIME = timedelta(days=1825)
SERVER_TLS_LIFETIME = timedelta(days=90)
# BR §4.9.7: a root's CRL is reissued at least every twelve months.
ROOT_CRL_LIFETIME = timedelta(days=180)
BACKDATE = timedelta(minutes=5)


def _name(common_name: str, organization: str, country: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, country)] if country else []
    return x509.Name(attributes + [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _key_ids(builder: x509.CertificateBuilder, subject_key, issuer_cert: x509.Certificate | None,
             issuer_key) -> x509.CertificateBuilder:
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
    if issuer_cert is not None:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    else:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key)
    return builder.add_extension(aki, critical=False)


@dataclass
class CreatedCa:
    certificate: x509.Certificate
    key_path: Path


def create_root(key_path: Path, organization: str, now: datetime, country: str | None = None) -> CreatedCa:
    """Create a self-signed ECDSA P-384 root and write its key to ``key_path``."""
    key = generate_ec_key(ec.SECP384R1())
    name = _name(f"{organization} Root CA", organization, country)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = builder.sign(key, hashes.SHA384())
    write_private_key(key_path, key)
    return CreatedCa(cert, key_path)


def create_issuing_ca(key_path: Path, spec: IssuingCaSpec, root_cert_path: Path, root_key_path: Path,
                      now: datetime) -> CreatedCa:
    """Create an ECDSA P-256 issuing CA signed by the private root, as ``spec`` describes."""
    root_cert = x509.load_pem_x509_certificate(root_cert_path.read_bytes())
    root_key = read_private_key(root_key_path)
    key = generate_ec_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject())
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + ISSUING_CA_LIFETIME, root_cert.not_valid_after_utc))
    )
    for extension, critical in spec.extensions():
        builder = builder.add_extension(extension, critical=critical)
    builder = _key_ids(builder, key.public_key(), root_cert, root_key.public_key())
    cert = builder.sign(root_key, hashes.SHA384())
    write_private_key(key_path, key)
    return CreatedCa(cert, key_path)


def create_issuing_ca_request(key_path: Path, spec: IssuingCaSpec) -> x509.CertificateSigningRequest:
    """Generate an issuing CA key and a CSR asking an outside root for the extensions in ``spec``."""
    key = generate_ec_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(spec.subject())
    for extension, critical in spec.extensions():
        builder = builder.add_extension(extension, critical=critical)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    write_private_key(key_path, key)
    return csr


def issuing_ca_public_key(key_path: Path):  # type: ignore[no-untyped-def]
    """The public half of an issuing CA key, to match an imported certificate against it."""
    return read_private_key(key_path).public_key()


def sign_root_crl(root_cert_path: Path, root_key_path: Path, number: int, now: datetime,
                  revoked_serials: list[int] = (), lifetime: timedelta = ROOT_CRL_LIFETIME) -> x509.CertificateRevocationList:
    """Sign the root's CRL, which lists revoked issuing CAs (usually none)."""
    root_cert = x509.load_pem_x509_certificate(root_cert_path.read_bytes())
    root_key = read_private_key(root_key_path)
    ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root_cert.subject)
        .last_update(now)
        .next_update(now + lifetime)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(root_key, hashes.SHA384())


def issue_server_tls_certificate(hosts: list[str], root_cert_path: Path, root_key_path: Path,
                                 path: Path, now: datetime) -> None:
    """Issue the ACME server's own TLS certificate for ``hosts`` directly from the root.

    The issuing CAs cannot issue it because their name constraints cover only
    device names, while the server is reached at an operator's host name.
    The certificate, the root and the key go into one file, replaced by
    renaming, so a process that loads it never pairs a key with another
    process's certificate.
    """
    root_cert = x509.load_pem_x509_certificate(root_cert_path.read_bytes())
    root_key = read_private_key(root_key_path)
    key = generate_ec_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        if host in ("127.0.0.1", "::1", "localhost"):
            loopback = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1"))]
            names += [name for name in loopback if name not in names]
            continue
        try:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = x509.DNSName(host.lower())
        if name not in names:
            names.append(name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0], "fleetca ACME server"))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + SERVER_TLS_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    builder = _key_ids(builder, key.public_key(), root_cert, root_key.public_key())
    cert = builder.sign(root_key, hashes.SHA384())
    # The TLS key is written unencrypted because the server loads it without a passphrase.
    _replace_file(path, cert.public_bytes(serialization.Encoding.PEM)
                  + root_cert.public_bytes(serialization.Encoding.PEM)
                  + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))


def _replace_file(path: Path, content: bytes) -> None:
    """Write ``content`` to a new file readable by its owner only, then rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.replace(temporary, path)


def server_certificate_covers(cert_path: Path, hosts: list[str], now: datetime) -> bool:
    """Return whether the stored TLS certificate names every one of ``hosts`` and is valid for a week more."""
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc < now + timedelta(days=7):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    for host in hosts:
        try:
            covered = ipaddress.ip_address(host) in san.get_values_for_type(x509.IPAddress)
        except ValueError:
            covered = host.lower() in san.get_values_for_type(x509.DNSName)
        if not covered:
            return False
    return True
