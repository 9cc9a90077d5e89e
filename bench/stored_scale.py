"""Cost per certificate on an empty database and with many certificates stored, and memory over a run.

Starts two fleetca servers (SQLite, or PostgreSQL with --postgres), stores
--stored certificates (with their orders, authorizations and challenges) in
the second one's database by bulk insert, and then runs full ACME flows one
after another against each, in rounds that alternate the order of the two.
It prints the server's CPU per flow in each round, and the pooled ratio of
the stored server's CPU to the empty one's. The server's resident memory is
sampled after each sixth of a round's flows. Everything runs on loopback,
with pebble-challtestsrv as the DNS server.

    .venv/bin/python bench/stored_scale.py --flows 300 --rounds 4 --stored 1000000
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, insert  # noqa: E402

from fleetca.storage.tables import (  # noqa: E402
    accounts,
    authorizations,
    certificates,
    challenges,
    order_authorizations,
    orders,
)
from tests.acme.test_flow import answer_http01  # noqa: E402
from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv, free_port  # noqa: E402
from tests.support.acme_client import AcmeClient, make_csr, new_key  # noqa: E402
from tests.support.responder import HttpResponder  # noqa: E402
from tests.support.server import FleetcaServer  # noqa: E402

BATCH_ROWS = 20_000
FAKE_DER = secrets.token_bytes(550)  # about the size of a P-256 leaf


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Flows:
    """Sequential device flows with pre-generated keys and CSRs."""

    def __init__(self, server: FleetcaServer, responder: HttpResponder, prefix: str, count: int):
        self.client = AcmeClient(server.directory_url(), server.root_pem)
        self.responder = responder
        self.names = [f"{prefix}{i}.devices.example.test" for i in range(count)]
        self.keys = [new_key() for _ in range(count)]
        self.csrs = [make_csr([name])[0] for name in self.names]

    def run(self, index: int) -> None:
        client, name = self.client, self.names[index]
        client.account_url, client.key = None, self.keys[index]
        assert client.new_account().status == 201
        reply = client.new_order([name])
        order, order_url = reply.json(), reply.headers["Location"]
        answer_http01(client, self.responder, order)
        if client.poll(order_url, ("ready", "invalid"))["status"] != "ready":
            raise RuntimeError(f"order for {name} did not become ready")
        assert client.finalize(order, self.csrs[index]).status == 200
        order = client.poll(order_url, ("valid", "invalid"))
        assert client.post(order["certificate"]).status == 200


def backend_cpu_seconds(database_url: str | None) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the server's database, by process id."""
    if database_url is None:
        return {}
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")]
    return {pid: process_cpu_seconds(pid) for pid in pids if Path(f"/proc/{pid}").exists()}


