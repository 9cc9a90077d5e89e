"""Identifier canonical form and rejection (RFC 8555 §7.1.4, RFC 8738)."""

from __future__ import annotations

import ipaddress

import pytest

from fleetca.acme.identifiers import ip_address, parse_identifiers
from fleetca.acme.problems import AcmeProblem
from fleetca.domain import Identifier

ACCEPTED = [
    ("ok/lowercase", "dns", "Dev1.Devices.Example.TEST", Identifier("dns", "dev1.devices.example.test")),
    ("ok/trailing-dot", "dns", "dev1.devices.example.test.", Identifier("dns", "dev1.devices.example.test")),
    ("ok/wildcard", "dns", "*.r7.devices.example.test", Identifier("dns", "*.r7.devices.example.test")),
    ("ok/a-label", "dns", "xn--bcher-kva.example.test", Identifier("dns", "xn--bcher-kva.example.test")),
    ("ok/ipv4", "ip", "192.0.2.10", Identifier("ip", "192.0.2.10")),
    ("ok/ipv6-compressed", "ip", "2001:DB8:0:0:0:0:0:1", Identifier("ip", "2001:db8::1")),
]

REJECTED = [
    ("fail/u-label", "dns", "bücher.example.test", "rejectedIdentifier"),
    ("fail/bad-a-label", "dns", "xn--zz.example.test", "rejectedIdentifier"),
    ("fail/ip-as-dns", "dns", "192.0.2.1", "rejectedIdentifier"),
    ("fail/ipv6-as-dns", "dns", "2001:db8::1", "rejectedIdentifier"),
    ("fail/bracketed-ipv6-as-dns", "dns", "[2001:db8::1]", "rejectedIdentifier"),
    ("fail/single-label", "dns", "localhost", "rejectedIdentifier"),
    ("fail/underscore", "dns", "a_b.example.test", "rejectedIdentifier"),
    ("fail/leading-hyphen", "dns", "-a.example.test", "rejectedIdentifier"),
    ("fail/inner-wildcard", "dns", "a.*.example.test", "rejectedIdentifier"),
    ("fail/empty-label", "dns", "a..example.test", "rejectedIdentifier"),
    ("fail/long-label", "dns", "a" * 64 + ".example.test", "rejectedIdentifier"),
    ("fail/numeric-tld", "dns", "host.123", "rejectedIdentifier"),
    ("fail/bad-ip", "ip", "300.1.1.1", "malformed"),
    ("fail/mapped-ipv6", "ip", "::ffff:192.0.2.1", "rejectedIdentifier"),
    ("fail/unknown-type", "email", "a@example.test", "unsupportedIdentifier"),
]


@pytest.mark.parametrize(("type_", "value", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_identifier_accepted(type_: str, value: str, expected: Identifier) -> None:
    assert parse_identifiers([{"type": type_, "value": value}]) == [expected]


@pytest.mark.parametrize(("type_", "value", "problem"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_identifier_rejected(type_: str, value: str, problem: str) -> None:
    with pytest.raises(AcmeProblem) as caught:
        parse_identifiers([{"type": type_, "value": value}])
    assert caught.value.type == problem
    assert caught.value.subproblems[0].identifier == {"type": type_, "value": value}


def test_duplicate_identifiers_collapse() -> None:
    parsed = parse_identifiers([{"type": "dns", "value": "a.example.test"},
                                {"type": "dns", "value": "A.example.test."}])
    assert parsed == [Identifier("dns", "a.example.test")]


def test_several_rejections_reported_together() -> None:
    with pytest.raises(AcmeProblem) as caught:
        parse_identifiers([{"type": "dns", "value": "bad_1.example.test"},
                           {"type": "dns", "value": "ok.example.test"},
                           {"type": "dns", "value": "bad_2.example.test"}])
    assert [s.identifier["value"] for s in caught.value.subproblems] == ["bad_1.example.test", "bad_2.example.test"]


@pytest.mark.parametrize("raw", [None, [], "a.example.test", [{"type": "dns"}], [{"type": "dns", "value": 5}]],
                         ids=["none", "empty", "string", "no-value", "number-value"])
def test_malformed_identifier_arrays(raw: object) -> None:
    with pytest.raises(AcmeProblem) as caught:
        parse_identifiers(raw)
    assert caught.value.type == "malformed"


# Text that ipaddress.ip_address accepts or rejects. ip_address must return what it returns.
ADDRESS_TEXTS = [
    ("ipv4", "192.0.2.10"),
    ("ipv6", "2001:db8::1"),
    ("ipv6-scope", "fe80::1%eth0"),
    ("ipv4-mapped", "::ffff:192.0.2.1"),
    ("dns-name", "dev1.devices.example.test"),
    ("three-octets", "192.0.2"),
    ("five-octets", "192.0.2.1.5"),
    ("leading-zero", "192.0.2.010"),
    ("octet-too-large", "192.0.2.300"),
    ("hex-octet", "0x1.2.3.4"),
    ("arabic-indic-digit", "\u0663.1.1.1"),
    ("trailing-space", "192.0.2.1 "),
    ("empty", ""),
    ("bracketed", "[2001:db8::1]"),
    ("colon-name", "a:b"),
]


@pytest.mark.parametrize("text", [c[1] for c in ADDRESS_TEXTS], ids=[c[0] for c in ADDRESS_TEXTS])
def test_ip_address_as_ipaddress_parses(text: str) -> None:
    try:
        expected = ipaddress.ip_address(text)
    except ValueError:
        expected = None
    assert ip_address(text) == expected
