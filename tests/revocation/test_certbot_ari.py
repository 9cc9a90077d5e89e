"""certbot's ACME Renewal Information support renews a certificate after ``fleetca renew-now``.

certbot 5.x requests renewalInfo during ``certbot renew`` and renews when a random
time inside the suggested window has passed. Before renew-now the window lies
days ahead and certbot keeps the certificate. After it, the window has ended and
certbot renews at once. certbot asks again only after Retry-After (6 hours), so
the test clears that stored time between the two runs. certbot 5.8 sends no
"replaces" in its orders; the raw-protocol tests cover that field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.interop.clients import _certbot_executable, _client_environment, _run, run_certbot
from tests.support.server import FleetcaServer, run_fleetca

pytestmark = pytest.mark.interop

NAME = "certbot-ari.devices.example.test"


@pytest.fixture
def server(tmp_path: Path, dns_server: ChallTestSrv, validation_ports: ChallengePorts) -> Iterator[FleetcaServer]:
    with FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports) as running:
        yield running


def certbot_renew(server: FleetcaServer, workdir: Path) -> str:
    """Run ``certbot renew`` for the lineage that run_certbot created in ``workdir``; return its output."""
    client_dir = workdir / "certbot"
    command = [_certbot_executable(), "renew", "--non-interactive", "--no-random-sleep-on-renew", "--cert-name", NAME,
               "--config-dir", str(client_dir / "config"), "--work-dir", str(client_dir / "work"),
               "--logs-dir", str(client_dir / "logs")]
    environment = _client_environment(client_dir, REQUESTS_CA_BUNDLE=str(server.root_pem))
    run = _run("certbot", command, client_dir, environment, "renew", 90, [client_dir / "logs" / "letsencrypt.log"])
    return run.stdout_path.read_text() + run.stderr_path.read_text()


def forget_ari_retry_after(workdir: Path) -> None:
    """Drop the next-check time certbot stored from Retry-After, as if that time had passed."""
    conf = workdir / "certbot" / "config" / "renewal" / f"{NAME}.conf"
    lines = conf.read_text().splitlines()
    kept = [line for line in lines if not line.strip().startswith("ari_retry_after")]
    assert len(kept) == len(lines) - 1, "certbot stored no ari_retry_after"
    conf.write_text("\n".join(kept) + "\n")


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number


def test_certbot_renews_after_renew_now(server: FleetcaServer, validation_ports: ChallengePorts,
                                        tmp_path: Path) -> None:
    chain = run_certbot(server.directory_url(), server.root_pem, NAME, tmp_path, validation_ports.http01)
    first_serial = serial_of(chain)

    assert "not yet due" in certbot_renew(server, tmp_path)
    assert serial_of(chain) == first_serial
    forget_ari_retry_after(tmp_path)

    run_fleetca("renew-now", "--data-dir", str(server.data_dir), "--serial", format(first_serial, "x"))
    output = certbot_renew(server, tmp_path)

    assert "not yet due" not in output, output
    renewed_serial = serial_of(chain)
    assert renewed_serial != first_serial
    log = server.read_log()
    assert "/renewal-info/" in log
