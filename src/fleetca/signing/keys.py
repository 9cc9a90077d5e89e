"""CA private key files: generation, encrypted storage and loading.

Key files are PEM PKCS#8, created with mode 0600, and encrypted with the
passphrase in ``FLEETCA_KEY_PASSPHRASE`` when that variable is set.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

PASSPHRASE_ENV = "FLEETCA_KEY_PASSPHRASE"
PLACEHOLDER_PASSPHRASES = frozenset({"changeme", "change-me", "password", "passphrase", "secret", "example"})


class KeyFileError(Exception):
    """A CA key file could not be written or read."""


def passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    if not value:
        return None
    if value.lower() in PLACEHOLDER_PASSPHRASES or len(value) < 12:
        raise KeyFileError(f"{PASSPHRASE_ENV} is a placeholder or shorter than 12 characters; set a real passphrase")
    return value.encode("utf-8")


def generate_ec_key(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve)


def write_private_key(path: Path, key: CertificateIssuerPrivateKeyTypes) -> None:
    """Write ``key`` to a new file with mode 0600; never overwrite an existing file."""
    secret = passphrase()
    encryption = (serialization.BestAvailableEncryption(secret) if secret
                  else serialization.NoEncryption())
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"key file {path} already exists; refusing to overwrite it") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def read_private_key(path: Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read CA key file {path}: {exc.strerror}") from exc
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    secret = passphrase() if encrypted else None
    if encrypted and secret is None:
        raise KeyFileError(f"CA key file {path} is encrypted; set {PASSPHRASE_ENV}")
    try:
        key = serialization.load_pem_private_key(data, password=secret)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot load CA key file {path}: wrong passphrase or damaged file") from exc
    return key  # type: ignore[return-value]
