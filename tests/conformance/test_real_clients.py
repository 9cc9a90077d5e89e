"""Real, unmodified ACME clients drive EAB registration, revocation, deactivation and key change.

lego and certbot register through External Account Binding with a CA that
requires it, obtain a certificate and revoke it. certbot then deactivates its
account with ``unregister``. lego 4.9 has no command that deactivates an
account, so no lego case covers it. Neither lego nor certbot can change an
account key, so uacme's ``newkey`` covers key change. uacme also obtains and
revokes a certificate for an IP address, and obtains one as a device would: its
EAB key pre-authorizes the name, its hook declines every challenge, and no
challenge responder runs at all.

Each outcome is checked over raw ACME as well: a revoked certificate gets
alreadyRevoked, a deactivated account gets unauthorized, a replaced key finds
no account.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk

from tests.interop.challtestsrv import ChallengePorts
from tests.interop.clients import (
    ExternalAccountBinding,
    _certbot_executable,
    _client_environment,
    _executable,
    _run,
    _with_private_trust_store,
    run_certbot,
    run_lego,
    run_uacme,
)
from tests.support.acme_client import AcmeClient, Reply, b64url
from tests.support.server import FleetcaServer

from .helpers import EabKey, assert_problem, create_eab_key, device_name

pytestmark = pytest.mark.interop

CLIENT_TIMEOUT_SECONDS = 60.0
LEGO_EMAIL = "interop@example.test"


def binding(eab: EabKey) -> ExternalAccountBinding:
    return ExternalAccountBinding(eab.key_id, eab.hmac_key)


def load_jwk(pem_path: Path) -> tuple[jwk.JWK, str]:
    """Load a PEM private key as a JWK, with the JWS alg that fits it."""
    key = serialization.load_pem_private_key(pem_path.read_bytes(), password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        return jwk.JWK.from_pyca(key), "RS256"
    return jwk.JWK.from_pyca(key), {"secp256r1": "ES256", "secp384r1": "ES384"}[key.curve.name]


def raw_client(server: FleetcaServer, key: jwk.JWK, alg: str, account_url: str | None = None) -> AcmeClient:
    return AcmeClient(server.directory_url(), server.root_pem, key=key, alg=alg, account_url=account_url)


def revoke_with_certificate_key(server: FleetcaServer, chain_path: Path, key_path: Path) -> Reply:
    """Revoke the leaf of ``chain_path`` over raw ACME, signed by its own key."""
    leaf = x509.load_pem_x509_certificates(chain_path.read_bytes())[0]
    key, alg = load_jwk(key_path)
    client = raw_client(server, key, alg)
    payload = {"certificate": b64url(leaf.public_bytes(serialization.Encoding.DER))}
    return client.post(client.directory["revokeCert"], payload, use_jwk=True)


def leaf_names(chain_path: Path) -> list[str]:
    leaf = x509.load_pem_x509_certificates(chain_path.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName) + san.get_values_for_type(x509.IPAddress)]


def accounts_bound_to(server: FleetcaServer, eab: EabKey) -> int:
    [(count,)] = server.query("SELECT COUNT(*) FROM accounts WHERE eab_key_id = :key_id", key_id=eab.key_id)
    return count


# lego.

def test_lego_eab_issue_and_revoke(eab_fleetca: FleetcaServer, validation_ports: ChallengePorts,
                                   tmp_path: Path) -> None:
    eab = create_eab_key(eab_fleetca)
    name = device_name("lego-eab")

    chain = run_lego(eab_fleetca.directory_url(), eab_fleetca.root_pem, name, tmp_path, challenge="http-01",
                     http01_port=validation_ports.http01, eab=binding(eab))

    assert leaf_names(chain) == [name]
    assert accounts_bound_to(eab_fleetca, eab) == 1

    client_dir = tmp_path / "lego"
    # lego exits with an error on any command without --eab once the directory sets externalAccountRequired.
    command = [_executable("lego", "lego"), "--server", eab_fleetca.directory_url(), "--accept-tos",
               "--email", LEGO_EMAIL, "--path", str(client_dir / "state"), "--domains", name,
               "--eab", f"--kid={eab.key_id}", f"--hmac={eab.hmac_key}", "revoke", "--keep"]
    environment = _client_environment(client_dir, LEGO_CA_CERTIFICATES=str(eab_fleetca.root_pem))
    _run("lego", command, client_dir, environment, "revoke", CLIENT_TIMEOUT_SECONDS)

    key_path = client_dir / "state" / "certificates" / f"{name}.key"
    assert_problem(revoke_with_certificate_key(eab_fleetca, chain, key_path), "alreadyRevoked", 400)


# certbot.

def certbot_command(server: FleetcaServer, client_dir: Path, *arguments: str) -> list[str]:
    return [_certbot_executable(), *arguments, "--non-interactive", "--server", server.directory_url(),
            "--config-dir", str(client_dir / "config"), "--work-dir", str(client_dir / "work"),
            "--logs-dir", str(client_dir / "logs")]


def certbot_account(client_dir: Path) -> tuple[jwk.JWK, str]:
    """Return certbot's stored account key and account URL."""
    [account_dir] = [p.parent for p in (client_dir / "config" / "accounts").rglob("private_key.json")]
    key = jwk.JWK(**json.loads((account_dir / "private_key.json").read_text()))
    account_url = json.loads((account_dir / "regr.json").read_text())["uri"]
    return key, account_url


