"""A lease in the database that lets one process at a time run a job.

Every process that might run the job tries to take the lease; the one that
gets it runs the job and extends the lease while it works, and the others skip
the run. A crashed holder loses the lease when it expires.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta

from fleetca.storage.database import Database


def holder_id() -> str:
    """A name for this process that is unique across hosts and restarts."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(4)}"


class JobLease:
    """The lease ``name`` as held, or not, by one process."""

    def __init__(self, database: Database, name: str, ttl: timedelta, holder: str | None = None) -> None:
        self.database = database
        self.name = name
        self.ttl = ttl
        self.holder = holder or holder_id()
        self.expires_at: datetime | None = None

    def acquire(self, now: datetime) -> bool:
        """Take or extend the lease; False while another process holds it."""
        # NOTE: expiry compares this host's clock with the clocks of the other
        # holders; hosts whose clocks differ by more than the lease time could both
        # run the job, which the CRL number's compare-and-set still keeps safe.
        with self.database.transaction() as repo:
            taken = repo.acquire_lease(self.name, self.holder, now, now + self.ttl)
        self.expires_at = now + self.ttl if taken else None
        return taken

    def extend_if_due(self, now: datetime) -> bool:
        """Extend the lease once half of it has passed; False when it was lost."""
        if self.expires_at is None:
            return False
        if now < self.expires_at - self.ttl / 2:
            return True
        return self.acquire(now)

    def release(self) -> None:
        with self.database.transaction() as repo:
            repo.release_lease(self.name, self.holder)
        self.expires_at = None
