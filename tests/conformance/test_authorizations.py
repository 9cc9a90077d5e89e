"""Authorizations: reads, deactivation and its effect on orders, and newAuthz (RFC 8555 §7.5, §7.5.2, §7.4.1)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support.acme_client import AcmeClient, make_csr
from tests.support.responder import CHALLENGE_PATH, HttpResponder, Route

from .helpers import (
    assert_problem,
    authorizations_of,
    challenge_of,
    device_name,
    ready_order,
)


def test_authorization_fields(client: AcmeClient) -> None:
    order = client.new_order([device_name("authz-fields")]).json()

    reply = client.post(order["authorizations"][0])

    assert reply.status == 200
    authz = reply.json()
    assert authz["identifier"] == {"type": "dns", "value": device_name("authz-fields")}
    assert authz["status"] == "pending"
    assert datetime.fromisoformat(authz["expires"].replace("Z", "+00:00")) > datetime.now(UTC)
    assert {c["type"] for c in authz["challenges"]} == {"http-01", "dns-01", "tls-alpn-01"}
    assert "wildcard" not in authz


def test_authorization_get_405(client: AcmeClient) -> None:
    authz_url = client.new_order([device_name("authz-get")]).json()["authorizations"][0]

    reply = client.http.get(authz_url)

    assert reply.status_code == 405


def test_authorization_of_other_account_404(client: AcmeClient, other_client: AcmeClient) -> None:
    authz_url = other_client.new_order([device_name("authz-other")]).json()["authorizations"][0]

    reply = client.post(authz_url)

    assert_problem(reply, "malformed", 404)
    assert_problem(client.post(authz_url, {"status": "deactivated"}), "malformed", 404)
    assert other_client.post(authz_url).json()["status"] == "pending"


def test_deactivate_pending_authorization(client: AcmeClient) -> None:
    created = client.new_order([device_name("deactivate-pending")])
    order_url, authz_url = created.headers["Location"], created.json()["authorizations"][0]

    reply = client.post(authz_url, {"status": "deactivated"})

    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "deactivated"
    order = client.post(order_url).json()
    assert order["status"] == "invalid"
    assert "error" in order


def test_deactivate_valid_authorization_invalidates_ready_order(client: AcmeClient,
                                                                 http_responder: HttpResponder) -> None:
    name = device_name("deactivate-valid")
    order_url, order = ready_order(client, http_responder, [name])
    authz_url = order["authorizations"][0]

    reply = client.post(authz_url, {"status": "deactivated"})

    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "deactivated"
    # RFC 8555 §7.1.6: an order whose authorization is deactivated becomes invalid, so it cannot be finalized.
    assert client.post(order_url).json()["status"] == "invalid"
    assert_problem(client.finalize(order, make_csr([name])[0]), "orderNotReady", 403)


def test_deactivated_authorization_not_reused(client: AcmeClient, http_responder: HttpResponder) -> None:
    name = device_name("not-reused")
    _, order = ready_order(client, http_responder, [name])
    assert client.post(order["authorizations"][0], {"status": "deactivated"}).status == 200

    again = client.new_order([name])

    assert again.json()["status"] == "pending"
    assert again.json()["authorizations"] != order["authorizations"]
    assert client.post(again.json()["authorizations"][0]).json()["status"] == "pending"


def test_deactivated_authorization_challenge_not_started(client: AcmeClient, http_responder: HttpResponder) -> None:
    authz_url = client.new_order([device_name("deactivated-challenge")]).json()["authorizations"][0]
    challenge = challenge_of(client.post(authz_url).json(), "http-01")
    http_responder.serve_key_authorization(challenge["token"], client.key_authorization(challenge["token"]))
    assert client.post(authz_url, {"status": "deactivated"}).status == 200

    reply = client.post(challenge["url"], {})

    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "pending"
    assert http_responder.requests == []
    assert client.post(authz_url).json()["status"] == "deactivated"


def test_deactivate_twice_rejected(client: AcmeClient) -> None:
    authz_url = client.new_order([device_name("deactivate-twice")]).json()["authorizations"][0]
    assert client.post(authz_url, {"status": "deactivated"}).status == 200

    reply = client.post(authz_url, {"status": "deactivated"})

    assert_problem(reply, "malformed", 400)


@pytest.mark.parametrize("payload", [{"status": "valid"}, {"status": "revoked"}, {}, {"identifier": "x"}],
                         ids=["status-valid", "status-revoked", "empty", "other-field"])
def test_authorization_update_only_deactivates(client: AcmeClient, payload: dict) -> None:
    authz_url = client.new_order([device_name("update-authz")]).json()["authorizations"][0]

    reply = client.post(authz_url, payload)

    assert_problem(reply, "malformed", 400)
    assert client.post(authz_url).json()["status"] == "pending"


def test_valid_authorization_lists_validated_challenge(client: AcmeClient, http_responder: HttpResponder) -> None:
    _, order = ready_order(client, http_responder, [device_name("validated-challenge")])

    [authz] = authorizations_of(client, order)

    assert authz["status"] == "valid"
    [challenge] = authz["challenges"]
    assert challenge["type"] == "http-01"
    assert challenge["status"] == "valid"
    datetime.fromisoformat(challenge["validated"].replace("Z", "+00:00"))


def test_authorization_retry_after_while_processing(client: AcmeClient, http_responder: HttpResponder) -> None:
    order = client.new_order([device_name("slow-responder")]).json()
    authz_url = order["authorizations"][0]
    challenge = challenge_of(client.post(authz_url).json(), "http-01")
    http_responder.routes[CHALLENGE_PATH + challenge["token"]] = Route(
        body=client.key_authorization(challenge["token"]), delay_seconds=1.5)
    assert client.post(challenge["url"], {}).status == 200

    reply = client.post(authz_url)

    processing = [c for c in reply.json()["challenges"] if c["status"] == "processing"]
    assert processing, reply.json()
    # A client polling a resource that is still changing learns from Retry-After when to poll again.
    assert reply.headers["Retry-After"].isdigit()
    assert 0 < int(reply.headers["Retry-After"]) <= 60
    assert client.poll(authz_url, ("valid", "invalid"))["status"] == "valid"


def test_new_authz_creates_pending_authorization(client: AcmeClient) -> None:
    reply = client.post(client.directory["newAuthz"], {"identifier": {"type": "dns", "value": device_name("pre")}})

    assert reply.status == 201, reply.body
    authz = reply.json()
    assert authz["status"] == "pending"
    assert authz["identifier"] == {"type": "dns", "value": device_name("pre")}
    assert client.post(reply.headers["Location"]).json() == authz


def test_new_authz_then_order_reuses_it(client: AcmeClient, http_responder: HttpResponder) -> None:
    name = device_name("pre-then-order")
    created = client.post(client.directory["newAuthz"], {"identifier": {"type": "dns", "value": name}})
    authz_url = created.headers["Location"]
    challenge = challenge_of(created.json(), "http-01")
    http_responder.serve_key_authorization(challenge["token"], client.key_authorization(challenge["token"]))
    assert client.post(challenge["url"], {}).status == 200
    assert client.poll(authz_url, ("valid", "invalid"))["status"] == "valid"

    order = client.new_order([name]).json()

    assert order["status"] == "ready"
    assert order["authorizations"] == [authz_url]


NEW_AUTHZ_REJECTED = {
    "wildcard": ({"type": "dns", "value": "*.pre.devices.example.test"}, "rejectedIdentifier"),
    "outside-constraints": ({"type": "dns", "value": "pre.other.example"}, "rejectedIdentifier"),
    "u-label": ({"type": "dns", "value": device_name("prë")}, "rejectedIdentifier"),
    "unsupported-type": ({"type": "email", "value": "ops@example.test"}, "unsupportedIdentifier"),
    "missing": (None, "malformed"),
}


@pytest.mark.parametrize("case", sorted(NEW_AUTHZ_REJECTED))
def test_new_authz_rejected(client: AcmeClient, case: str) -> None:
    identifier, problem = NEW_AUTHZ_REJECTED[case]

    reply = client.post(client.directory["newAuthz"], {"identifier": identifier})

    assert_problem(reply, problem, 400)
