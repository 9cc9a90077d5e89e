"""The per-process account cache: least recently used entries leave first, and its size stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime

from fleetca.acme.account_cache import AccountCache
from fleetca.domain import Account


def account(account_id: str) -> Account:
    return Account(id=account_id, ca_name="default", key_thumbprint=f"thumb-{account_id}", jwk={"kty": "EC"},
                   status="valid", contact=[], terms_agreed=True, eab_key_id=None,
                   created_at=datetime(2026, 12, 5, tzinfo=UTC))


def test_cache_evicts_least_recently_used() -> None:
    cache = AccountCache(max_size=2)
    cache.put(account("a"))
    cache.put(account("b"))
    assert cache.get("a") is not None  # "a" is now more recent than "b"
    cache.put(account("c"))

    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None


def test_cache_replaces_and_discards() -> None:
    cache = AccountCache(max_size=4)
    cache.put(account("a"))
    newer = account("a")
    newer.status = "deactivated"
    cache.put(newer)
    replaced = cache.get("a")
    cache.discard("a")
    cache.discard("missing")

    assert replaced is not None
    assert replaced.status == "deactivated"
    assert cache.get("a") is None
    assert len(cache) == 0


def test_first_authorizations_only_once_for_created_account() -> None:
    cache = AccountCache(max_size=4)
    cache.put(account("created"), created=True)
    cache.put(account("read"))

    first = cache.first_authorizations("created")
    second = cache.first_authorizations("created")
    read = cache.first_authorizations("read")

    assert first is True
    assert second is False
    assert read is False


def test_first_authorizations_forgotten_with_entry() -> None:
    cache = AccountCache(max_size=1)
    cache.put(account("evicted"), created=True)
    cache.put(account("discarded"), created=True)
    cache.put(account("newest"), created=True)
    cache.discard("discarded")

    assert cache.first_authorizations("evicted") is False
    assert cache.first_authorizations("discarded") is False
    assert cache.first_authorizations("newest") is True
