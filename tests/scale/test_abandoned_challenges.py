"""Challenges left in processing are taken up again only when the process validating them is gone."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.acme_client import AcmeClient
from tests.support.responder import CHALLENGE_PATH, HttpResponder, Route
from tests.support.server import FleetcaServer

SLOW_RESPONSE_SECONDS = 4.0
WAIT_SECONDS = 30.0


@pytest.fixture
def pair(tmp_path: Path, dns_server: ChallTestSrv,
         validation_ports: ChallengePorts) -> Iterator[tuple[FleetcaServer, FleetcaServer]]:
    first = FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports)
    first.init()
    first.start()
    second = first.sibling("second")
    yield first, second
    second.stop()
    first.stop()
    first.drop_database()


def start_slow_challenge(server: FleetcaServer, responder: HttpResponder, label: str,
                         delay: float) -> tuple[str, str]:
    """Serve an http-01 key authorization that responds after ``delay`` seconds, then POST the challenge.

    Return the challenge id and token.
    """
    client = AcmeClient(server.directory_url(), server.root_pem)
    assert client.new_account().status == 201
    order = client.new_order([f"{label}.devices.example.test"]).json()
    authz = client.post(order["authorizations"][0]).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    token = challenge["token"]
    responder.routes[CHALLENGE_PATH + token] = Route(body=client.key_authorization(token), delay_seconds=delay)
    reply = client.post(challenge["url"], {})
    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "processing"
    return challenge["url"].rsplit("/", 1)[1], token


def challenge_status_when_done(server: FleetcaServer, challenge_id: str) -> tuple[str, object]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        status, error = server.query("SELECT status, error FROM challenges WHERE id = :c", c=challenge_id)[0]
        if status != "processing" or time.monotonic() > deadline:
            return status, error
        time.sleep(0.2)


def fetch_count(responder: HttpResponder, token: str) -> int:
    return sum(1 for seen in responder.requests if seen.path == CHALLENGE_PATH + token)


def test_live_validation_not_repeated(pair: tuple[FleetcaServer, FleetcaServer],
                                                          responder: HttpResponder) -> None:
    first, second = pair
    challenge_id, token = start_slow_challenge(first, responder, "live", SLOW_RESPONSE_SECONDS)
    second.start()

    status, _ = challenge_status_when_done(first, challenge_id)
    assert status == "valid"
    assert fetch_count(responder, token) == 1
    assert "resumed" not in second.read_log()


def test_abandoned_validation_taken_up(pair: tuple[FleetcaServer, FleetcaServer],
                                                        responder: HttpResponder) -> None:
    first, second = pair
    challenge_id, token = start_slow_challenge(first, responder, "gone", SLOW_RESPONSE_SECONDS)
    first.send_signal(signal.SIGKILL)
    first.wait_for_exit(10)
    # A challenge without a start time counts as started before any live validation began.
    first.execute("UPDATE challenges SET started_at = NULL WHERE id = :c", c=challenge_id)
    second.start()

    status, _ = challenge_status_when_done(second, challenge_id)
    assert status == "valid"
    assert fetch_count(responder, token) == 2
    assert "resumed 1 challenge validations" in second.read_log()


def test_total_timeout_ends_slow_validation(tmp_path: Path, dns_server: ChallTestSrv,
                                            validation_ports: ChallengePorts, responder: HttpResponder) -> None:
    with FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports,
                       env={"FLEETCA_VALIDATION__TOTAL_TIMEOUT_SECONDS": "1"}) as server:
        challenge_id, _ = start_slow_challenge(server, responder, "slow", SLOW_RESPONSE_SECONDS)
        status, error = challenge_status_when_done(server, challenge_id)

    assert status == "invalid"
    assert isinstance(error, (dict, str))
    assert "did not finish within 1 seconds" in str(error)
