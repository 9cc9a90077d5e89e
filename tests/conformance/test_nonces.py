"""The directory (RFC 8555 §7.1.1), newNonce (§7.2) and the life of a nonce (§6.5)."""

from __future__ import annotations

import base64
import ssl
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.acme_client import AcmeClient, b64url, make_csr, new_key
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer

from .helpers import (
    BASE64URL,
    assert_problem,
    authorizations_of,
    challenge_of,
    device_name,
    has_link,
    issue,
    ready_order,
)

DIRECTORY_RESOURCES = ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange")


def test_directory_lists_resources(shared_fleetca: FleetcaServer, client: AcmeClient) -> None:
    reply = client.http.get(shared_fleetca.directory_url())

    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    directory = reply.json()
    root = f"{shared_fleetca.base_url}/acme/{shared_fleetca.ca_name}/"
    for resource in DIRECTORY_RESOURCES:
        assert directory[resource].startswith(root), resource
    # fleetca offers pre-authorization, so newAuthz must be listed (RFC 8555 §7.4.1).
    assert directory["newAuthz"].startswith(root)


def test_directory_meta_profiles(client: AcmeClient) -> None:
    meta = client.directory["meta"]

    assert isinstance(meta["profiles"], dict)
    assert meta["profiles"], "at least the default profile must be offered"
    assert all(isinstance(text, str) for text in meta["profiles"].values())


def test_directory_meta_eab_not_required(client: AcmeClient) -> None:
    assert client.directory["meta"].get("externalAccountRequired", False) is False


def test_directory_meta_eab_required(eab_fleetca: FleetcaServer) -> None:
    context = ssl.create_default_context(cafile=str(eab_fleetca.root_pem))
    with httpx.Client(verify=context, trust_env=False) as http:
        meta = http.get(eab_fleetca.directory_url()).json()["meta"]

    assert meta["externalAccountRequired"] is True


def test_directory_rejects_post(client: AcmeClient) -> None:
    reply = client.post(client.directory_url, None)

    assert_problem(reply, "malformed", 405)
    # RFC 9110 §15.5.6: a 405 lists the methods the resource does support.
    allowed = {m.strip() for m in reply.headers.get("Allow", "").split(",")}
    assert "GET" in allowed
    assert "POST" not in allowed


def test_new_nonce_head(client: AcmeClient) -> None:
    reply = client.http.head(client.directory["newNonce"])

    assert reply.status_code == 200
    assert BASE64URL.match(reply.headers["Replay-Nonce"])
    assert reply.headers["Cache-Control"] == "no-store"
    assert has_link_header(reply, client.directory_url)


def test_new_nonce_get(client: AcmeClient) -> None:
    reply = client.http.get(client.directory["newNonce"])

    assert reply.status_code == 204
    assert BASE64URL.match(reply.headers["Replay-Nonce"])
    assert reply.headers["Cache-Control"] == "no-store"


def test_new_nonce_rejects_post(client: AcmeClient) -> None:
    reply = client.post(client.directory["newNonce"], None)

    assert_problem(reply, "malformed", 405)
    allowed = {m.strip() for m in reply.headers.get("Allow", "").split(",")}
    assert {"GET", "HEAD"} <= allowed
    assert "POST" not in allowed


def test_nonces_unique_and_long(client: AcmeClient) -> None:
    nonces = [client.http.head(client.directory["newNonce"]).headers["Replay-Nonce"] for _ in range(20)]

    assert len(set(nonces)) == len(nonces)
    for nonce in nonces:
        assert BASE64URL.match(nonce), nonce
        # RFC 8555 §6.5: enough entropy to be unpredictable; 128 bits is the usual floor.
        assert len(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))) >= 16


def has_link_header(reply: httpx.Response, directory_url: str) -> bool:
    return f'<{directory_url}>;rel="index"' in reply.headers.get("Link", "").replace(" ", "")


# Bad nonces: each case builds the nonce to send from a fresh, valid one.
BAD_NONCES = {
    "replayed": lambda client, fresh: replay_used_nonce(client),
    "unknown": lambda client, fresh: b64url(b"\x00" * 32),
    "not-base64url": lambda client, fresh: "!!not a nonce!!",
    "truncated": lambda client, fresh: fresh[:-4],
    "empty": lambda client, fresh: "",
}


def replay_used_nonce(client: AcmeClient) -> str:
    nonce = client.nonce()
    reply = client.post(client.account_url, None, nonce=nonce)
    assert reply.status == 200, reply.body
    return nonce


@pytest.mark.parametrize("case", sorted(BAD_NONCES))
def test_bad_nonce_rejected(client: AcmeClient, case: str) -> None:
    fresh = client.nonce()
    bad = BAD_NONCES[case](client, fresh)

    reply = client.post(client.account_url, None, extra_protected={"nonce": bad})

    assert_problem(reply, "badNonce", 400)


def test_missing_nonce_rejected(client: AcmeClient) -> None:
    reply = client.post(client.account_url, None, drop=("nonce",))

    assert_problem(reply, "badNonce", 400)


def test_nonce_of_wrong_type_rejected(client: AcmeClient) -> None:
    reply = client.post(client.account_url, None, extra_protected={"nonce": 12345})

    assert_problem(reply, "badNonce", 400)


