"""The plain-HTTP publication of the root, the issuing CA certificates and the root CRL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.server import FleetcaServer

PATHS = [
    ("root-certificate", "/pki/root.crt", "application/pkix-cert"),
    ("root-crl", "/pki/root.crl", "application/pkix-crl"),
    ("issuing-ca", "/pki/ca/baseline.crt", "application/pkix-cert"),
]


def fetch(server: FleetcaServer, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.http_port}{path}", trust_env=False, timeout=10)


@pytest.mark.parametrize(("path", "media_type"), [c[1:] for c in PATHS], ids=[c[0] for c in PATHS])
def test_published_over_plain_http(multi_ca: FleetcaServer, path: str, media_type: str) -> None:
    response = fetch(multi_ca, path)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type


def test_published_root_matches_root_pem(multi_ca: FleetcaServer) -> None:
    published = x509.load_der_x509_certificate(fetch(multi_ca, "/pki/root.crt").content)
    assert published == x509.load_pem_x509_certificate(multi_ca.root_pem.read_bytes())


def test_unknown_issuing_ca_not_found(multi_ca: FleetcaServer) -> None:
    assert fetch(multi_ca, "/pki/ca/nope.crt").status_code == 404


def test_root_crl_checks_issuing_ca(multi_ca: FleetcaServer, tmp_path: Path) -> None:
    crl = x509.load_der_x509_crl(fetch(multi_ca, "/pki/root.crl").content)
    root = x509.load_pem_x509_certificate(multi_ca.root_pem.read_bytes())
    assert crl.is_signature_valid(root.public_key())
    crl_pem = tmp_path / "root.crl.pem"
    crl_pem.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", str(multi_ca.root_pem), "-CRLfile",
                             str(crl_pem), str(multi_ca.data_dir / "cas" / "baseline.pem")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_baseline_ca_points_at_published_root(multi_ca: FleetcaServer) -> None:
    from tests.ca.conftest import PUBLIC_HTTP_URL

    issuing = x509.load_pem_x509_certificate((multi_ca.data_dir / "cas" / "baseline.pem").read_bytes())
    points = issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [p.full_name[0].value for p in points] == [f"{PUBLIC_HTTP_URL}/pki/root.crl"]
    access = issuing.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [a.access_location.value for a in access] == [f"{PUBLIC_HTTP_URL}/pki/root.crt"]
