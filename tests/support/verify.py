"""Chain verification with OpenSSL and pyca/cryptography, as a relying party would."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store


def split_pem_chain(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def verify_with_cryptography(chain_pem: bytes, root_pem: Path, name: str) -> list[x509.Certificate]:
    """Verify the leaf of ``chain_pem`` for ``name`` with pyca/cryptography's verifier."""
    import ipaddress

    certs = split_pem_chain(chain_pem)
    store = Store(x509.load_pem_x509_certificates(root_pem.read_bytes()))
    try:
        subject = IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = DNSName(name)
    verifier = PolicyBuilder().store(store).time(datetime.now(UTC)).build_server_verifier(subject)
    return verifier.verify(certs[0], certs[1:])


def verify_with_openssl(chain_pem: bytes, root_pem: Path, name: str, workdir: Path) -> subprocess.CompletedProcess:
    """Run ``openssl verify`` on the leaf with the rest of the chain untrusted."""
    certs = split_pem_chain(chain_pem)
    from cryptography.hazmat.primitives import serialization

    leaf = workdir / "leaf.pem"
    untrusted = workdir / "untrusted.pem"
    leaf.write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
    untrusted.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]))
    flag = "-verify_ip" if ":" in name or name.replace(".", "").isdigit() else "-verify_hostname"
    return subprocess.run(["openssl", "verify", "-CAfile", str(root_pem), "-untrusted", str(untrusted),
                           "-purpose", "sslserver", flag, name, str(leaf)],
                          capture_output=True, text=True, timeout=30)
