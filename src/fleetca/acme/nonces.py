"""Anti-replay nonces (RFC 8555 §6.5, §7.2).

A nonce is issued without touching the database: it carries its issue time,
random bytes and an HMAC under a key shared by every fleetca process through the
database. Using a nonce inserts it, with its issue time, into ``used_nonces``,
whose unique key makes a second use fail in any process. Nonces older than
``lifetime`` are rejected without a lookup, so used-nonce rows can be pruned
after that. Only the exact text that was issued is accepted: base64url has
other spellings of the same bytes (trailing "=", other values of a last
character's unused bits), and each would otherwise be a fresh row.

A request that writes records its nonce in its own write transaction (see
``acme/http.py``), so a replay of it fails with its changes rolled back, and
the flow pays for one commit instead of two.
"""

from __future__ import annotations

import hmac
import os
import struct
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Callable

from fleetca.acme.jws import b64url_decode, b64url_encode
from fleetca.acme.problems import AcmeProblem
from fleetca.storage.database import Database
from fleetca.storage.repository import Repository

NONCE_SECRET_NAME = "nonce-hmac-key"
DEFAULT_LIFETIME = timedelta(hours=1)
_RAW_LENGTH = 8 + 8 + 16


class NonceService:
    def __init__(self, database: Database, lifetime: timedelta = DEFAULT_LIFETIME) -> None:
        self.database = database
        self.lifetime = lifetime
        with database.transaction() as repo:
            self._key = repo.get_or_create_secret(NONCE_SECRET_NAME, lambda: os.urandom(32))

    def issue(self, now: datetime) -> str:
        body = struct.pack(">Q", int(now.timestamp())) + os.urandom(8)
        return b64url_encode(body + hmac.new(self._key, body, sha256).digest()[:16])

    def consume(self, nonce: str, now: datetime) -> None:
        """Accept ``nonce`` once, or raise badNonce, recording it in a transaction of its own."""
        issued_at = self.check(nonce, now)
        # A used nonce lost to a power cut could be replayed once at most, and only
        # within its lifetime. That risk does not justify an fsync on every request.
        with self.database.transaction(durable=False) as new_repo:
            self.record(new_repo, nonce, issued_at)

    def record(self, repo: Repository, nonce: str, issued_at: datetime, account: tuple[str, str] | None = None,
               account_changed: Callable[[], Exception] | None = None) -> None:
        """Record ``nonce``, which :meth:`check` accepted, as used in ``repo``'s transaction.

        badNonce is raised if it was used before: at once on SQLite, and by the
        transaction's next statement on PostgreSQL, which sends the INSERT with it.
        ``account`` and ``account_changed`` are as in ``Repository.defer_use_nonce``.
        """
        repo.defer_use_nonce(nonce, issued_at, used_nonce, account, account_changed)

    def check(self, nonce: str, now: datetime) -> datetime:
        """Return the issue time of a nonce this server issued and that has not expired, or raise badNonce.

        Whether it was used is not checked here; :meth:`record` does that.
        """
        try:
            raw = b64url_decode(nonce, "nonce")
        except AcmeProblem:
            raw = b""
        if len(raw) != _RAW_LENGTH or b64url_encode(raw) != nonce or not hmac.compare_digest(
                raw[16:], hmac.new(self._key, raw[:16], sha256).digest()[:16]):
            raise AcmeProblem("badNonce", "nonce was not issued by this server; retry with the nonce in Replay-Nonce")
        issued_at = datetime.fromtimestamp(struct.unpack(">Q", raw[:8])[0], UTC)
        if now - issued_at > self.lifetime:
            raise AcmeProblem("badNonce", "nonce has expired; retry with the nonce in Replay-Nonce")
        return issued_at

    def prune(self, now: datetime) -> int:
        with self.database.transaction() as repo:
            return repo.prune_used_nonces(now - self.lifetime)


def used_nonce() -> AcmeProblem:
    return AcmeProblem("badNonce", "nonce has already been used; retry with the nonce in Replay-Nonce")
