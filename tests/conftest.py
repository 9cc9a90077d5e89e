"""Fixtures shared by all fleetca tests: a loopback DNS server and running fleetca servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv, free_port
from tests.support.acme_client import AcmeClient
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChallTestSrv]:
    """pebble-challtestsrv on loopback; every name resolves to 127.0.0.1."""
    with ChallTestSrv(tmp_path_factory.mktemp("dns")) as server:
        yield server


@pytest.fixture(scope="session")
def validation_ports() -> ChallengePorts:
    return ChallengePorts(http01=free_port(), tlsalpn01=free_port())


@pytest.fixture(scope="session")
def shared_fleetca(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
                   validation_ports: ChallengePorts) -> Iterator[FleetcaServer]:
    """One fleetca for tests that do not restart it or depend on its stored state."""
    server = FleetcaServer(tmp_path_factory.mktemp("shared") / "data", dns_server.dns_address, validation_ports,
                           permit_ip=("127.0.0.0/8",))
    with server:
        yield server


@pytest.fixture
def fleetca(tmp_path: Path, dns_server: ChallTestSrv, validation_ports: ChallengePorts) -> Iterator[FleetcaServer]:
    """A freshly initialised fleetca of this test's own."""
    with FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports) as server:
        yield server


@pytest.fixture
def responder(validation_ports: ChallengePorts) -> Iterator[HttpResponder]:
    with HttpResponder(validation_ports.http01) as running:
        yield running


@pytest.fixture
def client(shared_fleetca: FleetcaServer) -> Iterator[AcmeClient]:
    """A raw client with a registered account on the shared server."""
    acme = AcmeClient(shared_fleetca.directory_url(), shared_fleetca.root_pem)
    reply = acme.new_account()
    assert reply.status == 201, reply.body
    yield acme
    acme.close()
