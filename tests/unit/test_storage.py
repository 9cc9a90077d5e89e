"""Storage on the driver connection: values match SQLAlchemy's column types, and commits and rollbacks hold."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Json
import pytest
from sqlalchemy import insert, select

from fleetca.domain import Account, Authorization, Challenge, Identifier, IssuedCertificate, Order
from fleetca.settings import load_settings
from fleetca.storage.database import Database, migrate, sqlite_url
from fleetca.storage import repository as repository_module
from fleetca.storage.repository import Repository
from fleetca.storage import sql as sql_module
from fleetca.storage.sql import (ConnectionPool, PostgresLiterals, PostgresSession, Statement, WalSyncer, connector_for,
                                 insert_into)
from fleetca.storage.tables import accounts, certificates, challenges, issuing_cas, orders, used_nonces
from tests.support.databases import drop_postgres_database, new_database_url

NOW = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    url = new_database_url() or sqlite_url(tmp_path / "storage.db")
    migrate(url)
    database = Database(url)
    with database.transaction() as repo:
        repo.add_issuing_ca(name="default", status="active", certificate_pem="PEM", key_ref="file:ca.key",
                            config={"permitted": ["devices.example"]}, created_at=NOW)
    yield database
    database.dispose()
    if url.startswith("postgresql"):
        drop_postgres_database(url)


def make_account(account_id: str = "acct1", thumbprint: str = "thumb1") -> Account:
    return Account(id=account_id, ca_name="default", key_thumbprint=thumbprint,
                   jwk={"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}, status="valid",
                   contact=["mailto:ops@example.test"], terms_agreed=True, eab_key_id=None, created_at=NOW)


def make_order(order_id: str = "order1", authz_ids: list[str] | None = None) -> Order:
    return Order(id=order_id, account_id="acct1", status="pending", expires=NOW + timedelta(hours=1),
                 identifiers=[Identifier("dns", "d1.devices.example")], authorization_ids=authz_ids or [],
                 not_before=None, not_after=None, profile="default", error=None, certificate_id=None,
                 created_at=NOW)


def test_rows_read_back_as_written(database: Database) -> None:
    authz = Authorization(id="authz1", account_id="acct1", identifier=Identifier("dns", "d1.devices.example"),
                          wildcard=False, status="pending", expires=NOW + timedelta(days=1), created_at=NOW,
                          challenges=[Challenge(id="ch1", authorization_id="authz1", type="http-01", token="t1",
                                                status="pending"),
                                      Challenge(id="ch2", authorization_id="authz1", type="dns-01", token="t2",
                                                status="pending")])
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_authorization(authz)
        repo.add_order(make_order(authz_ids=["authz1"]))

    with database.read() as repo:
        account = repo.get_account("acct1")
        order = repo.get_order("order1")
        stored_authz = repo.get_authorization("authz1")

    assert account == make_account()
    assert order == make_order(authz_ids=["authz1"])
    assert stored_authz is not None
    assert [c.type for c in stored_authz.challenges] == ["dns-01", "http-01"]
    assert stored_authz.expires == authz.expires
    assert stored_authz.expires.tzinfo is not None



def make_authorization(authz_id: str, status: str = "pending") -> Authorization:
    return Authorization(id=authz_id, account_id="acct1", identifier=Identifier("dns", f"{authz_id}.devices.example"),
                         wildcard=False, status=status, expires=NOW + timedelta(days=1), created_at=NOW,
                         challenges=[Challenge(id=f"{authz_id}-http", authorization_id=authz_id, type="http-01",
                                               token=f"{authz_id}-t1", status="pending"),
                                     Challenge(id=f"{authz_id}-dns", authorization_id=authz_id, type="dns-01",
                                               token=f"{authz_id}-t2", status="pending")])


def test_authorization_found_by_challenge(database: Database) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_authorization(make_authorization("authz1"))
        repo.add_authorization(make_authorization("authz2"))

    with database.read() as repo:
        found = repo.get_authorization_of_challenge("authz2-http")
        direct = repo.get_authorization("authz2")
        missing = repo.get_authorization_of_challenge("no-such-challenge")

    assert found is not None
    assert found == direct
    assert {c.id for c in found.challenges} == {"authz2-http", "authz2-dns"}
    assert missing is None


def test_open_orders_of_authorization(database: Database) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account())
        for authz_id in ("shared", "other", "lone"):
            repo.add_authorization(make_authorization(authz_id))
        # Two open orders share an authorization; a third is already valid.
        repo.add_order(make_order("order-b", authz_ids=["other", "shared"]))
        repo.add_order(make_order("order-a", authz_ids=["shared"]))
        repo.add_order(make_order("order-c", authz_ids=["shared", "lone"]))
        repo.transition_order("order-c", "pending", "valid")

    with database.read() as repo:
        found = repo.open_orders_of_authorization("shared")
        expected = [repo.get_order("order-a"), repo.get_order("order-b")]
        none_open = repo.open_orders_of_authorization("lone")

    assert found == expected
    assert found[1].authorization_ids == ["other", "shared"]
    assert none_open == []

def test_sqlalchemy_reads_driver_rows(database: Database) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_order(make_order())

    with database.engine.connect() as conn:
        account_row = conn.execute(select(accounts).where(accounts.c.id == "acct1")).one()
        order_row = conn.execute(select(orders).where(orders.c.id == "order1")).one()

    assert account_row.contact == ["mailto:ops@example.test"]
    assert account_row.terms_agreed is True
    assert account_row.created_at.replace(tzinfo=UTC) == NOW
    assert order_row.identifiers == [{"type": "dns", "value": "d1.devices.example"}]
    assert order_row.expires.replace(tzinfo=UTC) == NOW + timedelta(hours=1)


def test_driver_reads_sqlalchemy_rows(database: Database) -> None:
    with database.engine.begin() as conn:
        conn.execute(insert(accounts).values(
            id="acct2", ca_name="default", key_thumbprint="thumb2", jwk={"kty": "OKP"}, status="valid",
            contact=[], terms_agreed=False, eab_key_id=None, created_at=NOW))
        conn.execute(insert(orders).values(
            id="order2", account_id="acct2", status="ready", expires=NOW, identifiers=[], created_at=NOW,
            error={"type": "urn:ietf:params:acme:error:malformed"}))

    with database.read() as repo:
        account = repo.get_account("acct2")
        order = repo.get_order("order2")
        ca = repo.get_issuing_ca("default")

    assert account is not None
    assert account.jwk == {"kty": "OKP"}
    assert account.terms_agreed is False
    assert account.created_at == NOW
    assert order is not None
    assert order.error == {"type": "urn:ietf:params:acme:error:malformed"}
    assert ca is not None
    assert ca["chain_pem"] == ""  # the column's Python-side default was applied on insert
    assert ca["config"] == {"permitted": ["devices.example"]}


def test_failed_transaction_rolls_back(database: Database) -> None:
    with pytest.raises(RuntimeError):
        with database.transaction() as repo:
            repo.add_account(make_account())
            raise RuntimeError("handler failed")

    with database.read() as repo:
        assert repo.get_account("acct1") is None


def test_integrity_error_rolls_back_whole_transaction(database: Database) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account())

    with pytest.raises(Exception) as caught:
        with database.transaction() as repo:
            repo.add_order(make_order("order3"))
            repo.add_account(make_account(thumbprint="thumb9"))  # same id, another key
    assert "unique" in str(caught.value).lower() or "duplicate" in str(caught.value).lower()

    with database.read() as repo:
        assert repo.get_order("order3") is None
    with database.transaction() as repo:  # the pool's connection is usable again
        repo.add_order(make_order("order4"))


def test_account_for_known_key_not_added(database: Database) -> None:
    with database.transaction() as repo:
        first = repo.add_account(make_account("acct1", "thumb1"))
        second = repo.add_account(make_account("acct2", "thumb1"))

    assert first is True
    assert second is False
    with database.read() as repo:
        assert repo.get_account("acct2") is None


def test_conditional_transition_wins_once(database: Database) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_order(make_order())

    with database.transaction(durable=False) as repo:
        first = repo.transition_order("order1", ["pending", "ready"], "processing")
    with database.transaction(durable=False) as repo:
        second = repo.transition_order("order1", ["pending", "ready"], "processing")

    assert first is True
    assert second is False


def test_durable_transaction_commits(database: Database) -> None:
    certificate = IssuedCertificate(id="cert1", serial="1f", ca_name="default", account_id="acct1",
                                    order_id="order1", der=b"\x30\x03\x02\x01\x01", not_before=NOW,
                                    not_after=NOW + timedelta(days=7), profile="default", revoked_at=None,
                                    revocation_reason=None, crl_shard=3)
    with database.transaction() as repo:
        repo.add_account(make_account())

    async def store() -> None:
        async with database.transaction_async(durable=True) as repo:
            repo.add_certificate(certificate, NOW)

    asyncio.run(store())

    with database.read() as repo:
        assert repo.get_certificate("cert1") == certificate
    with database.engine.connect() as conn:
        assert conn.execute(select(certificates.c.der).where(certificates.c.id == "cert1")).scalar_one() \
            == certificate.der


def test_durable_transaction_rolls_back(database: Database) -> None:
    async def fail() -> None:
        async with database.transaction_async(durable=True) as repo:
            repo.add_account(make_account())
            raise RuntimeError("signing failed")

    with pytest.raises(RuntimeError):
        asyncio.run(fail())

    with database.read() as repo:
        assert repo.get_account("acct1") is None


def test_durable_commit_raises_deferred_conflict(database: Database) -> None:
    with database.transaction() as repo:
        repo.defer_use_nonce("nonce29", NOW, NonceReused)

    async def replay() -> None:
        async with database.transaction_async(durable=True) as repo:
            repo.add_account(make_account("acct29", "thumb29"))
            repo.defer_use_nonce("nonce29", NOW, NonceReused)

    with pytest.raises(NonceReused):
        asyncio.run(replay())

    with database.read() as repo:
        assert repo.get_account("acct29") is None


def test_cancelled_durable_commit_closes_connection(database: Database) -> None:
    if database.dialect.name != "postgresql":
        pytest.skip("only a PostgreSQL COMMIT is awaited on the event loop")
    used: list[object] = []

    async def slow_commit() -> None:
        async with database.transaction_async(durable=True) as repo:
            used.append(repo.session.connection)
            repo.session.defer(Statement("SELECT pg_sleep(1)"))

    async def cancel_it() -> None:
        await asyncio.wait_for(slow_commit(), timeout=0.2)

    with pytest.raises(TimeoutError):
        asyncio.run(cancel_it())
    with database.transaction() as repo:
        repo.add_account(make_account("acct30", "thumb30"))

    assert getattr(used[0], "closed") is True
    with database.read() as repo:
        assert repo.get_account("acct30") is not None


def test_durable_commit_drops_connection_without_statement(database: Database) -> None:
    if database.dialect.name != "postgresql":
        pytest.skip("only a PostgreSQL COMMIT is awaited on the event loop")
    used: list[object] = []

    async def audit(n: int) -> None:
        async with database.transaction_async(durable=True) as repo:
            used.append(repo.session.connection)
            repo.audit(NOW, f"test.durable{n}", "default", {"n": n})

    asyncio.run(audit(0))
    # The connection loses the prepared audit INSERT, as behind a pooler
    # that hands this client another server session.
    getattr(used[0], "execute")("DEALLOCATE ALL")
    with pytest.raises(psycopg.errors.InvalidSqlStatementName):
        asyncio.run(audit(1))
    asyncio.run(audit(2))
    with database.read() as repo:
        events = [event["event"] for event in repo.audit_events()]

    assert used[1] is used[0]
    assert getattr(used[1], "closed") is True
    assert used[2] is not used[0]
    assert events[-2:] == ["test.durable0", "test.durable2"]


def test_key_change_conflict_returns_false(database: Database) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account("acct1", "thumb1"))
        repo.add_account(make_account("acct2", "thumb2"))

    with database.transaction() as repo:
        conflicting = repo.update_account_key("acct2", "thumb1", {"kty": "EC"})
        moved = repo.update_account_key("acct2", "thumb3", {"kty": "EC", "crv": "P-384"})

    assert conflicting is False
    assert moved is True
    with database.read() as repo:
        account = repo.get_account("acct2")
    assert account is not None
    assert account.key_thumbprint == "thumb3"


def test_issuing_ca_update(database: Database) -> None:
    with database.transaction() as repo:
        repo.update_issuing_ca("default", status="disabled", config={"permitted": []})

    with database.engine.connect() as conn:
        row = conn.execute(select(issuing_cas).where(issuing_cas.c.name == "default")).one()
    assert row.status == "disabled"
    assert row.config == {"permitted": []}


def test_challenge_error_stored_as_json(database: Database) -> None:
    authz = Authorization(id="authz1", account_id="acct1", identifier=Identifier("dns", "d1.devices.example"),
                          wildcard=False, status="pending", expires=NOW, created_at=NOW,
                          challenges=[Challenge(id="ch1", authorization_id="authz1", type="http-01", token="t",
                                                status="processing")])
    error = {"type": "urn:ietf:params:acme:error:connection", "detail": "refused", "status": 400}
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_authorization(authz)
        changed = repo.transition_challenge("ch1", "processing", "invalid", error=error)

    with database.read() as repo:
        errors = repo.challenge_errors("authz1")
    with database.engine.connect() as conn:
        stored = conn.execute(select(challenges.c.error).where(challenges.c.id == "ch1")).scalar_one()
    assert changed is True
    assert errors == [error]
    assert stored == error


def test_sqlite_writer_waits_without_blocking_loop(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "locked.db")
    migrate(url)
    database = Database(url)
    with database.transaction() as repo:
        repo.add_issuing_ca(name="default", status="active", certificate_pem="PEM", key_ref="file:ca.key",
                            config={}, created_at=NOW)
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def scenario() -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = loop.create_task(tick())
        loop.call_later(0.2, holder.execute, "COMMIT")
        async with database.transaction_async(durable=False) as repo:
            ticks_when_locked = ticks
            repo.add_account(make_account())
        # A read during another process's write lock does not wait for it.
        holder.execute("BEGIN IMMEDIATE")
        with database.read() as repo:
            found = repo.get_account("acct1") is not None
        holder.execute("COMMIT")
        ticker.cancel()
        return ticks_when_locked, found

    try:
        ticks_when_locked, found = asyncio.run(scenario())
    finally:
        holder.close()
        database.dispose()

    # The event loop ran the ticker while the writer waited about 200 ms for the lock.
    assert ticks_when_locked >= 10
    assert found


def _in_forked_child(run: Callable[[], bytes]) -> bytes:
    """Run ``run`` in a forked child process and return what it returned."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            answer = run()
        except BaseException as exc:
            answer = type(exc).__name__.encode()
        os.write(write_end, answer)
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 64)
    os.waitpid(child, 0)
    os.close(read_end)
    return answer


