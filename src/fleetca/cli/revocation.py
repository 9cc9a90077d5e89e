"""``fleetca revoke``, ``fleetca renew-now`` and ``fleetca crl``: revocation and renewal for a fleet."""

from __future__ import annotations

import getpass
from datetime import timedelta
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fleetca.cli.durations import parse_duration
from fleetca.clock import SystemClock
from fleetca.revocation.operator import (
    OPERATOR_REASONS,
    Selection,
    SelectionError,
    normalize_serial,
    reason_code,
    renew_now,
    revoke,
)
from fleetca.cli.opening import DatabaseUrlOption, open_data_dir
from fleetca.signing.keys import KeyFileError

crl_app = typer.Typer(help="Publish and inspect the CRL shards.", no_args_is_help=True)
console = Console(stderr=True)
DEFAULT_DATA_DIR = Path("fleetca-data")
DataDirOption = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Directory holding settings, keys and the database.")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def parse_spread(text: str) -> timedelta:
    """Parse "0", "90s", "30m", "2h" or "1d"."""
    try:
        return parse_duration(text, units="smhd", allow_zero=True)
    except ValueError as exc:
        raise SelectionError(str(exc)) from None


def _selection(ca: str | None, profile: str | None, eab_key: str | None, account: str | None,
               serials: list[str], serials_file: Path | None) -> Selection:
    chosen = [normalize_serial(s) for s in serials]
    if serials_file is not None:
        try:
            lines = serials_file.read_text().split()
        except OSError as exc:
            raise SelectionError(f"cannot read {serials_file}: {exc.strerror}") from exc
        chosen += [normalize_serial(line) for line in lines]
    return Selection(ca_name=ca, profile=profile, eab_key_id=eab_key, account_id=account,
                     serials=tuple(chosen) if serials or serials_file is not None else None)


ReasonOption = typer.Option(..., "--reason", help=f"Revocation reason: {', '.join(OPERATOR_REASONS)}.")


