"""The revocation services of one fleetca process: CRL publisher, OCSP responder, schedule."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fleetca.ca.registry import IssuingCa
from fleetca.clock import Clock
from fleetca.revocation.publisher import CrlPublisher, run_crl_schedule
from fleetca.revocation.responder import OcspResponder
from fleetca.settings import Settings
from fleetca.storage.database import Database


@dataclass
class RevocationService:
    settings: Settings
    database: Database
    cas: dict[str, IssuingCa]
    clock: Clock
    publisher: CrlPublisher = field(init=False)
    responder: OcspResponder = field(init=False)
    _schedule: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.publisher = CrlPublisher(self.settings, self.database, self.cas, self.clock)
        self.responder = OcspResponder(self.settings, self.database, self.cas, self.clock)

    def start_schedule(self) -> None:
        """Start publishing due CRL shards in the background of the running event loop."""
        if self._schedule is None:
            self._schedule = asyncio.get_running_loop().create_task(
                run_crl_schedule(self.publisher, self.settings.crl.check_seconds))

    async def stop_schedule(self) -> None:
        task, self._schedule = self._schedule, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