def test_pool_after_fork_opens_new_connections(tmp_path: Path) -> None:
    pool = ConnectionPool(connector_for(sqlite_url(tmp_path / "fork.db"), durable=False))
    inherited = pool.acquire()
    pool.release(inherited)

    answer = _in_forked_child(lambda: b"reused" if pool.acquire() is inherited else b"new")

    assert answer == b"new"
    # The parent keeps its own idle connection.
    assert pool.acquire() is inherited


def _wal_database(tmp_path: Path) -> str:
    """Create the write-ahead log file of a database path, and return the database's path."""
    path = tmp_path / "wal.db"
    Path(f"{path}-wal").write_bytes(b"\0" * 4096)
    return str(path)


def test_wal_flush_serves_waiters_queued_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _wal_database(tmp_path)
    release = threading.Event()
    flushes: list[int] = []

    def slow_first_flush(database_path: str) -> None:
        flushes.append(len(flushes))
        if len(flushes) == 1:
            assert release.wait(10)
        real_sync(database_path)

    real_sync = sql_module.sync_sqlite_wal
    monkeypatch.setattr(sql_module, "sync_sqlite_wal", slow_first_flush)
    syncer = WalSyncer(path)

    async def scenario() -> None:
        first = asyncio.ensure_future(syncer.sync())
        while not flushes:
            await asyncio.sleep(0.001)
        # These queue while the first flush is running, so one more flush serves all five.
        later = [asyncio.ensure_future(syncer.sync()) for _ in range(5)]
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), 10)

    asyncio.run(scenario())
    assert len(flushes) == 2


