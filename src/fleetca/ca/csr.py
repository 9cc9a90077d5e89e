"""CSR checks at finalize (RFC 8555 §7.4).

The CSR must be correctly self-signed and name exactly the order's identifiers,
in its Common Name and/or its Subject Alternative Names, in any order and case.
Other SAN types (email, URI) are ignored: fleetca certifies only the order's
identifiers, so they never reach a certificate.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from fleetca.acme.identifiers import canonical_dns_name, ip_address
from fleetca.ca.key_policy import WeakKey, check_public_key
from fleetca.domain import Identifier

MAX_CSR_BYTES = 16 * 1024


class CsrRejected(ValueError):
    """The CSR cannot be used for this order; the message says why."""


def load_csr(der: bytes) -> x509.CertificateSigningRequest:
    if len(der) > MAX_CSR_BYTES:
        raise CsrRejected(f"CSR is larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise CsrRejected("CSR is not valid DER-encoded PKCS#10") from exc
    try:
        public_key = csr.public_key()
        signature_ok = csr.is_signature_valid
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise CsrRejected(f"CSR public key or signature cannot be read: {exc}") from exc
    if not signature_ok:
        raise CsrRejected("CSR signature does not verify with its public key")
    try:
        check_public_key(public_key)
    except WeakKey as exc:
        raise CsrRejected(str(exc)) from exc
    return csr


def csr_identifiers(csr: x509.CertificateSigningRequest) -> set[Identifier]:
    """Collect the identifiers a CSR names, in canonical form."""
    found: set[Identifier] = set()
    try:
        common_names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CsrRejected(f"CSR extensions cannot be parsed: {exc}") from exc
    for attribute in common_names:
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.decode("utf-8", "replace")
        found.add(_identifier_from_text(value))
    if san is not None:
        for name in san.get_values_for_type(x509.DNSName):
            found.add(_identifier_from_text(name, dns_only=True))
        for address in san.get_values_for_type(x509.IPAddress):
            found.add(Identifier("ip", address.compressed))
    return found


def _identifier_from_text(value: str, dns_only: bool = False) -> Identifier:
    if not dns_only:
        address = ip_address(value)
        if address is not None:
            return Identifier("ip", address.compressed)
    name, problem = canonical_dns_name(value)
    if name is None:
        raise CsrRejected(f"CSR names an invalid identifier: {problem.detail if problem else value}")
    return Identifier("dns", name)


def check_csr_matches_order(csr: x509.CertificateSigningRequest, ordered: list[Identifier]) -> None:
    named = csr_identifiers(csr)
    expected = set(ordered)
    if named != expected:
        missing = sorted(i.value for i in expected - named)
        extra = sorted(i.value for i in named - expected)
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"not in the order: {', '.join(extra)}")
        raise CsrRejected("CSR names differ from the order's identifiers: " + "; ".join(parts))
