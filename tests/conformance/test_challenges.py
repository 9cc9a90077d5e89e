"""Challenges and their validation: http-01, dns-01 and tls-alpn-01 (RFC 8555 §7.5.1, §8; RFC 8737; RFC 8738).

Every validation runs against a responder of this test on loopback, and every
DNS lookup goes to the loopback challtestsrv. A failed validation must leave
the challenge, its authorization and its order invalid, each with an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from jwcrypto import jws

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.acme_client import AcmeClient, dns01_value
from tests.support.responder import CHALLENGE_PATH, HttpResponder, Route

from .helpers import (
    BASE64URL,
    URN_PREFIX,
    assert_problem,
    challenge_of,
    device_name,
    dns_management,
    has_link,
)

from .responders import ChallengeCertificate, TlsAlpnResponder

ACME_TLS_ALPN = "acme-tls/1"


@dataclass
class Pending:
    """A fresh order with one identifier, and the challenge of the type under test."""

    order_url: str
    authz_url: str
    challenge: dict

    @property
    def token(self) -> str:
        return self.challenge["token"]


def pending_challenge(client: AcmeClient, identifier: str, challenge_type: str) -> Pending:
    reply = client.new_order([identifier])
    assert reply.status == 201, reply.body
    authz_url = reply.json()["authorizations"][0]
    challenge = challenge_of(client.post(authz_url).json(), challenge_type)
    return Pending(reply.headers["Location"], authz_url, challenge)


def run_validation(client: AcmeClient, pending: Pending) -> dict:
    """Start validation and wait for the authorization to become valid or invalid; return the challenge."""
    reply = client.post(pending.challenge["url"], {})
    assert reply.status == 200, reply.body
    client.poll(pending.authz_url, ("valid", "invalid"))
    return client.post(pending.challenge["url"]).json()


def assert_valid(client: AcmeClient, pending: Pending, challenge: dict) -> None:
    assert challenge["status"] == "valid", challenge.get("error")
    assert client.post(pending.authz_url).json()["status"] == "valid"
    assert client.post(pending.order_url).json()["status"] == "ready"


def assert_invalid(client: AcmeClient, pending: Pending, challenge: dict, problem: str) -> None:
    assert challenge["status"] == "invalid", challenge
    assert challenge["error"]["type"] == URN_PREFIX + problem, challenge["error"]
    assert challenge["error"]["detail"]
    assert client.post(pending.authz_url).json()["status"] == "invalid"
    order = client.post(pending.order_url).json()
    assert order["status"] == "invalid"
    assert order["error"]["type"].startswith(URN_PREFIX)


# The challenge resource itself.

def test_challenge_fields(client: AcmeClient) -> None:
    reply = client.new_order([device_name("challenge-fields")])
    authz = client.post(reply.json()["authorizations"][0]).json()

    for challenge in authz["challenges"]:
        assert challenge["status"] == "pending"
        assert challenge["url"].startswith("https://")
        assert BASE64URL.match(challenge["token"])
        # RFC 8555 §8.3: at least 128 bits of entropy, which base64url needs 22 characters to carry.
        assert len(challenge["token"]) >= 22


def test_tokens_differ_between_authorizations(client: AcmeClient) -> None:
    reply = client.new_order([device_name("token-a"), device_name("token-b")])
    tokens = [challenge_of(client.post(url).json(), "http-01")["token"] for url in reply.json()["authorizations"]]

    assert tokens[0] != tokens[1]


def test_challenge_post_starts_processing(client: AcmeClient, http_responder: HttpResponder) -> None:
    pending = pending_challenge(client, device_name("starts"), "http-01")
    http_responder.routes[CHALLENGE_PATH + pending.token] = Route(
        body=client.key_authorization(pending.token), delay_seconds=1.0)

    reply = client.post(pending.challenge["url"], {})

    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "processing"
    assert reply.headers["Retry-After"].isdigit()
    assert 0 < int(reply.headers["Retry-After"]) <= 60
    assert has_link(reply, pending.authz_url, "up")
    assert client.poll(pending.authz_url, ("valid", "invalid"))["status"] == "valid"


def test_challenge_unknown_fields_ignored(client: AcmeClient, http_responder: HttpResponder) -> None:
    pending = pending_challenge(client, device_name("unknown-fields"), "http-01")
    http_responder.serve_key_authorization(pending.token, client.key_authorization(pending.token))

    reply = client.post(pending.challenge["url"], {"keyAuthorization": "ignored", "extra": [1, 2]})

    assert reply.status == 200, reply.body
    assert client.poll(pending.authz_url, ("valid", "invalid"))["status"] == "valid"


@pytest.mark.parametrize("body", ["[]", '"go"', "not json"], ids=["array", "string", "not-json"])
def test_challenge_payload_must_be_object(client: AcmeClient, body: str) -> None:
    pending = pending_challenge(client, device_name("payload-object"), "http-01")
    url = pending.challenge["url"]

    reply = client.post_raw(url, sign_raw_payload(client, url, body.encode()))

    assert_problem(reply, "malformed", 400)
    assert client.post(url).json()["status"] == "pending"


def sign_raw_payload(client: AcmeClient, url: str, payload: bytes) -> str:
    """Sign a JWS whose payload is ``payload`` as is, not JSON-encoded by the client."""
    protected = {"alg": client.alg, "nonce": client.nonce(), "url": url, "kid": client.account_url}
    token = jws.JWS(payload)
    token.add_signature(client.key, alg=None, protected=json.dumps(protected))
    return token.serialize(compact=False)


def test_challenge_post_as_get_does_not_start(client: AcmeClient, http_responder: HttpResponder) -> None:
    pending = pending_challenge(client, device_name("read-only"), "http-01")

    reply = client.post(pending.challenge["url"])

    assert reply.status == 200
    assert reply.json()["status"] == "pending"
    assert http_responder.requests == []


def test_challenge_get_405(client: AcmeClient) -> None:
    pending = pending_challenge(client, device_name("challenge-get"), "http-01")

    reply = client.http.get(pending.challenge["url"])

    assert reply.status_code == 405


def test_challenge_of_other_account_404(client: AcmeClient, other_client: AcmeClient) -> None:
    pending = pending_challenge(other_client, device_name("challenge-other"), "http-01")

    assert_problem(client.post(pending.challenge["url"]), "malformed", 404)
    assert_problem(client.post(pending.challenge["url"], {}), "malformed", 404)
    assert other_client.post(pending.challenge["url"]).json()["status"] == "pending"


def test_valid_challenge_not_validated_again(client: AcmeClient, http_responder: HttpResponder) -> None:
    pending = pending_challenge(client, device_name("once"), "http-01")
    http_responder.serve_key_authorization(pending.token, client.key_authorization(pending.token))
    assert run_validation(client, pending)["status"] == "valid"
    seen = len(http_responder.requests)

    reply = client.post(pending.challenge["url"], {})

    assert reply.json()["status"] == "valid"
    assert len(http_responder.requests) == seen


def test_failed_challenge_cannot_be_retried(client: AcmeClient, http_responder: HttpResponder) -> None:
    pending = pending_challenge(client, device_name("no-retry"), "http-01")
    assert run_validation(client, pending)["status"] == "invalid"
    http_responder.serve_key_authorization(pending.token, client.key_authorization(pending.token))

    reply = client.post(pending.challenge["url"], {})

    assert reply.json()["status"] == "invalid"
    assert client.post(pending.authz_url).json()["status"] == "invalid"


# http-01 (RFC 8555 §8.3). Each case sets the responder's routes for the token and names the outcome.
HttpSetup = Callable[[HttpResponder, str, str, str, ChallengePorts], None]


def serve(body: str, status: int = 200) -> HttpSetup:
    return lambda responder, token, key_authorization, name, ports: responder.routes.__setitem__(
        CHALLENGE_PATH + token, Route(status=status, body=body.replace("KEYAUTH", key_authorization)))


def redirect_to(location: str, final_path: str | None = None) -> HttpSetup:
    """Redirect the token URL to ``location`` (NAME, PORT and TOKEN are filled in) and serve the key there."""
    def setup(responder: HttpResponder, token: str, key_authorization: str, name: str, ports: ChallengePorts) -> None:
        target = location.replace("NAME", name).replace("PORT", str(ports.http01)).replace("TOKEN", token)
        responder.routes[CHALLENGE_PATH + token] = Route(status=302, location=target)
        if final_path is not None:
            responder.routes[final_path.replace("TOKEN", token)] = Route(body=key_authorization)
    return setup


def redirect_chain(length: int) -> HttpSetup:
    def setup(responder: HttpResponder, token: str, key_authorization: str, name: str, ports: ChallengePorts) -> None:
        responder.routes[CHALLENGE_PATH + token] = Route(status=302, location=f"/hop/{token}/0")
        for hop in range(length - 1):
            responder.routes[f"/hop/{token}/{hop}"] = Route(status=302, location=f"/hop/{token}/{hop + 1}")
        responder.routes[f"/hop/{token}/{length - 1}"] = Route(body=key_authorization)
    return setup


HTTP01_CASES: dict[str, tuple[HttpSetup, str | None]] = {
    "ok/exact-body": (serve("KEYAUTH"), None),
    "ok/trailing-newline": (serve("KEYAUTH\n"), None),
    "ok/trailing-whitespace": (serve("KEYAUTH \t\r\n"), None),
    "ok/relative-redirect": (redirect_to("/moved/TOKEN", "/moved/TOKEN"), None),
    "ok/absolute-redirect": (redirect_to("http://NAME:PORT/moved/TOKEN", "/moved/TOKEN"), None),
    "ok/five-redirects": (redirect_chain(5), None),
    "fail/wrong-body": (serve("not the key authorization"), "incorrectResponse"),
    "fail/other-thumbprint": (serve("KEYAUTH-but-longer"), "incorrectResponse"),
    "fail/leading-whitespace": (serve(" KEYAUTH"), "incorrectResponse"),
    "fail/not-found": (lambda *args: None, "unauthorized"),
    "fail/server-error": (serve("KEYAUTH", status=500), "unauthorized"),
    "fail/redirect-loop": (redirect_to(CHALLENGE_PATH + "TOKEN"), "connection"),
    "fail/too-many-redirects": (redirect_chain(30), "connection"),
    "fail/redirect-to-other-port": (redirect_to("http://NAME:1/TOKEN"), "connection"),
    "fail/redirect-to-ftp": (redirect_to("ftp://NAME/TOKEN"), "connection"),
    "fail/redirect-to-file": (redirect_to("file:///etc/hostname"), "connection"),
}


@pytest.mark.parametrize("case", sorted(HTTP01_CASES))
def test_http01_validation(client: AcmeClient, http_responder: HttpResponder,
                           validation_ports: ChallengePorts, case: str) -> None:
    setup, problem = HTTP01_CASES[case]
    name = device_name("http01-" + case.replace("/", "-"))
    pending = pending_challenge(client, name, "http-01")
    setup(http_responder, pending.token, client.key_authorization(pending.token), name, validation_ports)

    challenge = run_validation(client, pending)

    if problem is None:
        assert_valid(client, pending, challenge)
        assert http_responder.requests[0].path == CHALLENGE_PATH + pending.token
        assert http_responder.requests[0].host.split(":")[0] == name
    else:
        assert_invalid(client, pending, challenge, problem)


def test_http01_redirect_to_https_self_signed(client: AcmeClient, http_responder: HttpResponder,
                                              validation_ports: ChallengePorts, tmp_path: Path) -> None:
    # A device that moves every request to HTTPS still has only a self-signed certificate (RFC 8555 §8.3).
    name = device_name("https-redirect")
    pending = pending_challenge(client, name, "http-01")
    https_url = f"https://{name}:{validation_ports.tlsalpn01}{CHALLENGE_PATH}{pending.token}"
    http_responder.routes[CHALLENGE_PATH + pending.token] = Route(status=301, location=https_url)

    with HttpResponder(validation_ports.tlsalpn01, tls_dir=tmp_path) as https_responder:
        https_responder.serve_key_authorization(pending.token, client.key_authorization(pending.token))
        challenge = run_validation(client, pending)

    assert_valid(client, pending, challenge)


def test_http01_no_listener(client: AcmeClient) -> None:
    pending = pending_challenge(client, device_name("nobody-home"), "http-01")

    challenge = run_validation(client, pending)

    assert_invalid(client, pending, challenge, "connection")


def test_http01_ip_identifier(client: AcmeClient, http_responder: HttpResponder) -> None:
    pending = pending_challenge(client, "127.0.0.1", "http-01")
    http_responder.serve_key_authorization(pending.token, client.key_authorization(pending.token))

    challenge = run_validation(client, pending)

    assert_valid(client, pending, challenge)
    assert http_responder.requests[0].host.split(":")[0] == "127.0.0.1"


# dns-01 (RFC 8555 §8.4). Each case publishes records for the name and names the outcome.
DnsSetup = Callable[[ChallTestSrv, str, str], None]


def txt(*values: str) -> DnsSetup:
    def setup(dns_server: ChallTestSrv, name: str, expected: str) -> None:
        for value in values:
            dns_server.set_txt(f"_acme-challenge.{name}", value.replace("DIGEST", expected))
    return setup


def cname_then_txt(dns_server: ChallTestSrv, name: str, expected: str) -> None:
    target = f"_acme-challenge.{name.split('.')[0]}.delegated.example.test."
    dns_management(dns_server, "/set-cname", {"host": f"_acme-challenge.{name}.", "target": target})
    dns_server.set_txt(target, expected)


def servfail(dns_server: ChallTestSrv, name: str, expected: str) -> None:
    dns_management(dns_server, "/set-servfail", {"host": f"_acme-challenge.{name}."})


DNS01_CASES: dict[str, tuple[DnsSetup, str | None]] = {
    "ok/one-record": (txt("DIGEST"), None),
    "ok/among-several-records": (txt("unrelated", "DIGEST", "another"), None),
    "ok/cname-delegation": (cname_then_txt, None),
    "fail/wrong-record": (txt("not the digest"), "incorrectResponse"),
    "fail/no-record": (lambda *args: None, "incorrectResponse"),
    "fail/servfail": (servfail, "dns"),
}


@pytest.mark.parametrize("case", sorted(DNS01_CASES))
def test_dns01_validation(client: AcmeClient, dns_server: ChallTestSrv, case: str) -> None:
    setup, problem = DNS01_CASES[case]
    name = device_name("dns01-" + case.replace("/", "-"))
    pending = pending_challenge(client, name, "dns-01")
    setup(dns_server, name, dns01_value(client.key_authorization(pending.token)))

    challenge = run_validation(client, pending)

    if problem is None:
        assert_valid(client, pending, challenge)
    else:
        assert_invalid(client, pending, challenge, problem)


def test_dns01_wildcard(client: AcmeClient, dns_server: ChallTestSrv) -> None:
    base = "dns01-wild.devices.example.test"
    pending = pending_challenge(client, f"*.{base}", "dns-01")
    # The authorization names the base domain, so the record lives at _acme-challenge.<base>.
    dns_server.set_txt(f"_acme-challenge.{base}", dns01_value(client.key_authorization(pending.token)))

    challenge = run_validation(client, pending)

    assert_valid(client, pending, challenge)


# tls-alpn-01 (RFC 8737, RFC 8738 §6).
TLS_ALPN_CASES: dict[str, tuple[dict, bool, str | None]] = {
    "ok/dns-name": ({}, True, None),
    "fail/extension-not-critical": ({"critical": False}, True, "unauthorized"),
    "fail/extension-missing": ({"with_extension": False}, True, "unauthorized"),
    "fail/second-san": ({"extra_names": ("other.devices.example.test",)}, True, "unauthorized"),
    "fail/wrong-digest": ({"wrong_digest": True}, True, "unauthorized"),
    "fail/no-alpn-negotiated": ({}, False, "tls"),
}


@pytest.mark.parametrize("case", sorted(TLS_ALPN_CASES))
def test_tlsalpn01_validation(client: AcmeClient, validation_ports: ChallengePorts, tmp_path: Path,
                              case: str) -> None:
    options, offer_alpn, problem = TLS_ALPN_CASES[case]
    name = device_name("alpn-" + case.replace("/", "-"))
    pending = pending_challenge(client, name, "tls-alpn-01")

    with TlsAlpnResponder(validation_ports.tlsalpn01, tmp_path, offer_alpn=offer_alpn) as responder:
        responder.add_certificate(ChallengeCertificate(name, client.key_authorization(pending.token), **options))
        challenge = run_validation(client, pending)

    if problem is None:
        assert_valid(client, pending, challenge)
    else:
        assert_invalid(client, pending, challenge, problem)


def test_tlsalpn01_client_hello(client: AcmeClient, validation_ports: ChallengePorts, tmp_path: Path) -> None:
    name = device_name("alpn-hello")
    pending = pending_challenge(client, name, "tls-alpn-01")

    with TlsAlpnResponder(validation_ports.tlsalpn01, tmp_path) as responder:
        responder.add_certificate(ChallengeCertificate(name, client.key_authorization(pending.token)))
        challenge = run_validation(client, pending)

    assert_valid(client, pending, challenge)
    hello = responder.hellos[0]
    # RFC 8737 §3: exactly the acme-tls/1 protocol, the name as SNI, and TLS 1.2 or later.
    assert hello.alpn_protocols == [ACME_TLS_ALPN]
    assert hello.server_name == name
    assert responder.negotiated_versions[0] in ("TLSv1.2", "TLSv1.3")


def test_tlsalpn01_ip_identifier(client: AcmeClient, validation_ports: ChallengePorts, tmp_path: Path) -> None:
    address = "127.0.0.1"
    pending = pending_challenge(client, address, "tls-alpn-01")

    with TlsAlpnResponder(validation_ports.tlsalpn01, tmp_path) as responder:
        responder.add_certificate(ChallengeCertificate(address, client.key_authorization(pending.token)))
        challenge = run_validation(client, pending)

    assert_valid(client, pending, challenge)
    # RFC 8738 §6: the SNI is the reverse-DNS name, and the certificate names the address itself.
    assert responder.hellos[0].server_name == "1.0.0.127.in-addr.arpa"
    assert responder.hellos[0].alpn_protocols == [ACME_TLS_ALPN]


def test_tlsalpn01_no_listener(client: AcmeClient) -> None:
    pending = pending_challenge(client, device_name("alpn-nobody"), "tls-alpn-01")

    challenge = run_validation(client, pending)

    assert_invalid(client, pending, challenge, "connection")
