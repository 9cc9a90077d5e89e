"""The leaf certificate signer: the only code that uses an issuing CA's private key.

It re-checks the name constraints itself before signing, so a bug in the ACME
layer cannot produce a certificate the issuing CA is not allowed to issue.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetca.ca.constraints import NameConstraints
from fleetca.ca.profiles import CertificateProfile
from fleetca.domain import Identifier
from fleetca.signing.keys import read_private_key

EKU_OIDS = {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH}
MAX_COMMON_NAME_LENGTH = 64


# Returns the problems found in a DER certificate; an empty list means it may be signed.
Linter = Callable[[bytes], list[str]]


class SigningRefused(Exception):
    """Raised when the signer does not sign; the message names the check that failed."""


@dataclass(frozen=True)
class LeafRequest:
    """The certificate contents the ACME layer requests from the signer."""

    public_key: CertificatePublicKeyTypes
    identifiers: tuple[Identifier, ...]
    not_before: datetime
    not_after: datetime
    profile: CertificateProfile
    # A positive serial of at least 64 random bits; the signer draws one when None.
    serial_number: int | None = None
    # URL of the certificate's CRL shard; the CRL's issuingDistributionPoint repeats it byte for byte.
    crl_url: str | None = None
    # URL of the OCSP responder, put in Authority Information Access.
    ocsp_url: str | None = None
    # URL of the issuing CA certificate (DER), put in Authority Information Access.
    ca_issuers_url: str | None = None
    # Certificate policy OIDs, dotted; the baseline CA profile requires the domain-validated one.
    policy_oids: tuple[str, ...] = ()


class IssuingCaSigner:
    """Signs leaf certificates with one issuing CA's key."""

    def __init__(self, name: str, certificate: x509.Certificate, key_path: Path,
                 constraints: NameConstraints) -> None:
        self.name = name
        self.key_path = key_path
        self.certificate = certificate
        self.constraints = constraints
        self._key = read_private_key(key_path)
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        self._throwaway_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None
        self._hash = hashes.SHA256() if isinstance(self._key, ec.EllipticCurvePrivateKey) and \
            self._key.curve.key_size <= 256 else hashes.SHA384()

    def sign_leaf(self, request: LeafRequest, lint: Linter | None = None) -> x509.Certificate:
        """Check ``request`` against the CA's constraints and validity, then sign it.

        With ``lint``, the certificate is first signed by a throwaway key of the
        same type and linted; the CA key signs only when the linter finds nothing.
        """
        if not request.identifiers:
            raise SigningRefused("no identifiers to certify")
        outside = [i.value for i in request.identifiers if not self.constraints.permits(i)]
        if outside:
            raise SigningRefused(f"identifiers outside the constraints of CA {self.name}: {', '.join(outside)}")
        if request.serial_number is not None and not 0 < request.serial_number < 2**159:
            raise SigningRefused("the serial number must be positive and below 2^159")
        if request.not_after <= request.not_before:
            raise SigningRefused("notAfter must be later than notBefore")
        if request.not_after > self.certificate.not_valid_after_utc:
            raise SigningRefused("the certificate would outlive its issuing CA")
        if request.not_after - request.not_before > request.profile.lifetime + timedelta(minutes=1):
            raise SigningRefused(f"validity is longer than profile {request.profile.name} allows")

        san: list[x509.GeneralName] = []
        for ident in request.identifiers:
            if ident.type == "dns":
                san.append(x509.DNSName(ident.value))
            else:
                san.append(x509.IPAddress(ipaddress.ip_address(ident.value)))

        # RFC 5280 §4.2.1.6: with an empty subject the SAN extension must be critical.
        dns_names = [i.value for i in request.identifiers if i.type == "dns"]
        common_name = dns_names[0] if request.profile.common_name_from_first_name and dns_names else None
        if common_name is not None and len(common_name) > MAX_COMMON_NAME_LENGTH:
            common_name = None
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])

        key_encipherment = isinstance(request.public_key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(request.public_key)
            .serial_number(request.serial_number or x509.random_serial_number())
            .not_valid_before(request.not_before)
            .not_valid_after(request.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=key_encipherment, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([EKU_OIDS[e] for e in request.profile.eku]), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=common_name is None)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(request.public_key), critical=False)
            .add_extension(self._aki, critical=False)
        )
        if request.crl_url is not None:
            point = x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(request.crl_url)],
                                           relative_name=None, reasons=None, crl_issuer=None)
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        access: list[x509.AccessDescription] = []
        if request.ocsp_url is not None:
            access.append(x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP,
                                                 x509.UniformResourceIdentifier(request.ocsp_url)))
        if request.ca_issuers_url is not None:
            access.append(x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS,
                                                 x509.UniformResourceIdentifier(request.ca_issuers_url)))
        if access:
            builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
        if request.policy_oids:
            policies = [x509.PolicyInformation(x509.ObjectIdentifier(oid), None) for oid in request.policy_oids]
            builder = builder.add_extension(x509.CertificatePolicies(policies), critical=False)
        if lint is not None:
            draft = builder.sign(self._lint_key(), self._hash)
            findings = lint(draft.public_bytes(serialization.Encoding.DER))
            if findings:
                raise SigningRefused("pre-issuance lint failed: " + "; ".join(findings))
        return builder.sign(self._key, self._hash)

    def _lint_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        if self._throwaway_key is None:
            if isinstance(self._key, ec.EllipticCurvePrivateKey):
                self._throwaway_key = ec.generate_private_key(self._key.curve)
            else:
                self._throwaway_key = rsa.generate_private_key(65537, self._key.key_size)
        return self._throwaway_key

    def chain_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)
