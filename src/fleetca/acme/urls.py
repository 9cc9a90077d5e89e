"""URLs of the ACME resources of one issuing CA.

Every resource lives under ``{base}/acme/{ca}/``; the JWS ``url`` header and
``kid`` are compared against these strings exactly (RFC 8555 §6.4).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Urls:
    base: str  # e.g. https://acme.vendor.example:8443, no trailing slash
    ca_name: str

    @property
    def root(self) -> str:
        return f"{self.base}/acme/{self.ca_name}"

    @property
    def directory(self) -> str:
        return f"{self.root}/directory"

    @property
    def new_nonce(self) -> str:
        return f"{self.root}/new-nonce"

    @property
    def new_account(self) -> str:
        return f"{self.root}/new-account"

    @property
    def new_order(self) -> str:
        return f"{self.root}/new-order"

    @property
    def new_authz(self) -> str:
        return f"{self.root}/new-authz"

    @property
    def revoke_cert(self) -> str:
        return f"{self.root}/revoke-cert"

    @property
    def key_change(self) -> str:
        return f"{self.root}/key-change"

    def account(self, account_id: str) -> str:
        return f"{self.root}/account/{account_id}"

    def account_orders(self, account_id: str) -> str:
        return f"{self.root}/account/{account_id}/orders"

    def order(self, order_id: str) -> str:
        return f"{self.root}/order/{order_id}"

    def finalize(self, order_id: str) -> str:
        return f"{self.root}/order/{order_id}/finalize"

    def authorization(self, authz_id: str) -> str:
        return f"{self.root}/authz/{authz_id}"

    def challenge(self, challenge_id: str) -> str:
        return f"{self.root}/challenge/{challenge_id}"

    def certificate(self, cert_id: str) -> str:
        return f"{self.root}/cert/{cert_id}"

    def account_id_from_kid(self, kid: str) -> str | None:
        prefix = f"{self.root}/account/"
        if not kid.startswith(prefix):
            return None
        account_id = kid[len(prefix):]
        return account_id if account_id and "/" not in account_id else None