def test_wal_flush_failure_reaches_every_waiter(tmp_path: Path) -> None:
    syncer = WalSyncer(str(tmp_path / "missing.db"))

    async def scenario() -> list[BaseException | None]:
        return await asyncio.wait_for(
            asyncio.gather(*(syncer.sync() for _ in range(3)), return_exceptions=True), 10)

    outcomes = asyncio.run(scenario())
    assert [type(outcome) for outcome in outcomes] == [FileNotFoundError] * 3
    # Each waiter gets an exception of its own.
    assert len({id(outcome) for outcome in outcomes}) == 3


def test_wal_flush_goes_on_after_unexpected_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _wal_database(tmp_path)
    real_sync = sql_module.sync_sqlite_wal
    calls: list[str] = []

    def failing_once(database_path: str) -> None:
        calls.append(database_path)
        if len(calls) == 1:
            raise ValueError("not a flush error")
        real_sync(database_path)

    monkeypatch.setattr(sql_module, "sync_sqlite_wal", failing_once)
    syncer = WalSyncer(path)

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="not a flush error"):
            await asyncio.wait_for(syncer.sync(), 10)
        await asyncio.wait_for(syncer.sync(), 10)

    asyncio.run(scenario())
    assert len(calls) == 2


def test_wal_flush_after_cancelled_waiter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _wal_database(tmp_path)
    release = threading.Event()
    real_sync = sql_module.sync_sqlite_wal
    loop_errors: list[dict[str, Any]] = []

    def held_flush(database_path: str) -> None:
        assert release.wait(10)
        real_sync(database_path)

    monkeypatch.setattr(sql_module, "sync_sqlite_wal", held_flush)
    syncer = WalSyncer(path)

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
        waiter = asyncio.ensure_future(syncer.sync())
        await asyncio.sleep(0.01)
        waiter.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # The thread settles the cancelled waiter's future without an error and serves the next.
        await asyncio.wait_for(syncer.sync(), 10)

    asyncio.run(scenario())
    assert loop_errors == []


