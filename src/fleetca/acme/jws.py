"""Request authentication: flattened JWS parsing and verification (RFC 8555 §6.2).

The structure checks are done here, strictly and before any signature work; the
signature itself is verified by cryptography for account keys and by jwcrypto
for the MACs of external account binding. The order of the checks follows the
RFC: shape, protected header, key, signature. The caller then checks ``url``
and ``nonce`` because those need request context.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwcrypto import jwk
from jwcrypto.jwa import JWA
from jwcrypto.common import JWException

from fleetca.acme.problems import AcmeProblem, malformed

# Account key algorithms accepted, with the key type and curve each needs.
ACCOUNT_KEY_ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
}
ACCOUNT_KEY_ALGORITHM_NAMES = tuple(ACCOUNT_KEY_ALGORITHMS)
MAC_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_RSA_ACCOUNT_KEY_BITS = 2048
MAX_RSA_ACCOUNT_KEY_BITS = 8192


def b64url_decode(value: Any, what: str) -> bytes:
    """Decode unpadded base64url (RFC 8555 §6.1), raising malformed on bad input.

    Trailing "=" padding is tolerated because some embedded clients send it; this
    departure is listed in docs/divergences.md.
    """
    if not isinstance(value, str):
        raise malformed(f"{what} must be a base64url string")
    stripped = value.rstrip("=")
    if not _B64URL.fullmatch(stripped):
        raise malformed(f"{what} is not valid base64url")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise malformed(f"{what} is not valid base64url") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass
class ParsedJws:
    """A flattened JWS whose structure and protected header passed the checks."""

    signing_input: bytes  # "protected.payload" exactly as the client sent it
    signature: bytes
    protected: dict[str, Any]
    payload_bytes: bytes
    alg: str
    nonce: str | None
    url: str
    jwk: dict[str, Any] | None
    kid: str | None

    @property
    def is_post_as_get(self) -> bool:
        return self.payload_bytes == b""

    def payload_json(self) -> dict[str, Any]:
        """Decode the payload as a JSON object, raising malformed otherwise."""
        try:
            value = orjson.loads(self.payload_bytes)
        except ValueError as exc:
            raise malformed("JWS payload is not valid JSON") from exc
        if not isinstance(value, dict):
            raise malformed("JWS payload must be a JSON object")
        return value


def parse_flattened(body: bytes | str, *, require_nonce: bool = True) -> ParsedJws:
    """Parse a flattened JWS JSON serialization and check its protected header."""
    try:
        # orjson raises a ValueError for invalid UTF-8, lone surrogates, NaN
        # and nesting deeper than 1,024 levels.
        outer = orjson.loads(body)
    except ValueError as exc:
        raise malformed("request body is not valid JSON") from exc
    if not isinstance(outer, dict):
        raise malformed("request body must be a JWS JSON object")
    if "signatures" in outer:
        raise malformed("JWS must use the flattened JSON serialization with one signature")
    if "header" in outer:
        raise malformed("JWS must not have an unprotected header")
    for member in ("protected", "payload", "signature"):
        if member not in outer:
            raise malformed(f"JWS is missing {member!r}")
    unknown = set(outer) - {"protected", "payload", "signature"}
    if unknown:
        raise malformed(f"JWS has unexpected members: {', '.join(sorted(unknown))}")

    protected_bytes = b64url_decode(outer["protected"], "JWS protected header")
    try:
        protected = orjson.loads(protected_bytes)
    except ValueError as exc:
        raise malformed("JWS protected header is not valid JSON") from exc
    if not isinstance(protected, dict):
        raise malformed("JWS protected header must be a JSON object")
    payload_bytes = b64url_decode(outer["payload"], "JWS payload")
    signature = b64url_decode(outer["signature"], "JWS signature")

    alg = protected.get("alg")
    if not isinstance(alg, str) or not alg:
        raise malformed("JWS protected header is missing 'alg'")
    url = protected.get("url")
    if not isinstance(url, str) or not url:
        raise malformed("JWS protected header is missing 'url'")
    nonce = protected.get("nonce")
    if require_nonce and (not isinstance(nonce, str) or not nonce):
        raise AcmeProblem("badNonce", "JWS protected header is missing 'nonce'")
    if nonce is not None and not isinstance(nonce, str):
        raise AcmeProblem("badNonce", "JWS 'nonce' must be a string")
    has_jwk, has_kid = "jwk" in protected, "kid" in protected
    if has_jwk == has_kid:
        raise malformed("JWS protected header must contain exactly one of 'jwk' and 'kid'")
    key = protected.get("jwk")
    if has_jwk and not isinstance(key, dict):
        raise malformed("JWS 'jwk' must be a JSON object")
    kid = protected.get("kid")
    if has_kid and (not isinstance(kid, str) or not kid):
        raise malformed("JWS 'kid' must be a non-empty string")
    if "b64" in protected or "crit" in protected:
        raise malformed("JWS header parameters 'b64' and 'crit' are not supported")

    signing_input = f"{outer['protected']}.{outer['payload']}".encode("ascii")
    return ParsedJws(signing_input=signing_input, signature=signature, protected=protected,
                     payload_bytes=payload_bytes, alg=alg,
                     nonce=nonce, url=url, jwk=key, kid=kid)


def check_account_alg(alg: str) -> None:
    """Raise badSignatureAlgorithm, listing the accepted ones, for any other alg."""
    if alg not in ACCOUNT_KEY_ALGORITHMS:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"JWS algorithm {alg!r} is not supported for account keys",
            extra={"algorithms": list(ACCOUNT_KEY_ALGORITHMS)},
        )


class AccountKey:
    """A public account key: its JWK members, and the cryptography key and thumbprint derived from them.

    A P-256 or P-384 key in the plain form that ACME clients send is read
    with cryptography alone. Any other key is read by jwcrypto.
    Reading a P-256 JWK, building its verifying key and thumbprint cost
    about 17 µs of CPU this way, against 60 µs through jwcrypto (2,000 keys).
    """

    __slots__ = ("_members", "_public_key", "_jwk", "_thumbprint")

    def __init__(self, members: dict[str, Any], public_key: Any = None, jwk_key: jwk.JWK | None = None) -> None:
        self._members = members
        self._public_key = public_key
        self._jwk = jwk_key
        self._thumbprint: str | None = None

    def verifying_key(self) -> Any:
        """Return the cryptography public key. Raise ValueError if jwcrypto read a point that is not on its curve."""
        if self._public_key is None:
            assert self._jwk is not None
            self._public_key = self._jwk.get_op_key("verify")
        return self._public_key

    def jwcrypto_key(self) -> jwk.JWK:
        """Return the key as a jwcrypto JWK, built from the members when first asked for."""
        if self._jwk is None:
            self._jwk = jwk.JWK(**self._members)
        return self._jwk

    def thumbprint(self) -> str:
        """Return the RFC 7638 thumbprint (SHA-256, base64url), the account key's identity."""
        if self._thumbprint is None:
            self._thumbprint = (self._jwk.thumbprint() if self._jwk is not None
                                else public_key_thumbprint(self._public_key))
            assert self._thumbprint is not None
        return self._thumbprint

    def export_public(self) -> dict[str, Any]:
        """Return the key's public JWK members, as jwcrypto's ``JWK.export_public(as_dict=True)`` does."""
        if self._jwk is not None:
            return self._jwk.export_public(as_dict=True)
        return dict(self._members)