def test_certbot_eab_issue_revoke_unregister(eab_fleetca: FleetcaServer, validation_ports: ChallengePorts,
                                             tmp_path: Path) -> None:
    eab = create_eab_key(eab_fleetca)
    name = device_name("certbot-eab")

    chain = run_certbot(eab_fleetca.directory_url(), eab_fleetca.root_pem, name, tmp_path, validation_ports.http01,
                        eab=binding(eab))

    assert leaf_names(chain) == [name]
    assert accounts_bound_to(eab_fleetca, eab) == 1
    client_dir = tmp_path / "certbot"
    environment = _client_environment(client_dir, REQUESTS_CA_BUNDLE=str(eab_fleetca.root_pem))
    live = client_dir / "config" / "live" / name

    revoke = certbot_command(eab_fleetca, client_dir, "revoke", "--cert-path", str(live / "cert.pem"),
                             "--reason", "superseded", "--no-delete-after-revoke")
    _run("certbot", revoke, client_dir, environment, "revoke", CLIENT_TIMEOUT_SECONDS)

    assert_problem(revoke_with_certificate_key(eab_fleetca, chain, live / "privkey.pem"), "alreadyRevoked", 400)

    # certbot deletes its account files after unregister, so the key is read first.
    key, account_url = certbot_account(client_dir)
    assert raw_client(eab_fleetca, key, "RS256", account_url).post(account_url, None).status == 200
    unregister = certbot_command(eab_fleetca, client_dir, "unregister")
    _run("certbot", unregister, client_dir, environment, "unregister", CLIENT_TIMEOUT_SECONDS)

    reply = raw_client(eab_fleetca, key, "RS256", account_url).post(account_url, None)
    assert_problem(reply, "unauthorized", 401)


# uacme.

def uacme_command(server: FleetcaServer, client_dir: Path, *arguments: str) -> list[str]:
    """Build a uacme command that trusts only the server's root, like clients.run_uacme does."""
    trust_dir = client_dir / "trust"
    trust_dir.mkdir(parents=True, exist_ok=True)
    (trust_dir / "ca-certificates.crt").write_bytes(server.root_pem.read_bytes())
    command = [_executable("uacme", "uacme"), "--verbose", "--acme-url", server.directory_url(),
               "--confdir", str(client_dir / "conf"), *arguments]
    return _with_private_trust_store(trust_dir, command)


