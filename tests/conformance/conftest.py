"""Fixtures of the conformance suite: challenge responders, a second account, and an EAB-only server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.acme_client import AcmeClient
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer

from .helpers import configure_eab_required, new_client


@pytest.fixture
def http_responder(responder: HttpResponder) -> HttpResponder:
    """The http-01 responder of the root conftest, with no routes until a test adds them."""
    return responder


@pytest.fixture
def other_client(shared_fleetca: FleetcaServer) -> Iterator[AcmeClient]:
    """A second account on the shared server, for access-control cases."""
    client = new_client(shared_fleetca)
    yield client
    client.close()


@pytest.fixture(scope="session")
def eab_fleetca(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
                validation_ports: ChallengePorts) -> Iterator[FleetcaServer]:
    """A fleetca whose CA requires External Account Binding; it also permits 127.0.0.0/8 and ::1."""
    data_dir: Path = tmp_path_factory.mktemp("eab") / "data"
    server = FleetcaServer(data_dir, dns_server.dns_address, validation_ports,
                           permit_ip=("127.0.0.0/8", "::1/128"))
    server.init()
    configure_eab_required(server)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.drop_database()