def import_account_key(key: dict[str, Any], alg: str) -> AccountKey:
    """Build a public account key usable with ``alg``, raising badPublicKey if it cannot be.

    Parsed keys are cached, because every request of an account carries the same key.
    """
    try:
        canonical = orjson.dumps(key, option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError) as exc:
        raise AcmeProblem("badPublicKey", "JWK could not be parsed as a public key") from exc
    return _import_account_key(canonical, alg)


# Bounded so that memory stays flat however many devices enroll; a flow reuses its
# account key within seconds, long before it would be evicted.
@functools.lru_cache(maxsize=512)
def _import_account_key(canonical: bytes, alg: str) -> AccountKey:
    key = orjson.loads(canonical)
    check_account_alg(alg)
    kty, crv = ACCOUNT_KEY_ALGORITHMS[alg]
    if key.get("kty") != kty or (crv is not None and key.get("crv") != crv):
        raise AcmeProblem("badPublicKey", f"algorithm {alg} needs a {kty} key" + (f" on {crv}" if crv else ""))
    if "d" in key or (kty == "RSA" and any(p in key for p in ("p", "q", "dp", "dq", "qi"))):
        raise AcmeProblem("badPublicKey", "JWK must be a public key, not a private key")
    plain = _plain_ec_key(key) if kty == "EC" else None
    if plain is not None:
        return plain
    try:
        public = jwk.JWK(**{k: v for k, v in key.items() if isinstance(k, str)})
    except (JWException, ValueError, TypeError, KeyError) as exc:
        raise AcmeProblem("badPublicKey", "JWK could not be parsed as a public key") from exc
    if kty == "RSA":
        bits = public.get_op_key("verify").key_size
        if bits < MIN_RSA_ACCOUNT_KEY_BITS or bits > MAX_RSA_ACCOUNT_KEY_BITS or bits % 8:
            raise AcmeProblem("badPublicKey", f"RSA account keys must be 2048 to 8192 bits, a multiple of 8; got {bits}")
        if public.get_op_key("verify").public_numbers().e < 65537:
            raise AcmeProblem("badPublicKey", "RSA account key exponent must be at least 65537")
    return AccountKey(key, jwk_key=public)


