"""Certificate linting with pkilint: RFC 5280, and the CA/B Forum TLS linter for baseline CAs."""

from __future__ import annotations

from dataclasses import dataclass

from pkilint import finding_filter, loader
from pkilint.cabf import serverauth
from pkilint.pkix import certificate, extension, name
from pkilint.validation import ValidationFindingSeverity


@dataclass(frozen=True)
class Finding:
    """One pkilint finding: its code, severity and where in the certificate it applies."""

    code: str
    severity: str
    node: str
    message: str | None

    def __str__(self) -> str:
        text = f"{self.code} ({self.severity}) at {self.node}"
        return f"{text}: {self.message}" if self.message else text


def _pkix_validator():  # type: ignore[no-untyped-def]
    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


def lint_certificate(der: bytes, *, serverauth_rules: bool,
                     threshold: ValidationFindingSeverity = ValidationFindingSeverity.ERROR) -> list[Finding]:
    """Return the findings at ``threshold`` or worse; CA/B server-auth rules when ``serverauth_rules``."""
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    if serverauth_rules:
        certificate_type = serverauth.determine_certificate_type(document)
        validator = certificate.create_pkix_certificate_validator_container(
            serverauth.create_decoding_validators(), serverauth.create_validators(certificate_type))
        results = validator.validate(document.root)
        results, _ = finding_filter.filter_results(
            serverauth.create_serverauth_finding_filters(certificate_type), results)
    else:
        results = _pkix_validator().validate(document.root)
    findings = []
    for result in results:
        for description in result.finding_descriptions:
            if description.finding.severity <= threshold:
                findings.append(Finding(description.finding.code, description.finding.severity.name,
                                        result.node.path, description.message))
    return findings
