"""One fleetca with a strict, a baseline and an embedded issuing CA, and the leaves the matrix checks.

Real leaves come from the running server over ACME. The leaf for a name outside
the constraints cannot come from fleetca, which rejects it, so the test
signs it with the issuing CA's key file directly, as a compromised or buggy signer
would. A second leaf forged the same way for a name inside the constraints is the
control: where it verifies and the outside one does not, the name is the cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.acme.test_flow import answer_http01
from tests.support.acme_client import AcmeClient, make_csr
from tests.support.responder import HttpResponder
from tests.interop.challtestsrv import free_port
from tests.support.server import FleetcaServer, run_fleetca

CA_PROFILES = ("strict", "baseline", "embedded")
ORGANIZATION = "fleetca matrix"
COUNTRY = "DE"
# Every issuing CA may certify names under <ca profile>.fleet.example.test only.
FLEET_SUFFIX = "fleet.example.test"
# A name no issuing CA is permitted to certify, for the forged leaf.
OUTSIDE_NAME = "device.outside.example.net"
# Row names of the leaves the test signs with the CA key itself.
FORGED_INSIDE = "forged-inside"
FORGED_OUTSIDE = "forged-outside"


@dataclass(frozen=True)
class CertificateProfileSpec:
    """A certificate profile the matrix sets on every CA and requests in newOrder."""

    name: str
    key_type: str  # "ec256" or "rsa2048"
    eku: tuple[str, ...]
    common_name: bool

    def cli_args(self) -> list[str]:
        args = ["--lifetime", "7d", "--key-type", self.key_type]
        for usage in self.eku:
            args += ["--eku", usage]
        args.append("--common-name" if self.common_name else "--no-common-name")
        return args


# Every profile is valid for 7 days. "default" replaces the profile of that name
# that fleetca creates with every CA, keeping it the default but allowing only
# ECDSA P-256 keys.
CERTIFICATE_PROFILES = (
    CertificateProfileSpec("default", "ec256", ("serverAuth", "clientAuth"), common_name=True),
    CertificateProfileSpec("server-rsa", "rsa2048", ("serverAuth",), common_name=True),
    CertificateProfileSpec("no-cn", "ec256", ("serverAuth", "clientAuth"), common_name=False),
)


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate with its private key, issued (or forged) under one issuing CA."""

    ca_profile: str
    certificate_profile: str
    name: str
    chain_pem: bytes  # leaf first, then the issuing CA
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]


@dataclass
class Fleet:
    """The running fleetca, its CA files, and the CLI errors for the profiles it rejected."""

    server: FleetcaServer
    cli_rejections: dict[tuple[str, str], str]
    started: float  # time.monotonic() when the data directory was created

    @property
    def root_pem(self) -> Path:
        return self.server.root_pem

    def ca_pem(self, ca_profile: str) -> Path:
        return self.server.data_dir / "cas" / f"{ca_profile}.pem"

    def ca_key(self, ca_profile: str) -> Path:
        return self.server.data_dir / "keys" / f"{ca_profile}.key.pem"


def device_name(ca_profile: str, label: str) -> str:
    return f"{label}.{ca_profile}.{FLEET_SUFFIX}"


