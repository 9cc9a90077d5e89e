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


def _short_x(members: dict[str, Any]) -> dict[str, Any]:
    # A coordinate with its leading zero bytes left out, as some encoders write it.
    return {**members, "x": _b64(b"\x01" * 31)}


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
    assert key.export_public(as_dict=True) == reference.export_public(as_dict=True)
    assert key.verifying_key().public_numbers() == private.public_key().public_numbers()


@pytest.mark.parametrize("change", [_short_x, _off_curve], ids=["short-coordinate", "point-off-curve"])
def test_unusual_ec_key_left_to_jwcrypto(change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    _, members = _ec_members(ec.SECP256R1())
    sent = change(members)

    key = jws.import_account_key(sent, "ES256")

    assert key._jwk is not None
    assert key.thumbprint() == jwk.JWK(**sent).thumbprint()


def test_signature_by_off_curve_key_is_malformed() -> None:
    private, members = _ec_members(ec.SECP256R1())
    protected = _b64(orjson.dumps({"alg": "ES256", "nonce": "n", "url": "https://ca.test/acme/x/new-account",
                                   "jwk": _off_curve(members)}))
    payload = _b64(b"{}")
    der = private.sign(f"{protected}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    body = orjson.dumps({"protected": protected, "payload": payload,
                         "signature": _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))})
    parsed = jws.parse_flattened(body)
    key = jws.import_account_key(parsed.jwk or {}, parsed.alg)

    with pytest.raises(AcmeProblem) as caught:
        jws.verify_signature(parsed, key, jws.ACCOUNT_KEY_ALGORITHM_NAMES)

    assert caught.value.type == "malformed"


def test_plain_key_verifies_its_signature() -> None:
    private, members = _ec_members(ec.SECP256R1())
    protected = _b64(orjson.dumps({"alg": "ES256", "nonce": "n", "url": "https://ca.test/acme/x/new-account",
                                   "jwk": members}))
    payload = _b64(b"{}")
    der = private.sign(f"{protected}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    parsed = jws.parse_flattened(orjson.dumps({"protected": protected, "payload": payload,
                                               "signature": _b64(signature)}))

    jws.verify_signature(parsed, jws.import_account_key(members, "ES256"), jws.ACCOUNT_KEY_ALGORITHM_NAMES)

    tampered = jws.parse_flattened(orjson.dumps({"protected": protected, "payload": _b64(b'{"a":1}'),
                                                 "signature": _b64(signature)}))
    with pytest.raises(AcmeProblem):
        jws.verify_signature(tampered, jws.import_account_key(members, "ES256"), jws.ACCOUNT_KEY_ALGORITHM_NAMES)