def test_bad_nonce_reply_nonce_works(client: AcmeClient) -> None:
    reply = client.post(client.account_url, None, nonce=b64url(b"\x01" * 32))
    assert_problem(reply, "badNonce", 400)
    retry_nonce = reply.headers["Replay-Nonce"]

    retry = client.post(client.account_url, None, nonce=retry_nonce)

    assert retry.status == 200, retry.body


def test_nonce_used_by_failed_request_is_spent(client: AcmeClient) -> None:
    nonce = client.nonce()
    failed = client.post(client.directory["newOrder"], {"identifiers": []}, nonce=nonce)
    assert_problem(failed, "malformed", 400)

    replay = client.post(client.directory["newOrder"],
                         {"identifiers": [{"type": "dns", "value": device_name("nonce-spent")}]}, nonce=nonce)

    assert_problem(replay, "badNonce", 400)


def test_replay_nonce_on_success(client: AcmeClient) -> None:
    reply = client.post(client.account_url, None)

    assert reply.status == 200
    assert BASE64URL.match(reply.headers["Replay-Nonce"])
    assert has_link(reply, client.directory_url, "index")


def test_replay_nonce_on_error_works(client: AcmeClient) -> None:
    reply = client.post(client.directory["newOrder"], {"identifiers": "not a list"})
    assert_problem(reply, "malformed", 400)

    retry = client.post(client.account_url, None, nonce=reply.headers["Replay-Nonce"])

    assert retry.status == 200, retry.body


# Requests that record their nonce in their own write transaction. Each case
# prepares what the request needs. It returns the URL, the payload and whether
# the request carries the bare key. The test signs the request once and sends it twice.
def _new_account(client: AcmeClient, responder: HttpResponder) -> tuple[str, dict, bool]:
    client.key, client.account_url = new_key(), None
    return client.directory["newAccount"], {"termsOfServiceAgreed": True}, True


def _new_order(client: AcmeClient, responder: HttpResponder) -> tuple[str, dict, bool]:
    return client.directory["newOrder"], {"identifiers": [{"type": "dns", "value": device_name("replay-order")}]}, False


def _challenge(client: AcmeClient, responder: HttpResponder) -> tuple[str, dict, bool]:
    order = client.new_order([device_name("replay-challenge")]).json()
    challenge = challenge_of(authorizations_of(client, order)[0], "http-01")
    responder.serve_key_authorization(challenge["token"], client.key_authorization(challenge["token"]))
    return challenge["url"], {}, False


def _finalize(client: AcmeClient, responder: HttpResponder) -> tuple[str, dict, bool]:
    name = device_name("replay-finalize")
    _, order = ready_order(client, responder, [name])
    return order["finalize"], {"csr": b64url(make_csr([name])[0])}, False


REPLAYED_WRITES = {
    "newAccount": (_new_account, 201),
    "newOrder": (_new_order, 201),
    "challenge": (_challenge, 200),
    "finalize": (_finalize, 200),
}


def _authorization_read(client: AcmeClient, responder: HttpResponder) -> tuple[str, None, bool]:
    order = client.new_order([device_name("replay-authz")]).json()
    return order["authorizations"][0], None, False


def _order_read(client: AcmeClient, responder: HttpResponder) -> tuple[str, None, bool]:
    return client.new_order([device_name("replay-poll")]).headers["Location"], None, False


def _certificate_read(client: AcmeClient, responder: HttpResponder) -> tuple[str, None, bool]:
    order, _ = issue(client, responder, [device_name("replay-cert")])
    return order["certificate"], None, False


# POST-as-GET reads: on PostgreSQL the used nonce goes to the server with the read.
REPLAYED_READS = {
    "authorization": _authorization_read,
    "order": _order_read,
    "certificate": _certificate_read,
}


@pytest.mark.parametrize("case", sorted(REPLAYED_READS))
def test_replayed_read_rejected(client: AcmeClient, http_responder: HttpResponder, case: str) -> None:
    url, payload, use_jwk = REPLAYED_READS[case](client, http_responder)
    body = client.sign(url, payload, use_jwk=use_jwk)

    first = client.post_raw(url, body)
    replay = client.post_raw(url, body)

    assert first.status == 200, first.body
    assert_problem(replay, "badNonce", 400)


@pytest.mark.parametrize("case", sorted(REPLAYED_WRITES))
def test_replayed_write_rejected(client: AcmeClient, http_responder: HttpResponder, case: str) -> None:
    prepare, status = REPLAYED_WRITES[case]
    url, payload, use_jwk = prepare(client, http_responder)
    body = client.sign(url, payload, use_jwk=use_jwk)

    first = client.post_raw(url, body)
    replay = client.post_raw(url, body)

    assert first.status == status, first.body
    assert_problem(replay, "badNonce", 400)


def test_concurrent_replays_accepted_once(client: AcmeClient) -> None:
    orders_url = client.post(client.account_url).json()["orders"]
    before = client.post(orders_url).json()["orders"]
    url = client.directory["newOrder"]
    body = client.sign(url, {"identifiers": [{"type": "dns", "value": device_name("replay-race")}]})

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: client.post_raw(url, body), range(8)))

    statuses = sorted(reply.status for reply in replies)
    assert statuses == [201] + [400] * 7, [reply.body for reply in replies]
    for reply in replies:
        if reply.status == 400:
            assert_problem(reply, "badNonce", 400)
    after = client.post(orders_url).json()["orders"]
    assert len(after) == len(before) + 1
