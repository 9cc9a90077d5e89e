"""Finalize and certificate download (RFC 8555 §7.4, §7.4.2, §9.1), with CSR and key acceptance rules.

One account validates its names once at the start of the module. Later orders
for the same names reuse those valid authorizations, so they are ready at once.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sympy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from tests.interop.challtestsrv import ChallengePorts
from tests.support.acme_client import AcmeClient, b64url, make_csr
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer

from .helpers import URN_PREFIX, assert_problem, device_name, has_link, new_client, ready_order

NAME_A = device_name("finalize-a")
NAME_B = device_name("finalize-b")
# Longer than the 64 characters an X.509 Common Name may hold (RFC 5280 upper bound ub-common-name).
LONG_NAME = device_name("cn-" + "x" * 50 + ".long")
ADDRESS = "127.0.0.1"
PEM_CHAIN = "application/pem-certificate-chain"
PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\n(?:[A-Za-z0-9+/=]{64}\n)*[A-Za-z0-9+/=]{1,64}\n"
                       rb"-----END CERTIFICATE-----\n")
# ROCA (CVE-2017-15361) keys of 1984 to 3936 bits have primes k*M + (65537^a mod M), M the product
# of the first 126 primes.
ROCA_PRIME_COUNT = 126


@dataclass
class Issuer:
    """An account whose authorizations for NAME_A, NAME_B, LONG_NAME and ADDRESS are valid."""

    client: AcmeClient

    def order(self, names: list[str], **extra: object) -> tuple[str, dict]:
        reply = self.client.new_order(names, **extra)
        assert reply.status == 201, reply.body
        assert reply.json()["status"] == "ready", reply.json()
        return reply.headers["Location"], reply.json()


@pytest.fixture(scope="module")
def issuer(shared_fleetca: FleetcaServer, validation_ports: ChallengePorts) -> Iterator[Issuer]:
    client = new_client(shared_fleetca)
    with HttpResponder(validation_ports.http01) as responder:
        ready_order(client, responder, [NAME_A, NAME_B, LONG_NAME, ADDRESS])
    yield Issuer(client)
    client.close()


# Keys and CSRs.

def rsa_from_primes(p: int, q: int, exponent: int = 65537) -> rsa.RSAPrivateKey:
    d = pow(exponent, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(exponent, p * q)
    return rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                 rsa.rsa_crt_iqmp(p, q), public).private_key()


def fermat_close_key() -> rsa.RSAPrivateKey:
    """A 2048-bit key whose primes are neighbours, so Fermat's method factors it at once."""
    while True:
        p = sympy.randprime(1 << 1023 | 1 << 1022, 1 << 1024)
        q = sympy.nextprime(p)
        if (p - 1) % 65537 and (q - 1) % 65537:
            return rsa_from_primes(p, q)


def roca_key() -> rsa.RSAPrivateKey:
    """A 2048-bit key with the prime structure of the ROCA flaw."""
    modulus = math.prod(list(sympy.primerange(2, 1000))[:ROCA_PRIME_COUNT])
    generator = random.Random(8555)

    def prime() -> int:
        low, high = (1 << 1023) // modulus + 1, (1 << 1024) // modulus
        while True:
            candidate = generator.randrange(low, high) * modulus + pow(65537, generator.randrange(1, 1 << 30), modulus)
            if candidate.bit_length() == 1024 and (candidate - 1) % 65537 and sympy.isprime(candidate):
                return candidate

    while True:
        p, q = prime(), prime()
        if (p * q).bit_length() == 2048:
            return rsa_from_primes(p, q)


def build_csr(key: CertificateIssuerPrivateKeyTypes, *, common_name: str | None = None,
              sans: list[x509.GeneralName] | None = None, critical_san: bool = False) -> bytes:
    subject = []
    if common_name is not None:
        # Some clients put a name longer than the 64-character limit into the CN; build one as they do.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name, _validate=False))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=critical_san)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def dns_sans(*names: str) -> list[x509.GeneralName]:
    return [x509.DNSName(n) for n in names]


def leaf_of(chain: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain)[0]


def leaf_names(leaf: x509.Certificate) -> list[str]:
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName) + san.get_values_for_type(x509.IPAddress)]


