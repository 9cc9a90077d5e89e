"""Account keys read from a JWS's jwk: the same key, thumbprint and stored members whichever library reads them."""

from __future__ import annotations

import base64
from typing import Any, Callable

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwcrypto import jwk

from fleetca.acme import jws
from fleetca.acme.problems import AcmeProblem


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _ec_members(curve: ec.EllipticCurve) -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    private = ec.generate_private_key(curve)
    exported = orjson.loads(jwk.JWK.from_pyca(private.public_key()).export_public())
    # The members an ACME client sends, without the kid that jwcrypto adds.
    return private, {name: exported[name] for name in ("kty", "crv", "x", "y")}


def _with(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(members: dict[str, Any]) -> dict[str, Any]:
        return {**members, **changes}
    return change


def _padded(members: dict[str, Any]) -> dict[str, Any]:
    return {**members, "x": members["x"] + "="}


def _leading_zero_left_out() -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    # A key whose x starts with a zero byte, written without it, as some encoders do.
    while True:
        private, members = _ec_members(ec.SECP256R1())
        x = private.public_key().public_numbers().x.to_bytes(32, "big")
        if x[0] == 0:
            return private, {**members, "x": _b64(x[1:])}


def _other_unused_bits(members: dict[str, Any]) -> dict[str, Any]:
    # 32 bytes take 43 characters, whose last one carries 2 unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(members["x"][-1])
    return {**members, "x": members["x"][:-1] + alphabet[last ^ 1]}


def _off_curve(members: dict[str, Any]) -> dict[str, Any]:
    return {**members, "y": members["x"]}


# name, curve, alg, how the client's members differ from the plain form, read by cryptography alone
CASES = [
    ("p256-plain", ec.SECP256R1(), "ES256", lambda m: m, True),
    ("p384-plain", ec.SECP384R1(), "ES384", lambda m: m, True),
    ("p256-with-alg-and-kid", ec.SECP256R1(), "ES256", _with(alg="ES256", kid="device-7"), False),
    ("p256-with-unknown-member", ec.SECP256R1(), "ES256", _with(vendor="x"), False),
    ("p256-padded-coordinate", ec.SECP256R1(), "ES256", _padded, False),
]


@pytest.mark.parametrize("curve, alg, change, plain", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_account_key_as_jwcrypto_reads_it(curve: ec.EllipticCurve, alg: str,
                                          change: Callable[[dict[str, Any]], dict[str, Any]], plain: bool) -> None:
    private, members = _ec_members(curve)
    sent = change(members)
    key = jws.import_account_key(sent, alg)
    reference = jwk.JWK(**sent)

    assert (key._jwk is None) == plain
    assert key.thumbprint() == reference.thumbprint()
    assert key.export_public() == reference.export_public(as_dict=True)
    assert key.verifying_key().public_numbers() == private.public_key().public_numbers()


@pytest.mark.parametrize("change", [_other_unused_bits, _off_curve], ids=["other-unused-bits", "point-off-curve"])
def test_unusual_ec_key_left_to_jwcrypto(change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    _, members = _ec_members(ec.SECP256R1())
    sent = change(members)

    key = jws.import_account_key(sent, "ES256")

    assert key._jwk is not None
    assert key.thumbprint() == jwk.JWK(**sent).thumbprint()


def test_short_coordinate_left_to_jwcrypto() -> None:
    private, sent = _leading_zero_left_out()

    key = jws.import_account_key(sent, "ES256")

    assert key._jwk is not None
    assert key.thumbprint() == jwk.JWK(**sent).thumbprint()
    assert key.verifying_key().public_numbers() == private.public_key().public_numbers()


# A coordinate of another length than the curve's never takes the plain path.
# jwcrypto rejects some of them at once and accepts others, whose signatures then fail.
WRONG_LENGTHS = [
    ("41-chars", "A" * 41, "badPublicKey"),
    ("empty", "", "badPublicKey"),
    ("padded-42", "A" * 42 + "=", "jwcrypto"),
    ("44-chars", "A" * 44, "jwcrypto"),
]


@pytest.mark.parametrize("x, outcome", [c[1:] for c in WRONG_LENGTHS], ids=[c[0] for c in WRONG_LENGTHS])
def test_coordinate_of_wrong_length(x: str, outcome: str) -> None:
    _, members = _ec_members(ec.SECP256R1())

    if outcome == "badPublicKey":
        with pytest.raises(AcmeProblem) as caught:
            jws.import_account_key({**members, "x": x}, "ES256")
        assert caught.value.type == "badPublicKey"
    else:
        assert jws.import_account_key({**members, "x": x}, "ES256")._jwk is not None
