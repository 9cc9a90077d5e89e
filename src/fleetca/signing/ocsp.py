"""Signing of OCSP responses (RFC 6960, RFC 5019 profile) for one issuing CA.

Responses are signed either with the issuing CA's own key or with a delegated
responder certificate (RFC 6960 §4.2.2.2): a short-lived leaf certificate that
the issuing CA signs, with the id-kp-OCSPSigning EKU and id-pkix-ocsp-nocheck.
Delegated responder keys and certificates live in one directory per issuing CA
and are replaced once half of their lifetime has passed. Several processes may
each create one at the same moment; every such certificate is valid, and each
process signs with the newest one it finds.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetca.signing.crl import reason_flag, signature_hash
from fleetca.signing.keys import generate_ec_key, read_private_key, write_private_key

RESPONDER_LIFETIME = timedelta(days=14)
RESPONDER_BACKDATE = timedelta(minutes=5)
KEY_SUFFIX = ".key.pem"
CERT_SUFFIX = ".pem"


@dataclass(frozen=True)
class CertId:
    """The CertID of a request (RFC 6960 §4.1.1), echoed unchanged in the response."""

    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    algorithm: hashes.HashAlgorithm


@dataclass(frozen=True)
class Status:
    """What the responder asserts about one certificate."""

    value: ocsp.OCSPCertStatus
    revoked_at: datetime | None = None
    reason: int | None = None


@dataclass
class _Responder:
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


def issuer_hashes(ca_certificate: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """Return (issuerNameHash, issuerKeyHash) of ``ca_certificate`` under ``algorithm``.

    The key hash covers the subjectPublicKey BIT STRING's contents: the point for
    EC keys and the PKCS#1 structure for RSA keys (RFC 6960 §4.1.1).
    """
    public_key = ca_certificate.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        key_bytes = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    else:
        key_bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    name_digest = hashes.Hash(algorithm)
    name_digest.update(ca_certificate.subject.public_bytes())
    key_digest = hashes.Hash(algorithm)
    key_digest.update(key_bytes)
    return name_digest.finalize(), key_digest.finalize()


def unsuccessful_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """Return an unsigned error response such as malformedRequest or unauthorized."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


class OcspSigner:
    """Signs OCSP responses for one issuing CA."""

    def __init__(self, ca_certificate: x509.Certificate, ca_key_path: Path, *, delegated: bool,
                 responder_dir: Path) -> None:
        self.ca_certificate = ca_certificate
        self.delegated = delegated
        self._ca_key_path = ca_key_path
        self._ca_key = read_private_key(ca_key_path)
        self._responder_dir = responder_dir
        self._responder: _Responder | None = None
        ski = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self._ca_key_identifier = ski.digest

    def sign(self, cert_id: CertId, status: Status, this_update: datetime, next_update: datetime) -> bytes:
        """Return the DER of a successful response about ``cert_id``."""
        if self.delegated:
            responder = self._current_responder(this_update, next_update)
            signer_cert, signer_key, certificates = responder.certificate, responder.key, [responder.certificate]
        else:
            signer_cert, signer_key, certificates = self.ca_certificate, self._ca_key, []
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=cert_id.issuer_name_hash, issuer_key_hash=cert_id.issuer_key_hash,
            serial_number=cert_id.serial_number, algorithm=cert_id.algorithm, cert_status=status.value,
            this_update=this_update, next_update=next_update,
            revocation_time=status.revoked_at, revocation_reason=reason_flag(status.reason),
        )
        # The responder is named by its key hash (byKey), so clients need not compare names.
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer_cert)
        if certificates:
            builder = builder.certificates(certificates)
        response = builder.sign(signer_key, signature_hash(signer_key))
        return response.public_bytes(serialization.Encoding.DER)

    def responder_certificate(self, now: datetime) -> x509.Certificate:
        """Return the certificate whose key signs responses: the CA's or the delegated responder's."""
        if not self.delegated:
            return self.ca_certificate
        return self._current_responder(now, now).certificate

    def _current_responder(self, now: datetime, must_cover: datetime) -> _Responder:
        # A responder certificate is replaced once half its lifetime has passed, and
        # never signs a response that would outlive it.
        current = self._responder
        if current is None or not self._fresh(current.certificate, now, must_cover):
            current = self._newest_on_disk(now, must_cover)
            if current is None:
                current = self._create_responder(now)
            self._responder = current
        return current

    def _fresh(self, certificate: x509.Certificate, now: datetime, must_cover: datetime) -> bool:
        half = (certificate.not_valid_after_utc - certificate.not_valid_before_utc) / 2
        return (certificate.not_valid_before_utc <= now
                and now < certificate.not_valid_before_utc + half
                and must_cover <= certificate.not_valid_after_utc)

    def _newest_on_disk(self, now: datetime, must_cover: datetime) -> _Responder | None:
        if not self._responder_dir.is_dir():
            return None
        candidates = []
        for path in self._responder_dir.glob(f"*{CERT_SUFFIX}"):
            if path.name.endswith(KEY_SUFFIX):
                continue
            key_path = path.with_name(path.name.removesuffix(CERT_SUFFIX) + KEY_SUFFIX)
            try:
                certificate = x509.load_pem_x509_certificate(path.read_bytes())
            except ValueError:
                continue
            if key_path.exists() and self._issued_by_ca(certificate) and self._fresh(certificate, now, must_cover):
                candidates.append((certificate.not_valid_after_utc, certificate, key_path))
        if not candidates:
            return None
        _, certificate, key_path = max(candidates, key=lambda c: c[0])
        return _Responder(certificate, read_private_key(key_path))

    def _issued_by_ca(self, certificate: x509.Certificate) -> bool:
        try:
            aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except x509.ExtensionNotFound:
            return False
        return aki.key_identifier == self._ca_key_identifier

    def _create_responder(self, now: datetime) -> _Responder:
        key = generate_ec_key(ec.SECP256R1())
        organization = self.ca_certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        common_name = self.ca_certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(organization[0].value))] if organization else []
        label = str(common_name[0].value) if common_name else "fleetca issuing CA"
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, f"{label} OCSP Responder"[:64]))
        ski = self.ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.ca_certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - RESPONDER_BACKDATE)
            .not_valid_after(min(now + RESPONDER_LIFETIME, self.ca_certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
            # id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): clients need not check the
            # responder's own revocation status, which is why its lifetime is short.
            .add_extension(x509.OCSPNoCheck(), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        )
        certificate = builder.sign(self._ca_key, signature_hash(self._ca_key))

        # The key is written first; the certificate's presence marks a complete pair.
        self._responder_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{format(certificate.serial_number, 'x')}-{secrets.token_hex(4)}"
        write_private_key(self._responder_dir / f"{stem}{KEY_SUFFIX}", key)
        temporary = self._responder_dir / f".{stem}.tmp"
        temporary.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        os.replace(temporary, self._responder_dir / f"{stem}{CERT_SUFFIX}")
        return _Responder(certificate, key)