def test_wal_flush_thread_stops_on_close(tmp_path: Path) -> None:
    syncer = WalSyncer(_wal_database(tmp_path))
    before = set(threading.enumerate())
    asyncio.run(asyncio.wait_for(syncer.sync(), 10))
    threads = [thread for thread in set(threading.enumerate()) - before if thread.name == "fleetca-wal-sync"]
    assert len(threads) == 1

    syncer.close()
    for thread in threads:
        thread.join(10)

    assert not any(thread.is_alive() for thread in threads)
    # A flush after close starts a thread of its own.
    asyncio.run(asyncio.wait_for(syncer.sync(), 10))
    syncer.close()


def test_wal_flush_in_forked_process(tmp_path: Path) -> None:
    syncer = WalSyncer(_wal_database(tmp_path))
    asyncio.run(asyncio.wait_for(syncer.sync(), 10))

    def flush_in_child() -> bytes:
        # A wait on the parent's thread, which does not exist here, would time out.
        asyncio.run(asyncio.wait_for(syncer.sync(), 5))
        return b"flushed"

    assert _in_forked_child(flush_in_child) == b"flushed"
    asyncio.run(asyncio.wait_for(syncer.sync(), 10))


class NonceReused(Exception):
    pass


@pytest.mark.parametrize("next_statement", ["read", "commit"])
def test_used_nonce_rolls_back_deferred_rows(database: Database, next_statement: str) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.defer_use_nonce("nonce1", NOW, NonceReused)

    with pytest.raises(NonceReused):
        with database.transaction() as repo:
            repo.defer_use_nonce("nonce1", NOW, NonceReused)
            repo.add_order(make_order("order5"))
            if next_statement == "read":
                repo.get_account("acct1")

    with database.read() as repo:
        assert repo.get_order("order5") is None
    with database.transaction() as repo:  # the connection is usable, and a fresh nonce goes in
        repo.defer_use_nonce("nonce2", NOW, NonceReused)
        repo.add_order(make_order("order6"))
    with database.read() as repo:
        assert repo.get_order("order6") is not None


HOSTILE_TEXT = ["it's", "back\\slash", "100% ?", "$$ dollar $$", "x'); DROP TABLE orders; --", "naïve ✓", "\t\n"]


def test_deferred_rows_keep_every_value(database: Database) -> None:
    der = bytes(range(256))
    certificate = IssuedCertificate(id="cert2", serial="2a", ca_name="default", account_id="acct1",
                                    order_id="order7", der=der, not_before=NOW,
                                    not_after=NOW + timedelta(microseconds=7), profile="default", revoked_at=None,
                                    revocation_reason=None, crl_shard=0)
    order = make_order("order7")
    order.identifiers = [Identifier("dns", text) for text in HOSTILE_TEXT]
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_order(order)
        repo.add_certificate(certificate, NOW)
        repo.audit(NOW, "test.event", "default", {"texts": HOSTILE_TEXT})

    with database.read() as repo:
        stored_order = repo.get_order("order7")
        stored_certificate = repo.get_certificate("cert2")
        events = repo.audit_events("test.event")
    assert stored_order is not None
    assert [i.value for i in stored_order.identifiers] == HOSTILE_TEXT
    assert stored_certificate == certificate
    assert events[0]["details"] == {"texts": HOSTILE_TEXT}


class CountingCursor:
    """A cursor wrapper that counts the queries sent to the server."""

    def __init__(self, cursor: object) -> None:
        self._cursor = cursor
        self.queries = 0

    def execute(self, *args: object, **kwargs: object) -> object:
        self.queries += 1
        return self._cursor.execute(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._cursor, name)


def test_postgres_transaction_sends_deferred_rows_together(database: Database) -> None:
    if database.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL transactions defer statements")
    authz = make_authorization("authz8")
    with database.transaction() as repo:
        repo.add_account(make_account())

    with database.transaction() as repo:
        counting = CountingCursor(repo.session.cursor)
        repo.session.cursor = counting
        repo.defer_use_nonce("nonce8", NOW, NonceReused)
        repo.add_authorization(authz)
        sent_before_read = counting.queries
        account = repo.get_account("acct1")
        repo.add_order(make_order("order8", ["authz8"]))
        repo.audit(NOW, "test.event", "default", {})
        sent_before_commit = counting.queries
    sent = counting.queries

    assert sent_before_read == 0
    assert account is not None
    assert sent_before_commit == 1  # BEGIN, the nonce, the authorization and the read went as one query
    assert sent == 2  # the order, its authorization link, the audit event and COMMIT as another
    with database.read() as repo:
        assert repo.get_order("order8") is not None
        assert repo.get_authorization("authz8") is not None


@pytest.mark.parametrize("then_read", [True, False])
def test_read_sends_deferred_nonce(database: Database, then_read: bool) -> None:
    if not database.writes_in_reads:
        pytest.skip("SQLite reads take no writes")
    with database.transaction() as repo:
        repo.add_account(make_account())

    with database.read() as repo:
        counting = CountingCursor(repo.session.cursor)
        repo.session.cursor = counting
        repo.defer_use_nonce("nonce9", NOW, NonceReused)
        if then_read:
            assert repo.get_account("acct1") is not None
    with pytest.raises(NonceReused):
        with database.read() as repo:
            repo.defer_use_nonce("nonce9", NOW, NonceReused)
            repo.get_account("acct1")

    assert counting.queries == 1
    with database.read() as repo:  # the connection that failed was rolled back and is usable
        assert repo.get_account("acct1") is not None