_PLAIN_EC_CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
_PLAIN_EC_MEMBERS = frozenset({"kty", "crv", "x", "y"})


def _plain_ec_key(key: dict[str, Any]) -> AccountKey | None:
    """Read an EC JWK of exactly kty, crv, x and y, each coordinate in unpadded base64url of the curve's full size.

    Return None for any other form, or for a point off the curve, so that
    jwcrypto reads the key and accepts or rejects it.
    """
    curve = _PLAIN_EC_CURVES.get(key.get("crv"))  # type: ignore[arg-type]
    if curve is None or key.keys() != _PLAIN_EC_MEMBERS:
        return None
    size = (curve.key_size + 7) // 8
    coordinates = []
    for member in ("x", "y"):
        text = key[member]
        # Unpadded base64url of ``size`` bytes has exactly this many characters.
        if not isinstance(text, str) or len(text) != (size * 4 + 2) // 3:
            return None
        try:
            raw = b64url_decode(text, member)
        except AcmeProblem:
            return None
        # Padding, or unused bits that are not zero, would still decode.
        if b64url_encode(raw) != text:
            return None
        coordinates.append(raw)
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + coordinates[0] + coordinates[1])
    except ValueError:
        return None
    return AccountKey(key, public_key=public_key)


def thumbprint(key: AccountKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url), the account key's identity."""
    return key.thumbprint()


