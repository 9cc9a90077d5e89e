"""The ACME server's own TLS certificate, for processes behind a load balancer that share a data directory."""

from __future__ import annotations

import socket
import ssl
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetca.settings import load_settings
from fleetca.signing.authority import issue_server_tls_certificate, server_certificate_covers, sign_root_crl
from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.server import FleetcaServer

PUBLIC_HOST = "acme.fleet.example"
RENEWAL_WAIT_SECONDS = 15.0

# name: (listen, public_url, names the certificate must carry)
TLS_NAME_CASES = {
    "loopback-alone": ("127.0.0.1:8443", None, ["127.0.0.1"]),
    "address-and-public-name": ("127.0.0.2:8443", f"https://{PUBLIC_HOST}", ["127.0.0.2", PUBLIC_HOST]),
    "wildcard-and-public-name": ("0.0.0.0:8443", f"https://{PUBLIC_HOST}:443", [PUBLIC_HOST]),
    "wildcard-alone": ("0.0.0.0:8443", None, ["localhost"]),
    "ipv6-wildcard-alone": ("[::]:8443", None, ["localhost"]),
    "same-name-twice": ("127.0.0.3:8443", "https://127.0.0.3:8443", ["127.0.0.3"]),
}


@pytest.mark.parametrize("case", sorted(TLS_NAME_CASES))
def test_tls_names(tmp_path: Path, case: str) -> None:
    listen, public_url, expected = TLS_NAME_CASES[case]
    server = {"listen": listen, **({"public_url": public_url} if public_url else {})}

    assert load_settings(tmp_path, server=server).tls_names() == expected


def test_tls_files_differ_by_listen_address(tmp_path: Path) -> None:
    first = load_settings(tmp_path, server={"listen": "127.0.0.2:8443"})
    second = load_settings(tmp_path, server={"listen": "127.0.0.3:8443"})
    third = load_settings(tmp_path, server={"listen": "127.0.0.2:9443"})

    paths = {first.tls_certificate_path, second.tls_certificate_path, third.tls_certificate_path}
    assert len(paths) == 3


def test_certificate_covers_every_name(tmp_path: Path, dns_server: ChallTestSrv,
                                       validation_ports: ChallengePorts) -> None:
    server = FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports)
    server.init()
    settings = load_settings(server.data_dir)
    cert_path = tmp_path / "server.pem"
    now = datetime.now(timezone.utc)

    issue_server_tls_certificate(["127.0.0.2", PUBLIC_HOST], settings.root_certificate_path,
                                 settings.root_key_path, cert_path, now)

    assert server_certificate_covers(cert_path, ["127.0.0.2", PUBLIC_HOST], now)
    assert server_certificate_covers(cert_path, [PUBLIC_HOST.upper()], now)
    assert not server_certificate_covers(cert_path, ["127.0.0.3"], now)
    assert not server_certificate_covers(cert_path, ["other.fleet.example"], now)
    assert not server_certificate_covers(cert_path, ["127.0.0.2"], now + timedelta(days=84))
    # The file contains the key, so only its owner may read it, and it loads as one.
    assert cert_path.stat().st_mode & 0o077 == 0
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path)
    server.drop_database()


def handshake(port: int, server_name: str, root_pem: Path) -> x509.Certificate:
    """Complete a TLS handshake to 127.0.0.1:``port`` that verifies the certificate for ``server_name``, and return it."""
    context = ssl.create_default_context(cafile=str(root_pem))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as conn:
            der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def root_crl(server: FleetcaServer) -> x509.CertificateRevocationList:
    response = httpx.get(f"http://127.0.0.1:{server.http_port}/pki/root.crl", trust_env=False, timeout=10)
    assert response.status_code == 200
    return x509.load_der_x509_crl(response.content)


def test_server_renews_certificate_and_crl(tmp_path: Path, dns_server: ChallTestSrv,
                                                       validation_ports: ChallengePorts) -> None:
    with FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports,
                       env={"FLEETCA_SERVER__RENEWAL_CHECK_SECONDS": "0.5"}) as server:
        settings = load_settings(server.data_dir, server={"listen": f"127.0.0.1:{server.port}"})
        first = handshake(server.port, "127.0.0.1", server.root_pem)
        first_crl = root_crl(server)
        now = datetime.now(timezone.utc)
        # Credentials made long ago, each within its renewal margin now.
        issue_server_tls_certificate(settings.tls_names(), settings.root_certificate_path, settings.root_key_path,
                                     settings.tls_certificate_path, now - timedelta(days=85))
        expiring = x509.load_pem_x509_certificate(settings.tls_certificate_path.read_bytes())
        old_crl = sign_root_crl(settings.root_certificate_path, settings.root_key_path,
                                int(now.timestamp()) - 1000, now - timedelta(days=170))
        (server.data_dir / "root.crl").write_bytes(old_crl.public_bytes(serialization.Encoding.DER))

        deadline = time.monotonic() + RENEWAL_WAIT_SECONDS
        while True:
            served = handshake(server.port, "127.0.0.1", server.root_pem)
            crl = root_crl(server)
            renewed = served.serial_number not in (first.serial_number, expiring.serial_number)
            if (renewed and crl.next_update_utc > now + timedelta(days=100)) or time.monotonic() > deadline:
                break
            time.sleep(0.3)

    assert renewed
    assert served.not_valid_after_utc > now + timedelta(days=80)
    crl_number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    first_number = first_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert crl_number > first_number
    assert crl.next_update_utc > now + timedelta(days=100)


def test_public_name_verifies_through_passthrough(tmp_path: Path, dns_server: ChallTestSrv,
                                                  validation_ports: ChallengePorts) -> None:
    # A load balancer that passes TLS through: clients connect to the public
    # name and reach each process, which must present a certificate for it.
    first = FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports,
                          public_url=f"https://{PUBLIC_HOST}")
    first.init()
    first.start()
    second = first.sibling("second")
    second.start()
    try:
        for process in (first, second):
            handshake(process.port, PUBLIC_HOST, process.root_pem)
            handshake(process.port, "127.0.0.1", process.root_pem)
        # Restarting one process must leave the other's files alone.
        first.restart()
        handshake(second.port, PUBLIC_HOST, second.root_pem)
        handshake(first.port, PUBLIC_HOST, first.root_pem)
    finally:
        second.stop()
        first.stop()
        first.drop_database()