def create_cas(server: FleetcaServer) -> dict[tuple[str, str], str]:
    """Create the three issuing CAs and their certificate profiles with the CLI.

    A profile with a CN that the CLI rejects (a baseline CA's leaves carry no CN)
    is set again without the CN, so every CA has every profile. Returns the CLI's
    error output for each (CA profile, certificate profile) it rejected first.
    """
    data_dir = str(server.data_dir)
    rejections: dict[tuple[str, str], str] = {}
    # The baseline CA names the root CRL on the plain-HTTP listener, so its port is fixed before the CA exists.
    server.http_port = server.http_port or free_port()
    for ca_profile in CA_PROFILES:
        run_fleetca("ca", "create", ca_profile, "--data-dir", data_dir, "--profile", ca_profile,
                    "--permit-dns", f"{ca_profile}.{FLEET_SUFFIX}", "--http-public-url", server.http_base_url,
                    "--organization", ORGANIZATION, "--country", COUNTRY)
        for spec in CERTIFICATE_PROFILES:
            command = ["ca", "profile", "set", ca_profile, spec.name, "--data-dir", data_dir,
                       *(["--default"] if spec.name == "default" else [])]
            result = run_fleetca(*command, *spec.cli_args(), check=False)
            if result.returncode != 0 and spec.common_name:
                rejections[(ca_profile, spec.name)] = " ".join(result.stderr.split())
                without_cn = CertificateProfileSpec(spec.name, spec.key_type, spec.eku, common_name=False)
                run_fleetca(*command, *without_cn.cli_args())
            elif result.returncode != 0:
                raise AssertionError(f"fleetca {' '.join(command)} failed: {result.stderr}")
    return rejections


def new_private_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}: expected ec256 or rsa2048")


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def issue_leaf(client: AcmeClient, responder: HttpResponder, ca_profile: str,
               spec: CertificateProfileSpec) -> Leaf:
    """Run newOrder, http-01 and finalize for one name with ``spec``'s profile and key type."""
    name = device_name(ca_profile, spec.name)
    reply = client.new_order([name], profile=spec.name)
    assert reply.status == 201, f"newOrder for {name} with profile {spec.name}: {reply.body!r}"
    order_url = reply.headers["Location"]
    answer_http01(client, responder, reply.json())
    order = client.poll(order_url, ("ready", "invalid"))
    assert order["status"] == "ready", f"order for {name} did not become ready: {order}"

    key = new_private_key(spec.key_type)
    csr, _ = make_csr([name], key)  # type: ignore[arg-type]
    reply = client.finalize(order, csr)
    assert reply.status == 200, f"finalize for {name}: {reply.body!r}"
    order = client.poll(order_url, ("valid", "invalid"))
    assert order["status"] == "valid", f"order for {name} did not become valid: {order}"
    certificate = client.post(order["certificate"])
    assert certificate.status == 200, f"certificate download for {name}: {certificate.body!r}"
    return Leaf(ca_profile, spec.name, name, certificate.body, private_key_pem(key))


def issue_leaves(fleet: Fleet, responder: HttpResponder) -> list[Leaf]:
    """Issue one leaf per CA profile and certificate profile."""
    leaves = []
    for ca_profile in CA_PROFILES:
        client = AcmeClient(fleet.server.directory_url(ca_profile), fleet.root_pem)
        try:
            reply = client.new_account()
            assert reply.status == 201, f"newAccount on CA {ca_profile}: {reply.body!r}"
            for spec in CERTIFICATE_PROFILES:
                leaves.append(issue_leaf(client, responder, ca_profile, spec))
        finally:
            client.close()
    return leaves


def forge_leaf(fleet: Fleet, ca_profile: str, inside: bool, now: datetime | None = None) -> Leaf:
    """Sign a leaf with the CA key file, shaped like the CA's own leaves.

    With ``inside`` the name is one the CA may certify, otherwise OUTSIDE_NAME.
    """
    now = now or datetime.now(UTC)
    name = device_name(ca_profile, FORGED_INSIDE) if inside else OUTSIDE_NAME
    ca_certificate = x509.load_pem_x509_certificate(fleet.ca_pem(ca_profile).read_bytes())
    ca_key = serialization.load_pem_private_key(fleet.ca_key(ca_profile).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())

    # A baseline CA's leaves have an empty subject, so that outside the constraints the
    # DNS name is the only violation.
    with_subject = ca_profile != "baseline"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)] if with_subject else [])
    ski = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=not with_subject)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    chain = certificate.public_bytes(serialization.Encoding.PEM) + fleet.ca_pem(ca_profile).read_bytes()
    return Leaf(ca_profile, FORGED_INSIDE if inside else FORGED_OUTSIDE, name, chain, private_key_pem(key))
