"""Acceptance rules for the public key in a CSR.

The rules follow the CA/Browser Forum Baseline Requirements §6.1.5 and §6.1.6 and
what Boulder enforces: RSA 2048, 3072 or 4096 bits with exponent 65537 or more,
no factors that Fermat's method finds quickly, and ECDSA on P-256, P-384 or P-521.
"""

from __future__ import annotations

import math

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

ALLOWED_RSA_SIZES = (2048, 3072, 4096)
ALLOWED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
FERMAT_ROUNDS = 100
# Names of the key types a certificate profile can allow.
KEY_TYPES = ("ec256", "ec384", "ec521", "rsa2048", "rsa3072", "rsa4096")


class WeakKey(ValueError):
    """The key must not be certified; the message says why."""


def key_type_name(key: CertificatePublicKeyTypes) -> str:
    """The KEY_TYPES name of a key that passed :func:`check_public_key`."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ec{key.curve.key_size}"
    raise WeakKey(f"key type {type(key).__name__} is not allowed")


def check_public_key(key: CertificatePublicKeyTypes) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        _check_rsa(key)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            raise WeakKey(f"ECDSA curve {key.curve.name} is not allowed; use P-256, P-384 or P-521")
    else:
        raise WeakKey(f"key type {type(key).__name__} is not allowed; use RSA or ECDSA")


def _check_rsa(key: rsa.RSAPublicKey) -> None:
    numbers = key.public_numbers()
    if key.key_size not in ALLOWED_RSA_SIZES:
        raise WeakKey(f"RSA key size {key.key_size} is not allowed; use 2048, 3072 or 4096 bits")
    if numbers.e < 65537 or numbers.e % 2 == 0:
        raise WeakKey(f"RSA public exponent {numbers.e} is not allowed; use an odd exponent of at least 65537")
    factor = fermat_factor(numbers.n, FERMAT_ROUNDS)
    if factor is not None:
        raise WeakKey("RSA modulus has factors close to each other and can be factored")


def fermat_factor(n: int, rounds: int) -> int | None:
    """Return a factor of ``n`` found by Fermat's method within ``rounds`` steps, else None."""
    a = math.isqrt(n)
    if a * a < n:
        a += 1
    for _ in range(rounds):
        b2 = a * a - n
        b = math.isqrt(b2)
        if b * b == b2:
            return a - b
        a += 1
    return None
