"""A fleetca with several issuing CAs, for the tests of CA profiles, policies and imports."""

from __future__ import annotations

from collections.abc import Iterator
import pytest

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.server import FleetcaServer, run_fleetca

# Host name in CRL and AIA URLs: pkilint's CA/B rules refuse internal names such as 127.0.0.1.
PUBLIC_HTTP_URL = "http://pki.example.com"


@pytest.fixture(scope="module")
def multi_ca(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
             validation_ports: ChallengePorts) -> Iterator[FleetcaServer]:
    """default (strict, devices.example.test), routers (strict, routers.example.test and 10.0.0.0/8),
    baseline (baseline, devices.example.com) and embedded (embedded, devices.example.test)."""
    data_dir = tmp_path_factory.mktemp("multi") / "data"
    server = FleetcaServer(data_dir, dns_server.dns_address, validation_ports, http_public_url=PUBLIC_HTTP_URL)
    server.init()
    env = {"FLEETCA_SERVER__HTTP_PUBLIC_URL": PUBLIC_HTTP_URL}
    run_fleetca("ca", "create", "routers", "--data-dir", str(data_dir), "--permit-dns", "routers.example.test",
                "--permit-ip", "10.0.0.0/8", env=env)
    run_fleetca("ca", "create", "baseline", "--data-dir", str(data_dir), "--profile", "baseline", "--country", "DE",
                "--organization", "Example Devices GmbH", "--permit-dns", "devices.example.com", env=env)
    run_fleetca("ca", "create", "embedded", "--data-dir", str(data_dir), "--profile", "embedded",
                "--permit-dns", "devices.example.test", env=env)
    server.start()
    yield server
    server.stop()
    server.drop_database()

