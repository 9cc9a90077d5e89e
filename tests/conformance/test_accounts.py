"""Accounts: newAccount, lookup, update, deactivation and the orders list (RFC 8555 §7.3, §7.1.2.1)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from tests.support.acme_client import AcmeClient, new_key
from tests.support.server import FleetcaServer

from .helpers import assert_problem, device_name, has_link, new_client

# The orders list contains this many URLs per page (RFC 8555 §7.1.2.1 leaves the size to the server).
ORDERS_PAGE_SIZE = 100


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256", "EdDSA"])
def test_new_account_created(shared_fleetca: FleetcaServer, alg: str) -> None:
    client = AcmeClient(shared_fleetca.directory_url(), shared_fleetca.root_pem, key=new_key(alg), alg=alg)

    reply = client.new_account({"termsOfServiceAgreed": True, "contact": ["mailto:ops@example.test"]})

    assert reply.status == 201, reply.body
    location = reply.headers["Location"]
    assert location.startswith(f"{shared_fleetca.base_url}/acme/{shared_fleetca.ca_name}/account/")
    body = reply.json()
    assert body["status"] == "valid"
    assert body["contact"] == ["mailto:ops@example.test"]
    assert body["orders"].startswith("https://")
    assert has_link(reply, client.directory_url, "index")
    # The new account signs with its kid from now on.
    assert client.post(location, None).status == 200


def test_new_account_without_terms_when_none_advertised(shared_fleetca: FleetcaServer) -> None:
    # The directory advertises no meta.termsOfService, so there is nothing to agree to (RFC 8555 §7.3).
    client = AcmeClient(shared_fleetca.directory_url(), shared_fleetca.root_pem)
    assert "termsOfService" not in client.directory.get("meta", {})

    reply = client.new_account({})

    assert reply.status == 201, reply.body


def test_existing_key_returns_account(client: AcmeClient) -> None:
    first_url = client.account_url

    reply = client.new_account({"termsOfServiceAgreed": True, "contact": ["mailto:other@example.test"]})

    assert reply.status == 200, reply.body
    assert reply.headers["Location"] == first_url
    assert reply.json()["status"] == "valid"
    # A repeated newAccount is a lookup: the contact it carries is not applied.
    assert reply.json()["contact"] == []


@pytest.mark.parametrize("payload", [
    {"contact": ["tel:+15555550100"]},
    {"termsOfServiceAgreed": "yes"},
    {"onlyReturnExisting": False, "contact": "mailto:ops@example.test"},
], ids=["unsupported-contact", "terms-not-boolean", "contact-not-array"])
def test_existing_key_with_invalid_payload_returns_account(client: AcmeClient, payload: dict) -> None:
    first_url = client.account_url

    reply = client.new_account(payload)

    assert reply.status == 200, reply.body
    assert reply.headers["Location"] == first_url


def test_same_new_key_concurrently_makes_one_account(shared_fleetca: FleetcaServer) -> None:
    key = new_key("ES256")
    clients = [AcmeClient(shared_fleetca.directory_url(), shared_fleetca.root_pem, key=key) for _ in range(6)]
    for client in clients:
        client._nonce = client.nonce()

    with ThreadPoolExecutor(len(clients)) as pool:
        replies = list(pool.map(lambda c: c.new_account({"termsOfServiceAgreed": True}), clients))

    assert sorted(reply.status for reply in replies) == [200] * (len(clients) - 1) + [201]
    assert len({reply.headers["Location"] for reply in replies}) == 1


def test_only_return_existing_finds_account(client: AcmeClient) -> None:
    first_url = client.account_url

    reply = client.new_account({"onlyReturnExisting": True})

    assert reply.status == 200, reply.body
    assert reply.headers["Location"] == first_url
    assert reply.json()["status"] == "valid"


def test_only_return_existing_unknown_key(shared_fleetca: FleetcaServer) -> None:
    client = AcmeClient(shared_fleetca.directory_url(), shared_fleetca.root_pem)

    reply = client.new_account({"onlyReturnExisting": True})

    assert_problem(reply, "accountDoesNotExist", 400)
    assert "Location" not in reply.headers
    # Nothing was created: the same lookup still finds no account.
    assert_problem(client.new_account({"onlyReturnExisting": True}), "accountDoesNotExist", 400)


@pytest.mark.parametrize("field,value", [("onlyReturnExisting", "yes"), ("termsOfServiceAgreed", 1)])
def test_new_account_boolean_fields_checked(shared_fleetca: FleetcaServer, field: str, value: object) -> None:
    client = AcmeClient(shared_fleetca.directory_url(), shared_fleetca.root_pem)

    reply = client.new_account({field: value})

    assert_problem(reply, "malformed", 400)


CONTACT_CASES = {
    "ok/one-mailto": (["mailto:ops@example.test"], None),
    "ok/two-mailto": (["mailto:a@example.test", "mailto:b@example.test"], None),
    "ok/empty": ([], None),
    "fail/tel-scheme": (["tel:+15555550100"], "unsupportedContact"),
    "fail/https-scheme": (["https://example.test/contact"], "unsupportedContact"),
    "fail/no-address": (["mailto:"], "invalidContact"),
    "fail/no-domain-dot": (["mailto:ops@localhost"], "invalidContact"),
    "fail/query": (["mailto:ops@example.test?subject=hi"], "invalidContact"),
    "fail/two-addresses": (["mailto:a@example.test,b@example.test"], "invalidContact"),
    "fail/nul-character": (["mailto:o\u0000ps@example.test"], "invalidContact"),
    "fail/control-character": (["mailto:ops\u007f@example.test"], "invalidContact"),
    "fail/too-many": ([f"mailto:ops{i}@example.test" for i in range(11)], "invalidContact"),
    "fail/not-array": ("mailto:ops@example.test", "malformed"),
    "fail/not-strings": ([7], "malformed"),
}


@pytest.mark.parametrize("case", sorted(CONTACT_CASES))
def test_new_account_contact(shared_fleetca: FleetcaServer, case: str) -> None:
    contact, problem = CONTACT_CASES[case]
    client = AcmeClient(shared_fleetca.directory_url(), shared_fleetca.root_pem)

    reply = client.new_account({"termsOfServiceAgreed": True, "contact": contact})

    if problem is None:
        assert reply.status == 201, reply.body
        assert reply.json()["contact"] == contact
    else:
        assert_problem(reply, problem, 400)
        assert_problem(client.new_account({"onlyReturnExisting": True}), "accountDoesNotExist", 400)


def test_account_post_as_get(client: AcmeClient) -> None:
    reply = client.post(client.account_url, None)

    assert reply.status == 200
    body = reply.json()
    assert body["status"] == "valid"
    assert body["orders"] == client.account_url + "/orders"
    datetime.fromisoformat(body["createdAt"].replace("Z", "+00:00"))


def test_account_update_contact(client: AcmeClient) -> None:
    reply = client.post(client.account_url, {"contact": ["mailto:new@example.test"]})

    assert reply.status == 200, reply.body
    assert reply.json()["contact"] == ["mailto:new@example.test"]
    assert client.post(client.account_url, None).json()["contact"] == ["mailto:new@example.test"]


def test_account_update_invalid_contact_unchanged(client: AcmeClient) -> None:
    assert client.post(client.account_url, {"contact": ["mailto:kept@example.test"]}).status == 200

    reply = client.post(client.account_url, {"contact": ["mailto:"]})

    assert_problem(reply, "invalidContact", 400)
    assert client.post(client.account_url, None).json()["contact"] == ["mailto:kept@example.test"]


@pytest.mark.parametrize("payload", [
    {"status": "valid"},
    {"status": "revoked"},
    {"orders": "https://elsewhere.test/orders"},
    {"termsOfServiceAgreed": False, "unknownField": {"x": 1}},
], ids=["status-valid", "status-revoked", "orders", "unknown-fields"])
def test_account_update_ignores_fields(client: AcmeClient, payload: dict) -> None:
    reply = client.post(client.account_url, payload)

    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["status"] == "valid"
    assert body["orders"] == client.account_url + "/orders"


def test_account_of_other_key_rejected(client: AcmeClient, other_client: AcmeClient) -> None:
    reply = client.post(other_client.account_url, None)

    assert_problem(reply, "unauthorized", 403)


def test_account_deactivation(shared_fleetca: FleetcaServer) -> None:
    client = new_client(shared_fleetca)

    reply = client.post(client.account_url, {"status": "deactivated"})

    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "deactivated"


DEACTIVATED_REQUESTS = {
    "account-read": lambda c: c.post(c.account_url, None),
    "account-update": lambda c: c.post(c.account_url, {"contact": []}),
    "new-order": lambda c: c.new_order([device_name("deactivated")]),
    "orders-list": lambda c: c.post(c.account_url + "/orders", None),
    "new-account-same-key": lambda c: c.new_account({"onlyReturnExisting": True}),
    "new-account-same-key-plain": lambda c: c.new_account({"termsOfServiceAgreed": True}),
    "new-account-same-key-bad-contact": lambda c: c.new_account({"contact": ["tel:+15555550100"]}),
    "deactivate-again": lambda c: c.post(c.account_url, {"status": "deactivated"}),
}


@pytest.mark.parametrize("case", sorted(DEACTIVATED_REQUESTS))
def test_deactivated_account_rejected(shared_fleetca: FleetcaServer, case: str) -> None:
    client = new_client(shared_fleetca)
    assert client.post(client.account_url, {"status": "deactivated"}).status == 200
    account_url = client.account_url

    reply = DEACTIVATED_REQUESTS[case](client)

    assert_problem(reply, "unauthorized", 401)
    assert client.account_url == account_url


def test_deactivation_cancels_pending_orders(shared_fleetca: FleetcaServer) -> None:
    client = new_client(shared_fleetca)
    reply = client.new_order([device_name("cancelled-by-deactivation")])
    assert reply.status == 201
    order_id = reply.headers["Location"].rsplit("/", 1)[1]

    assert client.post(client.account_url, {"status": "deactivated"}).status == 200

    # The order cannot be read with a deactivated account, so the stored state is checked.
    [(status,)] = shared_fleetca.query("SELECT status FROM orders WHERE id = :id", id=order_id)
    assert status == "invalid"


def test_orders_list_empty(client: AcmeClient) -> None:
    reply = client.post(client.account_url + "/orders", None)

    assert reply.status == 200
    assert reply.json() == {"orders": []}


def test_orders_list_contains_order(client: AcmeClient) -> None:
    created = client.new_order([device_name("listed")])

    reply = client.post(client.account_url + "/orders", None)

    assert reply.json()["orders"] == [created.headers["Location"]]


def test_orders_list_leaves_out_invalid_order(client: AcmeClient) -> None:
    kept = client.new_order([device_name("listed-pending")]).headers["Location"]
    dropped = client.new_order([device_name("listed-invalid")])
    assert client.post(dropped.json()["authorizations"][0], {"status": "deactivated"}).status == 200

    reply = client.post(client.account_url + "/orders", None)

    # RFC 8555 §7.1.2.1: the list SHOULD NOT include invalid orders.
    assert reply.json()["orders"] == [kept]


def test_orders_list_of_other_account_rejected(client: AcmeClient, other_client: AcmeClient) -> None:
    reply = client.post(other_client.account_url + "/orders", None)

    assert_problem(reply, "malformed", 404)


def test_orders_list_paginates(shared_fleetca: FleetcaServer) -> None:
    client = new_client(shared_fleetca)
    created = set()
    for index in range(ORDERS_PAGE_SIZE + 1):
        reply = client.new_order([device_name(f"page{index}")])
        assert reply.status == 201, reply.body
        created.add(reply.headers["Location"])

    first = client.post(client.account_url + "/orders", None)
    next_links = re.findall(r'<([^>]+)>\s*;\s*rel="next"', first.headers.get("Link", ""))
    assert len(next_links) == 1, first.headers.get("Link")
    second = client.post(next_links[0], None)

    first_page, second_page = first.json()["orders"], second.json()["orders"]
    assert len(first_page) == ORDERS_PAGE_SIZE
    assert len(second_page) == 1
    assert set(first_page) | set(second_page) == created
    assert 'rel="next"' not in second.headers.get("Link", "")
