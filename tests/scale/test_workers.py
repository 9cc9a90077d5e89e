"""`fleetca serve --workers N`: several processes accepting on one pair of listeners."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.acme.test_flow import issue
from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.acme_client import AcmeClient
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer

WORKERS = 2
CLIENTS = 6


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
            validation_ports: ChallengePorts) -> Iterator[FleetcaServer]:
    server = FleetcaServer(tmp_path_factory.mktemp("workers") / "data", dns_server.dns_address, validation_ports,
                           serve_args=("--workers", str(WORKERS)))
    with server:
        yield server


def worker_pids(server: FleetcaServer) -> list[int]:
    parent = server._process.pid  # noqa: SLF001 - the test inspects the process tree it started
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children]


def test_workers_are_started(workers: FleetcaServer) -> None:
    # The listeners are bound before the workers are forked, so the port can
    # accept connections a moment before the last worker exists.
    deadline = time.monotonic() + 10
    while len(worker_pids(workers)) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(worker_pids(workers)) == WORKERS


def test_concurrent_clients_all_get_certificates(workers: FleetcaServer,
                                                 responder: HttpResponder) -> None:
    chains: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def device(index: int) -> None:
        try:
            client = AcmeClient(workers.directory_url(), workers.root_pem)
            assert client.new_account().status == 201
            chains[index] = issue(client, responder, [f"w{index}.devices.example.test"])[1]
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=device, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(chains) == CLIENTS
    serials = {x509.load_pem_x509_certificates(chain)[0].serial_number for chain in chains.values()}
    assert len(serials) == CLIENTS
    assert len(worker_pids(workers)) == WORKERS