def revoke_command(
    data_dir: Path = DataDirOption,
    database_url: Optional[str] = DatabaseUrlOption,
    serial: list[str] = typer.Option([], "--serial", help="Serial in hexadecimal. Repeat for several."),
    serials_file: Optional[Path] = typer.Option(None, "--serials-file", help="File of serials, one per line."),
    account: Optional[str] = typer.Option(None, "--account", help="Every certificate of this ACME account id."),
    eab_key: Optional[str] = typer.Option(None, "--eab-key", help="Every certificate of accounts bound to this "
                                          "EAB key id."),
    ca: Optional[str] = typer.Option(None, "--ca", help="Only certificates of this issuing CA."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Only certificates of this profile."),
    all_of_ca: bool = typer.Option(False, "--all", help="Confirm revoking every certificate of --ca when no other "
                                   "criterion is given."),
    reason: str = ReasonOption,
) -> None:
    """Revoke unexpired certificates chosen by serial, account, EAB key, CA or profile (criteria combine)."""
    from fleetca.logs import configure_logging

    configure_logging("info")
    try:
        selection = _selection(ca, profile, eab_key, account, serial, serials_file)
        code = reason_code(reason)
    except SelectionError as exc:
        _fail(str(exc))
        return
    only_ca = ca is not None and Selection(ca_name=ca) == selection
    if only_ca and not all_of_ca:
        _fail(f"this revokes every certificate of issuing CA {ca}; add --all to confirm")
    settings, database = open_data_dir(data_dir, database_url)
    try:
        result = revoke(database, selection, code, SystemClock().now(), getpass.getuser())
        console.print(f"revoked {len(result.revoked)} of {result.matched} matching unexpired, unrevoked "
                      f"certificate(s); running servers publish the CRL shards within "
                      f"{settings.crl.check_seconds:g} s, and fleetca's OCSP responder reports the revocation "
                      "at once")
    except SelectionError as exc:
        _fail(str(exc))
    finally:
        database.dispose()


def renew_now_command(
    data_dir: Path = DataDirOption,
    database_url: Optional[str] = DatabaseUrlOption,
    serial: list[str] = typer.Option([], "--serial", help="Serial in hexadecimal. Repeat for several."),
    serials_file: Optional[Path] = typer.Option(None, "--serials-file", help="File of serials, one per line."),
    account: Optional[str] = typer.Option(None, "--account", help="Every certificate of this ACME account id."),
    eab_key: Optional[str] = typer.Option(None, "--eab-key", help="Every certificate of accounts bound to this "
                                          "EAB key id."),
    ca: Optional[str] = typer.Option(None, "--ca", help="Every certificate of this issuing CA."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Every certificate of this profile."),
    over: str = typer.Option("0", "--over", help="Spread the new windows over this long (e.g. 2h) instead of "
                             "ending them all now."),
) -> None:
    """Move the ARI renewal window of the chosen certificates to now, so ARI clients renew at their next check."""
    from fleetca.logs import configure_logging

    configure_logging("warning")
    try:
        selection = _selection(ca, profile, eab_key, account, serial, serials_file)
        spread = parse_spread(over)
    except SelectionError as exc:
        _fail(str(exc))
        return
    settings, database = open_data_dir(data_dir, database_url)
    try:
        changed = renew_now(database, selection, SystemClock().now(), getpass.getuser(), spread)
    except SelectionError as exc:
        _fail(str(exc))
        return
    finally:
        database.dispose()
    when = "now" if not spread else f"between now and {over} from now"
    console.print(f"{changed} certificate(s) now suggest renewal {when}; clients see it at their next "
                  f"renewalInfo check (Retry-After {settings.ari.retry_after_seconds} s)")


@crl_app.command("publish")
def crl_publish(
    data_dir: Path = DataDirOption,
    database_url: Optional[str] = DatabaseUrlOption,
    force: bool = typer.Option(False, "--force", help="Sign every shard anew, not only the due ones."),
    wait: float = typer.Option(30.0, "--wait", help="Seconds to keep trying while another process holds the "
                               "publisher lease."),
    http_public_url: Optional[str] = typer.Option(None, "--http-public-url", help="Base URL that certificates "
                                                  "name for CRLs, as given to the servers."),
) -> None:
    """Publish the due CRL shards now, taking the publisher lease from the running servers' schedule."""
    import time

    from fleetca.ca.registry import load_issuing_cas
    from fleetca.revocation.publisher import CrlPublisher

    server = {"http_public_url": http_public_url} if http_public_url else None
    settings, database = open_data_dir(data_dir, database_url, server=server)
    if settings.server.http_base_url() is None:
        database.dispose()
        _fail("no plain-HTTP URL is configured; set server.http_public_url or server.http_listen")
    deadline = time.monotonic() + wait
    try:
        publisher = CrlPublisher(settings, database, load_issuing_cas(database, data_dir), SystemClock())
        # Running servers take the lease for a moment every few seconds, so a retry soon succeeds.
        while (published := publisher.publish(force=force)) is None and time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyFileError as exc:
        _fail(str(exc))
        return
    finally:
        database.dispose()
    if published is None:
        _fail(f"another fleetca process held the CRL publisher lease for {wait:g} s; try again later")
        return
    console.print(f"published {len(published)} CRL shard(s)")
    if publisher.skipped_urls:
        published_at = sorted(set(publisher.skipped_urls.values()))[0]
        _fail(f"{len(publisher.skipped_urls)} CRL shard(s) were left alone, because they are published at another "
              f"URL ({published_at}) than this command would name; pass the servers' --http-public-url")


@crl_app.command("status")
def crl_status(data_dir: Path = DataDirOption, ca: Optional[str] = typer.Option(None, "--ca"),
               database_url: Optional[str] = DatabaseUrlOption) -> None:
    """List the published shards with their CRL number, thisUpdate and nextUpdate."""
    settings, database = open_data_dir(data_dir, database_url)
    table = Table("CA", "shard", "number", "thisUpdate", "nextUpdate")
    with database.transaction() as repo:
        names = [ca] if ca else [row["name"] for row in repo.list_issuing_cas()]
        for name in names:
            for shard, (number, this_update, next_update) in sorted(repo.crl_shard_states(name).items()):
                table.add_row(name, str(shard), str(number), this_update.isoformat(), next_update.isoformat())
    database.dispose()
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add these commands to the top-level ``fleetca`` command."""
    app.command("revoke")(revoke_command)
    app.command("renew-now")(renew_now_command)
    app.add_typer(crl_app, name="crl")
