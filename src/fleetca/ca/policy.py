"""Issuance policy of an issuing CA: which identifiers it may certify.

The check runs at newOrder, so a client learns at once that a name is refused,
and the signer repeats the constraint part before it signs.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetca.acme.identifiers import raise_identifier_problems
from fleetca.acme.problems import Subproblem
from fleetca.ca.constraints import NameConstraints
from fleetca.domain import Identifier


@dataclass(frozen=True)
class IssuancePolicy:
    constraints: NameConstraints
    allow_wildcards: bool = True
    allow_ip_identifiers: bool = True

    def check_identifiers(self, ca_name: str, identifiers: list[Identifier]) -> None:
        """Raise rejectedIdentifier, with one subproblem per refused identifier."""
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
        return None
