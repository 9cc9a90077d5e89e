"""Fleet-wide operator actions: revoking and moving renewal windows of chosen certificates.

A selection combines criteria with AND: issuing CA, certificate profile, EAB
key, account and a list of serials. Only certificates that have not expired
are touched. Work goes in batches of :data:`BATCH_SIZE` certificates, one
transaction each, so that a fleet-wide action does not hold the database for
its whole run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fleetca.acme.context import emit_audit
from fleetca.acme.renewal_info import spread_fraction
from fleetca.storage.database import Database

BATCH_SIZE = 1000
# Reasons an operator may give for a subscriber certificate: the RFC 5280 §5.3.1
# codes that the Baseline Requirements allow there. 0 (unspecified) is written
# to CRLs and OCSP without a reason code.
OPERATOR_REASONS: dict[str, int] = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "privilegeWithdrawn": 9,
}
_HEX = re.compile(r"^[0-9a-f]+$")


class SelectionError(ValueError):
    """A selection that is empty or has an invalid value; the message names it."""


def normalize_serial(text: str) -> str:
    """Return a serial in the stored form: lowercase hex without leading zeros.

    Accepts the forms tools print: ``0x`` prefixes, colons between bytes, capitals.
    """
    value = text.strip().lower().removeprefix("0x").replace(":", "")
    if not value or not _HEX.match(value):
        raise SelectionError(f"invalid serial {text!r}; give it in hexadecimal, as `openssl x509 -serial` prints it")
    return value.lstrip("0") or "0"


def reason_code(text: str) -> int:
    """Return the RFC 5280 code for a reason name such as keyCompromise."""
    if text in OPERATOR_REASONS:
        return OPERATOR_REASONS[text]
    raise SelectionError(f"invalid reason {text!r}; use one of {', '.join(OPERATOR_REASONS)}")


@dataclass(frozen=True)
class Selection:
    """The certificates an operator action applies to; unset criteria match everything."""

    ca_name: str | None = None
    profile: str | None = None
    eab_key_id: str | None = None
    account_id: str | None = None
    serials: tuple[str, ...] | None = None

    def is_empty(self) -> bool:
        return all(value is None for value in (self.ca_name, self.profile, self.eab_key_id, self.account_id,
                                               self.serials))

    def describe(self) -> dict[str, Any]:
        """Return the criteria for the audit log; a long serial list is summarised by its length."""
        described: dict[str, Any] = {key: value for key, value in (
            ("ca", self.ca_name), ("profile", self.profile), ("eab_key", self.eab_key_id),
            ("account", self.account_id)) if value is not None}
        if self.serials is not None:
            described["serials"] = list(self.serials) if len(self.serials) <= 20 else f"{len(self.serials)} serials"
        return described


@dataclass
class RevocationResult:
    revoked: list[tuple[str, str]] = field(default_factory=list)  # (ca_name, serial)
    matched: int = 0


def _select(database: Database, selection: Selection, now: datetime, unrevoked: bool) -> list[tuple[str, str, str]]:
    if selection.is_empty():
        raise SelectionError("select certificates by CA, profile, EAB key, account or serial")
    with database.transaction() as repo:
        return repo.select_certificates(
            ca_name=selection.ca_name, profile=selection.profile, eab_key_id=selection.eab_key_id,
            account_id=selection.account_id, serials=list(selection.serials) if selection.serials is not None else None,
            valid_at=now, unrevoked=unrevoked)


def revoke(database: Database, selection: Selection, reason: int, now: datetime, operator: str) -> RevocationResult:
    """Revoke every unexpired, unrevoked certificate in ``selection``, with one audit event each."""
    chosen = _select(database, selection, now, unrevoked=True)
    result = RevocationResult(matched=len(chosen))
    criteria = selection.describe()
    for start in range(0, len(chosen), BATCH_SIZE):
        events = []
        with database.transaction() as repo:
            for certificate_id, serial, ca_name in chosen[start:start + BATCH_SIZE]:
                # A certificate revoked meanwhile through ACME keeps its first reason.
                if not repo.revoke_certificate(certificate_id, now, reason):
                    continue
                details = {"serial": serial, "reason": reason, "requester": f"operator:{operator}",
                           "selection": criteria}
                repo.audit(now, "certificate.revoked", ca_name, details)
                events.append((ca_name, details))
                result.revoked.append((ca_name, serial))
        for ca_name, details in events:
            emit_audit("certificate.revoked", ca_name, details)
    return result


def renew_now(database: Database, selection: Selection, now: datetime, operator: str,
              spread: timedelta = timedelta(0)) -> int:
    """Move the ARI window of every unexpired, unrevoked certificate in ``selection`` to now.

    With ``spread``, each certificate's window instead ends at a point between now
    and now + spread chosen by a hash of its serial, so that a large fleet does not
    renew in one burst. Returns how many certificates were changed.
    """
    chosen = _select(database, selection, now, unrevoked=True)
    for start in range(0, len(chosen), BATCH_SIZE):
        batch = chosen[start:start + BATCH_SIZE]
        with database.transaction() as repo:
            if not spread:
                repo.set_renew_from([certificate_id for certificate_id, _, _ in batch], now)
                continue
            for certificate_id, serial, _ in batch:
                repo.set_renew_from([certificate_id], now + spread * spread_fraction(serial))
    details = {"selection": selection.describe(), "certificates": len(chosen),
               "spread_seconds": int(spread.total_seconds()), "requester": f"operator:{operator}"}
    with database.transaction() as repo:
        repo.audit(now, "certificate.renewal_requested", selection.ca_name, details)
    emit_audit("certificate.renewal_requested", selection.ca_name, details)
    return len(chosen)