def run_uacme_step(server: FleetcaServer, client_dir: Path, step: str, *arguments: str) -> None:
    client_dir.mkdir(parents=True, exist_ok=True)
    environment = _client_environment(client_dir)
    _run("uacme", uacme_command(server, client_dir, *arguments), client_dir, environment, step,
         CLIENT_TIMEOUT_SECONDS)


def lookup(server: FleetcaServer, key_path: Path) -> Reply:
    key, alg = load_jwk(key_path)
    return raw_client(server, key, alg).new_account({"onlyReturnExisting": True})


def test_uacme_key_change(eab_fleetca: FleetcaServer, validation_ports: ChallengePorts, tmp_path: Path) -> None:
    eab = create_eab_key(eab_fleetca)
    client_dir = tmp_path / "uacme"
    private = client_dir / "conf" / "private"
    run_uacme_step(eab_fleetca, client_dir, "new", "--yes", "--eab", f"{eab.key_id}:{eab.hmac_key}", "new")
    old_key = private / "old-account-key.pem"
    old_key.write_bytes((private / "key.pem").read_bytes())
    before = lookup(eab_fleetca, old_key)
    assert before.status == 200, before.body
    account_url = before.headers["Location"]

    run_uacme_step(eab_fleetca, client_dir, "newkey", "newkey")

    assert (private / "key.pem").read_bytes() != old_key.read_bytes()
    # The old key finds no account and no longer signs for it.
    assert_problem(lookup(eab_fleetca, old_key), "accountDoesNotExist", 400)
    key, alg = load_jwk(old_key)
    new_alg = load_jwk(private / "key.pem")[1]
    rejected = raw_client(eab_fleetca, key, alg, account_url).post(account_url, None)
    # The signature fails to verify, or, for a key of another type, the alg no longer fits the account key.
    assert_problem(rejected, "malformed" if alg == new_alg else "badPublicKey", 400)
    # The new key finds the same account, and uacme keeps issuing with it.
    after = lookup(eab_fleetca, private / "key.pem")
    assert after.status == 200, after.body
    assert after.headers["Location"] == account_url
    name = device_name("uacme-after-newkey")
    chain = run_uacme(eab_fleetca.directory_url(), eab_fleetca.root_pem, name, tmp_path, validation_ports.http01)
    assert leaf_names(chain) == [name]


def test_uacme_ip_issue_and_revoke(shared_fleetca: FleetcaServer, validation_ports: ChallengePorts,
                                   tmp_path: Path) -> None:
    address = "127.0.0.1"
    assert "127.0.0.0/8" in shared_fleetca.permit_ip

    chain = run_uacme(shared_fleetca.directory_url(), shared_fleetca.root_pem, address, tmp_path,
                      validation_ports.http01)

    assert leaf_names(chain) == [address]
    client_dir = tmp_path / "uacme"
    chain_copy = tmp_path / "issued.pem"
    chain_copy.write_bytes(chain.read_bytes())
    run_uacme_step(shared_fleetca, client_dir, "revoke", "revoke", str(chain))

    key_path = client_dir / "conf" / "private" / address / "key.pem"
    assert_problem(revoke_with_certificate_key(shared_fleetca, chain_copy, key_path), "alreadyRevoked", 400)


def test_device_preauthorized_without_responder(eab_fleetca: FleetcaServer, tmp_path: Path) -> None:
    zone = "fleet.devices.example.test"
    eab = create_eab_key(eab_fleetca, "--preauthorize", f"*.{zone}", "--max-accounts", "1")
    name = f"sensor-0042.{zone}"
    client_dir = tmp_path / "uacme"
    run_uacme_step(eab_fleetca, client_dir, "new", "--yes", "--eab", f"{eab.key_id}:{eab.hmac_key}", "new")

    # /bin/false declines every challenge, so uacme succeeds only if none is asked of it.
    run_uacme_step(eab_fleetca, client_dir, "issue", "--hook", "/bin/false", "issue", name)

    assert leaf_names(client_dir / "conf" / name / "cert.pem") == [name]
