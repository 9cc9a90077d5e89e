"""Fixtures for revocation tests: a local issuing CA and its database, without a server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetca.ca.bootstrap import initialize
from fleetca.ca.constraints import NameConstraints
from fleetca.ca.registry import IssuingCa, load_issuing_cas
from fleetca.clock import ManualClock
from fleetca.domain import Account, Identifier, IssuedCertificate
from fleetca.revocation.shards import shard_for_serial
from fleetca.settings import Settings, load_settings
from fleetca.signing.issuer import LeafRequest
from fleetca.storage.database import Database

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass
class LocalCa:
    """An initialised data directory with one issuing CA, opened without a server."""

    settings: Settings
    database: Database
    ca: IssuingCa
    clock: ManualClock
    account_id: str

    def add_certificate(self, *, name: str = "d1.devices.example.test", account_id: str | None = None,
                        eab_key_id: str | None = None, profile: str = "default",
                        lifetime: timedelta = timedelta(days=7), signed: bool = False) -> IssuedCertificate:
        """Store a certificate issued now; ``signed`` makes a real DER certificate, otherwise a placeholder."""
        now = self.clock.now()
        serial_number = secrets.randbits(120) | 1 << 120
        der = b"placeholder"
        if signed:
            key = ec.generate_private_key(ec.SECP256R1())
            certificate = self.ca.signer.sign_leaf(LeafRequest(
                public_key=key.public_key(), identifiers=(Identifier("dns", name),), not_before=now,
                not_after=now + lifetime, profile=self.ca.profiles[self.ca.default_profile],
                serial_number=serial_number))
            der = certificate.public_bytes(serialization.Encoding.DER)
        issued = IssuedCertificate(
            id=secrets.token_hex(8), serial=format(serial_number, "x"), ca_name=self.ca.name,
            account_id=account_id or self.account_id, order_id=secrets.token_hex(8), der=der, not_before=now,
            not_after=now + lifetime, profile=profile, revoked_at=None, revocation_reason=None,
            eab_key_id=eab_key_id, crl_shard=shard_for_serial(serial_number, self.settings.crl.shards))
        with self.database.transaction() as repo:
            repo.add_certificate(issued, now)
        return issued

    def add_account(self) -> str:
        account_id = secrets.token_hex(8)
        with self.database.transaction() as repo:
            repo.add_account(Account(id=account_id, ca_name=self.ca.name, key_thumbprint=secrets.token_hex(16),
                                     jwk={}, status="valid", contact=[], terms_agreed=True, eab_key_id=None,
                                     created_at=self.clock.now()))
        return account_id

    def revoke(self, certificate: IssuedCertificate, reason: int | None = None,
               at: datetime | None = None) -> None:
        with self.database.transaction() as repo:
            assert repo.revoke_certificate(certificate.id, at or self.clock.now(), reason)


def open_local_ca(data_dir: Path, **overrides: object) -> LocalCa:
    initialize(data_dir, "default", NameConstraints.build(["devices.example.test"]), START)
    settings = load_settings(data_dir, **overrides)
    database = Database(settings.resolved_database_url())
    ca = load_issuing_cas(database, data_dir)["default"]
    local = LocalCa(settings, database, ca, ManualClock(START), "")
    local.account_id = local.add_account()
    return local


@pytest.fixture
def local_ca(tmp_path: Path) -> Iterator[LocalCa]:
    """An issuing CA with 8 CRL shards, a plain-HTTP base URL and a clock at 2026-12-01 12:00 UTC."""
    local = open_local_ca(tmp_path / "data", crl={"shards": 8},
                          server={"http_public_url": "http://crl.example.test"})
    yield local
    local.database.dispose()
