"""Name constraints: matching and the X.509 extension they produce."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509

from fleetca.ca.constraints import NameConstraints
from fleetca.domain import Identifier

CONSTRAINTS = NameConstraints.build(["devices.example.test", ".Lab.Example.TEST."], ["10.20.0.0/16"])

CASES = [
    ("ok/exact-suffix", Identifier("dns", "devices.example.test"), True),
    ("ok/below-suffix", Identifier("dns", "r1.devices.example.test"), True),
    ("ok/wildcard-below", Identifier("dns", "*.devices.example.test"), True),
    ("ok/normalised-suffix", Identifier("dns", "x.lab.example.test"), True),
    ("ok/ip-in-range", Identifier("ip", "10.20.3.4"), True),
    ("fail/sibling-label", Identifier("dns", "evildevices.example.test"), False),
    ("fail/parent", Identifier("dns", "example.test"), False),
    ("fail/other-domain", Identifier("dns", "devices.example.com"), False),
    ("fail/ip-outside", Identifier("ip", "10.21.0.1"), False),
    ("fail/ipv6", Identifier("ip", "2001:db8::1"), False),
]


@pytest.mark.parametrize(("identifier", "permitted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_constraints_permit(identifier: Identifier, permitted: bool) -> None:
    assert CONSTRAINTS.permits(identifier) is permitted


def test_extension_excludes_unpermitted_ip_families() -> None:
    extension = CONSTRAINTS.extension()
    assert extension.permitted_subtrees == [
        x509.DNSName("devices.example.test"), x509.DNSName("lab.example.test"),
        x509.IPAddress(ipaddress.ip_network("10.20.0.0/16")),
    ]
    assert extension.excluded_subtrees == [x509.IPAddress(ipaddress.ip_network("::/0"))]


def test_dns_only_constraints_exclude_all_ips() -> None:
    extension = NameConstraints.build(["devices.example.test"]).extension()
    assert extension.excluded_subtrees == [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                                           x509.IPAddress(ipaddress.ip_network("::/0"))]


@pytest.mark.parametrize(("dns", "ips"), [([], []), (["*.example.test"], []), (["bücher.test"], []),
                                          (["ok.test"], ["10.0.0.1/8"]), (["ok.test"], ["not-an-ip"])],
                         ids=["empty", "wildcard-suffix", "u-label", "host-bits-set", "garbage-ip"])
def test_invalid_constraints_raise(dns: list[str], ips: list[str]) -> None:
    with pytest.raises(ValueError):
        NameConstraints.build(dns, ips)


def test_constraints_json_round_trip() -> None:
    assert NameConstraints.from_json(CONSTRAINTS.to_json()) == CONSTRAINTS