_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def public_key_thumbprint(public_key: Any) -> str | None:
    """RFC 7638 thumbprint of a cryptography public key, or None for a key type no account key can have.

    It equals ``jwk.JWK.from_pyca(public_key).thumbprint()`` for EC, RSA and
    Ed25519 keys, without building the JWK: the required members in
    lexicographic order, serialized without whitespace (RFC 7638 §3.2).
    """
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = _CURVE_NAMES.get(public_key.curve.name)
        if curve is None:
            return None
        numbers = public_key.public_numbers()
        size = (public_key.curve.key_size + 7) // 8
        members = (f'{{"crv":"{curve}","kty":"EC","x":"{b64url_encode(numbers.x.to_bytes(size, "big"))}",'
                   f'"y":"{b64url_encode(numbers.y.to_bytes(size, "big"))}"}}')
    elif isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        members = (f'{{"e":"{b64url_encode(_unsigned_bytes(numbers.e))}","kty":"RSA",'
                   f'"n":"{b64url_encode(_unsigned_bytes(numbers.n))}"}}')
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = f'{{"crv":"Ed25519","kty":"OKP","x":"{b64url_encode(raw)}"}}'
    else:
        return None
    return b64url_encode(hashlib.sha256(members.encode()).digest())


def _unsigned_bytes(value: int) -> bytes:
    # The shortest big-endian form, as RFC 7518 §6.3.1 requires for "n" and "e".
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def verify_signature(parsed: ParsedJws, key: AccountKey | jwk.JWK, algorithms: tuple[str, ...] | list[str]) -> None:
    """Verify the JWS signature with ``key``, raising malformed when it does not match.

    The signing input is the protected header and payload exactly as received, so
    a client that pads its base64url verifies against what it signed.
    """
    if parsed.alg not in algorithms:
        raise AcmeProblem("badSignatureAlgorithm", f"JWS algorithm {parsed.alg!r} is not accepted here",
                          extra={"algorithms": list(algorithms)})
    expected_length = _ECDSA_SIGNATURE_BYTES.get(parsed.alg)
    if expected_length is not None and len(parsed.signature) != expected_length:
        raise malformed(f"JWS signature must be {expected_length} bytes for {parsed.alg}")
    try:
        if parsed.alg in _PYCA_VERIFIERS:
            _PYCA_VERIFIERS[parsed.alg](_public_key(key), parsed.signing_input, parsed.signature)
        else:
            JWA.signing_alg(parsed.alg).verify(_jwcrypto_key(key), parsed.signing_input, parsed.signature)
    except Exception as exc:  # the algorithm classes raise any of several cryptography errors
        raise malformed("JWS signature is invalid") from exc


def _public_key(key: AccountKey | jwk.JWK) -> Any:
    if isinstance(key, AccountKey):
        return key.verifying_key()
    return key.get_op_key("verify")


def _jwcrypto_key(key: AccountKey | jwk.JWK) -> jwk.JWK:
    # jwcrypto's algorithm classes take its own key objects. An account key
    # read by cryptography alone is turned into one here.
    if isinstance(key, AccountKey):
        return key.jwcrypto_key()
    return key


def _verify_ecdsa(hash_algorithm: hashes.HashAlgorithm) -> Callable[[Any, bytes, bytes], None]:
    algorithm = ec.ECDSA(hash_algorithm)  # immutable, so built once

    def verify(public_key: Any, signing_input: bytes, signature: bytes) -> None:
        half = len(signature) // 2
        der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
        public_key.verify(der, signing_input, algorithm)
    return verify


def _verify_rs256(public_key: Any, signing_input: bytes, signature: bytes) -> None:
    public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())


def _verify_eddsa(public_key: Any, signing_input: bytes, signature: bytes) -> None:
    public_key.verify(signature, signing_input)


# Account-key algorithms verified by cryptography directly, with the key object
# built once per account key: through jwcrypto's JWA classes a verification cost
# about twice as much CPU. Each raises InvalidSignature, or TypeError for a key
# of the wrong type.
_PYCA_VERIFIERS: dict[str, Callable[[Any, bytes, bytes], None]] = {
    "ES256": _verify_ecdsa(hashes.SHA256()),
    "ES384": _verify_ecdsa(hashes.SHA384()),
    "RS256": _verify_rs256,
    "EdDSA": _verify_eddsa,
}


# R || S, each the curve's size (RFC 7518 §3.4).
_ECDSA_SIGNATURE_BYTES = {"ES256": 64, "ES384": 96, "ES512": 132}
