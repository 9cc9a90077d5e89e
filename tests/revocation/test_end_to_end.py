"""Revocation and renewal against a running fleetca, checked with OpenSSL and pkilint as relying parties would.

One server serves the whole module. Its issuing CA has a profile "ocsp" whose
certificates name the OCSP responder, it has 4 CRL shards, and it looks for new
revocations every second.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetca.acme.renewal_info import cert_id
from fleetca.settings import load_settings
from fleetca.storage.database import Database
from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.revocation.pkilint_run import crl_findings, ocsp_findings
from tests.support.acme_client import AcmeClient, b64url, make_csr
from tests.support.responder import HttpResponder
from tests.support.server import FleetcaServer, run_fleetca

SERVER_ENV = {"FLEETCA_CRL__SHARDS": "4", "FLEETCA_CRL__CHECK_SECONDS": "1"}
CRL_WAIT_SECONDS = 30.0
ARI_RETRY_AFTER = "21600"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
           validation_ports: ChallengePorts) -> Iterator[FleetcaServer]:
    running = FleetcaServer(tmp_path_factory.mktemp("revocation") / "data", dns_server.dns_address,
                            validation_ports, env=SERVER_ENV)
    running.init()
    run_fleetca("ca", "profile", "set", "default", "ocsp", "--data-dir", str(running.data_dir), "--ocsp",
                "--description", "7-day certificates with an OCSP URL")
    running.start()
    yield running
    running.stop()
    running.drop_database()


@pytest.fixture
def acme(server: FleetcaServer) -> Iterator[AcmeClient]:
    client = AcmeClient(server.directory_url(), server.root_pem)
    assert client.new_account().status == 201
    yield client
    client.close()


def issue(client: AcmeClient, responder: HttpResponder, name: str,
          **order_fields: object) -> x509.Certificate:
    reply = client.new_order([name], profile="ocsp", **order_fields)
    assert reply.status == 201, reply.body
    order_url = reply.headers["Location"]
    for authz_url in reply.json()["authorizations"]:
        challenge = next(c for c in client.post(authz_url).json()["challenges"] if c["type"] == "http-01")
        responder.serve_key_authorization(challenge["token"], client.key_authorization(challenge["token"]))
        assert client.post(challenge["url"], {}).status == 200
    order = client.poll(order_url, ("ready", "invalid"))
    assert order["status"] == "ready", order
    assert client.finalize(order, make_csr([name])[0]).status == 200
    order = client.poll(order_url, ("valid", "invalid"))
    assert order["status"] == "valid", order
    chain = client.post(order["certificate"]).body
    return x509.load_pem_x509_certificates(chain)[0]


def crl_url_of(certificate: x509.Certificate) -> str:
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return points[0].full_name[0].value


def ocsp_url_of(certificate: x509.Certificate) -> str:
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return next(a.access_location.value for a in access if a.access_method == x509.AuthorityInformationAccessOID.OCSP)


def fetch_crl(certificate: x509.Certificate) -> x509.CertificateRevocationList:
    response = httpx.get(crl_url_of(certificate), trust_env=False, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(response.content)


def wait_until_listed(certificate: x509.Certificate) -> x509.CertificateRevocationList:
    """Poll the certificate's CRL shard until it lists the certificate."""
    deadline = time.monotonic() + CRL_WAIT_SECONDS
    while True:
        crl = fetch_crl(certificate)
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            return crl
        assert time.monotonic() < deadline, f"serial {certificate.serial_number:x} not in its CRL shard in time"
        time.sleep(0.5)


def pem(item: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return item.public_bytes(serialization.Encoding.PEM)


def issuing_ca(server: FleetcaServer) -> Path:
    return server.data_dir / "cas" / f"{server.ca_name}.pem"


def openssl_verify_with_crl(server: FleetcaServer, certificate: x509.Certificate, workdir: Path
                            ) -> subprocess.CompletedProcess:
    """``openssl verify -crl_check`` with the certificate's downloaded CRL shard."""
    leaf, crl = workdir / "leaf.pem", workdir / "shard.crl.pem"
    leaf.write_bytes(pem(certificate))
    crl.write_bytes(pem(fetch_crl(certificate)))
    return subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", str(server.root_pem),
                           "-untrusted", str(issuing_ca(server)), "-CRLfile", str(crl), str(leaf)],
                          capture_output=True, text=True, timeout=30)


