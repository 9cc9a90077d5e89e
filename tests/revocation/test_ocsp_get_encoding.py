"""Decoding the base64 request of an OCSP GET (RFC 5019 §5), whatever characters it contains."""

from __future__ import annotations

import base64

import pytest

from fleetca.revocation.routes import decode_get_request

# DER bytes chosen so that their base64 starts or ends with "/" or contains "+".
CASES = [
    ("ok/leading-slash", b"\xfc\x00\x00\x01\x02\x03"),
    ("ok/trailing-slash", b"\x01\x02\x03\x00\x00\x3f"),
    ("ok/plus-inside", b"\x00\x00\x00\xf8\x01\x02"),
    ("ok/padding", b"\x30\x03\x0a\x01"),
]


@pytest.mark.parametrize("der", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_standard_base64_round_trips(der: bytes) -> None:
    encoded = base64.b64encode(der).decode()
    assert "/" in encoded or "+" in encoded or "=" in encoded
    assert decode_get_request(encoded) == der


@pytest.mark.parametrize("der", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_url_safe_unpadded_base64_round_trips(der: bytes) -> None:
    encoded = base64.urlsafe_b64encode(der).decode().rstrip("=")
    assert decode_get_request(encoded) == der


def test_plus_turned_into_space_accepted() -> None:
    der = CASES[2][1]
    assert "+" in base64.b64encode(der).decode()
    encoded = base64.b64encode(der).decode().replace("+", " ")
    assert decode_get_request(encoded) == der


def test_not_base64_rejected() -> None:
    assert decode_get_request("not*base64!") is None
