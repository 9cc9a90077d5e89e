"""The issuing CAs a server runs, loaded from storage with their signers and profiles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from fleetca.ca.ca_profiles import BASELINE, STRICT, IssuingCaSpec
from fleetca.ca.constraints import NameConstraints
from fleetca.ca.policy import IssuancePolicy
from fleetca.ca.profiles import DEFAULT_PROFILE_NAME, CertificateProfile, default_profile
from fleetca.signing.issuer import IssuingCaSigner
from fleetca.storage.database import Database


@dataclass
class IssuingCa:
    """One issuing CA as the ACME layer uses it: its policy, profiles and signer."""

    name: str
    certificate: x509.Certificate
    chain_pem: bytes  # the issuing CA certificate and any intermediates, not the root
    policy: IssuancePolicy
    profiles: dict[str, CertificateProfile]
    default_profile: str
    signer: IssuingCaSigner
    external_account_required: bool = False
    ca_profile: str = STRICT
    lint_before_signing: bool = False

    @property
    def is_baseline(self) -> bool:
        return self.ca_profile == BASELINE

    @property
    def constraints(self) -> NameConstraints:
        return self.policy.constraints


def ca_config(spec: IssuingCaSpec, certificate_lifetime: timedelta) -> dict[str, Any]:
    """Build the stored configuration of a new issuing CA."""
    profile = default_profile(certificate_lifetime, common_name=spec.leaf_subject_allowed)
    return {
        "ca_profile": spec.profile,
        "organization": spec.organization,
        "country": spec.country,
        "constraints": spec.constraints.to_json(),
        **IssuancePolicy(spec.constraints).to_json(),
        "lint": False,
        "profiles": [profile.to_json()],
        "default_profile": DEFAULT_PROFILE_NAME,
        "external_account_required": False,
    }


def load_issuing_cas(database: Database, data_dir: Path) -> dict[str, IssuingCa]:
    """Load every active issuing CA and open its signer."""
    with database.transaction() as repo:
        rows = repo.list_issuing_cas()
    cas: dict[str, IssuingCa] = {}
    for row in rows:
        if row["status"] != "active":
            continue
        config = row["config"]
        constraints = NameConstraints.from_json(config["constraints"])
        certificate = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
        key_path = Path(row["key_ref"])
        if not key_path.is_absolute():
            key_path = data_dir / key_path
        profiles = {p["name"]: CertificateProfile.from_json(p) for p in config["profiles"]}
        cas[row["name"]] = IssuingCa(
            name=row["name"],
            certificate=certificate,
            chain_pem=row["certificate_pem"].encode() + row["chain_pem"].encode(),
            policy=IssuancePolicy.from_config(constraints, config),
            profiles=profiles,
            default_profile=config.get("default_profile", DEFAULT_PROFILE_NAME),
            signer=IssuingCaSigner(row["name"], certificate, key_path, constraints),
            external_account_required=bool(config.get("external_account_required", False)),
            ca_profile=config.get("ca_profile", STRICT),
            lint_before_signing=bool(config.get("lint", False)),
        )
    return cas