def openssl_ocsp(server: FleetcaServer, certificate: x509.Certificate, workdir: Path) -> tuple[str, bytes]:
    """Ask the certificate's OCSP responder with ``openssl ocsp``; return its output and the DER response."""
    leaf, response = workdir / "leaf.pem", workdir / "ocsp.der"
    leaf.write_bytes(pem(certificate))
    result = subprocess.run(["openssl", "ocsp", "-issuer", str(issuing_ca(server)), "-cert", str(leaf),
                             "-url", ocsp_url_of(certificate), "-CAfile", str(server.root_pem),
                             "-respout", str(response), "-timeout", "10"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr, response.read_bytes()


def audit_events(server: FleetcaServer, event: str) -> list[dict]:
    settings = load_settings(server.data_dir)
    database = Database(settings.resolved_database_url())
    with database.transaction() as repo:
        events = repo.audit_events(event)
    database.dispose()
    return events


def test_acme_revocation_reaches_crl_and_ocsp(server: FleetcaServer, acme: AcmeClient,
                                             responder: HttpResponder, tmp_path: Path) -> None:
    revoked = issue(acme, responder, "revoked-acme.devices.example.test")
    kept = issue(acme, responder, "kept-acme.devices.example.test")

    reply = acme.post(acme.directory["revokeCert"],
                      {"certificate": b64url(revoked.public_bytes(serialization.Encoding.DER)), "reason": 1})
    assert reply.status == 200, reply.body
    crl = wait_until_listed(revoked)

    refused = openssl_verify_with_crl(server, revoked, tmp_path)
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = openssl_verify_with_crl(server, kept, tmp_path)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr

    output, revoked_response = openssl_ocsp(server, revoked, tmp_path)
    assert "Response verify OK" in output
    assert ": revoked" in output
    assert "Reason: keyCompromise" in output
    output, good_response = openssl_ocsp(server, kept, tmp_path)
    assert "Response verify OK" in output
    assert ": good" in output

    assert crl_findings(crl.public_bytes(serialization.Encoding.DER), tmp_path) == []
    assert ocsp_findings(revoked_response, tmp_path) == []
    assert ocsp_findings(good_response, tmp_path) == []


def test_cli_revocation_reaches_crl_and_ocsp(server: FleetcaServer, acme: AcmeClient,
                                            responder: HttpResponder, tmp_path: Path) -> None:
    revoked = issue(acme, responder, "revoked-cli.devices.example.test")
    serial = format(revoked.serial_number, "X")

    result = run_fleetca("revoke", "--data-dir", str(server.data_dir), "--serial", serial,
                         "--reason", "superseded", env=SERVER_ENV)
    assert "revoked 1 of 1" in " ".join(result.stderr.split())
    wait_until_listed(revoked)

    refused = openssl_verify_with_crl(server, revoked, tmp_path)
    assert "certificate revoked" in refused.stdout + refused.stderr
    output, _ = openssl_ocsp(server, revoked, tmp_path)
    assert ": revoked" in output
    assert "Reason: superseded" in output
    events = [e for e in audit_events(server, "certificate.revoked")
              if e["details"]["serial"] == format(revoked.serial_number, "x")]
    assert len(events) == 1
    assert events[0]["details"]["reason"] == 4
    assert events[0]["details"]["requester"].startswith("operator:")


def test_cli_revoke_by_account(server: FleetcaServer, acme: AcmeClient,
                               responder: HttpResponder, tmp_path: Path) -> None:
    first = issue(acme, responder, "fleet1.devices.example.test")
    second = issue(acme, responder, "fleet2.devices.example.test")
    assert acme.account_url is not None
    account_id = acme.account_url.rsplit("/", 1)[1]

    result = run_fleetca("revoke", "--data-dir", str(server.data_dir), "--account", account_id,
                         "--reason", "cessationOfOperation", env=SERVER_ENV)

    assert "revoked 2 of 2" in " ".join(result.stderr.split())
    for certificate in (first, second):
        output, _ = openssl_ocsp(server, certificate, tmp_path)
        assert ": revoked" in output
        wait_until_listed(certificate)


def test_cli_revoke_whole_ca_needs_confirmation(server: FleetcaServer) -> None:
    result = run_fleetca("revoke", "--data-dir", str(server.data_dir), "--ca", server.ca_name,
                         "--reason", "keyCompromise", check=False)
    assert result.returncode == 1
    assert "add --all to confirm" in " ".join(result.stderr.split())


def test_ocsp_get_and_unknown_serial(server: FleetcaServer, acme: AcmeClient,
                                     responder: HttpResponder) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp

    certificate = issue(acme, responder, "ocsp-get.devices.example.test")
    ca_certificate = x509.load_pem_x509_certificate(issuing_ca(server).read_bytes())
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, ca_certificate, hashes.SHA1()).build()
    encoded = base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode()
    url = f"{ocsp_url_of(certificate)}/{httpx.URL(encoded).raw_path.decode()}"

    response = httpx.get(url, trust_env=False, timeout=10)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/ocsp-response"
    assert "max-age=" in response.headers["cache-control"]
    parsed = ocsp.load_der_ocsp_response(response.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.serial_number == certificate.serial_number

    unknown = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        request.issuer_name_hash, request.issuer_key_hash, 12345678901234567, hashes.SHA1()).build()
    response = httpx.post(ocsp_url_of(certificate), content=unknown.public_bytes(serialization.Encoding.DER),
                          headers={"Content-Type": "application/ocsp-request"}, trust_env=False, timeout=10)
    assert ocsp.load_der_ocsp_response(response.content).certificate_status == ocsp.OCSPCertStatus.UNKNOWN

    response = httpx.post(ocsp_url_of(certificate), content=b"not an OCSP request",
                          headers={"Content-Type": "application/ocsp-request"}, trust_env=False, timeout=10)
    assert ocsp.load_der_ocsp_response(response.content).response_status == \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def renewal_info(server: FleetcaServer, acme: AcmeClient, certificate: x509.Certificate) -> httpx.Response:
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    return acme.http.get(f"{acme.directory['renewalInfo']}/{cert_id(aki, certificate.serial_number)}")


def test_renewal_info_moves_after_renew_now(server: FleetcaServer, acme: AcmeClient,
                                            responder: HttpResponder) -> None:
    from datetime import UTC, datetime, timedelta

    certificate = issue(acme, responder, "ari.devices.example.test")

    reply = renewal_info(server, acme, certificate)
    assert reply.status_code == 200, reply.text
    assert reply.headers["retry-after"] == ARI_RETRY_AFTER
    window = reply.json()["suggestedWindow"]
    start = datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    # The window lies between one half and three quarters of the lifetime; the
    # timestamps are sent in whole seconds.
    assert start >= certificate.not_valid_before_utc + lifetime / 2 - timedelta(seconds=1)
    assert end <= certificate.not_valid_before_utc + lifetime * 3 / 4 + timedelta(seconds=1)
    assert start < end

    run_fleetca("renew-now", "--data-dir", str(server.data_dir), "--serial", format(certificate.serial_number, "x"))

    reply = renewal_info(server, acme, certificate)
    window = reply.json()["suggestedWindow"]
    end = datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
    assert end <= datetime.now(UTC)
    assert reply.headers["retry-after"] == ARI_RETRY_AFTER


def test_renewal_info_errors_carry_retry_after(server: FleetcaServer, acme: AcmeClient) -> None:
    cases = {
        "fail/unknown-certificate": ("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", 404),
        "fail/not-a-cert-id": ("no-dot-here", 400),
    }
    for name, (path, status) in cases.items():
        reply = acme.http.get(f"{acme.directory['renewalInfo']}/{path}")
        assert reply.status_code == status, name
        assert reply.headers.get("retry-after") == ARI_RETRY_AFTER, name


def test_replaces_accepted_once(server: FleetcaServer, acme: AcmeClient,
                                responder: HttpResponder) -> None:
    name = "replaced.devices.example.test"
    certificate = issue(acme, responder, name)
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    replaces = cert_id(aki, certificate.serial_number)

    first = acme.new_order([name], replaces=replaces)
    second = acme.new_order([name], replaces=replaces)

    assert first.status == 201, first.body
    assert first.json()["replaces"] == replaces
    assert second.status == 409
    assert second.problem_type == "alreadyReplaced"


def test_crl_numbers_increase_across_restart(server: FleetcaServer) -> None:
    def numbers() -> list[int]:
        found = []
        for shard in range(int(SERVER_ENV["FLEETCA_CRL__SHARDS"])):
            response = httpx.get(f"{server.http_base_url}/crl/default/{shard}.crl", trust_env=False, timeout=10)
            assert response.status_code == 200
            crl = x509.load_der_x509_crl(response.content)
            found.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        return found

    before = numbers()
    server.restart()
    # The CLI must name the same CRL URL as the server, or it leaves the shards alone.
    run_fleetca("crl", "publish", "--force", "--data-dir", str(server.data_dir),
                env={**SERVER_ENV, "FLEETCA_SERVER__HTTP_PUBLIC_URL": server.http_base_url})
    after = numbers()

    for shard, (old, new) in enumerate(zip(before, after)):
        assert new > old, f"shard {shard}: CRL number {new} after restart is not above {old}"


def test_cli_publish_naming_other_url_fails(server: FleetcaServer) -> None:
    other = run_fleetca("crl", "publish", "--force", "--data-dir", str(server.data_dir), "--http-public-url",
                        "http://crl.elsewhere.example", env=SERVER_ENV, check=False)
    same = run_fleetca("crl", "publish", "--force", "--data-dir", str(server.data_dir), "--http-public-url",
                       server.http_base_url, env=SERVER_ENV, check=False)

    assert other.returncode == 1
    assert "left alone" in other.stderr
    assert same.returncode == 0, same.stderr
    assert f"published {SERVER_ENV['FLEETCA_CRL__SHARDS']} CRL shard(s)" in same.stderr


def copy_without_settings(server: FleetcaServer, copy: Path) -> Path:
    """Copy the keys, root.pem and cas/ of the server's data directory, but not its settings file."""
    copy.mkdir()
    for name in ("keys", "cas"):
        shutil.copytree(server.data_dir / name, copy / name)
    shutil.copy(server.root_pem, copy / "root.pem")
    return copy


def test_cli_copied_dir_needs_database_url(server: FleetcaServer, tmp_path: Path) -> None:
    copy = copy_without_settings(server, tmp_path / "copy")
    database_url = server.database_url or f"sqlite:///{(server.data_dir / 'fleetca.db').resolve()}"

    without = run_fleetca("crl", "status", "--data-dir", str(copy), check=False)
    with_url = run_fleetca("crl", "status", "--data-dir", str(copy), "--database-url", database_url, check=False)
    listed = run_fleetca("ca", "list", "--data-dir", str(copy), "--database-url", database_url, check=False)

    assert without.returncode == 1
    assert "no database at" in without.stderr
    assert not (copy / "fleetca.db").exists()
    assert with_url.returncode == 0, with_url.stderr
    assert "default" in with_url.stdout
    assert listed.returncode == 0, listed.stderr
    assert "default" in listed.stdout


def test_serve_copied_dir_needs_database_url(server: FleetcaServer, tmp_path: Path) -> None:
    copy = copy_without_settings(server, tmp_path / "copy")

    result = run_fleetca("serve", "--data-dir", str(copy), "--listen", "127.0.0.1:1", check=False)

    assert result.returncode == 1
    assert "no database at" in result.stderr
    assert not (copy / "fleetca.db").exists()


def test_init_rejects_database_with_cas(server: FleetcaServer, tmp_path: Path) -> None:
    database_url = server.database_url or f"sqlite:///{(server.data_dir / 'fleetca.db').resolve()}"
    roots = "SELECT count(*) FROM audit_events WHERE event = 'ca.root.created'"
    before = server.query(roots)[0][0]

    result = run_fleetca("init", "--data-dir", str(tmp_path / "second"), "--permit-dns", "devices.example.test",
                         "--database-url", database_url, check=False)

    assert result.returncode == 1
    assert "already contains issuing CAs" in result.stderr
    assert not (tmp_path / "second" / "keys").exists()
    assert server.query(roots)[0][0] == before


# name: (CA name, shard number in the URL)
MISSING_CRL_CASES = {
    "shard-past-configured": ("default", int(SERVER_ENV["FLEETCA_CRL__SHARDS"])),
    "shard-past-int32": ("default", 3_000_000_000),
    "shard-past-int64": ("default", 10**20),
    "unknown-ca": ("no-such-ca", 0),
}


@pytest.mark.parametrize("case", sorted(MISSING_CRL_CASES))
def test_missing_crl_shard_not_found(server: FleetcaServer, case: str) -> None:
    ca_name, shard = MISSING_CRL_CASES[case]

    response = httpx.get(f"{server.http_base_url}/crl/{ca_name}/{shard}.crl", trust_env=False, timeout=10)

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
