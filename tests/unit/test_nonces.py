"""Nonces: single use across service instances sharing a database, expiry, forgery."""

from __future__ import annotations

from datetime import timedelta
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleetca.acme.jws import b64url_decode
from fleetca.acme.nonces import NonceService
from fleetca.acme.problems import AcmeProblem
from fleetca.clock import ManualClock
from fleetca.storage.database import Database, migrate, sqlite_url
from tests.support.databases import drop_postgres_database, new_database_url


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    url = new_database_url() or sqlite_url(tmp_path / "nonces.db")
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()
    if url.startswith("postgresql"):
        drop_postgres_database(url)


def test_nonce_accepted_once(database: Database) -> None:
    clock = ManualClock()
    nonces = NonceService(database)
    nonce = nonces.issue(clock.now())
    nonces.consume(nonce, clock.now())
    with pytest.raises(AcmeProblem) as caught:
        nonces.consume(nonce, clock.now())
    assert caught.value.type == "badNonce"


def test_nonce_from_other_instance_accepted_once(database: Database) -> None:
    clock = ManualClock()
    first, second = NonceService(database), NonceService(Database(database.url))
    nonce = first.issue(clock.now())
    second.consume(nonce, clock.now())
    with pytest.raises(AcmeProblem):
        first.consume(nonce, clock.now())


def test_expired_nonce_rejected(database: Database) -> None:
    clock = ManualClock()
    nonces = NonceService(database, lifetime=timedelta(minutes=10))
    nonce = nonces.issue(clock.now())
    clock.advance(timedelta(minutes=11))
    with pytest.raises(AcmeProblem, match="expired"):
        nonces.consume(nonce, clock.now())


@pytest.mark.parametrize("nonce", ["", "abc", "AAAAAGsTH1Djhx-KH4BSUvPEo758wETqFQ8j1itoR_I", "!!!!"],
                         ids=["empty", "short", "foreign-mac", "not-base64url"])
def test_forged_nonce_rejected(database: Database, nonce: str) -> None:
    with pytest.raises(AcmeProblem) as caught:
        NonceService(database).consume(nonce, ManualClock().now())
    assert caught.value.type == "badNonce"


def test_prune_removes_only_expired(database: Database) -> None:
    clock = ManualClock()
    nonces = NonceService(database, lifetime=timedelta(minutes=10))
    old = nonces.issue(clock.now())
    nonces.consume(old, clock.now())
    clock.advance(timedelta(minutes=5))
    recent = nonces.issue(clock.now())
    nonces.consume(recent, clock.now())
    clock.advance(timedelta(minutes=6))
    assert nonces.prune(clock.now()) == 1
    with pytest.raises(AcmeProblem, match="already been used"):
        nonces.consume(recent, clock.now())


_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _padded(nonce: str) -> str:
    return nonce + "="


def _other_unused_bits(nonce: str) -> str:
    # 32 bytes take 43 characters, and the last one carries 2 unused bits, so
    # the next character of the alphabet decodes to the same bytes.
    last = _B64URL_ALPHABET.index(nonce[-1])
    return nonce[:-1] + _B64URL_ALPHABET[last ^ 1]


@pytest.mark.parametrize("spell", [_padded, _other_unused_bits], ids=["padded", "other-unused-bits"])
def test_other_spelling_of_nonce_rejected(database: Database, spell: Callable[[str], str]) -> None:
    clock = ManualClock()
    nonces = NonceService(database)
    nonce = nonces.issue(clock.now())
    variant = spell(nonce)
    assert variant != nonce
    assert b64url_decode(variant, "nonce") == b64url_decode(nonce, "nonce")

    with pytest.raises(AcmeProblem) as before_use:
        nonces.consume(variant, clock.now())
    nonces.consume(nonce, clock.now())
    with pytest.raises(AcmeProblem) as after_use:
        nonces.consume(variant, clock.now())

    assert before_use.value.type == "badNonce"
    assert after_use.value.type == "badNonce"
