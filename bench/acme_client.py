"""The ACME client side of one simulated device: keys, CSR, JWS signing and nonces.

Keys and CSRs are made before the timed phase (:func:`make_devices`), so the
timed phase spends generator CPU only on ACME itself: JSON, one ECDSA P-256
signature per POST and the HTTP exchange.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from http11 import HttpConnection, HttpResponse

JOSE_CONTENT_TYPE = "application/jose+json"
BAD_NONCE = "urn:ietf:params:acme:error:badNonce"
MAX_BAD_NONCE_RETRIES = 3


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Device:
    """One device's name and key material, made before the timed phase."""

    name: str
    account_key: ec.EllipticCurvePrivateKey
    jwk: dict[str, str]
    thumbprint: str  # RFC 7638 JWK thumbprint, base64url
    csr_der: bytes   # P-256 key, the name in the Common Name and the SAN


def make_device(name: str) -> Device:
    account_key = ec.generate_private_key(ec.SECP256R1())
    numbers = account_key.public_key().public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": b64url(numbers.x.to_bytes(32, "big")),
           "y": b64url(numbers.y.to_bytes(32, "big"))}
    # RFC 7638 §3: the required members in lexicographic order, no whitespace.
    thumbprint = b64url(hashlib.sha256(_json_bytes({k: jwk[k] for k in sorted(jwk)})).digest())

    certificate_key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(certificate_key, hashes.SHA256()))
    return Device(name=name, account_key=account_key, jwk=jwk, thumbprint=thumbprint,
                  csr_der=csr.public_bytes(serialization.Encoding.DER))


def make_devices(tag: str, count: int, domain: str) -> list[Device]:
    """Make ``count`` devices named ``d00000-TAG.DOMAIN`` and up."""
    return [make_device(f"d{index:05d}-{tag}.{domain}") for index in range(count)]


class AcmeError(Exception):
    """A request of the flow got an unexpected response; the message contains the URL, status and body."""


class AcmeSession:
    """Signed requests to one ACME server over one connection, with the newest nonce kept."""

    def __init__(self, connection: HttpConnection, directory_url: str) -> None:
        self.connection = connection
        self.directory_url = directory_url
        self.directory: dict[str, Any] = {}
        self.nonce: str | None = None
        self.requests = 0
        self.bad_nonce_retries = 0

    async def get_directory(self) -> dict[str, Any]:
        response = await self._send("GET", self.directory_url)
        self._expect(response, self.directory_url, 200)
        self.directory = json.loads(response.body)
        return self.directory

    async def fetch_nonce(self) -> None:
        url = self.directory["newNonce"]
        response = await self._send("HEAD", url)
        self._expect(response, url, 200, 204)

    async def post(self, url: str, payload: dict[str, Any] | None, device: Device, kid: str | None,
                   expected: tuple[int, ...] = (200,)) -> HttpResponse:
        """POST a JWS signed with the device's account key; None as payload is a POST-as-GET."""
        for _ in range(MAX_BAD_NONCE_RETRIES + 1):
            if self.nonce is None:
                await self.fetch_nonce()
            body = self._sign(url, payload, device, kid)
            response = await self._send("POST", url, body, JOSE_CONTENT_TYPE)
            if response.status == 400 and _problem_type(response) == BAD_NONCE:
                # RFC 8555 §6.5: retry with the nonce that came with the error.
                self.bad_nonce_retries += 1
                continue
            self._expect(response, url, *expected)
            return response
        raise AcmeError(f"POST {url}: badNonce {MAX_BAD_NONCE_RETRIES + 1} times in a row")

    def _sign(self, url: str, payload: dict[str, Any] | None, device: Device, kid: str | None) -> bytes:
        protected: dict[str, Any] = {"alg": "ES256", "nonce": self.nonce, "url": url}
        if kid is None:
            protected["jwk"] = device.jwk
        else:
            protected["kid"] = kid
        self.nonce = None
        protected_b64 = b64url(_json_bytes(protected))
        payload_b64 = "" if payload is None else b64url(_json_bytes(payload))
        der = device.account_key.sign(f"{protected_b64}.{payload_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return _json_bytes({"protected": protected_b64, "payload": payload_b64, "signature": b64url(signature)})

    async def _send(self, method: str, url: str, body: bytes = b"", content_type: str | None = None) -> HttpResponse:
        response = await self.connection.request(method, url, body, content_type)
        self.requests += 1
        nonce = response.headers.get("replay-nonce")
        if nonce:
            self.nonce = nonce
        return response

    @staticmethod
    def _expect(response: HttpResponse, url: str, *statuses: int) -> None:
        if response.status not in statuses:
            raise AcmeError(f"{url} returned HTTP {response.status}: {response.body[:300]!r}")


def _problem_type(response: HttpResponse) -> str | None:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    try:
        return json.loads(response.body).get("type")
    except ValueError:
        return None
