"""Signing of CRL shards (RFC 5280 §5) with an issuing CA's key.

Each shard is a complete CRL for the certificates that name its URL in their
CRL distribution point. Its critical issuingDistributionPoint repeats that URL
byte for byte, so a relying party knows that the shard covers exactly those
certificates and no others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetca.signing.keys import read_private_key

# RFC 5280 §5.3.1 reason codes; 7 is unassigned.
REASON_FLAGS: dict[int, x509.ReasonFlags] = {
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}
# The Baseline Requirements cap nextUpdate at ten days after thisUpdate.
MAX_CRL_VALIDITY = timedelta(days=10)
# RFC 5280 §5.2.3: a CRL number is at most 20 octets.
MAX_CRL_NUMBER = 2**159


class CrlSigningError(Exception):
    """A CRL could not be signed as asked; the message names the failed check."""


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate as a CRL lists it."""

    serial_number: int
    revoked_at: datetime
    reason: int | None  # RFC 5280 reason code; None and 0 (unspecified) leave reasonCode out


def reason_flag(reason: int | None) -> x509.ReasonFlags | None:
    """Map a stored reason code to its CRLReason value; unspecified maps to None."""
    if reason is None or reason == 0:
        return None
    try:
        return REASON_FLAGS[reason]
    except KeyError:
        raise CrlSigningError(f"{reason} is not an RFC 5280 revocation reason code") from None


def signature_hash(key: object) -> hashes.HashAlgorithm:
    """SHA-256 for P-256 keys and smaller, SHA-384 otherwise, as the leaf signer chooses."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size <= 256:
        return hashes.SHA256()
    return hashes.SHA384()


class CrlSigner:
    """Signs the CRL shards of one issuing CA."""

    def __init__(self, certificate: x509.Certificate, key_path: Path) -> None:
        self.certificate = certificate
        self._key = read_private_key(key_path)
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        self._hash = signature_hash(self._key)

    def sign_shard(self, url: str, number: int, this_update: datetime, next_update: datetime,
                   entries: Iterable[RevokedEntry]) -> bytes:
        """Return the DER of the shard at ``url`` listing ``entries``."""
        if not 0 <= number < MAX_CRL_NUMBER:
            raise CrlSigningError(f"CRL number {number} is outside 0 to 2^159")
        if not this_update < next_update <= this_update + MAX_CRL_VALIDITY:
            raise CrlSigningError("nextUpdate must be after thisUpdate and at most 10 days later")

        # onlyContainsUserCerts: the issuing CAs have pathLen 0, so a shard only
        # ever lists leaf certificates.
        idp = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(url)], relative_name=None,
            only_contains_user_certs=True, only_contains_ca_certs=False, only_some_reasons=None,
            indirect_crl=False, only_contains_attribute_certs=False)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(this_update)
            .next_update(next_update)
            .add_extension(self._aki, critical=False)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(idp, critical=True)
        )
        for entry in entries:
            revoked = (x509.RevokedCertificateBuilder()
                       .serial_number(entry.serial_number)
                       .revocation_date(entry.revoked_at))
            flag = reason_flag(entry.reason)
            if flag is not None:
                revoked = revoked.add_extension(x509.CRLReason(flag), critical=False)
            builder = builder.add_revoked_certificate(revoked.build())
        crl = builder.sign(self._key, self._hash)
        return crl.public_bytes(serialization.Encoding.DER)
