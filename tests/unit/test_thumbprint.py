"""RFC 7638 thumbprints computed from cryptography keys agree with jwcrypto's."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk

from fleetca.acme.jws import public_key_thumbprint


@pytest.mark.parametrize("make_key", [
    lambda: ec.generate_private_key(ec.SECP256R1()),
    lambda: ec.generate_private_key(ec.SECP384R1()),
    lambda: ec.generate_private_key(ec.SECP521R1()),
    lambda: rsa.generate_private_key(65537, 2048),
    lambda: rsa.generate_private_key(3, 2048),
    lambda: ed25519.Ed25519PrivateKey.generate(),
], ids=["p256", "p384", "p521", "rsa2048", "rsa-exponent-3", "ed25519"])
def test_thumbprint_matches_jwcrypto(make_key: Callable[[], Any]) -> None:
    public_key = make_key().public_key()

    assert public_key_thumbprint(public_key) == jwk.JWK.from_pyca(public_key).thumbprint()


def test_thumbprint_of_other_curve_is_none() -> None:
    assert public_key_thumbprint(ec.generate_private_key(ec.SECP256K1()).public_key()) is None
