"""Expiry of orders and authorizations, driven by a manual clock in an in-process server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fleetca.acme.app import build_context, create_app
from fleetca.ca.bootstrap import initialize
from fleetca.ca.constraints import NameConstraints
from fleetca.clock import ManualClock
from fleetca.settings import load_settings
from tests.support.acme_client import AcmeClient
from tests.support.databases import drop_postgres_database, new_database_url

BASE_URL = "http://testserver"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def client(tmp_path: Path, clock: ManualClock) -> Iterator[AcmeClient]:
    database_url = new_database_url()
    initialize(tmp_path / "data", "default", NameConstraints.build(["devices.example.test"]), clock.now(),
               database_url=database_url)
    settings = load_settings(tmp_path / "data", server={"public_url": BASE_URL, "http_listen": None})
    context = build_context(settings, clock=clock)
    with TestClient(create_app(context), base_url=BASE_URL) as http:
        acme = AcmeClient(f"{BASE_URL}/acme/default/directory", tmp_path / "unused.pem", transport_client=http)
        assert acme.new_account().status == 201
        yield acme
    if database_url:
        drop_postgres_database(database_url)


def advance(client: AcmeClient, clock: ManualClock, delta: timedelta) -> None:
    """Move the server's clock; the client's saved nonce would be expired, so it fetches a new one."""
    clock.advance(delta)
    client.nonce()


def test_pending_order_expires(client: AcmeClient, clock: ManualClock) -> None:
    reply = client.new_order(["e1.devices.example.test"])
    order_url, authz_url = reply.headers["Location"], reply.json()["authorizations"][0]
    advance(client, clock, timedelta(hours=25))

    order = client.post(order_url).json()
    assert order["status"] == "invalid"
    assert "expired" in order["error"]["detail"]
    assert client.post(authz_url).json()["status"] == "expired"


def test_pending_authorization_expiry_invalidates_order(client: AcmeClient, clock: ManualClock) -> None:
    reply = client.new_order(["e2.devices.example.test"])
    order_url, authz_url = reply.headers["Location"], reply.json()["authorizations"][0]
    advance(client, clock, timedelta(hours=24, seconds=1))

    assert client.post(authz_url).json()["status"] == "expired"
    order = client.post(order_url).json()
    assert order["status"] == "invalid"


def test_challenge_on_expired_authorization_not_started(client: AcmeClient, clock: ManualClock) -> None:
    reply = client.new_order(["e3.devices.example.test"])
    authz = client.post(reply.json()["authorizations"][0]).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    advance(client, clock, timedelta(hours=25))

    answered = client.post(challenge["url"], {})
    assert answered.status == 200
    assert answered.json()["status"] == "pending"


def test_nonce_expires(client: AcmeClient, clock: ManualClock) -> None:
    nonce = client.nonce()
    clock.advance(timedelta(hours=2))
    reply = client.post(client.directory["newOrder"], {"identifiers": [{"type": "dns",
                                                                       "value": "e4.devices.example.test"}]},
                        nonce=nonce)
    assert reply.status == 400
    assert reply.problem_type == "badNonce"
    assert "expired" in reply.json()["detail"]