def measure(server: FleetcaServer, flows: Flows, count: int, samples: int) -> tuple[float, list[float]]:
    """CPU ms per flow over ``count`` flows, and the server's RSS after each of ``samples`` batches.

    On PostgreSQL the CPU includes the backends of the server's connections
    that are still open at the end, as bench/run counts them.
    """
    pid = server._process.pid  # noqa: SLF001 - the benchmark reads the server's /proc entry
    rss = []
    start = process_cpu_seconds(pid)
    backends_before = backend_cpu_seconds(server.database_url)
    batch = max(1, count // samples)
    for index in range(count):
        flows.run(index)
        if (index + 1) % batch == 0:
            rss.append(process_rss_mib(pid))
    backends = sum(cpu - backends_before.get(backend, 0.0)
                   for backend, cpu in backend_cpu_seconds(server.database_url).items())
    return (process_cpu_seconds(pid) - start + backends) / count * 1000, rss


def store_certificates(database_url: str, account_id: str, count: int) -> float:
    """Insert ``count`` valid orders with their authorization, its link to the order, challenge and certificate.

    Return the seconds it took.
    """
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    now = datetime.now(UTC)
    started = time.perf_counter()
    with engine.begin() as conn:
        for first in range(0, count, BATCH_ROWS):
            ids = [secrets.token_urlsafe(12) for _ in range(min(BATCH_ROWS, count - first))]
            conn.execute(insert(authorizations), [
                {"id": f"a{i}", "account_id": account_id, "identifier_type": "dns",
                 "identifier_value": f"s{i}.devices.example.test", "wildcard": False, "status": "valid",
                 "expires": now + timedelta(days=7), "created_at": now} for i in ids])
            conn.execute(insert(challenges), [
                {"id": f"c{i}", "authorization_id": f"a{i}", "type": "http-01", "token": i, "status": "valid",
                 "validated": now} for i in ids])
            conn.execute(insert(orders), [
                {"id": f"o{i}", "account_id": account_id, "status": "valid", "expires": now + timedelta(days=1),
                 "identifiers": [{"type": "dns", "value": f"s{i}.devices.example.test"}], "profile": "default",
                 "certificate_id": f"z{i}", "created_at": now} for i in ids])
            conn.execute(insert(order_authorizations), [
                {"order_id": f"o{i}", "authorization_id": f"a{i}", "position": 0} for i in ids])
            conn.execute(insert(certificates), [
                {"id": f"z{i}", "serial": secrets.token_hex(19), "ca_name": "default", "account_id": account_id,
                 "order_id": f"o{i}", "der": FAKE_DER, "not_before": now, "not_after": now + timedelta(days=7),
                 "profile": "default", "created_at": now, "crl_shard": n % 128}
                for n, i in enumerate(ids)])
    engine.dispose()
    return time.perf_counter() - started


def analyze_after_load(database_url: str) -> bool:
    """Run ANALYZE where PostgreSQL's autovacuum is off; return whether it ran.

    With autovacuum on, PostgreSQL analyzes a table soon after a bulk load.
    Without statistics, the planner estimated that 242,427 of the million
    certificates matched the CRL publisher's search for recent revocations
    (none did), and read the whole table for it, 0.8 s each time.
    """
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        if conn.execute("SHOW autovacuum").fetchone()[0] == "on":
            return False
        conn.execute("ANALYZE")
    return True


def first_account_id(database_url: str) -> str:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        value = conn.execute(accounts.select().limit(1)).first().id
    engine.dispose()
    return value


def checkpoint_after_load(database_url: str) -> None:
    """Write the loaded rows to the database files before anything is measured.

    On PostgreSQL, a backend that needs a buffer the load left dirty writes
    it itself, and that CPU would count for the stored server's flows. On
    SQLite, fleetca's own checkpoint would copy the load's log into the
    database file during the first measured flows.
    """
    if database_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        return
    engine = create_engine(database_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=300, help="timed flows per server and round (default 300)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds, each measuring the empty server and the one with certificates stored, "
                             "in alternating order; an even number balances a steady drift (default 4)")
    parser.add_argument("--stored", type=int, default=1_000_000, help="certificates to store (default 1000000)")
    parser.add_argument("--postgres", action="store_true", help="use a fresh PostgreSQL database for each server")
    args = parser.parse_args()
    if args.rounds < 1 or args.flows < 1:
        parser.error("--rounds and --flows must be at least 1")
    if args.postgres:
        os.environ["FLEETCA_TEST_DATABASE"] = "postgresql"

    work = Path(tempfile.mkdtemp(prefix="fleetca-stored-"))
    with ChallTestSrv(work / "dns") as dns:
        ports = ChallengePorts(http01=free_port(), tlsalpn01=free_port())
        empty = FleetcaServer(work / "empty", dns.dns_address, ports)
        stored = FleetcaServer(work / "stored", dns.dns_address, ports)
        with empty, stored, HttpResponder(ports.http01) as responder:
            database_url = stored.database_url or f"sqlite:///{stored.data_dir / 'fleetca.db'}"
            # The load stores its rows under an account of the server's own.
            Flows(stored, responder, "w", 1).run(0)
            seconds = store_certificates(database_url, first_account_id(database_url), args.stored)
            print(f"stored {args.stored} certificates with orders, authorizations and challenges in {seconds:.0f} s")
            if stored.database_url is not None and analyze_after_load(stored.database_url):
                print("autovacuum is off, so the tables were analyzed after the load, as autovacuum would have done")
            checkpoint_after_load(database_url)

            servers = {"empty": empty, "stored": stored}
            cpu: dict[str, list[float]] = {name: [] for name in servers}
            for name, server in servers.items():
                server.restart()
                warm = Flows(server, responder, f"w{name}", 20)
                for index in range(20):
                    warm.run(index)
            for round_number in range(args.rounds):
                # Alternating the order balances a steady drift of the machine's
                # speed over the run when the number of rounds is even.
                order = ["empty", "stored"] if round_number % 2 == 0 else ["stored", "empty"]
                for name in order:
                    server = servers[name]
                    flows = Flows(server, responder, f"r{round_number}{name[0]}", args.flows)
                    per_flow, rss = measure(server, flows, args.flows, 6)
                    cpu[name].append(per_flow)
                    print(f"round {round_number + 1}, {name}: {per_flow:.2f} ms CPU per flow; "
                          f"RSS MiB {[round(r) for r in rss]}")
            ratios = [full / bare for full, bare in zip(cpu["stored"], cpu["empty"])]
            print(f"empty database: {sum(cpu['empty']) / args.rounds:.2f} ms CPU per flow on average")
            print(f"{args.stored} stored: {sum(cpu['stored']) / args.rounds:.2f} ms CPU per flow on average")
            print(f"ratio stored/empty: {sum(cpu['stored']) / sum(cpu['empty']):.2f} pooled; "
                  f"by round {', '.join(f'{ratio:.2f}' for ratio in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
