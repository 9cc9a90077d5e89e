"""Issuance policy of an issuing CA: which identifiers it may certify.

The check runs at newOrder, so a client learns at once that a name is refused,
and the signer repeats the constraint part before it signs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetca.acme.identifiers import raise_identifier_problems
from fleetca.acme.problems import AcmeProblem, Subproblem
from fleetca.ca.constraints import NameConstraints
from fleetca.ca.patterns import pattern_matches
from fleetca.domain import Identifier


DEFAULT_MAX_IDENTIFIERS = 100


@dataclass(frozen=True)
class IssuancePolicy:
    """The rules for the identifiers an issuing CA certifies, beyond its name constraints.

    Denied patterns win over allowed ones; with no allowed pattern, everything
    inside the constraints is allowed. Pattern syntax is ``fleetca.ca.patterns``'.
    """

    constraints: NameConstraints
    allow_wildcards: bool = True
    allow_ip_identifiers: bool = True
    allowed_patterns: tuple[str, ...] = ()
    denied_patterns: tuple[str, ...] = ()
    max_identifiers: int = DEFAULT_MAX_IDENTIFIERS

    def to_json(self) -> dict[str, Any]:
        return {"allow_wildcards": self.allow_wildcards, "allow_ip_identifiers": self.allow_ip_identifiers,
                "allowed_patterns": list(self.allowed_patterns), "denied_patterns": list(self.denied_patterns),
                "max_identifiers": self.max_identifiers}

    @classmethod
    def from_config(cls, constraints: NameConstraints, config: dict[str, Any]) -> "IssuancePolicy":
        return cls(constraints=constraints, allow_wildcards=bool(config.get("allow_wildcards", True)),
                   allow_ip_identifiers=bool(config.get("allow_ip_identifiers", True)),
                   allowed_patterns=tuple(config.get("allowed_patterns", ())),
                   denied_patterns=tuple(config.get("denied_patterns", ())),
                   max_identifiers=int(config.get("max_identifiers", DEFAULT_MAX_IDENTIFIERS)))

    def check_identifiers(self, ca_name: str, identifiers: list[Identifier]) -> None:
        """Raise rejectedIdentifier, with one subproblem per refused identifier."""
        if len(identifiers) > self.max_identifiers:
            raise AcmeProblem("rejectedIdentifier", f"issuing CA {ca_name} allows at most {self.max_identifiers} "
                              f"identifiers per order; this order has {len(identifiers)}")
        problems: list[Subproblem] = []
        for ident in identifiers:
            detail = self._refusal(ca_name, ident)
            if detail is not None:
                problems.append(Subproblem("rejectedIdentifier", detail, ident.to_json()))
        if problems:
            raise_identifier_problems(problems)

    def _refusal(self, ca_name: str, ident: Identifier) -> str | None:
        if ident.type == "dns" and ident.value.startswith("*.") and not self.allow_wildcards:
            return f"wildcard names are not allowed by issuing CA {ca_name}"
        if ident.type == "ip" and not self.allow_ip_identifiers:
            return f"IP address identifiers are not allowed by issuing CA {ca_name}"
        if not self.constraints.permits(ident):
            return (f"{ident.value} is outside the name constraints of issuing CA {ca_name}, "
                    f"which permit {self.constraints.describe()}")
        denied = next((p for p in self.denied_patterns if pattern_matches(p, ident.type, ident.value)), None)
        if denied is not None:
            return f"{ident.value} matches the denied pattern {denied} of issuing CA {ca_name}"
        if self.allowed_patterns and not any(pattern_matches(p, ident.type, ident.value)
                                             for p in self.allowed_patterns):
            return f"{ident.value} matches none of the allowed patterns of issuing CA {ca_name}"
        return None