def finalize_and_download(issuer: Issuer, names: list[str], csr: bytes) -> x509.Certificate:
    order_url, order = issuer.order(names)
    reply = issuer.client.finalize(order, csr)
    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "valid", reply.json()
    return leaf_of(issuer.client.post(reply.json()["certificate"]).body)


# Finalize responses and order states.

def test_finalize_before_ready(client: AcmeClient) -> None:
    order = client.new_order([device_name("not-ready")]).json()

    reply = client.finalize(order, make_csr([device_name("not-ready")])[0])

    assert_problem(reply, "orderNotReady", 403)


def test_finalize_response(issuer: Issuer) -> None:
    order_url, order = issuer.order([NAME_A])

    reply = issuer.client.finalize(order, make_csr([NAME_A])[0])

    assert reply.status == 200, reply.body
    assert reply.headers["Location"] == order_url
    assert has_link(reply, issuer.client.directory_url, "index")
    body = reply.json()
    assert body["status"] == "valid"
    assert body["certificate"].startswith("https://")
    assert issuer.client.post(order_url).json() == body


def test_finalize_twice_rejected(issuer: Issuer) -> None:
    # docs/divergences.md: a repeated finalize of a valid order gets orderNotReady; the order keeps its certificate.
    order_url, order = issuer.order([NAME_A])
    first = issuer.client.finalize(order, make_csr([NAME_A])[0])
    assert first.status == 200

    again = issuer.client.finalize(order, make_csr([NAME_A])[0])

    assert_problem(again, "orderNotReady", 403)
    assert issuer.client.post(order_url).json()["certificate"] == first.json()["certificate"]


def test_finalize_other_accounts_order(issuer: Issuer, client: AcmeClient) -> None:
    _, order = issuer.order([NAME_B])

    reply = client.finalize(order, make_csr([NAME_B])[0])

    assert_problem(reply, "malformed", 404)
    assert issuer.client.post(order["finalize"].removesuffix("/finalize")).json()["status"] == "ready"


def test_finalize_never_stays_processing(issuer: Issuer) -> None:
    # Whatever the signer does with a validity at the profile's limit, the order must end valid or
    # invalid with an error, never stuck in processing.
    not_after = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reply = issuer.client.new_order([NAME_A], notAfter=not_after)
    assert reply.status == 201, reply.body
    order_url = reply.headers["Location"]

    issuer.client.finalize(reply.json(), make_csr([NAME_A])[0])

    order = issuer.client.post(order_url).json()
    assert order["status"] in ("valid", "invalid")
    if order["status"] == "invalid":
        assert order["error"]["type"].startswith(URN_PREFIX)
        assert order["error"]["detail"]


# CSRs that must be accepted. Each returns the names to order and the CSR to send.
CsrCase = Callable[[], tuple[list[str], bytes]]
ACCEPTED_CSRS: dict[str, CsrCase] = {
    "san-only": lambda: ([NAME_A], build_csr(p256(), sans=dns_sans(NAME_A))),
    "cn-only": lambda: ([NAME_A], build_csr(p256(), common_name=NAME_A)),
    "cn-and-san": lambda: ([NAME_A, NAME_B], build_csr(p256(), common_name=NAME_B, sans=dns_sans(NAME_A, NAME_B))),
    "san-in-other-order": lambda: ([NAME_A, NAME_B], build_csr(p256(), sans=dns_sans(NAME_B, NAME_A))),
    "upper-case-names": lambda: ([NAME_A], build_csr(p256(), common_name=NAME_A.upper(),
                                                     sans=dns_sans(NAME_A.upper()))),
    "critical-san": lambda: ([NAME_A], build_csr(p256(), sans=dns_sans(NAME_A), critical_san=True)),
    "extra-email-and-uri-sans": lambda: ([NAME_A], build_csr(p256(), sans=dns_sans(NAME_A) + [
        x509.RFC822Name("ops@example.test"), x509.UniformResourceIdentifier("https://example.test/")])),
    "cn-longer-than-64": lambda: ([LONG_NAME], build_csr(p256(), common_name=LONG_NAME, sans=dns_sans(LONG_NAME))),
    "ip-in-san": lambda: ([ADDRESS], build_csr(p256(), sans=[x509.IPAddress(ipaddress.ip_address(ADDRESS))])),
    "ip-in-cn-only": lambda: ([ADDRESS], build_csr(p256(), common_name=ADDRESS)),
    "key-p384": lambda: ([NAME_A], build_csr(ec.generate_private_key(ec.SECP384R1()), sans=dns_sans(NAME_A))),
    "key-p521": lambda: ([NAME_A], build_csr(ec.generate_private_key(ec.SECP521R1()), sans=dns_sans(NAME_A))),
    "key-rsa-2048": lambda: ([NAME_A], build_csr(rsa.generate_private_key(65537, 2048), sans=dns_sans(NAME_A))),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED_CSRS))
