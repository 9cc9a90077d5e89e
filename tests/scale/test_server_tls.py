"""The ACME server's own TLS certificate, for processes behind a load balancer that share a data directory."""

from __future__ import annotations

import socket
import ssl
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fleetca.settings import load_settings
from fleetca.signing.authority import issue_server_tls_certificate, server_certificate_covers
from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.server import FleetcaServer

PUBLIC_HOST = "acme.fleet.example"

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
    assert first.tls_key_path != second.tls_key_path


def test_certificate_covers_every_name(tmp_path: Path, dns_server: ChallTestSrv,
                                       validation_ports: ChallengePorts) -> None:
    server = FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports)
    server.init()
    settings = load_settings(server.data_dir)
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    now = datetime.now(timezone.utc)

    issue_server_tls_certificate(["127.0.0.2", PUBLIC_HOST], settings.root_certificate_path,
                                 settings.root_key_path, cert_path, key_path, now)

    assert server_certificate_covers(cert_path, ["127.0.0.2", PUBLIC_HOST], now)
    assert server_certificate_covers(cert_path, [PUBLIC_HOST.upper()], now)
    assert not server_certificate_covers(cert_path, ["127.0.0.3"], now)
    assert not server_certificate_covers(cert_path, ["other.fleet.example"], now)
    assert key_path.stat().st_mode & 0o077 == 0
    server.drop_database()


def handshake(port: int, server_name: str, root_pem: Path) -> None:
    """Complete a TLS handshake to 127.0.0.1:``port`` that verifies the certificate for ``server_name``."""
    context = ssl.create_default_context(cafile=str(root_pem))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name):
            pass


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
