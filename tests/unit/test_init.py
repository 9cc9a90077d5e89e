"""`fleetca init`: files, permissions, constraints, and refusal to overwrite."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.server import run_fleetca


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ca"
    run_fleetca("init", "--data-dir", str(path), "--ca", "routers", "--permit-dns", "devices.example.test",
                "--permit-dns", "lab.example.test", "--permit-ip", "192.0.2.0/24")
    return path


def test_init_writes_root_and_issuing_ca(data_dir: Path) -> None:
    root = x509.load_pem_x509_certificate((data_dir / "root.pem").read_bytes())
    issuing = x509.load_pem_x509_certificate((data_dir / "cas" / "routers.pem").read_bytes())
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp384r1"
    assert issuing.public_key().curve.name == "secp256r1"
    issuing.verify_directly_issued_by(root)

    basic = issuing.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    constraints = issuing.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert [n.value for n in constraints.value.permitted_subtrees] == [
        "devices.example.test", "lab.example.test", __import__("ipaddress").ip_network("192.0.2.0/24")]
    assert [str(n.value) for n in constraints.value.excluded_subtrees] == ["::/0"]
    eku = issuing.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_init_key_files_are_private(data_dir: Path) -> None:
    for key in (data_dir / "keys").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert b"ENCRYPTED" not in key.read_bytes()


def test_init_root_certificate_is_readable(data_dir: Path) -> None:
    assert stat.S_IMODE((data_dir / "root.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_init_refuses_existing_directory(data_dir: Path) -> None:
    before = {p: p.read_bytes() for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith("fleetca.db")}
    result = run_fleetca("init", "--data-dir", str(data_dir), "--permit-dns", "other.example.test", check=False)
    assert result.returncode == 1
    assert "already initialised" in result.stderr
    after = {p: p.read_bytes() for p in before}
    assert after == before


def test_init_encrypts_keys_with_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "enc"
    run_fleetca("init", "--data-dir", str(path), "--permit-dns", "devices.example.test",
                env={"FLEETCA_KEY_PASSPHRASE": "correct horse battery staple"})
    for key in (path / "keys").iterdir():
        assert b"ENCRYPTED" in key.read_bytes(), key


def test_init_rejects_placeholder_passphrase(tmp_path: Path) -> None:
    result = run_fleetca("init", "--data-dir", str(tmp_path / "p"), "--permit-dns", "devices.example.test",
                         env={"FLEETCA_KEY_PASSPHRASE": "changeme"}, check=False)
    assert result.returncode == 1
    assert "placeholder" in result.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("args", [["--permit-dns", "*.x.test"], ["--permit-ip", "10.0.0.1/8"], [],
                                  ["--permit-dns", "ok.test", "--ca", "Bad Name"]],
                         ids=["wildcard-suffix", "host-bits", "no-constraints", "bad-ca-name"])
def test_init_rejects_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    result = run_fleetca("init", "--data-dir", str(tmp_path / "x"), *args, check=False)
    assert result.returncode == 1
    assert "error:" in result.stderr
    assert not (tmp_path / "x" / "keys").exists()
