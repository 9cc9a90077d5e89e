"""Domain objects shared by the ACME layer, challenge validation and storage.

These are neither wire messages (see ``fleetca.acme.views``) nor database rows
(see ``fleetca.storage.repository``); each layer converts explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, order=True)
class Identifier:
    """An ACME identifier in canonical form: lowercase A-label DNS name or IP text."""

    type: str  # "dns" or "ip"
    value: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@dataclass
class Account:
    id: str
    ca_name: str
    key_thumbprint: str
    jwk: dict[str, Any]
    status: str  # valid, deactivated, revoked
    contact: list[str]
    terms_agreed: bool
    eab_key_id: str | None
    created_at: datetime


@dataclass
class Challenge:
    id: str
    authorization_id: str
    type: str
    token: str
    status: str  # pending, processing, valid, invalid
    validated: datetime | None = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None


@dataclass
class Authorization:
    id: str
    account_id: str
    identifier: Identifier
    wildcard: bool
    status: str  # pending, valid, invalid, deactivated, expired, revoked
    expires: datetime
    created_at: datetime
    challenges: list[Challenge] = field(default_factory=list)


@dataclass
class Order:
    id: str
    account_id: str
    status: str  # pending, ready, processing, valid, invalid
    expires: datetime
    identifiers: list[Identifier]
    authorization_ids: list[str]
    not_before: datetime | None
    not_after: datetime | None
    profile: str | None
    error: dict[str, Any] | None
    certificate_id: str | None
    created_at: datetime
    replaces: str | None = None  # ARI certID of the certificate this order replaces


@dataclass
class IssuedCertificate:
    id: str
    serial: str  # lowercase hex without leading zeros
    ca_name: str
    account_id: str
    order_id: str
    der: bytes
    not_before: datetime
    not_after: datetime
    profile: str | None
    revoked_at: datetime | None
    revocation_reason: int | None
    eab_key_id: str | None = None
    crl_shard: int = 0
    replaced_by_order: str | None = None
    renew_from: datetime | None = None