def test_commit_travels_with_last_statement(database: Database) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_order(make_order("order10"))

    outcomes = []
    for _ in range(2):
        with database.transaction(durable=False) as repo:
            counting = CountingCursor(repo.session.cursor)
            repo.session.cursor = counting
            repo.defer_use_nonce(f"nonce10-{len(outcomes)}", NOW, NonceReused)
            assert repo.get_order("order10") is not None
            repo.commit_with_next_statement()
            outcomes.append(repo.transition_order("order10", "pending", "processing"))
            with pytest.raises(RuntimeError) if database.dialect.name == "postgresql" else contextlib.nullcontext():
                repo.get_order("order10")

    assert outcomes == [True, False]
    with database.read() as repo:
        stored = repo.get_order("order10")
    assert stored is not None
    assert stored.status == "processing"
    if database.dialect.name == "postgresql":
        assert counting.queries == 2  # BEGIN, the nonce and the read, then the UPDATE with COMMIT


def test_order_read_with_authorization_states(database: Database) -> None:
    expires = NOW + timedelta(days=1)
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_authorization(make_authorization("authz11", "pending"))
        repo.add_authorization(make_authorization("authz12", "valid"))
        repo.add_order(make_order("order11", ["authz12", "authz11"]))
        repo.add_order(make_order("order12"))

    with database.read() as repo:
        with_authorizations = repo.get_order_with_states("order11")
        without = repo.get_order_with_states("order12")
        missing = repo.get_order_with_states("order13")

    assert with_authorizations is not None
    order, states = with_authorizations
    assert order.authorization_ids == ["authz12", "authz11"]
    assert states == {"authz11": ("pending", expires), "authz12": ("valid", expires)}
    assert without is not None
    assert without[0].authorization_ids == []
    assert without[1] == {}
    assert missing is None


class AccountChanged(Exception):
    pass


NONCE_ACCOUNT_CASES = {
    "valid-same-key": ("acct1", "thumb1", "valid", None),
    "deactivated": ("acct1", "thumb1", "deactivated", AccountChanged),
    "other-key": ("acct1", "thumb2", "valid", AccountChanged),
    "unknown-account": ("acct9", "thumb1", "valid", AccountChanged),
}


@pytest.mark.parametrize("case", sorted(NONCE_ACCOUNT_CASES))
def test_nonce_checks_account(database: Database, case: str) -> None:
    account_id, thumbprint, status, raised = NONCE_ACCOUNT_CASES[case]
    with database.transaction() as repo:
        repo.add_account(make_account("acct1", "thumb1"))
        repo.update_account("acct1", status=status)

    def record() -> None:
        with database.transaction(durable=False) as repo:
            repo.defer_use_nonce("nonce12", NOW, NonceReused, (account_id, thumbprint), AccountChanged)
            repo.add_order(make_order("order12"))

    if raised is None:
        record()
    else:
        with pytest.raises(raised):
            record()

    with database.read() as repo:
        stored = repo.get_order("order12")
    assert (stored is not None) == (raised is None)
    if raised is None:
        with pytest.raises(NonceReused):  # a second use of the nonce still fails as a replay
            record()


@pytest.mark.parametrize("account", [None, ("acct1", "thumb1")], ids=["plain", "with-account-check"])
def test_used_nonce_row_read_back(database: Database, account: tuple[str, str] | None) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account("acct1", "thumb1"))
    issued = NOW - timedelta(minutes=3)

    with database.transaction(durable=False) as repo:
        repo.defer_use_nonce("nonce14", issued, NonceReused, account, AccountChanged)
        repo.add_order(make_order("order14"))
    with database.engine.connect() as conn:
        rows = conn.execute(select(used_nonces.c.issued, used_nonces.c.nonce)).all()

    assert [(stored.astimezone(UTC) if stored.tzinfo else stored.replace(tzinfo=UTC), nonce)
            for stored, nonce in rows] == [(issued, "nonce14")]
    with database.transaction() as repo:
        assert repo.prune_used_nonces(issued) == 0
    with database.transaction() as repo:
        assert repo.prune_used_nonces(issued + timedelta(microseconds=1)) == 1


@pytest.mark.parametrize("status", ["valid", "deactivated"])
def test_nonce_checks_account_alone(database: Database, status: str) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account("acct1", "thumb1"))
        repo.update_account("acct1", status=status)

    async def record() -> None:
        async with database.transaction_async(durable=False, single_statement=True) as repo:
            repo.defer_use_nonce("nonce13", NOW, NonceReused, ("acct1", "thumb1"), AccountChanged)

    if status == "valid":
        asyncio.run(record())
        with pytest.raises(NonceReused):
            asyncio.run(record())
    else:
        with pytest.raises(AccountChanged):
            asyncio.run(record())


def test_autovacuum_setting_read(database: Database) -> None:
    enabled = database.autovacuum_enabled()

    if database.dialect.name == "sqlite":
        assert enabled is None
    else:
        with database.engine.connect() as conn:
            setting = conn.exec_driver_sql("SELECT setting FROM pg_settings WHERE name = 'autovacuum'").scalar_one()
        assert enabled is (setting == "on")


def require_prepared_statements(database: Database) -> None:
    if database.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL sessions prepare statements")


class RecordingCursor(CountingCursor):
    """A counting cursor that also keeps the text of each query."""

    def __init__(self, cursor: object) -> None:
        super().__init__(cursor)
        self.texts: list[str] = []

    def execute(self, *args: object, **kwargs: object) -> object:
        self.texts.append(str(args[0]))
        return super().execute(*args, **kwargs)


