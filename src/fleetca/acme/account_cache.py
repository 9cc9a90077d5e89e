"""Accounts kept in memory between the requests of one process, so a kid POST need not read its account.

A cached account can be out of date, because another process may have
deactivated it or changed its key. A request served from the cache therefore
records its nonce with a statement that also checks the account's status and
key thumbprint in the database (``Repository.defer_use_nonce``). A request
that writes does so in the transaction of its change. When the check fails,
the request is rejected with unauthorized, its changes roll back, and the
entry is dropped, so the client's next request reads the account again. A
signature that does not verify with a cached key is checked once more against
the stored key before it is rejected.
"""

from __future__ import annotations

from collections import OrderedDict

from fleetca.domain import Account

# The requests of one device's flow arrive within seconds. The bound keeps the
# accounts of the flows in progress and keeps memory flat however many devices enroll.
MAX_CACHED_ACCOUNTS = 1024


class AccountCache:
    """A least-recently-used map from account id to the account as last read or written by this process."""

    def __init__(self, max_size: int = MAX_CACHED_ACCOUNTS) -> None:
        self._max_size = max_size
        self._accounts: OrderedDict[str, Account] = OrderedDict()
        # Accounts that this process created and has made no authorization for since.
        self._without_authorizations: set[str] = set()

    def get(self, account_id: str) -> Account | None:
        account = self._accounts.get(account_id)
        if account is not None:
            self._accounts.move_to_end(account_id)
        return account

    def put(self, account: Account, *, created: bool = False) -> None:
        """Keep ``account``; ``created`` marks an account that this process has just created."""
        self._accounts[account.id] = account
        self._accounts.move_to_end(account.id)
        if created:
            self._without_authorizations.add(account.id)
        if len(self._accounts) > self._max_size:
            evicted, _ = self._accounts.popitem(last=False)
            self._without_authorizations.discard(evicted)

    def first_authorizations(self, account_id: str) -> bool:
        """Tell whether this process created the account and has made no authorization for it, and forget it.

        The caller is about to make the account's first authorizations. Another
        process behind the same database may have made some already, so use
        this only where that changes no outcome, such as skipping the search
        for an authorization to reuse.
        """
        if account_id in self._without_authorizations:
            self._without_authorizations.discard(account_id)
            return True
        return False

    def discard(self, account_id: str) -> None:
        self._accounts.pop(account_id, None)
        self._without_authorizations.discard(account_id)

    def __len__(self) -> int:
        return len(self._accounts)
