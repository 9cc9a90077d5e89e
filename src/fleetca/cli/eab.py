"""``fleetca eab``: External Account Binding keys for an issuing CA."""

from __future__ import annotations

import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fleetca.ca.patterns import normalize_pattern, pattern_identifier
from fleetca.acme.jws import b64url_encode
from fleetca.cli.durations import parse_duration
from fleetca.clock import SystemClock
from fleetca.cli.opening import DatabaseUrlOption, open_data_dir

eab_app = typer.Typer(help="Manage External Account Binding keys.", no_args_is_help=True)
console = Console(stderr=True)
DEFAULT_DATA_DIR = Path("fleetca-data")
HMAC_KEY_BYTES = 32


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@eab_app.command("create")
def create(
    ca: str = typer.Option(..., "--ca", help="Issuing CA the key binds accounts to."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="fleetca data directory."),
    database_url: Optional[str] = DatabaseUrlOption,
    key_id: Optional[str] = typer.Option(None, "--key-id", help="Key id to use; random when omitted."),
    description: str = typer.Option("", "--description", help="Free text shown by `eab list`."),
    expires_in: Optional[str] = typer.Option(None, "--expires-in", help="Lifetime of the key, e.g. 12h or 30d."),
    max_accounts: Optional[int] = typer.Option(None, "--max-accounts", min=1,
                                               help="How many accounts may bind to the key; 1 makes it single-use."),
    preauthorize: list[str] = typer.Option([], "--preauthorize", help="Identifier pattern that accounts bound "
                                           "to this key get without a challenge: NAME, *.ZONE (one label "
                                           "below ZONE) or ip:CIDR. Repeat for several."),
) -> None:
    """Create an EAB key and print its id and HMAC key. The HMAC key is shown only this once."""
    from fleetca.ca.registry import load_issuing_cas

    now = SystemClock().now()
    try:
        lifetime = parse_duration(expires_in) if expires_in else None
        patterns = [normalize_pattern(p) for p in preauthorize]
    except ValueError as exc:
        _fail(str(exc))
        return
    settings, database = open_data_dir(data_dir, database_url)
    cas = load_issuing_cas(database, settings.data_dir)
    if ca not in cas:
        _fail(f"no active issuing CA named {ca!r}; see `fleetca ca list`")
    outside = [p for p in patterns if not cas[ca].constraints.permits(pattern_identifier(p))]
    if outside:
        _fail(f"patterns outside the constraints of CA {ca}: {', '.join(outside)}")
    # Hex, so that a key id never starts with "-" and passes as a command-line argument to clients.
    key_id = key_id or secrets.token_hex(16)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key_id):
        _fail(f"invalid key id {key_id!r}: use 1 to 64 characters of A-Z, a-z, 0-9, _ and -")
    hmac_key = os.urandom(HMAC_KEY_BYTES)
    with database.transaction() as repo:
        if repo.get_eab_key(key_id) is not None:
            _fail(f"EAB key {key_id!r} already exists")
        repo.add_eab_key(key_id=key_id, ca_name=ca, hmac_key=hmac_key, description=description, created_at=now,
                         expires_at=now + lifetime if lifetime is not None else None, max_accounts=max_accounts,
                         accounts_bound=0, revoked_at=None, preauthorized=patterns)
        repo.audit(now, "eab.created", ca, {"key_id": key_id, "max_accounts": max_accounts,
                                            "expires_in": expires_in, "preauthorized": patterns})
    # The two values go to standard output, one per line, for scripts; labels go to the terminal.
    console.print("key id, then HMAC key (base64url, shown once):")
    print(key_id)
    print(b64url_encode(hmac_key))


@eab_app.command("list")
def list_keys(
    ca: str = typer.Option(..., "--ca", help="Issuing CA whose keys to list."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="fleetca data directory."),
    database_url: Optional[str] = DatabaseUrlOption,
) -> None:
    """List the EAB keys of a CA, without their secrets."""
    _, database = open_data_dir(data_dir, database_url)
    with database.transaction() as repo:
        rows = repo.list_eab_keys(ca)
    table = Table("key id", "description", "created", "expires", "accounts", "revoked", "pre-authorized")
    for row in rows:
        limit = f"{row['accounts_bound']}/{row['max_accounts']}" if row["max_accounts"] else str(row["accounts_bound"])
        table.add_row(row["key_id"], row["description"], f"{row['created_at']:%Y-%m-%d %H:%M}",
                      f"{row['expires_at']:%Y-%m-%d %H:%M}" if row["expires_at"] else "-", limit,
                      f"{row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "-",
                      ", ".join(row["preauthorized"]) or "-")
    Console().print(table)


@eab_app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The EAB key id."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="fleetca data directory."),
    database_url: Optional[str] = DatabaseUrlOption,
    deactivate_accounts: bool = typer.Option(False, "--deactivate-accounts",
                                             help="Also deactivate every account bound to the key."),
) -> None:
    """Revoke an EAB key: it binds no new account and pre-authorizes nothing from now on."""
    now = SystemClock().now()
    _, database = open_data_dir(data_dir, database_url)
    with database.transaction() as repo:
        row = repo.get_eab_key(key_id)
        if row is None:
            _fail(f"no EAB key {key_id!r}")
            return
        revoked = repo.revoke_eab_key(key_id, now)
        account_ids = repo.account_ids_for_eab_key(key_id)
        if deactivate_accounts:
            for account_id in account_ids:
                repo.update_account(account_id, status="deactivated")
                repo.cancel_pending_work(account_id, {
                    "type": "urn:ietf:params:acme:error:unauthorized",
                    "detail": "account was deactivated by the operator", "status": 403})
        repo.audit(now, "eab.revoked", row["ca_name"], {"key_id": key_id, "accounts": len(account_ids),
                                                        "accounts_deactivated": deactivate_accounts})
    state = "revoked" if revoked else "was already revoked"
    console.print(f"EAB key {key_id} {state}; {len(account_ids)} account(s) bound to it"
                  + (", now deactivated" if deactivate_accounts else ""))
