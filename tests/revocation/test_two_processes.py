"""Two fleetca processes on one database publish CRL shards without ever reusing a CRL number.

Both processes re-sign every shard every 2 seconds and look every second, so for
the length of the test they compete for the publisher lease all the time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from fleetca.revocation.publisher import distribution_point_url
from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv, free_port
from tests.acme.test_flow import issue
from tests.support.acme_client import AcmeClient
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaError, FleetcaServer

OBSERVE_SECONDS = 8.0
SHARDS = 2
FAST_SCHEDULE = {
    "FLEETCA_CRL__SHARDS": str(SHARDS),
    "FLEETCA_CRL__CHECK_SECONDS": "1",
    "FLEETCA_CRL__VALIDITY_HOURS": "1",
    "FLEETCA_CRL__REGENERATE_HOURS": "0.0005",
}


def published_events(server: FleetcaServer) -> list[tuple[int, int]]:
    """(shard, number) of every "published CRL shard" line in the server's log, in order."""
    events = []
    for line in server.read_log().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("message") == "published CRL shard":
            events.append((entry["shard"], entry["number"]))
    return events


def test_two_processes_share_crl_numbers(tmp_path: Path, dns_server: ChallTestSrv,
                                         validation_ports: ChallengePorts) -> None:
    # Both processes name the same CRL URL, as they would behind one load balancer.
    shared_url = f"http://127.0.0.1:{free_port()}"
    first = FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports,
                          http_public_url=shared_url, env=FAST_SCHEDULE)
    second = FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports,
                           database_url=first.database_url, http_public_url=shared_url, env=FAST_SCHEDULE)
    second.log_path = tmp_path / "second-serve.log"
    first.init()
    first.start()
    second.start()
    try:
        observed: dict[int, list[tuple[int, bytes]]] = {shard: [] for shard in range(SHARDS)}
        deadline = time.monotonic() + OBSERVE_SECONDS
        while time.monotonic() < deadline:
            for server in (first, second):
                for shard in range(SHARDS):
                    response = httpx.get(f"http://127.0.0.1:{server.http_port}/crl/default/{shard}.crl",
                                         trust_env=False, timeout=10)
                    if response.status_code == 200:
                        crl = x509.load_der_x509_crl(response.content)
                        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
                        observed[shard].append((number, response.content))
            time.sleep(0.2)
        events = published_events(first) + published_events(second)
    finally:
        second.stop()
        first.stop()
        first.drop_database()

    # Every number ever served stands for one CRL, and what is served only moves forward.
    for shard, seen in observed.items():
        by_number: dict[int, bytes] = {}
        for number, der in seen:
            assert by_number.setdefault(number, der) == der, f"shard {shard}: two CRLs numbered {number}"
        numbers = [number for number, _ in seen]
        assert numbers == sorted(numbers), f"shard {shard}: a served CRL number went back"
        assert len(set(numbers)) >= 2, f"shard {shard} was not republished while observed"
    # Across both processes' logs, no shard was stored twice under one number.
    assert len(events) == len(set(events))
    assert len(events) >= 2 * SHARDS


OTHER_CRL_BASE = "http://crl.elsewhere.example"


def wait_for_shards(server: FleetcaServer, base_url: str) -> list[str | None]:
    """Wait until every shard is published under ``base_url``, and return the URL each shard names."""
    deadline = time.monotonic() + OBSERVE_SECONDS
    while True:
        urls = [distribution_point_url(bytes(der))
                for (der,) in server.query("SELECT der FROM crl_shards ORDER BY shard")]
        if (len(urls) >= SHARDS and all(url and url.startswith(base_url) for url in urls)) \
                or time.monotonic() > deadline:
            return urls
        time.sleep(0.2)


def crl_pair(tmp_path: Path, dns_server: ChallTestSrv,
             validation_ports: ChallengePorts) -> tuple[FleetcaServer, FleetcaServer]:
    """Two servers on one data directory and database that name different CRL URLs."""
    first = FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports,
                          http_public_url=f"http://127.0.0.1:{free_port()}", env=FAST_SCHEDULE)
    other = FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports,
                          database_url=first.database_url, http_public_url=OTHER_CRL_BASE, env=FAST_SCHEDULE)
    other.log_path = tmp_path / "other-serve.log"
    return first, other


def test_other_crl_url_rejected_at_start(tmp_path: Path, dns_server: ChallTestSrv,
                                                     validation_ports: ChallengePorts,
                                                     responder: HttpResponder) -> None:
    first, other = crl_pair(tmp_path, dns_server, validation_ports)
    first.init()
    first.start()
    try:
        wait_for_shards(first, first.http_base_url)
        client = AcmeClient(first.directory_url(), first.root_pem)
        assert client.new_account().status == 201
        issue(client, responder, ["crl-url.devices.example.test"])
        with pytest.raises(FleetcaError) as failure:
            other.start()
    finally:
        other.stop()
        first.stop()
        first.drop_database()

    assert "is published at" in str(failure.value)
    assert f"{OTHER_CRL_BASE}/crl/default/0.crl" in str(failure.value)


def test_crl_url_moves_before_first_certificate(tmp_path: Path, dns_server: ChallTestSrv,
                                                validation_ports: ChallengePorts) -> None:
    first, other = crl_pair(tmp_path, dns_server, validation_ports)
    first.init()
    first.start()
    try:
        before = wait_for_shards(first, first.http_base_url)
        first.stop()
        other.start()
        after = wait_for_shards(other, OTHER_CRL_BASE)
    finally:
        other.stop()
        first.stop()
        first.drop_database()

    assert before == [f"{first.http_base_url}/crl/default/{shard}.crl" for shard in range(SHARDS)]
    assert after == [f"{OTHER_CRL_BASE}/crl/default/{shard}.crl" for shard in range(SHARDS)]
