"""Certificate profiles: what a leaf certificate of an issuing CA looks like."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

EKU_CHOICES = ("serverAuth", "clientAuth")
DEFAULT_LIFETIME = timedelta(days=7)
DEFAULT_PROFILE_NAME = "default"


@dataclass(frozen=True)
class CertificateProfile:
    """Leaf settings selected by name in newOrder (draft-ietf-acme-profiles)."""

    name: str
    description: str
    lifetime: timedelta = DEFAULT_LIFETIME
    eku: tuple[str, ...] = EKU_CHOICES
    common_name_from_first_name: bool = True

    def __post_init__(self) -> None:
        if not self.eku or any(e not in EKU_CHOICES for e in self.eku):
            raise ValueError(f"profile {self.name!r}: eku must be a non-empty subset of {EKU_CHOICES}")
        if not timedelta(hours=1) <= self.lifetime <= timedelta(days=398):
            raise ValueError(f"profile {self.name!r}: lifetime must be between 1 hour and 398 days")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "lifetime_seconds": int(self.lifetime.total_seconds()),
            "eku": list(self.eku),
            "common_name_from_first_name": self.common_name_from_first_name,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "CertificateProfile":
        return cls(
            name=value["name"],
            description=value.get("description", ""),
            lifetime=timedelta(seconds=int(value.get("lifetime_seconds", DEFAULT_LIFETIME.total_seconds()))),
            eku=tuple(value.get("eku", EKU_CHOICES)),
            common_name_from_first_name=bool(value.get("common_name_from_first_name", True)),
        )


def default_profile(lifetime: timedelta = DEFAULT_LIFETIME) -> CertificateProfile:
    return CertificateProfile(
        name=DEFAULT_PROFILE_NAME,
        description=f"TLS server and client certificate valid for {_human(lifetime)}",
        lifetime=lifetime,
    )


def _human(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24} days" if hours % 24 == 0 else f"{hours} hours"
