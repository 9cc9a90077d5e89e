"""Publication of CRL shards: which shards are due, signing them, and storing them.

A shard is signed anew when it was never published, when its regular interval
has passed, or when a certificate revoked since its thisUpdate is missing from
it. Runs take the ``crl-publisher`` lease, so with several fleetca processes on
one database one of them publishes and the others skip the run. Each shard is
stored with a compare-and-set on its previous CRL number, so even two runs that
overlap (a lease that expired mid-run) never store two different CRLs with the
same number.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from fleetca.ca.registry import IssuingCa
from fleetca.clock import Clock
from fleetca.revocation.lease import JobLease
from fleetca.revocation.shards import crl_url
from fleetca.settings import Settings
from fleetca.signing.crl import CrlSigner, RevokedEntry
from fleetca.storage.database import Database
from fleetca.storage.repository import Repository

log = logging.getLogger("fleetca.crl")

LEASE_NAME = "crl-publisher"
LEASE_TTL = timedelta(minutes=5)
# A revocation's time is taken just before its transaction commits, so a shard
# signed at that moment may have missed it. Revocations this close before a
# shard's thisUpdate are looked up in the shard itself.
COMMIT_LAG = timedelta(minutes=5)


@dataclass(frozen=True)
class PublishedShard:
    ca_name: str
    shard: int
    number: int
    entries: int
    this_update: datetime


def crl_number(previous: int | None, this_update: datetime) -> int:
    """The next CRL number: above the previous one, and at least the microseconds since 1970.

    The clock part keeps numbers increasing even after a database is restored from
    an older backup; the previous-number part keeps them increasing when the clock
    steps back.
    """
    from_clock = int(this_update.timestamp() * 1_000_000)
    return max(from_clock, (previous or 0) + 1)


def published_url_conflict(database: Database, cas: dict[str, IssuingCa], http_base: str | None) -> str | None:
    """Return how ``http_base`` differs from the URL the CRL shards are published at, or None.

    Certificates name their shard's URL, so a process whose URL differs would
    issue certificates whose CRL it never publishes. A CA without certificates
    may still move its URL, so only CAs with certificates are checked.
    """
    if http_base is None:
        return None
    with database.read() as repo:
        for name in cas:
            if repo.highest_crl_shard(name) is None:
                continue
            mismatch = _crl_url_mismatch(repo, name, http_base)
            if mismatch is not None:
                shard, published, expected = mismatch
                return f"CRL shard {name}/{shard} is published at {published}, but this process would name {expected}"
    return None


def _crl_url_mismatch(repo: Repository, ca_name: str, http_base: str) -> tuple[int, str, str] | None:
    """Return the CA's first published shard, its URL and the URL ``http_base`` gives it, when the two differ.

    The first shard stands for all of them, since the publisher keeps each
    shard at the URL it was first published at.
    """
    found = repo.first_crl_shard(ca_name)
    if found is None:
        return None
    shard, der = found
    published = distribution_point_url(der)
    expected = crl_url(http_base, ca_name, shard)
    if published is None or published == expected:
        return None
    return shard, published, expected


def distribution_point_url(der: bytes) -> str | None:
    """Return the URL in a CRL's issuingDistributionPoint, or None without one."""
    try:
        idp = x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    except (ValueError, x509.ExtensionNotFound):
        return None
    names = idp.value.full_name or []
    return str(names[0].value) if names else None


