"""Certificate profiles: what a leaf certificate of an issuing CA looks like."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fleetca.ca.key_policy import KEY_TYPES

EKU_CHOICES = ("serverAuth", "clientAuth")
DEFAULT_LIFETIME = timedelta(days=7)
DEFAULT_PROFILE_NAME = "default"
# Certificates valid this long or less may leave out the CRL distribution point
# (Baseline Requirements, short-lived subscriber certificates).
SHORT_LIVED_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class CertificateProfile:
    """Leaf settings selected by name in newOrder (draft-ietf-acme-profiles)."""

    name: str
    description: str
    lifetime: timedelta = DEFAULT_LIFETIME
    eku: tuple[str, ...] = EKU_CHOICES
    common_name_from_first_name: bool = True
    # Whether leaf certificates name their CRL shard. The Baseline Requirements let
    # certificates valid for 7 days or less leave it out.
    crl_distribution_point: bool = True
    # Whether leaf certificates carry an OCSP URL in Authority Information Access.
    ocsp: bool = False
    # CSR key types the profile certifies, named as in ``fleetca.ca.key_policy.KEY_TYPES``.
    key_types: tuple[str, ...] = KEY_TYPES

    def __post_init__(self) -> None:
        if not self.eku or any(e not in EKU_CHOICES for e in self.eku):
            raise ValueError(f"profile {self.name!r}: eku must be a non-empty subset of {EKU_CHOICES}")
        unknown = [k for k in self.key_types if k not in KEY_TYPES]
        if not self.key_types or unknown:
            raise ValueError(f"profile {self.name!r}: key types must be a non-empty subset of {', '.join(KEY_TYPES)}")
        if not timedelta(hours=1) <= self.lifetime <= timedelta(days=398):
            raise ValueError(f"profile {self.name!r}: lifetime must be between 1 hour and 398 days")
        if not self.crl_distribution_point and self.lifetime > SHORT_LIVED_LIFETIME:
            raise ValueError(f"profile {self.name!r}: only profiles of 7 days or less may leave out "
                             "the CRL distribution point")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "lifetime_seconds": int(self.lifetime.total_seconds()),
            "eku": list(self.eku),
            "common_name_from_first_name": self.common_name_from_first_name,
            "crl_distribution_point": self.crl_distribution_point,
            "ocsp": self.ocsp,
            "key_types": list(self.key_types),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "CertificateProfile":
        return cls(
            name=value["name"],
            description=value.get("description", ""),
            lifetime=timedelta(seconds=int(value.get("lifetime_seconds", DEFAULT_LIFETIME.total_seconds()))),
            eku=tuple(value.get("eku", EKU_CHOICES)),
            common_name_from_first_name=bool(value.get("common_name_from_first_name", True)),
            crl_distribution_point=bool(value.get("crl_distribution_point", True)),
            ocsp=bool(value.get("ocsp", False)),
            key_types=tuple(value.get("key_types", KEY_TYPES)),
        )


def default_profile(lifetime: timedelta = DEFAULT_LIFETIME, common_name: bool = True) -> CertificateProfile:
    return CertificateProfile(
        name=DEFAULT_PROFILE_NAME,
        description=f"TLS server and client certificate valid for {_human(lifetime)}",
        lifetime=lifetime,
        common_name_from_first_name=common_name,
    )


def _human(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24} days" if hours % 24 == 0 else f"{hours} hours"
