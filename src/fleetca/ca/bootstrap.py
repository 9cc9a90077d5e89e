"""Creation of a fleetca data directory: settings, database, root CA and first issuing CA."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from sqlalchemy import inspect, text

from fleetca.ca.constraints import NameConstraints
from fleetca.ca.ca_profiles import STRICT, IssuingCaSpec
from fleetca.ca.publication import ensure_root_crl
from fleetca.ca.issuing import IssuingCaError, add_issuing_ca, check_ca_name
from fleetca.settings import SETTINGS_FILE, Settings, load_settings, write_settings_file
from fleetca.signing.authority import create_root
from fleetca.signing.keys import passphrase
from fleetca.storage.database import Database, make_engine, migrate

DEFAULT_ORGANIZATION = "fleetca"


class InitError(IssuingCaError):
    """The data directory cannot be initialised; the message gives the reason and what to do."""


@dataclass
class InitResult:
    settings: Settings
    root_path: Path
    issuing_ca_path: Path


def existing_state(data_dir: Path) -> list[str]:
    """Files that show ``data_dir`` was initialised already."""
    names = [SETTINGS_FILE, "fleetca.db", "root.pem", "keys"]
    return [n for n in names if (data_dir / n).exists()]


def database_has_issuing_cas(url: str) -> bool:
    """Return whether the database at ``url`` already has fleetca's schema and at least one issuing CA."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return False
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("issuing_cas"):
                return False
            return conn.execute(text("SELECT count(*) FROM issuing_cas")).scalar_one() > 0
    finally:
        engine.dispose()


def initialize(data_dir: Path, ca_name: str, constraints: NameConstraints, now: datetime,
               organization: str = DEFAULT_ORGANIZATION, database_url: str | None = None) -> InitResult:
    """Create a new data directory with a private root and one constrained issuing CA."""
    check_ca_name(ca_name)
    passphrase()  # a placeholder passphrase fails here, before anything is written
    found = existing_state(data_dir)
    if found:
        raise InitError(f"{data_dir} is already initialised (found {', '.join(found)}); "
                        "refusing to overwrite it. Use a new --data-dir, or `fleetca ca create` to add a CA.")
    if database_url and database_has_issuing_cas(database_url):
        raise InitError("the database already contains issuing CAs signed by another data directory's root. "
                        "To run another process on it, copy fleetca.toml, root.pem, root.crl, cas/ and keys/ "
                        "from that data directory instead of running init")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    # Keys, the database (which contains the nonce HMAC key) and settings are private to the CA's user.
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
    database = Database.of(settings)
    try:
        root = create_root(settings.root_key_path, organization, now)
        settings.root_certificate_path.write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
        # The root certificate is handed to every relying party, while the directory itself stays private.
        settings.root_certificate_path.chmod(0o644)
        ensure_root_crl(settings, now)
        with database.transaction() as repo:
            repo.audit(now, "ca.root.created", None, {
                "subject": root.certificate.subject.rfc4514_string(),
                "serial": format(root.certificate.serial_number, "x"),
                "key": str(settings.root_key_path),
            })
        spec = IssuingCaSpec(name=ca_name, profile=STRICT, organization=organization, country=None,
                             constraints=constraints)
        issuing_path = add_issuing_ca(settings, database, spec, now)
    finally:
        database.dispose()
    return InitResult(settings, settings.root_certificate_path, issuing_path)
