"""Several fleetca processes on one database, as behind a load balancer.

Run with FLEETCA_TEST_DATABASE=postgresql for PostgreSQL; by default both
processes share one SQLite file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from tests.acme.test_flow import answer_http01
from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.conformance.helpers import inner_jws
from tests.support.acme_client import AcmeClient, Reply, b64url, make_csr, new_key
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
                  validation_ports: ChallengePorts) -> Iterator[tuple[FleetcaServer, FleetcaServer]]:
    first = FleetcaServer(tmp_path_factory.mktemp("pair") / "data", dns_server.dns_address, validation_ports)
    first.init()
    first.start()
    second = first.sibling("second")
    second.start()
    yield first, second
    second.stop()
    first.stop()
    first.drop_database()


def on(server: FleetcaServer, public_url: str) -> str:
    """The same resource URL, sent to ``server``'s own port."""
    return public_url.replace(public_url.split("/acme/")[0], server.base_url)


def certificate_count(server: FleetcaServer, order_id: str) -> int:
    return server.query("SELECT count(*) FROM certificates WHERE order_id = :o", o=order_id)[0][0]


def test_nonce_from_one_process_accepted_once_by_other(two_processes: tuple[FleetcaServer, FleetcaServer]) -> None:
    first, second = two_processes
    client = AcmeClient(first.directory_url(), first.root_pem)
    assert client.new_account().status == 201
    nonce = client.http.head(client.directory["newNonce"]).headers["Replay-Nonce"]
    url = client.directory["newOrder"]
    body = client.sign(url, {"identifiers": [{"type": "dns", "value": "mp1.devices.example.test"}]}, nonce=nonce)

    accepted = client.post_raw(on(second, url), body)
    assert accepted.status == 201, accepted.body
    replayed = client.post_raw(url, body)
    assert replayed.status == 400
    assert replayed.problem_type == "badNonce"
    replayed_again = client.post_raw(on(second, url), body)
    assert replayed_again.problem_type == "badNonce"


def test_concurrent_finalize_issues_one_certificate(two_processes: tuple[FleetcaServer, FleetcaServer],
                                                    responder: HttpResponder) -> None:
    first, second = two_processes
    client = AcmeClient(first.directory_url(), first.root_pem)
    assert client.new_account().status == 201
    name = "mp2.devices.example.test"
    reply = client.new_order([name])
    order_url = reply.headers["Location"]
    answer_http01(client, responder, reply.json())
    order = client.poll(order_url, ("ready", "invalid"))
    assert order["status"] == "ready"

    csr = make_csr([name])[0]
    bodies = [client.sign(order["finalize"], {"csr": b64url(csr)}) for _ in range(2)]
    replies: list[Reply] = []
    start = threading.Barrier(2)

    def send(server: FleetcaServer, body: str) -> None:
        start.wait()
        replies.append(client.post_raw(on(server, order["finalize"]), body))

    threads = [threading.Thread(target=send, args=(server, body)) for server, body in zip((first, second), bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    statuses = sorted(r.status for r in replies)
    assert statuses == [200, 403], [r.body for r in replies]
    refused = next(r for r in replies if r.status == 403)
    assert refused.problem_type == "orderNotReady"
    assert client.poll(order_url, ("valid", "invalid"))["status"] == "valid"
    assert certificate_count(first, order_url.rsplit("/", 1)[1]) == 1


def test_validation_started_on_one_process_visible_on_other(two_processes: tuple[FleetcaServer, FleetcaServer],
                                                            responder: HttpResponder) -> None:
    first, second = two_processes
    client = AcmeClient(first.directory_url(), first.root_pem)
    assert client.new_account().status == 201
    reply = client.new_order(["mp3.devices.example.test"])
    order_url = reply.headers["Location"]
    authz_url = reply.json()["authorizations"][0]
    challenge = next(c for c in client.post(authz_url).json()["challenges"] if c["type"] == "http-01")
    responder.serve_key_authorization(challenge["token"], client.key_authorization(challenge["token"]))
    started = client.post_raw(on(second, challenge["url"]), client.sign(challenge["url"], {}))
    assert started.status == 200, started.body
    assert client.poll(order_url, ("ready", "invalid"))["status"] == "ready"


def new_order_on(server: FleetcaServer, client: AcmeClient, label: str, **sign_options: object) -> Reply:
    url = client.directory["newOrder"]
    body = client.sign(url, {"identifiers": [{"type": "dns", "value": f"{label}.devices.example.test"}]},
                       **sign_options)
    return client.post_raw(on(server, url), body)


def order_count(server: FleetcaServer, account_url: str) -> int:
    account_id = account_url.rsplit("/", 1)[1]
    return server.query("SELECT count(*) FROM orders WHERE account_id = :a", a=account_id)[0][0]


def test_deactivation_reaches_other_process(two_processes: tuple[FleetcaServer, FleetcaServer]) -> None:
    first, second = two_processes
    client = AcmeClient(first.directory_url(), first.root_pem)
    assert client.new_account().status == 201
    assert new_order_on(second, client, "mp-deactivate1").status == 201  # the second process caches the account

    deactivated = client.post(client.account_url, {"status": "deactivated"})
    rejected = new_order_on(second, client, "mp-deactivate2")
    rejected_again = new_order_on(second, client, "mp-deactivate3")

    assert deactivated.status == 200, deactivated.body
    assert rejected.status == 401, rejected.body
    assert rejected.problem_type == "unauthorized"
    assert rejected_again.status == 401, rejected_again.body
    assert order_count(second, client.account_url) == 1


def test_key_change_reaches_other_process(two_processes: tuple[FleetcaServer, FleetcaServer]) -> None:
    first, second = two_processes
    client = AcmeClient(first.directory_url(), first.root_pem)
    assert client.new_account().status == 201
    assert new_order_on(second, client, "mp-rollover1").status == 201  # the second process caches the old key
    old_key, replacement = client.key, new_key()

    changed = client.post(client.directory["keyChange"], inner_jws(client, replacement))
    with_old_key = new_order_on(second, client, "mp-rollover2", key=old_key)
    client.key = replacement
    with_new_key = new_order_on(second, client, "mp-rollover3")

    assert changed.status == 200, changed.body
    assert with_old_key.status in (401, 403), with_old_key.body
    assert with_old_key.problem_type in ("unauthorized", "malformed")
    assert with_new_key.status == 201, with_new_key.body
    assert order_count(second, client.account_url) == 2
