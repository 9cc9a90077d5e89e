"""Profiles of the issuing CA certificate: what makes it technically constrained.

Three profiles, chosen when the CA is created:

``strict`` (the default)
    A critical Name Constraints extension with permitted dNSName and iPAddress
    subtrees, every IP family without a permitted range excluded, EKU serverAuth
    and clientAuth, pathLen 0. OpenSSL, GnuTLS, wolfSSL and pyca/cryptography
    verify it; mbedTLS 2.28 refuses it (see ``embedded``).

``baseline``
    Follows the CA/Browser Forum Baseline Requirements §7.1.2.3 and §7.1.5 for a
    technically constrained TLS subordinate CA: a critical Name Constraints
    extension with permitted dNSName, iPAddress (or the whole family excluded) and
    directoryName subtrees, the domain-validated certificate policy, a CRL
    distribution point and Authority Information Access. pkilint's CA/B linter
    accepts it. Measured trade-off: pyca/cryptography's verifier (43 and later)
    refuses a critical Name Constraints extension that holds a directoryName, and
    mbedTLS 2.28 (Debian 12, as in lighttpd's mod_mbedtls) refuses to load a chain
    whose issuing CA carries a critical Name Constraints extension at all.

``embedded``
    Tuned for the widest verifier support: the same dNSName and iPAddress
    constraints, marked non-critical and without a directoryName, so mbedTLS 2.28
    and pyca/cryptography load and verify the chain. Verifiers that understand the
    extension (OpenSSL, GnuTLS, wolfSSL, BoringSSL in Chromium) still enforce it;
    a verifier that does not understand it ignores it instead of failing. This is a
    departure from the Baseline Requirements' "SHOULD be critical" and is listed in
    docs/divergences.md.

Leaves of a ``baseline`` CA carry an empty subject with a critical SAN, because a
subject DN outside the permitted directoryName subtree would violate the constraint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from fleetca.ca.constraints import NameConstraints

STRICT = "strict"
BASELINE = "baseline"
EMBEDDED = "embedded"
CA_PROFILES = (STRICT, BASELINE, EMBEDDED)

# CA/Browser Forum domain-validated policy (BR §7.1.6.1).
DOMAIN_VALIDATED_POLICY = ObjectIdentifier("2.23.140.1.2.1")

# BR §6.3.2 maximum subscriber certificate validity, by the date of issuance.
BR_LIFETIME_CAPS = (
    (datetime(2029, 3, 15, tzinfo=UTC), timedelta(days=47)),
    (datetime(2027, 3, 15, tzinfo=UTC), timedelta(days=100)),
    (datetime(2026, 3, 15, tzinfo=UTC), timedelta(days=200)),
    (datetime(1970, 1, 1, tzinfo=UTC), timedelta(days=398)),
)


def br_lifetime_cap(at: datetime) -> timedelta:
    """Return the maximum validity the Baseline Requirements allow for a certificate issued at ``at``."""
    for start, cap in BR_LIFETIME_CAPS:
        if at >= start:
            return cap
    return BR_LIFETIME_CAPS[-1][1]


@dataclass(frozen=True)
class IssuingCaSpec:
    """Everything that goes into an issuing CA certificate except keys and validity."""

    name: str
    profile: str
    organization: str
    country: str | None
    constraints: NameConstraints
    crl_url: str | None = None  # the root's CRL, for the baseline profile
    ca_issuers_url: str | None = None  # where the root certificate is published

    def __post_init__(self) -> None:
        if self.profile not in CA_PROFILES:
            raise ValueError(f"unknown CA profile {self.profile!r}: use {' or '.join(CA_PROFILES)}")
        if self.country is not None and (len(self.country) != 2 or not self.country.isalpha()
                                         or not self.country.isupper()):
            raise ValueError(f"invalid country {self.country!r}: use a two-letter ISO 3166 code such as DE")
        if self.profile == BASELINE:
            if self.country is None:
                raise ValueError("the baseline profile needs --country, a two-letter ISO 3166 code")
            if not (self.crl_url and self.ca_issuers_url):
                raise ValueError("the baseline profile needs the root's CRL URL and certificate URL")

    @property
    def constraints_critical(self) -> bool:
        return self.profile != EMBEDDED

    @property
    def leaf_subject_allowed(self) -> bool:
        """Whether leaves may carry a CN; a baseline CA's directoryName constraint forbids it."""
        return self.profile != BASELINE

    def _organization_name(self) -> list[x509.NameAttribute]:
        country = [x509.NameAttribute(NameOID.COUNTRY_NAME, self.country)] if self.country else []
        return country + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization)]

    def subject(self) -> x509.Name:
        return x509.Name(self._organization_name() + [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{self.organization} Issuing CA {self.name}")])

    def directory_name_subtree(self) -> x509.Name:
        """Return the permitted directoryName: the CA's own country and organization."""
        return x509.Name(self._organization_name())

    def name_constraints(self) -> x509.NameConstraints:
        base = self.constraints.extension()
        if self.profile != BASELINE:
            return base
        permitted = list(base.permitted_subtrees or []) + [x509.DirectoryName(self.directory_name_subtree())]
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=base.excluded_subtrees)

    def extensions(self) -> list[tuple[x509.ExtensionType, bool]]:
        """Return the issuing CA's extensions with their criticality, key identifiers excluded."""
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                           data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                           encipher_only=False, decipher_only=False), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            (self.name_constraints(), self.constraints_critical),
        ]
        if self.profile == BASELINE:
            assert self.crl_url and self.ca_issuers_url
            extensions += [
                (x509.CertificatePolicies([x509.PolicyInformation(DOMAIN_VALIDATED_POLICY, None)]), False),
                (x509.CRLDistributionPoints([x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(self.crl_url)], relative_name=None,
                    reasons=None, crl_issuer=None)]), False),
                (x509.AuthorityInformationAccess([x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(self.ca_issuers_url))]),
                 False),
            ]
        return extensions
