"""CRL shards as the publisher signs and stores them, against a real SQLite database."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fleetca.revocation.lease import JobLease
from fleetca.revocation.publisher import COMMIT_LAG, LEASE_NAME, LEASE_TTL, CrlPublisher, crl_number
from fleetca.settings import load_settings
from fleetca.storage.database import Database
from tests.revocation.conftest import LocalCa
from tests.revocation.pkilint_run import crl_findings


def publisher(local: LocalCa, holder: str | None = None, lease_name: str = LEASE_NAME) -> CrlPublisher:
    lease = JobLease(local.database, lease_name, LEASE_TTL, holder)
    return CrlPublisher(local.settings, local.database, {local.ca.name: local.ca}, local.clock, lease)


def stored(local: LocalCa, shard: int) -> x509.CertificateRevocationList:
    with local.database.transaction() as repo:
        row = repo.get_crl_shard(local.ca.name, shard)
    assert row is not None, f"shard {shard} was not published"
    return x509.load_der_x509_crl(row["der"])


def listed_serials(crl: x509.CertificateRevocationList) -> set[int]:
    return {entry.serial_number for entry in crl}


def test_first_run_publishes_every_shard(local_ca: LocalCa, tmp_path: Path) -> None:
    published = publisher(local_ca).publish()

    assert published is not None
    assert sorted(p.shard for p in published) == list(range(8))
    ski = local_ca.ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    for shard in range(8):
        crl = stored(local_ca, shard)
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical
        assert idp.value.full_name == [
            x509.UniformResourceIdentifier(f"http://crl.example.test/crl/default/{shard}.crl")]
        assert idp.value.only_contains_user_certs
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        assert crl.next_update_utc - crl.last_update_utc <= timedelta(days=10)
        assert crl.is_signature_valid(local_ca.ca.certificate.public_key())
        assert crl_findings(crl.public_bytes(Encoding.DER), tmp_path) == []


def test_revoked_certificate_listed_in_own_shard_only(local_ca: LocalCa, tmp_path: Path) -> None:
    compromised = local_ca.add_certificate()
    unspecified = local_ca.add_certificate()
    untouched = local_ca.add_certificate()
    local_ca.revoke(compromised, reason=1)
    local_ca.revoke(unspecified, reason=None)

    publisher(local_ca).publish()

    for shard in range(8):
        serials = listed_serials(stored(local_ca, shard))
        assert (int(compromised.serial, 16) in serials) == (shard == compromised.crl_shard)
        assert (int(unspecified.serial, 16) in serials) == (shard == unspecified.crl_shard)
        assert int(untouched.serial, 16) not in serials
    entry = stored(local_ca, compromised.crl_shard).get_revoked_certificate_by_serial_number(
        int(compromised.serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    # RFC 5280 and the Baseline Requirements: no reasonCode for an unspecified reason.
    entry = stored(local_ca, unspecified.crl_shard).get_revoked_certificate_by_serial_number(
        int(unspecified.serial, 16))
    assert entry is not None
    assert len(entry.extensions) == 0
    der = stored(local_ca, compromised.crl_shard).public_bytes(Encoding.DER)
    assert crl_findings(der, tmp_path) == []


def test_only_shard_with_new_revocation_is_republished(local_ca: LocalCa) -> None:
    certificate = local_ca.add_certificate()
    publisher(local_ca).publish()
    first_number = stored(local_ca, certificate.crl_shard).extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number

    local_ca.clock.advance(timedelta(minutes=1))
    assert publisher(local_ca).publish() == []
    local_ca.revoke(certificate, reason=4)
    local_ca.clock.advance(timedelta(seconds=30))
    published = publisher(local_ca).publish()

    assert published is not None
    assert [p.shard for p in published] == [certificate.crl_shard]
    crl = stored(local_ca, certificate.crl_shard)
    assert int(certificate.serial, 16) in listed_serials(crl)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > first_number


def test_revocation_committed_late_still_reaches_shard(local_ca: LocalCa) -> None:
    certificate = local_ca.add_certificate()
    publisher(local_ca).publish()

    # The revocation's time lies before the shard's thisUpdate, as when its
    # transaction commits just after the shard was read.
    local_ca.revoke(certificate, reason=1, at=local_ca.clock.now() - COMMIT_LAG / 2)
    local_ca.clock.advance(timedelta(seconds=5))
    published = publisher(local_ca).publish()

    assert published is not None
    assert [p.shard for p in published] == [certificate.crl_shard]
    assert int(certificate.serial, 16) in listed_serials(stored(local_ca, certificate.crl_shard))


def test_schedule_republishes_every_shard_when_due(local_ca: LocalCa) -> None:
    publisher(local_ca).publish()
    local_ca.clock.advance(local_ca.settings.crl.regenerate - timedelta(minutes=1))
    assert publisher(local_ca).publish() == []

    local_ca.clock.advance(timedelta(minutes=2))
    published = publisher(local_ca).publish()

    assert published is not None
    assert len(published) == 8
    for shard in range(8):
        crl = stored(local_ca, shard)
        assert crl.next_update_utc > local_ca.clock.now() + local_ca.settings.crl.regenerate


def test_expired_entries_leave_after_one_validity_period(local_ca: LocalCa) -> None:
    certificate = local_ca.add_certificate(lifetime=timedelta(days=1))
    local_ca.revoke(certificate, reason=1)

    local_ca.clock.advance(timedelta(days=2))
    publisher(local_ca).publish(force=True)
    assert int(certificate.serial, 16) in listed_serials(stored(local_ca, certificate.crl_shard))

    local_ca.clock.advance(local_ca.settings.crl.validity)
    publisher(local_ca).publish(force=True)
    assert int(certificate.serial, 16) not in listed_serials(stored(local_ca, certificate.crl_shard))


def test_crl_number_increases_across_restarts(local_ca: LocalCa) -> None:
    numbers = []
    for _ in range(3):
        # A new publisher is what a restarted process has: no memory of earlier runs.
        publisher(local_ca).publish(force=True)
        numbers.append(stored(local_ca, 0).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    assert numbers[0] < numbers[1] < numbers[2]

    # Even with the clock stepped back, the number keeps increasing.
    local_ca.clock.advance(timedelta(hours=-3))
    publisher(local_ca).publish(force=True)
    assert stored(local_ca, 0).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > numbers[2]


def test_crl_number_cases() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    from_clock = int(at.timestamp() * 1_000_000)
    cases = {
        "first": (None, from_clock),
        "previous-older": (5, from_clock),
        "previous-newer": (from_clock + 10, from_clock + 11),
    }
    for name, (previous, expected) in cases.items():
        assert crl_number(previous, at) == expected, name


def test_lease_keeps_second_publisher_out(local_ca: LocalCa) -> None:
    holder = JobLease(local_ca.database, LEASE_NAME, LEASE_TTL, "process-a")
    assert holder.acquire(local_ca.clock.now())

    assert publisher(local_ca, "process-b").publish() is None

    holder.release()
    assert publisher(local_ca, "process-b").publish() is not None


def test_lease_taken_over_after_expiry(local_ca: LocalCa) -> None:
    crashed = JobLease(local_ca.database, LEASE_NAME, LEASE_TTL, "crashed")
    assert crashed.acquire(local_ca.clock.now())

    local_ca.clock.advance(LEASE_TTL + timedelta(seconds=1))

    assert publisher(local_ca, "survivor").publish() is not None


def _publish_repeatedly(data_dir: str, lease_name: str, runs: int, queue: multiprocessing.Queue) -> None:
    from fleetca.ca.registry import load_issuing_cas
    from fleetca.clock import SystemClock

    settings = load_settings(Path(data_dir), crl={"shards": 2}, server={"http_public_url": "http://crl.example.test"})
    database = Database(settings.resolved_database_url())
    cas = load_issuing_cas(database, Path(data_dir))
    lease = JobLease(database, lease_name, LEASE_TTL)
    results = []
    for _ in range(runs):
        for shard in CrlPublisher(settings, database, cas, SystemClock(), lease).publish(force=True) or []:
            with database.transaction() as repo:
                row = repo.get_crl_shard(shard.ca_name, shard.shard)
            # Read back under the number this process stored; another may have replaced it since.
            if row is not None and row["number"] == shard.number:
                results.append((shard.shard, shard.number, row["der"]))
    database.dispose()
    queue.put(results)


@pytest.mark.parametrize("shared_lease", [True, False], ids=["one-lease", "lease-lost"])
def test_two_processes_never_store_same_number_twice(local_ca: LocalCa, shared_lease: bool) -> None:
    # "lease-lost" gives each process its own lease, as when a lease expires mid-run,
    # so that only the compare-and-set on the CRL number keeps them apart.
    data_dir = str(local_ca.settings.data_dir)
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = context.Queue()
    workers = [context.Process(target=_publish_repeatedly,
                               args=(data_dir, LEASE_NAME if shared_lease else f"lease-{n}", 15, queue))
               for n in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)

    seen: dict[tuple[int, int], bytes] = {}
    for shard, number, der in (entry for result in results for entry in result):
        assert seen.setdefault((shard, number), der) == der, f"two CRLs with number {number} for shard {shard}"
    assert len(seen) >= 2
    for result in results:
        numbers = [number for shard, number, _ in result if shard == 0]
        assert numbers == sorted(numbers)
        assert len(set(numbers)) == len(numbers)