def test_csr_accepted(issuer: Issuer, case: str) -> None:
    names, csr = ACCEPTED_CSRS[case]()

    leaf = finalize_and_download(issuer, names, csr)

    # The certificate names exactly the order's identifiers and nothing else.
    assert sorted(leaf_names(leaf)) == sorted(names)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == []
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == []
    for attribute in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        assert len(attribute.value) <= 64
        assert attribute.value in names
        # An address goes only into the iPAddress SAN, never into the CN.
        assert attribute.value != ADDRESS


@pytest.fixture
def stays_ready(issuer: Issuer) -> tuple[str, dict]:
    """A ready order for NAME_A and NAME_B, of this test's own so that a wrongly accepted CSR spoils no other."""
    return issuer.order([NAME_A, NAME_B])


def tampered_signature() -> bytes:
    der = bytearray(build_csr(p256(), sans=dns_sans(NAME_A, NAME_B)))
    der[-1] ^= 0x01
    return bytes(der)


def account_key_csr(issuer: Issuer) -> bytes:
    account_key = serialization.load_pem_private_key(issuer.client.key.export_to_pem(private_key=True, password=None),
                                                     password=None)
    return build_csr(account_key, sans=dns_sans(NAME_A, NAME_B))


def other_account_key_csr(issuer: Issuer) -> bytes:
    """A CSR for the key of another account of the same CA."""
    other = AcmeClient(issuer.client.directory_url, issuer.client.ca_bundle)
    assert other.new_account().status == 201
    other_key = serialization.load_pem_private_key(other.key.export_to_pem(private_key=True, password=None),
                                                   password=None)
    return build_csr(other_key, sans=dns_sans(NAME_A, NAME_B))