def queries_sent(database: Database, body: Callable[[Repository, int], None], transactions: int = 2) -> list[list[str]]:
    """Run ``body(repo, n)`` in ``transactions`` write transactions, and return the query texts that each sent."""
    sent: list[list[str]] = []
    for n in range(transactions):
        with database.transaction(durable=False) as repo:
            recording = RecordingCursor(repo.session.cursor)
            repo.session.cursor = recording
            body(repo, n)
        sent.append(recording.texts)
    return sent


def repository_statements() -> list[Statement]:
    """The repository's statements: those built at import, and those its caches built since."""
    found = []
    for value in vars(repository_module).values():
        if isinstance(value, Statement):
            found.append(value)
        elif isinstance(value, dict):
            found += [cached for cached in value.values() if isinstance(cached, Statement)]
    return found


def test_every_repository_statement_prepares(database: Database) -> None:
    require_prepared_statements(database)
    # Statements built on first use: challenge inserts, conditional updates, state reads.
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_authorization(make_authorization("authz24"))
        repo.add_order(make_order("order24", ["authz24"]))
        repo.transition_challenge("authz24-http", "pending", "processing")
    with database.transaction() as repo:
        repo.record_challenge_outcome("authz24-http", "authz24", "valid", {"validated": NOW}, {"expires": NOW})
        repo.transition_order("order24", "pending", "ready")
        repo.authorization_states(["authz24"])
    statements = repository_statements()
    with database.read() as repo:
        session = repo.session
        assert isinstance(session, PostgresSession)
        executes = {s.text: session._prepared(s, s.compiled(database.dialect)[0]) for s in statements}
        names = {row[0] for row in session.connection.execute("SELECT name FROM pg_prepared_statements")}

    assert len(statements) > 40
    assert [text for text, execute in executes.items() if execute is None] == []
    assert {execute.split()[1].split("(")[0] for execute in executes.values() if execute} == names


def test_queued_statements_run_prepared(database: Database) -> None:
    require_prepared_statements(database)
    with database.transaction() as repo:
        repo.add_account(make_account())

    def nonce_order_and_read(repo: Repository, n: int) -> None:
        repo.defer_use_nonce(f"nonce14-{n}", NOW, NonceReused)
        repo.add_order(make_order(f"order14-{n}"))
        assert repo.get_account("acct1") is not None

    sent = queries_sent(database, nonce_order_and_read)

    # Every statement was first used on this connection while no transaction
    # was open, so the statements run prepared from the first time on.
    for texts in sent:
        assert len(texts) == 2
        statements = texts[0].split(";")
        assert statements[0] == "BEGIN"
        assert all(s.startswith("EXECUTE fleetca_") for s in statements[1:]), statements
        assert texts[1] == "COMMIT"
    with database.read() as repo:
        assert repo.get_order("order14-0") is not None
        assert repo.get_order("order14-1") is not None
    with pytest.raises(NonceReused):  # a prepared nonce INSERT still reports a replay
        with database.transaction(durable=False) as repo:
            repo.defer_use_nonce("nonce14-0", NOW, NonceReused)
            repo.get_account("acct1")
    # The failed transaction was rolled back on its connection, and the
    # statements prepared there still run.
    with database.transaction(durable=False) as repo:
        recording = RecordingCursor(repo.session.cursor)
        repo.session.cursor = recording
        repo.defer_use_nonce("nonce14-2", NOW, NonceReused)
        assert repo.get_account("acct1") is not None
    assert recording.texts[0].split(";")[1].startswith("EXECUTE fleetca_")


def test_statement_first_used_in_transaction_prepared_later(database: Database) -> None:
    require_prepared_statements(database)
    with database.transaction() as repo:
        repo.add_account(make_account())

    def read_then_audit(repo: Repository, n: int) -> None:
        assert repo.get_account("acct1") is not None
        # The audit INSERT only ever follows BEGIN and another statement.
        repo.audit(NOW, f"test.event{n}", "default", {"n": n})

    sent = queries_sent(database, read_then_audit)
    with database.read() as repo:
        events = [event["event"] for event in repo.audit_events()]

    assert sent[0][-1].startswith("INSERT INTO audit_events")
    assert sent[0][-1].endswith(";COMMIT")
    # Prepared before the second transaction's first statement.
    assert sent[1][-1].startswith("EXECUTE fleetca_")
    assert sent[1][-1].endswith(";COMMIT")
    assert events[-2:] == ["test.event0", "test.event1"]


def test_parameter_typed_from_column(database: Database) -> None:
    require_prepared_statements(database)
    # PostgreSQL cannot infer the type of a parameter that only meets IS NULL,
    # so the statement is prepared with the column's type, without its length.
    untyped = Statement("SELECT ? IS NULL, length(?)", [accounts.c.id, accounts.c.id])
    long_value = "x" * 500
    with database.transaction() as repo:
        repo.defer_use_nonce("nonce16", NOW, NonceReused)
        assert repo.session.first(untyped, [None, long_value]) == [True, 500]
        execute = repo.session.connection.fleetca_prepared[untyped.compiled(database.dialect)[0]]
        assert execute is not None
        assert execute.startswith("EXECUTE fleetca_")
        assert execute.endswith("(%s, %s)")


