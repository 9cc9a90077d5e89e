"""CSR key acceptance: sizes, exponents, close factors and curves."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fleetca.ca.key_policy import WeakKey, check_public_key, fermat_factor


def _close_prime_pair() -> tuple[int, int]:
    """Two 1024-bit primes a small distance apart, so Fermat's method factors their product at once."""
    from sympy import nextprime  # type: ignore[import-untyped]

    p = nextprime(2**1023 + 2**1022)
    return int(p), int(nextprime(p))


def _rsa_public(n: int, e: int = 65537) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(e, n).public_key()


def test_rsa_2048_accepted() -> None:
    check_public_key(rsa.generate_private_key(65537, 2048).public_key())


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=["p256", "p384", "p521"])
def test_nist_curves_accepted(curve: ec.EllipticCurve) -> None:
    check_public_key(ec.generate_private_key(curve).public_key())


def test_rsa_1024_rejected() -> None:
    with pytest.raises(WeakKey, match="size 1024"):
        check_public_key(rsa.generate_private_key(65537, 1024).public_key())


def test_rsa_odd_size_rejected() -> None:
    with pytest.raises(WeakKey, match="size 2056"):
        check_public_key(rsa.generate_private_key(65537, 2056).public_key())


def test_rsa_small_exponent_rejected() -> None:
    with pytest.raises(WeakKey, match="exponent 3"):
        check_public_key(rsa.generate_private_key(3, 2048).public_key())


def test_secp256k1_rejected() -> None:
    with pytest.raises(WeakKey, match="secp256k1"):
        check_public_key(ec.generate_private_key(ec.SECP256K1()).public_key())


def test_ed25519_rejected() -> None:
    with pytest.raises(WeakKey, match="not allowed"):
        check_public_key(ed25519.Ed25519PrivateKey.generate().public_key())


def test_fermat_close_factors_rejected() -> None:
    p, q = _close_prime_pair()
    assert fermat_factor(p * q, 100) in (p, q)
    with pytest.raises(WeakKey, match="factors close"):
        check_public_key(_rsa_public(p * q))


def test_fermat_does_not_factor_normal_key() -> None:
    n = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    assert fermat_factor(n, 100) is None
