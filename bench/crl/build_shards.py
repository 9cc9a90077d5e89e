"""Benchmark: sign every CRL shard of one issuing CA with a million certificates on record.

    .venv/bin/python bench/crl/build_shards.py --certificates 1000000 --revoked 100000 --shards 128

A child process fills a fresh data directory: one issuing CA, one account, and
the certificate rows. Their DER column holds a 16-byte placeholder, because CRL
publication never reads it. The parent then publishes every shard once (the
scheduled full run), revokes one more certificate and publishes again (the run
that follows a revocation), and prints wall time, CPU time and the process's
peak resident memory after each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

INSERT_BATCH = 50_000
REASONS = (None, 0, 1, 3, 4, 5, 9)


def populate(data_dir: Path, database_url: str | None, certificates: int, revoked: int, shards: int) -> None:
    """Create the data directory and ``certificates`` rows, ``revoked`` of them revoked."""
    from sqlalchemy import insert

    from fleetca.ca.bootstrap import initialize
    from fleetca.ca.constraints import NameConstraints
    from fleetca.domain import Account
    from fleetca.revocation.shards import shard_for_serial
    from fleetca.settings import load_settings
    from fleetca.storage.database import Database
    from fleetca.storage.tables import certificates as certificates_table

    now = datetime.now(UTC)
    initialize(data_dir, "default", NameConstraints.build(["devices.example.test"]), now,
               database_url=database_url)
    settings = load_settings(data_dir)
    database = Database(settings.resolved_database_url())
    with database.transaction() as repo:
        repo.add_account(Account(id="bench", ca_name="default", key_thumbprint="bench", jwk={}, status="valid",
                                 contact=[], terms_agreed=True, eab_key_id=None, created_at=now))

    rng = random.Random(1)
    revoked_positions = set(rng.sample(range(certificates), revoked))
    started = time.perf_counter()
    for start in range(0, certificates, INSERT_BATCH):
        rows = []
        for position in range(start, min(start + INSERT_BATCH, certificates)):
            serial_number = rng.getrandbits(127) | 1 << 120
            issued = now - timedelta(seconds=rng.randrange(6 * 86400))
            is_revoked = position in revoked_positions
            rows.append({
                "id": f"c{position:010d}", "serial": format(serial_number, "x"), "ca_name": "default",
                "account_id": "bench", "order_id": f"o{position:010d}", "der": secrets.token_bytes(16),
                "not_before": issued, "not_after": issued + timedelta(days=7), "profile": "default",
                "revoked_at": issued + timedelta(hours=1) if is_revoked else None,
                "revocation_reason": rng.choice(REASONS) if is_revoked else None, "created_at": issued,
                "crl_shard": shard_for_serial(serial_number, shards),
            })
        with database.engine.begin() as conn:
            conn.execute(insert(certificates_table), rows)
    print(json.dumps({"step": "populate", "certificates": certificates, "revoked": revoked,
                      "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    database.dispose()


def measure(label: str, action):  # type: ignore[no-untyped-def]
    """Run ``action`` and return its result with wall time, CPU time and the process's peak RSS."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    figures = {"step": label, "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
               "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return result, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--revoked", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=128)
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL of an empty database; "
                        "SQLite in the data directory when omitted")
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory; filled when it does not "
                        "exist yet, reused as it is otherwise, and a new temporary one when omitted")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="fleetca-crl-bench-")) / "data"

    # The rows are made in a child process, so the parent's peak memory is the publisher's alone.
    if args.data_dir is None or not args.data_dir.exists():
        child = multiprocessing.get_context("spawn").Process(
            target=populate, args=(data_dir, args.database_url, args.certificates, args.revoked, args.shards))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"populating {data_dir} failed with exit code {child.exitcode}")

    from sqlalchemy import select

    from fleetca.ca.registry import load_issuing_cas
    from fleetca.clock import SystemClock
    from fleetca.revocation.publisher import CrlPublisher
    from fleetca.settings import load_settings
    from fleetca.storage.database import Database
    from fleetca.storage.tables import certificates

    settings = load_settings(data_dir, database_url=args.database_url, crl={"shards": args.shards},
                             server={"http_public_url": "http://pki.bench.example"})
    database = Database(settings.resolved_database_url())
    cas = load_issuing_cas(database, data_dir)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    publisher = CrlPublisher(settings, database, cas, SystemClock())

    published, figures = measure("publish all shards", lambda: publisher.publish(force=True))
    assert published is not None
    with database.transaction() as repo:
        sizes = [len(repo.get_crl_shard("default", shard.shard)["der"]) for shard in published]
    figures.update(shards=len(published), entries=sum(s.entries for s in published),
                   max_entries=max(s.entries for s in published), max_shard_kib=round(max(sizes) / 1024, 1),
                   total_kib=round(sum(sizes) / 1024, 1), rss_before_mib=round(baseline_rss, 1))
    print(json.dumps(figures), flush=True)

    with database.engine.connect() as conn:
        certificate_id = conn.execute(
            select(certificates.c.id).where(certificates.c.revoked_at.is_(None)).limit(1)).scalar_one()
    with database.transaction() as repo:
        repo.revoke_certificate(certificate_id, datetime.now(UTC), 1)
    published, figures = measure("publish after one revocation", publisher.publish)
    assert published is not None
    figures.update(shards=len(published))
    print(json.dumps(figures), flush=True)
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "database": settings.resolved_database_url().split(":")[0],
                                  "data_dir": str(data_dir)}}), flush=True)
    database.dispose()


if __name__ == "__main__":
    main()
