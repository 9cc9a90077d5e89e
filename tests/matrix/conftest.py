"""The ``matrix`` marker and one running fleetca with a strict, a baseline and an embedded issuing CA."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.matrix.fleet import Fleet, create_cas
from tests.support.server import FleetcaServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "matrix: verifies fleetca's CA and certificate profiles with OpenSSL, GnuTLS, pyca/cryptography, "
        "lighttpd (mod_mbedtls, mod_wolfssl, mod_openssl), curl and headless Chromium, and writes "
        "docs/compatibility.md",
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
          validation_ports: ChallengePorts) -> Iterator[Fleet]:
    """One fleetca for the whole module, with the three CAs and their certificate profiles."""
    started = time.monotonic()
    server = FleetcaServer(tmp_path_factory.mktemp("matrix") / "data", dns_server.dns_address, validation_ports)
    try:
        server.init()
        rejections = create_cas(server)
        server.start()
        yield Fleet(server, rejections, started)
    finally:
        server.stop()
        server.drop_database()
