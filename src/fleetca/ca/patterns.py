"""Identifier patterns, shared by issuance policy rules and EAB pre-authorizations."""

from __future__ import annotations

import ipaddress

from fleetca.acme.identifiers import canonical_dns_name
from fleetca.domain import Identifier


def pattern_matches(pattern: str, identifier_type: str, value: str) -> bool:
    """Match one identifier pattern.

    ``name.example`` matches that name only; ``*.zone.example`` matches any name
    exactly one label below ``zone.example`` (as a certificate wildcard does, so a
    pattern never covers a whole subtree by accident); ``**.zone.example`` matches
    every name below ``zone.example`` at any depth; ``ip:10.1.0.0/16`` matches IP
    identifiers in that range.
    """
    if pattern.startswith("ip:"):
        if identifier_type != "ip":
            return False
        return ipaddress.ip_address(value) in ipaddress.ip_network(pattern[3:])
    if identifier_type != "dns":
        return False
    if pattern.startswith("**."):
        return value.endswith(pattern[2:]) and len(value) > len(pattern) - 2
    if pattern.startswith("*.") and not value.startswith("*."):
        head, _, rest = value.partition(".")
        return bool(head) and rest == pattern[2:]
    return value == pattern


def normalize_pattern(pattern: str) -> str:
    """Canonical form of a pattern, raising ValueError with the accepted forms."""
    text = pattern.strip().lower()
    if text.startswith("**."):
        return "**." + normalize_pattern(text[3:])
    if text.startswith("ip:"):
        try:
            return "ip:" + str(ipaddress.ip_network(text[3:], strict=True))
        except ValueError as exc:
            raise ValueError(f"invalid IP pattern {pattern!r}: expected ip:CIDR such as ip:10.1.0.0/16") from exc
    name, problem = canonical_dns_name(text)
    if name is None:
        raise ValueError(f"invalid name pattern {pattern!r}: {problem.detail if problem else 'not a DNS name'}")
    return name


def pattern_identifier(pattern: str) -> Identifier:
    """Return a representative identifier of the pattern, to check it against the CA's constraints."""
    if pattern.startswith("ip:"):
        return Identifier("ip", str(ipaddress.ip_network(pattern[3:]).network_address))
    return Identifier("dns", pattern.removeprefix("**.").removeprefix("*."))
