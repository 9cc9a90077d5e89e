"""Name constraints of an issuing CA (RFC 5280 §4.2.1.10) and matching against them.

The same :class:`NameConstraints` value builds the CA certificate's extension and
decides, at newOrder and again in the signer, whether an identifier is allowed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from fleetca.domain import Identifier

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALL_IPV4 = ipaddress.ip_network("0.0.0.0/0")
ALL_IPV6 = ipaddress.ip_network("::/0")


def normalize_dns_suffix(value: str) -> str:
    """Lowercase a permitted DNS suffix and strip a leading or trailing dot."""
    suffix = value.strip().lower().strip(".")
    if not suffix or " " in suffix or "*" in suffix:
        raise ValueError(f"invalid DNS suffix {value!r}: expected a name such as devices.example.test")
    try:
        suffix.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"DNS suffix {value!r} must be in A-label (xn--) form") from exc
    return suffix


@dataclass(frozen=True)
class NameConstraints:
    """Permitted DNS suffixes and IP ranges. Every IP range not permitted is excluded."""

    permitted_dns: tuple[str, ...]
    permitted_ips: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def build(cls, dns: list[str] | tuple[str, ...], ips: list[str] | tuple[str, ...] = ()) -> "NameConstraints":
        suffixes = tuple(dict.fromkeys(normalize_dns_suffix(d) for d in dns))
        networks = []
        for text in ips:
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=True))
            except ValueError as exc:
                raise ValueError(f"invalid IP range {text!r}: expected CIDR such as 192.0.2.0/24 ({exc})") from exc
        if not suffixes and not networks:
            raise ValueError("an issuing CA needs at least one permitted DNS suffix or IP range")
        return cls(permitted_dns=suffixes, permitted_ips=tuple(networks))

    def to_json(self) -> dict[str, Any]:
        return {"permitted_dns": list(self.permitted_dns), "permitted_ips": [str(n) for n in self.permitted_ips]}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "NameConstraints":
        return cls.build(value.get("permitted_dns", []), value.get("permitted_ips", []))

    def excluded_ips(self) -> list[IPNetwork]:
        """IP families with no permitted range, excluded whole.

        A permitted IPv4 range alone already forbids other IPv4 addresses, but
        verifiers differ on whether it also forbids IPv6 ones, so a family that has
        no permitted range is excluded explicitly.
        """
        excluded: list[IPNetwork] = []
        if not any(n.version == 4 for n in self.permitted_ips):
            excluded.append(ALL_IPV4)
        if not any(n.version == 6 for n in self.permitted_ips):
            excluded.append(ALL_IPV6)
        return excluded

    def extension(self) -> x509.NameConstraints:
        permitted: list[x509.GeneralName] = [x509.DNSName(s) for s in self.permitted_dns]
        permitted += [x509.IPAddress(n) for n in self.permitted_ips]
        excluded: list[x509.GeneralName] = [x509.IPAddress(n) for n in self.excluded_ips()]
        return x509.NameConstraints(permitted_subtrees=permitted or None, excluded_subtrees=excluded or None)

    def permits(self, identifier: Identifier) -> bool:
        if identifier.type == "dns":
            name = identifier.value.removeprefix("*.")
            return any(name == s or name.endswith("." + s) for s in self.permitted_dns)
        if identifier.type == "ip":
            address = ipaddress.ip_address(identifier.value)
            return any(address in n for n in self.permitted_ips)
        return False

    def describe(self) -> str:
        parts = [f"DNS names under {', '.join(self.permitted_dns)}"] if self.permitted_dns else []
        if self.permitted_ips:
            parts.append(f"IP addresses in {', '.join(str(n) for n in self.permitted_ips)}")
        return " or ".join(parts) if parts else "no names"
