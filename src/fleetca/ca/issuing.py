"""Issuing CA life cycle: creation under the private root, external requests, and import.

An external ("public or partner trust") CA starts as ``pending``: fleetca keeps its
key and a CSR, and serves nothing for it until ``import_issuing_ca`` installs a
certificate that passes every check below.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from fleetca.ca.ca_profiles import EMBEDDED, IssuingCaSpec
from fleetca.ca.registry import ca_config
from fleetca.settings import Settings
from fleetca.signing.authority import create_issuing_ca, create_issuing_ca_request, issuing_ca_public_key
from fleetca.storage.database import Database

_CA_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
# EKUs a constrained TLS issuing CA may carry (BR §7.1.2.3 forbids anyExtendedKeyUsage and the others).
ACCEPTABLE_EKUS = frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH})


class IssuingCaError(Exception):
    """An issuing CA cannot be created or imported; the message gives the reason and what to do."""


def check_ca_name(name: str) -> None:
    if not name or len(name) > 64 or not set(name) <= _CA_NAME_CHARS or name[0] == "-":
        raise IssuingCaError(f"invalid CA name {name!r}: use 1 to 64 lowercase letters, digits and hyphens")


def _paths(settings: Settings, name: str) -> tuple[Path, Path, Path]:
    key_ref = Path("keys") / f"{name}.key.pem"
    cas_dir = settings.data_dir / "cas"
    cas_dir.mkdir(exist_ok=True)
    return key_ref, cas_dir / f"{name}.pem", cas_dir / f"{name}.csr.pem"


def add_issuing_ca(settings: Settings, database: Database, spec: IssuingCaSpec, now: datetime, *,
                   external: bool = False, certificate_lifetime: timedelta | None = None) -> Path:
    """Create an issuing CA: signed by the private root now, or as a CSR for an outside root.

    Returns the path of the CA certificate, or of the CSR when ``external``.
    """
    check_ca_name(spec.name)
    with database.transaction() as repo:
        if repo.get_issuing_ca(spec.name) is not None:
            raise IssuingCaError(f"issuing CA {spec.name!r} already exists; choose another name")
    key_ref, cert_path, csr_path = _paths(settings, spec.name)
    config = ca_config(spec, certificate_lifetime or settings.lifetimes.certificate)

    if external:
        csr = create_issuing_ca_request(settings.data_dir / key_ref, spec)
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        csr_path.write_text(csr_pem)
        with database.transaction() as repo:
            repo.add_issuing_ca(name=spec.name, status="pending", certificate_pem=None, chain_pem="",
                                csr_pem=csr_pem, key_ref=str(key_ref), config=config, created_at=now)
            repo.audit(now, "ca.issuing.requested", spec.name, {
                "subject": spec.subject().rfc4514_string(), "profile": spec.profile,
                "constraints": spec.constraints.to_json(), "key": str(key_ref)})
        return csr_path

    created = create_issuing_ca(settings.data_dir / key_ref, spec, settings.root_certificate_path,
                                settings.root_key_path, now)
    pem = created.certificate.public_bytes(serialization.Encoding.PEM).decode()
    cert_path.write_text(pem)
    with database.transaction() as repo:
        repo.add_issuing_ca(name=spec.name, status="active", certificate_pem=pem, chain_pem="", csr_pem=None,
                            key_ref=str(key_ref), config=config, created_at=now)
        repo.audit(now, "ca.issuing.created", spec.name, {
            "subject": created.certificate.subject.rfc4514_string(),
            "serial": format(created.certificate.serial_number, "x"), "profile": spec.profile,
            "constraints": spec.constraints.to_json(), "key": str(key_ref)})
    return cert_path


def import_issuing_ca(settings: Settings, database: Database, name: str, certificate_pem: bytes,
                      chain_pem: bytes, now: datetime) -> x509.Certificate:
    """Install the certificate an outside root signed for a pending CA, after checking it."""
    with database.transaction() as repo:
        row = repo.get_issuing_ca(name)
    if row is None:
        raise IssuingCaError(f"no issuing CA named {name!r}; create it with `fleetca ca create --external`")
    if row["status"] != "pending":
        raise IssuingCaError(f"issuing CA {name!r} is {row['status']}, not waiting for a certificate")
    try:
        certs = x509.load_pem_x509_certificates(certificate_pem)
        chain = x509.load_pem_x509_certificates(chain_pem) if chain_pem.strip() else []
    except ValueError as exc:
        raise IssuingCaError(f"cannot parse the certificate or chain as PEM: {exc}") from exc
    certificate, chain = certs[0], certs[1:] + chain

    config = row["config"]
    key_path = Path(row["key_ref"])
    key_path = key_path if key_path.is_absolute() else settings.data_dir / key_path
    check_imported_certificate(certificate, chain, issuing_ca_public_key(key_path), config, now)

    chain_text = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain
                         if c.issuer != c.subject)
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    _, cert_path, _ = _paths(settings, name)
    cert_path.write_text(pem + chain_text)
    with database.transaction() as repo:
        repo.update_issuing_ca(name, status="active", certificate_pem=pem, chain_pem=chain_text)
        repo.audit(now, "ca.issuing.imported", name, {
            "subject": certificate.subject.rfc4514_string(), "issuer": certificate.issuer.rfc4514_string(),
            "serial": format(certificate.serial_number, "x")})
    return certificate


def check_imported_certificate(certificate: x509.Certificate, chain: list[x509.Certificate], public_key,
                               config: dict, now: datetime) -> None:  # type: ignore[no-untyped-def]
    """Refuse a certificate that does not match the key, is no CA, or lacks the agreed constraints."""
    from fleetca.ca.constraints import NameConstraints

    if certificate.public_key() != public_key:
        raise IssuingCaError("the certificate's public key is not this CA's key; was it issued for another CSR?")
    try:
        basic = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise IssuingCaError("the certificate is not a CA certificate (basicConstraints cA is not true)")
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        raise IssuingCaError("the certificate is not valid now")

    try:
        extension = certificate.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        raise IssuingCaError("the certificate carries no Name Constraints; fleetca only runs constrained CAs") \
            from None
    profile = config.get("ca_profile", "strict")
    if not extension.critical and profile != EMBEDDED:
        raise IssuingCaError(f"Name Constraints must be critical for a {profile} CA")
    expected = NameConstraints.from_json(config["constraints"]).extension()
    permitted = [n for n in extension.value.permitted_subtrees or [] if not isinstance(n, x509.DirectoryName)]
    if set(permitted) != set(expected.permitted_subtrees or []):
        raise IssuingCaError("the certificate's permitted subtrees differ from those the CA was created with")
    excluded = set(extension.value.excluded_subtrees or [])
    if not set(expected.excluded_subtrees or []) <= excluded:
        raise IssuingCaError("the certificate does not exclude the IP families that have no permitted range")

    try:
        ekus = set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        raise IssuingCaError("the certificate has no Extended Key Usage; a constrained CA needs serverAuth") \
            from None
    if ExtendedKeyUsageOID.SERVER_AUTH not in ekus or not ekus <= ACCEPTABLE_EKUS:
        raise IssuingCaError("Extended Key Usage must contain serverAuth and may add only clientAuth")

    _check_chain(certificate, chain)


def _check_chain(certificate: x509.Certificate, chain: list[x509.Certificate]) -> None:
    """Each certificate must be signed by the next, and the chain must end in a self-signed root."""
    path = [certificate, *chain]
    for child, parent in zip(path, path[1:]):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise IssuingCaError(f"{child.subject.rfc4514_string()} is not signed by "
                                 f"{parent.subject.rfc4514_string()}: {exc}") from exc
    top = path[-1]
    if top.issuer != top.subject:
        raise IssuingCaError("the chain does not reach a root; pass the outside root (and any intermediates) "
                             "as CHAIN.pem")
    try:
        top.verify_directly_issued_by(top)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise IssuingCaError("the root at the end of the chain is not validly self-signed") from exc
