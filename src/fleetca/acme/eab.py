"""External Account Binding (RFC 8555 §7.3.4) and the EAB keys that carry pre-authorizations.

An EAB key binds a new ACME account to something the vendor issued out of band:
a key per factory line, per product or per device. The key may expire, may be
limited to a number of accounts (one for single use), and may list identifier
patterns that accounts bound to it get without a challenge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import orjson
from jwcrypto import jwk
from jwcrypto.common import JWException

from fleetca.acme import jws
from fleetca.acme.problems import AcmeProblem, malformed, unauthorized
from fleetca.ca.patterns import pattern_matches
from fleetca.domain import Identifier


@dataclass
class EabKey:
    key_id: str
    ca_name: str
    hmac_key: bytes
    description: str
    created_at: datetime
    expires_at: datetime | None
    max_accounts: int | None
    accounts_bound: int
    revoked_at: datetime | None
    preauthorized: list[str]

    def usable(self, now: datetime) -> str | None:
        """Return why the key cannot bind a new account, or None when it can."""
        if self.revoked_at is not None:
            return "has been revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "has expired"
        if self.max_accounts is not None and self.accounts_bound >= self.max_accounts:
            return f"is already bound to its maximum of {self.max_accounts} account(s)"
        return None

    def preauthorizes(self, identifier: Identifier, wildcard: bool, now: datetime) -> bool:
        """True when an account bound to this key may have ``identifier`` without a challenge."""
        if self.revoked_at is not None or (self.expires_at is not None and self.expires_at <= now):
            return False
        value = ("*." if wildcard else "") + identifier.value
        return any(pattern_matches(p, identifier.type, value) for p in self.preauthorized)


def eab_key_from_row(row: dict[str, Any] | None) -> EabKey | None:
    if row is None:
        return None
    return EabKey(
        key_id=row["key_id"], ca_name=row["ca_name"], hmac_key=row["hmac_key"], description=row["description"],
        created_at=row["created_at"], expires_at=row["expires_at"], max_accounts=row["max_accounts"],
        accounts_bound=row["accounts_bound"], revoked_at=row["revoked_at"],
        preauthorized=list(row["preauthorized"]),
    )


def verify_binding(binding: Any, outer_url: str, account_key: jws.AccountKey, ca_name: str,
                   lookup: Callable[[str], EabKey | None], now: datetime) -> EabKey:
    """Check an externalAccountBinding JWS against the EAB key it names (§7.3.4); return that key."""
    if not isinstance(binding, dict):
        raise malformed("'externalAccountBinding' must be a flattened JWS object")
    parsed = jws.parse_flattened(json.dumps(binding), require_nonce=False)
    if parsed.alg not in jws.MAC_ALGORITHMS:
        raise AcmeProblem("badSignatureAlgorithm",
                          f"externalAccountBinding must use a MAC algorithm, not {parsed.alg!r}",
                          extra={"algorithms": list(jws.MAC_ALGORITHMS)})
    if parsed.nonce is not None:
        raise malformed("externalAccountBinding must not contain a nonce")
    if parsed.kid is None:
        raise malformed("externalAccountBinding must name its EAB key in 'kid'")
    if parsed.url != outer_url:
        raise malformed("externalAccountBinding 'url' must equal the newAccount URL")
    key = lookup(parsed.kid)
    if key is None or key.ca_name != ca_name:
        raise unauthorized(f"unknown EAB key id {parsed.kid!r}")
    problem = key.usable(now)
    if problem is not None:
        raise unauthorized(f"EAB key {key.key_id} {problem}")
    mac_key = jwk.JWK(kty="oct", k=jws.b64url_encode(key.hmac_key))
    try:
        jws.verify_signature(parsed, mac_key, list(jws.MAC_ALGORITHMS))
    except AcmeProblem:
        raise unauthorized("externalAccountBinding MAC does not verify with the EAB key") from None
    try:
        # orjson, as for the request body: the json module raises RecursionError, not
        # ValueError, on deep nesting.
        bound_key = jwk.JWK(**orjson.loads(parsed.payload_bytes))
    except (ValueError, TypeError, KeyError, JWException) as exc:
        raise malformed("externalAccountBinding payload must be the account's public JWK") from exc
    if bound_key.thumbprint() != account_key.thumbprint():
        raise unauthorized("externalAccountBinding payload is not the key that signed this request")
    return key
