"""The services an ACME request handler uses, built once per server process."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleetca.acme.account_cache import AccountCache
from fleetca.acme.nonces import NonceService
from fleetca.ca.registry import IssuingCa
from fleetca.clock import Clock
from fleetca.settings import Settings
from fleetca.storage.database import Database
from fleetca.validation.validator import Validator

audit_log = logging.getLogger("fleetca.audit")


@dataclass
class AcmeContext:
    settings: Settings
    database: Database
    nonces: NonceService
    cas: dict[str, IssuingCa]
    validator: Validator
    clock: Clock
    background_tasks: set[Any] = field(default_factory=set)
    accounts: AccountCache = field(default_factory=AccountCache)

    @functools.cached_property
    def base_url(self) -> str:
        """The server's external base URL; settings do not change while a process serves."""
        return self.settings.server.base_url()

    def now(self) -> datetime:
        return self.clock.now()


def emit_audit(event: str, ca_name: str | None, details: dict[str, Any]) -> None:
    """Mirror an audit event to the log; the database row is the record of truth."""
    audit_log.info(event, extra={"audit": {"event": event, "ca": ca_name, **details}})