def test_unpreparable_statement_sent_as_literal(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    require_prepared_statements(database)
    # PREPARE takes only SELECT, INSERT, UPDATE, DELETE, MERGE and VALUES.
    show = Statement("SHOW TimeZone", [], [accounts.c.id])
    with database.transaction() as repo:
        repo.defer_use_nonce("nonce15", NOW, NonceReused)
        assert repo.session.first(show) == ["UTC"]
        assert repo.session.connection.fleetca_prepared["SHOW TimeZone"] is None
        repo.add_account(make_account())

    assert "cannot prepare a statement" in caplog.text
    with database.read() as repo:
        assert repo.get_account("acct1") is not None


def test_prepared_statements_turned_off(database: Database) -> None:
    require_prepared_statements(database)
    with database.transaction() as repo:
        repo.add_account(make_account())
    literal_only = Database(database.url, prepared_statements=False)
    try:
        for n in range(2):
            with literal_only.transaction(durable=False) as repo:
                recording = RecordingCursor(repo.session.cursor)
                repo.session.cursor = recording
                repo.defer_use_nonce(f"nonce17-{n}", NOW, NonceReused)
                assert repo.get_account("acct1") is not None
            assert "EXECUTE" not in recording.texts[0]
            assert recording.texts[0].startswith("BEGIN;INSERT INTO used_nonces")
        with literal_only.read() as repo:
            prepared = repo.session.connection.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    finally:
        literal_only.dispose()
    assert prepared == 0


def stored_states(database: Database, authz_id: str) -> tuple[str, dict[str, str]]:
    with database.read() as repo:
        authz = repo.get_authorization(authz_id)
    assert authz is not None
    return authz.status, {c.id: c.status for c in authz.challenges}


# name: (outcome recorded first, outcome recorded second)
CHALLENGE_OUTCOME_CASES = {
    "same-outcome-twice": ("valid", "valid"),
    "invalid-after-valid": ("valid", "invalid"),
    "valid-after-invalid": ("invalid", "valid"),
}


@pytest.mark.parametrize("case", sorted(CHALLENGE_OUTCOME_CASES))
def test_challenge_outcome_recorded_once(database: Database, case: str) -> None:
    first, second = CHALLENGE_OUTCOME_CASES[case]
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_authorization(make_authorization("authz18"))
        repo.add_order(make_order("order18", ["authz18"]))
        repo.add_order(make_order("order19", ["authz18"]))
        repo.transition_challenge("authz18-http", "pending", "processing")
    expires = NOW + timedelta(days=30)

    def record(status: str) -> tuple[bool, bool, list[Order]]:
        values = ({"validated": NOW}, {"expires": expires}) if status == "valid" else ({"error": {"x": 1}}, {})
        with database.transaction(durable=False) as repo:
            recording = RecordingCursor(repo.session.cursor)
            repo.session.cursor = recording
            outcome = repo.record_challenge_outcome("authz18-http", "authz18", status, *values)
            queries = recording.queries
        if database.dialect.name == "postgresql":
            assert queries == 1
        return outcome

    first_recorded, first_moved, orders = record(first)
    after_first = stored_states(database, "authz18")
    second_recorded, second_moved, _ = record(second)
    after_second = stored_states(database, "authz18")

    assert (first_recorded, first_moved) == (True, True)
    assert [order.id for order in orders] == ["order18", "order19"]
    assert orders[0].authorization_ids == ["authz18"]
    assert after_first == (first, {"authz18-http": first, "authz18-dns": "pending"})
    assert (second_recorded, second_moved) == (False, False)
    assert after_second == after_first


def test_authorization_moves_with_challenge_only(database: Database) -> None:
    # The challenge is invalid while its authorization is still pending, so
    # a valid outcome recorded now must move neither of them.
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_authorization(make_authorization("authz20"))
        repo.transition_challenge("authz20-http", "pending", "invalid")

    with database.transaction(durable=False) as repo:
        recorded, moved, orders = repo.record_challenge_outcome(
            "authz20-http", "authz20", "valid", {"validated": NOW}, {"expires": NOW})

    assert (recorded, moved, orders) == (False, False, [])
    assert stored_states(database, "authz20") == ("pending", {"authz20-http": "invalid", "authz20-dns": "pending"})


def test_statements_of_one_text_share_preparation(database: Database) -> None:
    require_prepared_statements(database)
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_order(make_order("order21"))

    # list_order_ids builds a new Statement on each call, with the same text.
    with database.read() as repo:
        connection = repo.session.connection
        before = len(connection.fleetca_prepared)
        listed = [repo.list_order_ids("acct1", after=None, limit=10) for _ in range(3)]
        after = len(connection.fleetca_prepared)
        on_server = connection.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]

    assert listed == [["order21"]] * 3
    assert after == before + 1
    assert on_server == after


@pytest.mark.parametrize(("environment", "prepares"), [(None, True), ("false", False)])
def test_prepared_statements_setting(database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     environment: str | None, prepares: bool) -> None:
    require_prepared_statements(database)
    if environment is not None:
        monkeypatch.setenv("FLEETCA_DATABASE_PREPARED_STATEMENTS", environment)
    settings = load_settings(tmp_path, database_url=database.url)

    opened = Database.of(settings)
    try:
        with opened.read() as repo:
            tracked = hasattr(repo.session.connection, "fleetca_prepared")
    finally:
        opened.dispose()

    assert settings.database_prepared_statements is prepares
    assert tracked is prepares


def test_deferred_conflict_scoped_to_query(database: Database) -> None:
    with database.transaction() as repo:
        repo.add_account(make_account())
    insert_nonce = insert_into(used_nonces)

    with database.transaction(durable=False) as repo:
        repo.defer_use_nonce("nonce22", NOW, NonceReused)
        assert repo.get_account("acct1") is not None  # the nonce went out with this read
        # The same nonce again, in a later statement of the transaction, is a
        # plain integrity error, which the savepoint catches.
        violated = repo.session.savepoint_violates_integrity(insert_nonce, [NOW, "nonce22"])
        repo.add_order(make_order("order22"))

    assert violated is True
    with database.read() as repo:
        assert repo.get_order("order22") is not None


def test_connection_dropped_after_type_change(database: Database) -> None:
    require_prepared_statements(database)
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_authorization(make_authorization("authz23"))
    for _ in range(2):
        with database.read() as repo:
            assert repo.get_authorization("authz23") is not None

    # The prepared SELECT of authorizations with their challenges returns
    # challenges.type, whose type a migration changes here.
    with database.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE challenges ALTER COLUMN type TYPE varchar(40)")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        with database.read() as repo:
            repo.get_authorization("authz23")
    with database.read() as repo:
        found = repo.get_authorization("authz23")

    assert found is not None
    assert {c.type for c in found.challenges} == {"http-01", "dns-01"}