def both(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return build_csr(key, sans=dns_sans(NAME_A, NAME_B))


# CSRs that must be rejected with badCSR. Each builds the CSR for the ready order of NAME_A and NAME_B.
REJECTED_CSRS: dict[str, Callable[[Issuer], bytes]] = {
    "name-missing": lambda i: build_csr(p256(), sans=dns_sans(NAME_A)),
    "name-extra": lambda i: build_csr(p256(), sans=dns_sans(NAME_A, NAME_B, device_name("extra"))),
    "name-outside-order-in-cn": lambda i: build_csr(p256(), common_name=device_name("extra"),
                                                    sans=dns_sans(NAME_A, NAME_B)),
    "no-names": lambda i: build_csr(p256()),
    "ip-as-dns-san": lambda i: build_csr(p256(), sans=dns_sans(NAME_A, NAME_B, ADDRESS)),
    "signature-invalid": lambda i: tampered_signature(),
    "not-a-csr": lambda i: b"\x30\x03\x02\x01\x00",
    "account-key": account_key_csr,
    "other-account-key": other_account_key_csr,
    "rsa-1024": lambda i: both(rsa.generate_private_key(65537, 1024)),
    "rsa-2056": lambda i: both(rsa.generate_private_key(65537, 2056)),
    "rsa-exponent-3": lambda i: both(rsa.generate_private_key(3, 2048)),
    "rsa-fermat-close-primes": lambda i: both(fermat_close_key()),
    "rsa-roca": lambda i: both(roca_key()),
    "ec-secp256k1": lambda i: both(ec.generate_private_key(ec.SECP256K1())),
    "ed25519": lambda i: both(ed25519.Ed25519PrivateKey.generate()),
}


@pytest.mark.parametrize("case", sorted(REJECTED_CSRS))
def test_csr_rejected(issuer: Issuer, stays_ready: tuple[str, dict], case: str) -> None:
    order_url, order = stays_ready

    reply = issuer.client.finalize(order, REJECTED_CSRS[case](issuer))

    assert_problem(reply, "badCSR", 400)
    # The order stays ready, so the client can send a corrected CSR.
    assert issuer.client.post(order_url).json()["status"] == "ready"


@pytest.mark.parametrize("payload,problem", [({}, "malformed"), ({"csr": 7}, "malformed"), ({"csr": "***"}, "badCSR")],
                         ids=["missing", "not-string", "not-base64url"])
def test_finalize_payload_rejected(issuer: Issuer, stays_ready: tuple[str, dict], payload: dict, problem: str) -> None:
    order_url, order = stays_ready

    reply = issuer.client.post(order["finalize"], payload)

    assert_problem(reply, problem, 400)
    assert issuer.client.post(order_url).json()["status"] == "ready"


def test_corrected_csr_after_rejection(issuer: Issuer, stays_ready: tuple[str, dict]) -> None:
    order_url, order = stays_ready
    assert_problem(issuer.client.finalize(order, build_csr(p256(), sans=dns_sans(NAME_A))), "badCSR", 400)

    reply = issuer.client.finalize(order, build_csr(p256(), sans=dns_sans(NAME_A, NAME_B)))

    assert reply.status == 200, reply.body
    assert issuer.client.post(order_url).json()["status"] == "valid"


# The certificate resource.

def test_certificate_download(issuer: Issuer, shared_fleetca: FleetcaServer) -> None:
    _, order = issuer.order([NAME_A, NAME_B])
    finalized = issuer.client.finalize(order, make_csr([NAME_A, NAME_B])[0]).json()

    reply = issuer.client.post(finalized["certificate"])

    assert reply.status == 200
    # RFC 8555 §9.1 names this media type. docs/divergences.md promises it with no charset parameter.
    assert reply.headers["content-type"] == PEM_CHAIN
    assert has_link(reply, issuer.client.directory_url, "index")
    assert PEM_BLOCK.sub(b"", reply.body) == b"", reply.body
    chain = x509.load_pem_x509_certificates(reply.body)
    assert len(chain) >= 2
    assert sorted(leaf_names(chain[0])) == sorted([NAME_A, NAME_B])
    root = x509.load_pem_x509_certificate(shared_fleetca.root_pem.read_bytes())
    for certificate, signer in zip(chain, chain[1:] + [root], strict=True):
        certificate.verify_directly_issued_by(signer)
    assert chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_certificate_get_405(issuer: Issuer) -> None:
    _, order = issuer.order([NAME_A])
    certificate_url = issuer.client.finalize(order, make_csr([NAME_A])[0]).json()["certificate"]

    reply = issuer.client.http.get(certificate_url)

    assert reply.status_code == 405


def test_certificate_of_other_account_404(issuer: Issuer, client: AcmeClient) -> None:
    _, order = issuer.order([NAME_A])
    certificate_url = issuer.client.finalize(order, make_csr([NAME_A])[0]).json()["certificate"]

    reply = client.post(certificate_url)

    assert_problem(reply, "malformed", 404)


def test_certificate_serial_and_key(issuer: Issuer) -> None:
    csr, key = make_csr([NAME_A])

    leaf = finalize_and_download(issuer, [NAME_A], csr)

    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    # Baseline Requirements §7.1: positive, below 2^159, with at least 64 bits from a CSPRNG. The length
    # check is only a proxy for the randomness: 64 random bits have fewer than 57 significant bits with
    # probability 2^-7, and fleetca draws 159.
    assert 0 < leaf.serial_number < 1 << 159
    assert leaf.serial_number.bit_length() >= 57


def test_csr_padded_base64url_accepted(issuer: Issuer) -> None:
    # docs/divergences.md: '=' padding on the CSR is accepted.
    _, order = issuer.order([NAME_A])
    encoded = b64url(make_csr([NAME_A])[0])

    reply = issuer.client.post(order["finalize"], {"csr": encoded + "=" * (-len(encoded) % 4)})

    assert reply.status == 200, reply.body