class CrlPublisher:
    """Signs and stores the CRL shards of every issuing CA that one process serves."""

    def __init__(self, settings: Settings, database: Database, cas: dict[str, IssuingCa], clock: Clock,
                 lease: JobLease | None = None) -> None:
        self.settings = settings
        self.database = database
        self.cas = cas
        self.clock = clock
        self.lease = lease or JobLease(database, LEASE_NAME, LEASE_TTL)
        self._signers: dict[str, CrlSigner] = {}
        # (ca, shard) -> (CRL number, serials listed), so that checking an entry needs no reparsing.
        self._listed: dict[tuple[str, int], tuple[int, frozenset[int]]] = {}
        self._warned_no_url = False
        # Shards of the last run left alone because they are published at another URL, with that URL.
        self.skipped_urls: dict[tuple[str, int], str] = {}

    def publish(self, *, force: bool = False) -> list[PublishedShard] | None:
        """Sign every shard that is due (every shard with ``force``).

        Returns the shards published, or None when another process holds the lease
        or no plain-HTTP URL is configured for the shards to name.
        """
        http_base = self.settings.server.http_base_url()
        if http_base is None:
            if not self._warned_no_url:
                log.warning("no plain-HTTP URL is configured (server.http_listen or server.http_public_url); "
                            "CRL shards are not published")
                self._warned_no_url = True
            return None
        if not self.lease.acquire(self.clock.now()):
            return None
        self.skipped_urls = {}
        published: list[PublishedShard] = []
        try:
            for ca in self.cas.values():
                for shard in self.due_shards(ca, force=force, http_base=http_base):
                    if not self.lease.extend_if_due(self.clock.now()):
                        log.warning("lost the %s lease; leaving the remaining shards to its new holder", LEASE_NAME)
                        return published
                    result = self._publish_shard(ca, shard, http_base)
                    if result is not None:
                        published.append(result)
        finally:
            if self.lease.expires_at is not None:
                self.lease.release()
        return published

    def due_shards(self, ca: IssuingCa, *, force: bool = False, http_base: str | None = None) -> list[int]:
        """Return the shards of ``ca`` that are missing, due by schedule, or missing a revocation.

        With ``http_base``, every shard is due when the CA has no certificates
        and its shards were published under another URL, so the URL moves.
        """
        now = self.clock.now()
        with self.database.transaction() as repo:
            states = repo.crl_shard_states(ca.name)
            highest = repo.highest_crl_shard(ca.name)
            moved = (highest is None and http_base is not None
                     and _crl_url_mismatch(repo, ca.name, http_base) is not None)
        count = max([self.settings.crl.shards, (highest + 1) if highest is not None else 0,
                     *(shard + 1 for shard in states)])
        if force or moved:
            return list(range(count))

        regenerate = self.settings.crl.regenerate
        due = {shard for shard in range(count)
               if shard not in states or states[shard][1] + regenerate <= now or states[shard][2] - regenerate <= now}
        if not states:
            return sorted(due)

        oldest = min(this_update for _, this_update, _ in states.values())
        with self.database.transaction() as repo:
            recent = repo.revocations_since(oldest - COMMIT_LAG)
        for ca_name, shard, serial, revoked_at in recent:
            if ca_name != ca.name or shard in due:
                continue
            number, this_update, _ = states[shard] if shard in states else (None, None, None)
            if number is None or this_update is None:
                due.add(shard)
            elif revoked_at >= this_update - COMMIT_LAG and not self._is_listed(ca.name, shard, number, serial):
                due.add(shard)
        return sorted(due)

    def _is_listed(self, ca_name: str, shard: int, number: int, serial: str) -> bool:
        cached = self._listed.get((ca_name, shard))
        if cached is None or cached[0] != number:
            with self.database.transaction() as repo:
                row = repo.get_crl_shard(ca_name, shard)
            if row is None:
                return False
            crl = x509.load_der_x509_crl(row["der"])
            cached = (row["number"], frozenset(entry.serial_number for entry in crl))
            self._listed[(ca_name, shard)] = cached
        return int(serial, 16) in cached[1]

    def _signer(self, ca: IssuingCa) -> CrlSigner:
        signer = self._signers.get(ca.name)
        if signer is None:
            signer = self._signers[ca.name] = CrlSigner(ca.certificate, ca.signer.key_path)
        return signer

    def _publish_shard(self, ca: IssuingCa, shard: int, http_base: str) -> PublishedShard | None:
        # thisUpdate is taken before the entries are read, so a revocation that
        # commits after the read has a later time and makes the shard due again.
        this_update = self.clock.now().replace(microsecond=0)
        next_update = this_update + self.settings.crl.validity
        # RFC 5280 §3.3: an entry stays until one regularly scheduled CRL issued
        # after the certificate expired has listed it. Keeping it for one CRL
        # validity period after expiry covers that, since shards are signed anew
        # more often than that.
        keep_after = this_update - self.settings.crl.validity
        with self.database.transaction() as repo:
            previous = repo.get_crl_shard(ca.name, shard)
            rows = repo.revoked_in_shard(ca.name, shard, keep_after)
        url = crl_url(http_base, ca.name, shard)

        # Certificates already name the URL of the published shard, so a process
        # configured with another URL must not replace it. Until the CA has a
        # certificate, no one names it, so the URL may still move.
        published_url = distribution_point_url(previous["der"]) if previous is not None else None
        if published_url is not None and published_url != url:
            with self.database.read() as repo:
                certificates_exist = repo.highest_crl_shard(ca.name) is not None
            if certificates_exist:
                log.error("not publishing CRL shard %s/%d: it is published at %s, but this process would name %s; "
                          "give every fleetca process the same server.http_public_url",
                          ca.name, shard, published_url, url)
                self.skipped_urls[(ca.name, shard)] = published_url
                return None
            log.warning("moving CRL shard %s/%d from %s to %s; no certificate of the CA names it yet",
                        ca.name, shard, published_url, url)

        previous_number = previous["number"] if previous else None
        number = crl_number(previous_number, this_update)
        entries = [RevokedEntry(int(serial, 16), revoked_at, reason) for serial, revoked_at, reason in rows]
        der = self._signer(ca).sign_shard(url, number, this_update, next_update, entries)
        with self.database.transaction() as repo:
            stored = repo.store_crl_shard(ca.name, shard, previous_number, number, this_update, next_update, der)
        if not stored:
            log.warning("CRL shard %s/%d was published by another process meanwhile; discarded number %d",
                        ca.name, shard, number)
            return None
        log.info("published CRL shard", extra={"event": {
            "ca": ca.name, "shard": shard, "number": number, "entries": len(entries),
            "next_update": next_update.isoformat()}})
        return PublishedShard(ca.name, shard, number, len(entries), this_update)


async def run_crl_schedule(publisher: CrlPublisher, interval_seconds: float) -> None:
    """Publish due shards every ``interval_seconds`` until cancelled; errors are logged and retried."""
    while True:
        try:
            await asyncio.to_thread(publisher.publish)
        except Exception:
            log.exception("publishing CRL shards failed; retrying in %s s", interval_seconds)
        await asyncio.sleep(interval_seconds)
