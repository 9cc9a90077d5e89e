"""Orders: newOrder, identifiers and their canonical form, validity requests, profiles (RFC 8555 §7.4, RFC 8738)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from tests.support.acme_client import AcmeClient, make_csr
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer

from .helpers import (
    BASE64URL,
    URN_PREFIX,
    assert_problem,
    authorizations_of,
    create_eab_key,
    device_name,
    finalize_order,
    has_link,
    new_account_with_eab,
    ready_order,
)

# The default profile's certificate lifetime, which bounds a requested validity.
DEFAULT_LIFETIME = timedelta(days=7)
# Issuing CAs that `fleetca init` creates live five years; no leaf may start after that.
ISSUING_CA_LIFETIME = timedelta(days=5 * 365)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_new_order_fields(client: AcmeClient) -> None:
    names = [device_name("fields-a"), device_name("fields-b")]

    reply = client.new_order(names)

    assert reply.status == 201, reply.body
    assert reply.headers["Location"].startswith("https://")
    assert has_link(reply, client.directory_url, "index")
    order = reply.json()
    assert order["status"] == "pending"
    assert parse_rfc3339(order["expires"]) > datetime.now(UTC)
    assert order["identifiers"] == [{"type": "dns", "value": n} for n in names]
    assert len(order["authorizations"]) == 2
    assert order["finalize"].startswith("https://")
    assert "certificate" not in order


def test_order_post_as_get(client: AcmeClient) -> None:
    created = client.new_order([device_name("read-back")])
    order_url = created.headers["Location"]

    reply = client.post(order_url, None)

    assert reply.status == 200
    assert reply.json() == created.json()


def test_order_get_405(client: AcmeClient) -> None:
    order_url = client.new_order([device_name("get-order")]).headers["Location"]

    reply = client.http.get(order_url)

    assert reply.status_code == 405


def test_order_of_other_account_404(client: AcmeClient, other_client: AcmeClient) -> None:
    order_url = other_client.new_order([device_name("someone-elses")]).headers["Location"]

    reply = client.post(order_url, None)

    # docs/divergences.md: another account's resource is reported as if it did not exist.
    assert_problem(reply, "malformed", 404)


def test_order_identifiers_never_change(client: AcmeClient, http_responder: HttpResponder) -> None:
    names = [device_name("Stable"), device_name("stable-two")]
    created = client.new_order(names)
    order_url = created.headers["Location"]
    before = created.json()

    order_url, ready = ready_order(client, http_responder, [n.lower() for n in names])
    valid, _ = finalize_order(client, order_url, ready, [n.lower() for n in names])

    assert ready["identifiers"] == before["identifiers"]
    assert valid["identifiers"] == before["identifiers"]
    assert valid["authorizations"] == ready["authorizations"]


def dns(value: str) -> dict[str, str]:
    return {"type": "dns", "value": value}


def ip(value: str) -> dict[str, str]:
    return {"type": "ip", "value": value}


# Each case: the identifiers sent, then either the identifiers stored or the problem type expected.
IDENTIFIER_CASES: dict[str, tuple[list[Any], list[dict[str, str]] | str]] = {
    "ok/lowercased": ([dns("MiXeD.Devices.Example.TEST")], [dns(device_name("mixed"))]),
    "ok/trailing-dot": ([dns(device_name("dotted") + ".")], [dns(device_name("dotted"))]),
    "ok/duplicate": ([dns(device_name("twice")), dns(device_name("twice"))], [dns(device_name("twice"))]),
    "ok/duplicate-differing-case": ([dns(device_name("dup")), dns(device_name("DUP") + ".")],
                                    [dns(device_name("dup"))]),
    "ok/a-label": ([dns(device_name("xn--bcher-kva"))], [dns(device_name("xn--bcher-kva"))]),
    "ok/ipv4": ([ip("127.0.0.7")], [ip("127.0.0.7")]),
    "ok/ipv4-twice": ([ip("127.0.0.8"), ip("127.0.0.8")], [ip("127.0.0.8")]),
    "fail/u-label": ([dns(device_name("bücher"))], "rejectedIdentifier"),
    "fail/malformed-a-label": ([dns(device_name("xn--a"))], "rejectedIdentifier"),
    "fail/a-label-trailing-hyphen": ([dns(device_name("xn--zz-"))], "rejectedIdentifier"),
    "fail/reserved-hyphens": ([dns(device_name("ab--cd"))], "rejectedIdentifier"),
    "fail/ip-as-dns": ([dns("127.0.0.1")], "rejectedIdentifier"),
    "fail/ipv6-as-dns": ([dns("::1")], "rejectedIdentifier"),
    "fail/ip-malformed": ([ip("127.0.0.256")], "malformed"),
    "fail/ip-leading-zero": ([ip("127.000.0.1")], "malformed"),
    "fail/ipv4-mapped-ipv6": ([ip("::ffff:127.0.0.1")], "rejectedIdentifier"),
    "fail/ip-outside-constraints": ([ip("10.0.0.1")], "rejectedIdentifier"),
    "fail/name-outside-constraints": ([dns("host.other.example")], "rejectedIdentifier"),
    "fail/single-label": ([dns("devices")], "rejectedIdentifier"),
    "fail/underscore": ([dns(device_name("under_score"))], "rejectedIdentifier"),
    "fail/label-too-long": ([dns(device_name("a" * 64))], "rejectedIdentifier"),
    "fail/name-too-long": ([dns(".".join(["a" * 60] * 4) + ".devices.example.test")], "rejectedIdentifier"),
    "fail/empty-label": ([dns("a..devices.example.test")], "rejectedIdentifier"),
    "fail/wildcard-inside": ([dns("a.*.devices.example.test")], "rejectedIdentifier"),
    "fail/double-wildcard": ([dns("*.*.devices.example.test")], "rejectedIdentifier"),
    "fail/partial-wildcard": ([dns("dev*.devices.example.test")], "rejectedIdentifier"),
    "fail/unsupported-type": ([{"type": "email", "value": "ops@example.test"}], "unsupportedIdentifier"),
    "fail/empty-list": ([], "malformed"),
    "fail/not-objects": (["devices.example.test"], "malformed"),
    "fail/value-not-string": ([{"type": "dns", "value": 5}], "malformed"),
}


@pytest.mark.parametrize("case", sorted(IDENTIFIER_CASES))
def test_new_order_identifiers(client: AcmeClient, case: str) -> None:
    sent, expected = IDENTIFIER_CASES[case]

    reply = client.post(client.directory["newOrder"], {"identifiers": sent})

    if isinstance(expected, str):
        assert_problem(reply, expected, 400)
        return
    assert reply.status == 201, reply.body
    order = reply.json()
    assert order["identifiers"] == expected
    assert len(order["authorizations"]) == len(expected)
    authz_identifiers = [a["identifier"] for a in authorizations_of(client, order)]
    assert authz_identifiers == expected


@pytest.mark.parametrize("payload", [{}, {"identifiers": "x"}, {"identifiers": None}],
                         ids=["missing", "string", "null"])
def test_new_order_identifiers_required(client: AcmeClient, payload: dict) -> None:
    reply = client.post(client.directory["newOrder"], payload)

    assert_problem(reply, "malformed", 400)


def test_rejected_identifiers_as_subproblems(client: AcmeClient) -> None:
    bad = [dns("host.other.example"), dns("second.other.example")]

    reply = client.post(client.directory["newOrder"], {"identifiers": [dns(device_name("fine"))] + bad})

    body = assert_problem(reply, "rejectedIdentifier", 400)
    subproblems = body["subproblems"]
    assert [s["identifier"] for s in subproblems] == bad
    assert all(s["type"] == URN_PREFIX + "rejectedIdentifier" for s in subproblems)


def test_wildcard_order_authorization(client: AcmeClient) -> None:
    reply = client.new_order(["*.wild.devices.example.test"])

    assert reply.status == 201, reply.body
    order = reply.json()
    assert order["identifiers"] == [dns("*.wild.devices.example.test")]
    [authz] = authorizations_of(client, order)
    assert authz["identifier"] == dns("wild.devices.example.test")
    assert authz["wildcard"] is True
    assert [c["type"] for c in authz["challenges"]] == ["dns-01"]


def test_wildcard_and_base_name_separate(client: AcmeClient) -> None:
    reply = client.new_order(["*.pair.devices.example.test", "pair.devices.example.test"])

    authzs = authorizations_of(client, reply.json())
    assert [a["identifier"]["value"] for a in authzs] == ["pair.devices.example.test"] * 2
    assert [a.get("wildcard", False) for a in authzs] == [True, False]
    assert "http-01" in {c["type"] for c in authzs[1]["challenges"]}


def test_ip_order_challenge_types(client: AcmeClient) -> None:
    reply = client.new_order(["127.0.0.3"])

    [authz] = authorizations_of(client, reply.json())
    assert authz["identifier"] == ip("127.0.0.3")
    # RFC 8738 §7: dns-01 cannot prove control of an IP address.
    assert sorted(c["type"] for c in authz["challenges"]) == ["http-01", "tls-alpn-01"]


@pytest.mark.parametrize("sent", ["0:0:0:0:0:0:0:1", "0000::0001", "::1"])
def test_ipv6_identifier_canonical(eab_fleetca: FleetcaServer, sent: str) -> None:
    client = AcmeClient(eab_fleetca.directory_url(), eab_fleetca.root_pem)
    assert new_account_with_eab(client, create_eab_key(eab_fleetca)).status == 201

    reply = client.post(client.directory["newOrder"], {"identifiers": [ip(sent)]})

    assert reply.status == 201, reply.body
    # RFC 8738 §3 requires the RFC 5952 text form, so every spelling is stored as "::1".
    assert reply.json()["identifiers"] == [ip("::1")]
    [authz] = authorizations_of(client, reply.json())
    assert authz["identifier"] == ip("::1")


def test_ready_when_authorization_valid(client: AcmeClient, http_responder: HttpResponder) -> None:
    reply = client.new_order([device_name("ready-at-once")])
    order_url = reply.headers["Location"]
    [authz_url] = reply.json()["authorizations"]
    authz = client.post(authz_url).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    http_responder.serve_key_authorization(challenge["token"], client.key_authorization(challenge["token"]))

    assert client.post(challenge["url"], {}).status == 200
    assert client.poll(authz_url, ("valid", "invalid"))["status"] == "valid"

    # Polled at once, with no wait: a client may finalize the moment the authorization is valid.
    assert client.post(order_url).json()["status"] == "ready"


def test_valid_authorization_reused(client: AcmeClient, http_responder: HttpResponder) -> None:
    name = device_name("reused")
    _, first = ready_order(client, http_responder, [name])

    second = client.new_order([name])

    assert second.json()["status"] == "ready"
    assert second.json()["authorizations"] == first["authorizations"]


# Validity requests that fleetca must honour exactly. Each returns (notBefore, notAfter) to send.
def honoured_cases(now: datetime) -> dict[str, tuple[datetime | None, datetime | None]]:
    return {
        "both": (now + timedelta(hours=2), now + timedelta(days=3)),
        "not-before-only": (now + timedelta(hours=2), None),
        "not-before-in-recent-past": (now - timedelta(hours=3), None),
        "not-after-only": (None, now + timedelta(days=2)),
        "not-after-at-profile-maximum": (None, now + DEFAULT_LIFETIME),
    }


HONOURED_CASES = sorted(honoured_cases(datetime.now(UTC)))


@pytest.mark.parametrize("case", HONOURED_CASES)
def test_validity_request_honoured(client: AcmeClient, http_responder: HttpResponder, case: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    not_before, not_after = honoured_cases(now)[case]
    extra = {}
    if not_before is not None:
        extra["notBefore"] = rfc3339(not_before)
    if not_after is not None:
        extra["notAfter"] = rfc3339(not_after)
    name = device_name(f"validity-{case}")

    order_url, ready = ready_order(client, http_responder, [name], **extra)
    reply = client.finalize(ready, make_csr([name])[0])

    assert reply.status == 200, reply.body
    order = client.poll(order_url, ("valid", "invalid"))
    assert order["status"] == "valid", order
    assert order.get("notBefore") == extra.get("notBefore")
    assert order.get("notAfter") == extra.get("notAfter")
    leaf = x509.load_pem_x509_certificates(client.post(order["certificate"]).body)[0]
    if not_before is not None:
        assert leaf.not_valid_before_utc == not_before
    if not_after is not None:
        assert leaf.not_valid_after_utc == not_after
    if not_before is not None and not_after is None:
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == DEFAULT_LIFETIME


def rejected_cases(now: datetime) -> dict[str, dict[str, str]]:
    return {
        "not-after-before-not-before": {"notBefore": rfc3339(now + timedelta(days=2)),
                                        "notAfter": rfc3339(now + timedelta(days=1))},
        "not-after-in-past": {"notAfter": rfc3339(now - timedelta(hours=1))},
        "longer-than-profile": {"notBefore": rfc3339(now), "notAfter": rfc3339(now + DEFAULT_LIFETIME * 2)},
        "not-before-too-far-back": {"notBefore": rfc3339(now - timedelta(days=3))},
        "not-after-beyond-issuing-ca": {"notAfter": rfc3339(now + ISSUING_CA_LIFETIME + timedelta(days=30))},
        "not-before-beyond-issuing-ca": {"notBefore": rfc3339(now + ISSUING_CA_LIFETIME + timedelta(days=30))},
        "not-a-timestamp": {"notBefore": "tomorrow"},
        "no-time-zone": {"notBefore": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")},
        "not-a-string": {"notAfter": 1893456000},
    }


@pytest.mark.parametrize("case", sorted(rejected_cases(datetime.now(UTC))))
def test_validity_request_rejected(client: AcmeClient, case: str) -> None:
    extra = rejected_cases(datetime.now(UTC).replace(microsecond=0))[case]

    reply = client.new_order([device_name(f"rejected-{case}")], **extra)

    # RFC 8555 §7.4: a validity the server cannot honour is rejected when the order is created.
    assert_problem(reply, "malformed", 400)


def test_profile_default_echoed(client: AcmeClient) -> None:
    reply = client.new_order([device_name("default-profile")])

    assert reply.json()["profile"] in client.directory["meta"]["profiles"]


def test_profile_named_echoed(client: AcmeClient) -> None:
    profile = sorted(client.directory["meta"]["profiles"])[0]

    reply = client.new_order([device_name("named-profile")], profile=profile)

    assert reply.status == 201, reply.body
    assert reply.json()["profile"] == profile


@pytest.mark.parametrize("profile,problem", [("no-such-profile", "invalidProfile"), (7, "malformed")],
                         ids=["unknown", "not-a-string"])
def test_profile_rejected(client: AcmeClient, profile: object, problem: str) -> None:
    reply = client.new_order([device_name("bad-profile")], profile=profile)

    assert_problem(reply, problem, 400)


def test_order_ids_are_opaque(client: AcmeClient) -> None:
    order_url = client.new_order([device_name("opaque")]).headers["Location"]

    assert BASE64URL.match(order_url.rsplit("/", 1)[1])
