"""Public or partner trust: an issuing CA whose certificate an outside root signs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.interop.clients import run_lego
from tests.support.server import FleetcaServer, run_fleetca
from tests.support.verify import verify_with_cryptography, verify_with_openssl

CA_EXTENSIONS = "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n"


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def make_partner_root(workdir: Path) -> tuple[Path, Path]:
    """A separate root, made with the openssl command line as a partner CA would."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
            "-keyout", "partner-root.key", "-out", "partner-root.pem", "-days", "30", "-subj", "/O=Partner/CN=Partner Root",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=workdir)
    return workdir / "partner-root.pem", workdir / "partner-root.key"


def sign_csr(workdir: Path, csr: Path, out: str, *, copy_extensions: bool = True, extensions: str = "") -> Path:
    """Sign ``csr`` with the partner root, copying the requested extensions unless ``copy_extensions`` is False."""
    extfile = workdir / f"{out}.ext"
    extfile.write_text(extensions + "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    args = ["x509", "-req", "-in", str(csr), "-CA", "partner-root.pem", "-CAkey", "partner-root.key",
            "-set_serial", str(abs(hash(out)) % 10**12 + 1), "-days", "20", "-sha384", "-out", out,
            "-extfile", str(extfile)]
    if copy_extensions:
        args += ["-copy_extensions", "copyall"]
    openssl(*args, cwd=workdir)
    return workdir / out


def ca_status(server: FleetcaServer, name: str) -> str:
    return server.query("SELECT status FROM issuing_cas WHERE name = :name", name=name)[0][0]


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory, dns_server: ChallTestSrv,
             validation_ports: ChallengePorts) -> Iterator[tuple[FleetcaServer, Path]]:
    workdir = tmp_path_factory.mktemp("external")
    server = FleetcaServer(workdir / "data", dns_server.dns_address, validation_ports)
    server.init()
    run_fleetca("ca", "create", "partner", "--data-dir", str(server.data_dir), "--external",
                "--permit-dns", "partner.example.test")
    make_partner_root(workdir)
    yield server, workdir
    server.stop()
    server.drop_database()


IMPORT_REFUSALS = [
    ("fail/no-name-constraints", dict(copy_extensions=False, extensions=CA_EXTENSIONS +
                                      "extendedKeyUsage=serverAuth\n"), "no Name Constraints"),
    ("fail/not-a-ca", dict(copy_extensions=False, extensions="basicConstraints=critical,CA:FALSE\n"),
     "not a CA certificate"),
    ("fail/other-key", dict(), "not this CA's key"),
]


@pytest.mark.parametrize(("sign_options", "message"), [c[1:] for c in IMPORT_REFUSALS],
                         ids=[c[0] for c in IMPORT_REFUSALS])
def test_import_refuses_bad_certificate(external: tuple[FleetcaServer, Path], sign_options: dict,
                                        message: str) -> None:
    server, workdir = external
    csr = server.data_dir / "cas" / "partner.csr.pem"
    if message == "not this CA's key":
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "other.key", "-out", "other.csr", "-subj", "/CN=Other", cwd=workdir)
        csr = workdir / "other.csr"
        sign_options = dict(copy_extensions=False, extensions=CA_EXTENSIONS
                            + "nameConstraints=critical,permitted;DNS:partner.example.test\n")
    cert = sign_csr(workdir, csr, f"refused-{abs(hash(message))}.pem", **sign_options)
    result = run_fleetca("ca", "import", "partner", str(cert), str(workdir / "partner-root.pem"),
                         "--data-dir", str(server.data_dir), check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert ca_status(server, "partner") == "pending"


def test_import_refuses_chain_without_root(external: tuple[FleetcaServer, Path]) -> None:
    server, workdir = external
    cert = sign_csr(workdir, server.data_dir / "cas" / "partner.csr.pem", "no-root.pem")
    result = run_fleetca("ca", "import", "partner", str(cert), "--data-dir", str(server.data_dir), check=False)
    assert result.returncode == 1
    assert "does not reach a root" in result.stderr
    assert ca_status(server, "partner") == "pending"


def test_external_ca_issues_to_real_client(external: tuple[FleetcaServer, Path], dns_server: ChallTestSrv,
                                           validation_ports: ChallengePorts, tmp_path: Path) -> None:
    server, workdir = external
    cert = sign_csr(workdir, server.data_dir / "cas" / "partner.csr.pem", "partner.pem")
    run_fleetca("ca", "import", "partner", str(cert), str(workdir / "partner-root.pem"),
                "--data-dir", str(server.data_dir))
    assert ca_status(server, "partner") == "active"

    server.start()
    name = "d1.partner.example.test"
    chain_path = run_lego(server.directory_url("partner"), server.root_pem, name, tmp_path,
                          challenge="http-01", http01_port=validation_ports.http01)
    chain = chain_path.read_bytes()
    partner_root = workdir / "partner-root.pem"
    path = verify_with_cryptography(chain, partner_root, name)
    assert path[-1] == x509.load_pem_x509_certificate(partner_root.read_bytes())
    result = verify_with_openssl(chain, partner_root, name, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(Exception):
        verify_with_cryptography(chain, server.root_pem, name)
