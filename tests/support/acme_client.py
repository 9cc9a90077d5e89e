"""A raw HTTP + JWS ACME client for black-box tests.

Unlike a real client it exposes every part of a request, so a test can send a
wrong header, a bad signature or a replayed nonce and see exactly what the
server returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwcrypto import jwk, jws

POLL_TIMEOUT_SECONDS = 20.0
JOSE = "application/jose+json"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key(alg: str = "ES256") -> jwk.JWK:
    if alg == "ES256":
        return jwk.JWK.generate(kty="EC", crv="P-256")
    if alg == "ES384":
        return jwk.JWK.generate(kty="EC", crv="P-384")
    if alg == "RS256":
        return jwk.JWK.generate(kty="RSA", size=2048)
    if alg == "EdDSA":
        return jwk.JWK.generate(kty="OKP", crv="Ed25519")
    raise ValueError(alg)


def make_csr(names: list[str], key: ec.EllipticCurvePrivateKey | None = None, *, common_name: str | None = None,
             san: bool = True) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """Return a DER CSR for ``names`` (DNS names or IP text) and its private key."""
    import ipaddress

    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if san and names:
        general: list[x509.GeneralName] = []
        for name in names:
            try:
                general.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                general.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER), key


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def problem_type(self) -> str | None:
        if not self.headers.get("content-type", "").startswith("application/problem+json"):
            return None
        return self.json().get("type", "").removeprefix("urn:ietf:params:acme:error:")


@dataclass
class AcmeClient:
    directory_url: str
    ca_bundle: Path
    key: jwk.JWK = field(default_factory=new_key)
    alg: str = "ES256"
    account_url: str | None = None
    # An HTTP client to use instead of a new one, e.g. Starlette's in-process TestClient.
    transport_client: httpx.Client | None = None

    def __post_init__(self) -> None:
        self.http = self.transport_client or httpx.Client(
            verify=ssl.create_default_context(cafile=str(self.ca_bundle)), timeout=30, trust_env=False)
        self.directory = self.http.get(self.directory_url).json()
        self._nonce: str | None = None

    def close(self) -> None:
        self.http.close()

    @property
    def thumbprint(self) -> str:
        return self.key.thumbprint()

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.thumbprint}"

    def nonce(self) -> str:
        if self._nonce:
            nonce, self._nonce = self._nonce, None
            return nonce
        return self.http.head(self.directory["newNonce"]).headers["Replay-Nonce"]

    def sign(self, url: str, payload: Any, *, use_jwk: bool = False, nonce: str | None = None,
             key: jwk.JWK | None = None, alg: str | None = None, extra_protected: dict | None = None,
             drop: tuple[str, ...] = ()) -> str:
        """Build a flattened JWS; ``payload`` None means POST-as-GET (empty payload)."""
        key = key or self.key
        protected: dict[str, Any] = {"alg": alg or self.alg, "nonce": nonce or self.nonce(), "url": url}
        if use_jwk or self.account_url is None:
            protected["jwk"] = key.export_public(as_dict=True)
        else:
            protected["kid"] = self.account_url
        protected.update(extra_protected or {})
        for name in drop:
            protected.pop(name, None)
        body = b"" if payload is None else json.dumps(payload).encode()
        token = jws.JWS(body)
        token.add_signature(key, alg=None, protected=json.dumps(protected))
        return token.serialize(compact=False)

    def post_raw(self, url: str, body: str | bytes, content_type: str = JOSE) -> Reply:
        response = self.http.post(url, content=body, headers={"Content-Type": content_type})
        if "Replay-Nonce" in response.headers:
            self._nonce = response.headers["Replay-Nonce"]
        return Reply(response.status_code, response.headers, response.content)

    def post(self, url: str, payload: Any = None, **sign_options: Any) -> Reply:
        return self.post_raw(url, self.sign(url, payload, **sign_options))

    # The flow, step by step.

    def new_account(self, payload: dict | None = None, **sign_options: Any) -> Reply:
        reply = self.post(self.directory["newAccount"], payload or {"termsOfServiceAgreed": True},
                          use_jwk=True, **sign_options)
        if reply.status in (200, 201):
            self.account_url = reply.headers["Location"]
        return reply

    def new_order(self, names: list[str], **extra: Any) -> Reply:
        identifiers = [{"type": "ip" if _is_ip(n) else "dns", "value": n} for n in names]
        return self.post(self.directory["newOrder"], {"identifiers": identifiers, **extra})

    def poll(self, url: str, until: tuple[str, ...]) -> dict:
        deadline = time.monotonic() + POLL_TIMEOUT_SECONDS
        while True:
            reply = self.post(url)
            assert reply.status == 200, reply.body
            body = reply.json()
            if body["status"] in until or time.monotonic() > deadline:
                return body
            time.sleep(0.2)

    def finalize(self, order: dict, csr_der: bytes) -> Reply:
        return self.post(order["finalize"], {"csr": b64url(csr_der)})


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def dns01_value(key_authorization: str) -> str:
    return b64url(hashlib.sha256(key_authorization.encode()).digest())