# Values that statements bind, each written as a literal by PostgresLiterals
# and by psycopg's mogrify; the two must write the same text.
LITERAL_CASES = {
    "zero": 0,
    "negative integer": -5,
    "integer past 64 bits": 2**70,
    "true": True,
    "false": False,
    "null": None,
    "empty string": "",
    "quote and backslash": "a'b\\c",
    "non-ASCII text": "ünï€😀",
    "SQL in text": "x'); DROP TABLE accounts; --",
    "UTC time": datetime(2026, 12, 5, 11, 28, 3, 429769, tzinfo=UTC),
    "time on the second": datetime(2026, 1, 1, tzinfo=UTC),
    "time with an offset": datetime(5, 1, 1, 1, 1, 1, 1, tzinfo=timezone(timedelta(hours=2))),
    "naive time": datetime(2026, 12, 5, 11, 28, 3),
    "bytes with a quote and a backslash": b"\x00\x01'\\",
    "empty bytes": b"",
    "JSON object": Json({"a": "x'y\\", "b": [1, None]}),
    "JSON list": Json([]),
    "a type without its own writer": 1.5,
}


@pytest.mark.parametrize("case", sorted(LITERAL_CASES))
def test_literal_written_as_mogrify_writes_it(database: Database, case: str) -> None:
    require_prepared_statements(database)
    value = LITERAL_CASES[case]
    with database.read() as repo:
        connection = repo.session.connection
        written = PostgresLiterals(connection).query("SELECT %s", [value])
        expected = psycopg.ClientCursor(connection).mogrify("SELECT %s", [value])
        read_back = connection.execute(written).fetchone()[0]

    assert written == expected
    assert read_back == (value.obj if isinstance(value, Json) else value)


def test_literal_with_nul_rejected(database: Database) -> None:
    require_prepared_statements(database)
    with database.read() as repo:
        literals = PostgresLiterals(repo.session.connection)
        with pytest.raises(psycopg.DataError, match="NUL"):
            literals.query("SELECT %s", ["before\0after"])


def test_literal_of_text_with_percent_left_to_mogrify(database: Database) -> None:
    require_prepared_statements(database)
    with database.read() as repo:
        written = PostgresLiterals(repo.session.connection).query("SELECT %s || '%%'", ["a"])

    assert written == "SELECT 'a' || '%'"


# finalize's move of an order to processing: (order status, CSR key's thumbprint,
# CA of the accounts) -> whether it moves.
START_PROCESSING_CASES = {
    "ready order, new key": ("ready", "csr-key", "default", True),
    "ready order, account key": ("ready", "thumb1", "default", False),
    "ready order, account key of another CA": ("ready", "thumb1", "other", True),
    "pending order": ("pending", "csr-key", "default", False),
    "processing order": ("processing", "csr-key", "default", False),
}


@pytest.mark.parametrize("case", sorted(START_PROCESSING_CASES))
def test_start_processing_order(database: Database, case: str) -> None:
    status, thumbprint, ca_name, moves = START_PROCESSING_CASES[case]
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_order(replace(make_order("order25"), status=status))

    with database.transaction() as repo:
        started = repo.start_processing_order("order25", ca_name, thumbprint)
    with database.read() as repo:
        stored = repo.get_order("order25")

    assert started is moves
    assert stored is not None
    assert stored.status == ("processing" if moves else status)


@pytest.mark.parametrize("commit_with_it", [False, True], ids=["commit-after", "commit-with-it"])
def test_account_added_with_its_audit_event(database: Database, commit_with_it: bool) -> None:
    with database.transaction() as repo:
        added = repo.add_account_with_audit(make_account("acct26", "thumb26"), NOW, {"account": "acct26"},
                                            commit_with_it=commit_with_it)
    with database.transaction() as repo:
        # The same key again, under another id: nothing is written.
        again = repo.add_account_with_audit(make_account("acct27", "thumb26"), NOW, {"account": "acct27"},
                                            commit_with_it=commit_with_it)
    with database.read() as repo:
        events = [event["details"] for event in repo.audit_events("account.created")]
        first, second = repo.get_account("acct26"), repo.get_account("acct27")

    assert added is True
    assert again is False
    assert first is not None
    assert second is None
    assert events == [{"account": "acct26"}]


# A challenge POST's move to processing: (authorization status, challenge
# status, requesting account, hours until the authorization expires,
# challenge id) -> whether the challenge moves.
START_CHALLENGE_CASES = {
    "pending challenge of own pending authorization": ("pending", "pending", "acct1", 24, "authz28-http", True),
    "another account's challenge": ("pending", "pending", "acct2", 24, "authz28-http", False),
    "expired authorization": ("pending", "pending", "acct1", -1, "authz28-http", False),
    "challenge already processing": ("pending", "processing", "acct1", 24, "authz28-http", False),
    "valid authorization": ("valid", "pending", "acct1", 24, "authz28-http", False),
    "unknown challenge": ("pending", "pending", "acct1", 24, "no-such-challenge", False),
}


@pytest.mark.parametrize("case", sorted(START_CHALLENGE_CASES))
def test_start_challenge(database: Database, case: str) -> None:
    authz_status, challenge_status, account_id, hours, challenge_id, moves = START_CHALLENGE_CASES[case]
    authz = make_authorization("authz28", authz_status)
    authz.expires = NOW + timedelta(hours=hours)
    authz.challenges[0].status = challenge_status
    with database.transaction() as repo:
        repo.add_account(make_account())
        repo.add_account(make_account("acct2", "thumb2"))
        repo.add_authorization(authz)

    with database.transaction() as repo:
        started, found = repo.start_challenge(challenge_id, account_id, NOW)
    with database.read() as repo:
        stored = repo.get_challenge("authz28-http")

    assert started is moves
    assert stored is not None
    assert stored.status == ("processing" if moves else challenge_status)
    if challenge_id == "no-such-challenge":
        assert found is None
    else:
        # The authorization read after the move shows the challenge as stored.
        assert found is not None
        assert {c.id: c.status for c in found.challenges}["authz28-http"] == stored.status
