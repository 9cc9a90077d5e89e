"""Creation of a fleetca data directory: settings, database, root CA and first issuing CA."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from fleetca.ca.constraints import NameConstraints
from fleetca.ca.registry import ca_config
from fleetca.settings import SETTINGS_FILE, Settings, load_settings, write_settings_file
from fleetca.signing.authority import create_issuing_ca, create_root
from fleetca.signing.keys import passphrase
from fleetca.storage.database import Database, migrate

DEFAULT_ORGANIZATION = "fleetca"
_CA_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class InitError(Exception):
    """The data directory cannot be initialised; the message says why and what to do."""


@dataclass
class InitResult:
    settings: Settings
    root_path: Path
    issuing_ca_path: Path


def check_ca_name(name: str) -> None:
    if not name or len(name) > 64 or not set(name) <= _CA_NAME_CHARS or name[0] == "-":
        raise InitError(f"invalid CA name {name!r}: use 1 to 64 lowercase letters, digits and hyphens")


def existing_state(data_dir: Path) -> list[str]:
    """Files that show ``data_dir`` was initialised already."""
    names = [SETTINGS_FILE, "fleetca.db", "root.pem", "keys"]
    return [n for n in names if (data_dir / n).exists()]


def initialize(data_dir: Path, ca_name: str, constraints: NameConstraints, now: datetime,
               organization: str = DEFAULT_ORGANIZATION, database_url: str | None = None) -> InitResult:
    """Create a new data directory with a private root and one constrained issuing CA."""
    check_ca_name(ca_name)
    passphrase()  # a placeholder passphrase fails here, before anything is written
    found = existing_state(data_dir)
    if found:
        raise InitError(f"{data_dir} is already initialised (found {', '.join(found)}); "
                        "refusing to overwrite it. Use a new --data-dir, or `fleetca ca create` to add a CA.")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    # Keys, the database (which holds the nonce HMAC key) and settings are private to the CA's user.
    previous_umask = os.umask(0o077)
    try:
        return _populate(data_dir, ca_name, constraints, now, organization, database_url)
    finally:
        os.umask(previous_umask)


def _populate(data_dir: Path, ca_name: str, constraints: NameConstraints, now: datetime,
              organization: str, database_url: str | None) -> InitResult:
    write_settings_file(data_dir, database_url)
    settings = load_settings(data_dir)
    url = settings.resolved_database_url()
    migrate(url)
    database = Database(url)
    try:
        root = create_root(settings.root_key_path, organization, now)
        settings.root_certificate_path.write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
        with database.transaction() as repo:
            repo.audit(now, "ca.root.created", None, {
                "subject": root.certificate.subject.rfc4514_string(),
                "serial": format(root.certificate.serial_number, "x"),
                "key": str(settings.root_key_path),
            })
        issuing_path = add_issuing_ca(settings, database, ca_name, constraints, now, organization)
    finally:
        database.dispose()
    return InitResult(settings, settings.root_certificate_path, issuing_path)


def add_issuing_ca(settings: Settings, database: Database, ca_name: str, constraints: NameConstraints,
                   now: datetime, organization: str = DEFAULT_ORGANIZATION) -> Path:
    """Create an issuing CA under the private root and record it as active."""
    check_ca_name(ca_name)
    with database.transaction() as repo:
        if repo.get_issuing_ca(ca_name) is not None:
            raise InitError(f"issuing CA {ca_name!r} already exists; choose another name")
    key_ref = Path("keys") / f"{ca_name}.key.pem"
    created = create_issuing_ca(settings.data_dir / key_ref, ca_name, organization, constraints,
                                settings.root_certificate_path, settings.root_key_path, now)
    pem = created.certificate.public_bytes(serialization.Encoding.PEM).decode()
    cert_path = settings.data_dir / "cas" / f"{ca_name}.pem"
    cert_path.parent.mkdir(exist_ok=True)
    cert_path.write_text(pem)
    with database.transaction() as repo:
        repo.add_issuing_ca(name=ca_name, status="active", certificate_pem=pem, chain_pem="", csr_pem=None,
                            key_ref=str(key_ref), config=ca_config(constraints, settings.lifetimes.certificate),
                            created_at=now)
        repo.audit(now, "ca.issuing.created", ca_name, {
            "subject": created.certificate.subject.rfc4514_string(),
            "serial": format(created.certificate.serial_number, "x"),
            "constraints": constraints.to_json(),
            "key": str(key_ref),
        })
    return cert_path
