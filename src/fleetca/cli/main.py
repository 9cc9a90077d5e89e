"""The operator command line: ``fleetca init``, ``fleetca serve`` and ``fleetca ca ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fleetca.ca.bootstrap import existing_state, initialize
from fleetca.ca.issuing import IssuingCaError
from fleetca.ca.publication import ensure_root_crl
from fleetca.ca.constraints import NameConstraints
from fleetca.cli.ca import ca_app
from fleetca.cli.eab import eab_app
from fleetca.cli.revocation import register as register_revocation_commands
from fleetca.clock import SystemClock
from fleetca.settings import load_settings, parse_host_port
from fleetca.signing.keys import KeyFileError
from fleetca.storage.database import migrate

app = typer.Typer(help="fleetca: an ACME CA for device fleets, issuing from technically constrained CAs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(ca_app, name="ca")
app.add_typer(eab_app, name="eab")
register_revocation_commands(app)

console = Console(stderr=True)
DEFAULT_DATA_DIR = Path("fleetca-data")
DEMO_DNS_SUFFIX = "devices.example.test"

DataDirOption = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Directory holding settings, keys and the database.")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@app.command()
def init(
    data_dir: Path = DataDirOption,
    ca: str = typer.Option("default", "--ca", help="Name of the first issuing CA; it appears in the ACME URL."),
    permit_dns: list[str] = typer.Option([], "--permit-dns", help="DNS suffix the issuing CA may certify "
                                         "(the name and all names below it). Repeat for several."),
    permit_ip: list[str] = typer.Option([], "--permit-ip", help="IP range in CIDR form the issuing CA may certify. "
                                        "Repeat for several. IP families without a range are excluded."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="SQLAlchemy database URL; "
                                               "SQLite in the data directory when omitted."),
) -> None:
    """Create a data directory with a private root CA and one constrained issuing CA."""
    try:
        constraints = NameConstraints.build(permit_dns, permit_ip)
        result = initialize(data_dir, ca, constraints, SystemClock().now(), database_url=database_url)
    except (ValueError, IssuingCaError, KeyFileError) as exc:
        _fail(str(exc))
        return
    console.print(f"created root CA        {result.root_path}")
    console.print(f"created issuing CA     {result.issuing_ca_path} ({constraints.describe()})")
    console.print(f"settings               {data_dir / 'fleetca.toml'}")
    console.print(f"start the server with  fleetca serve --data-dir {data_dir}")


@app.command()
def serve(
    data_dir: Path = DataDirOption,
    listen: Optional[str] = typer.Option(None, "--listen", help="HOST:PORT to serve ACME over HTTPS on "
                                         "(default 127.0.0.1:8443)."),
    public_url: Optional[str] = typer.Option(None, "--public-url", help="Base URL clients use, when it differs "
                                             "from https://LISTEN (behind a load balancer)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="SQLAlchemy database URL."),
    http01_port: Optional[int] = typer.Option(None, "--http01-port", help="Port http-01 validation connects to "
                                              "(default 80)."),
    tlsalpn01_port: Optional[int] = typer.Option(None, "--tlsalpn01-port", help="Port tls-alpn-01 validation "
                                                 "connects to (default 443)."),
    dns_resolver: Optional[str] = typer.Option(None, "--dns-resolver", help="HOST:PORT of the DNS resolver used "
                                               "for validation (default: the system's resolvers)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    http_listen: Optional[str] = typer.Option(None, "--http-listen", help="HOST:PORT to serve CRLs and OCSP over "
                                              "plain HTTP on (default 127.0.0.1:8080)."),
    http_public_url: Optional[str] = typer.Option(None, "--http-public-url", help="Base URL that certificates "
                                                  "name for CRLs and OCSP, when it differs from http://HTTP_LISTEN."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Server processes sharing the listeners and "
                                "the database; one per core uses every core."),
) -> None:
    """Serve ACME over HTTPS. An empty data directory gets a demo CA for devices.example.test first."""
    import uvicorn

    from fleetca.acme.app import build_context, create_app
    from fleetca.logs import configure_logging
    from fleetca.acme.context import AcmeContext
    from fleetca.revocation.listener import (
        CredentialRenewal,
        coalescing_protocol,
        listening_socket,
        run_workers,
        serve_all,
    )
    from fleetca.cli.opening import missing_database
    from fleetca.revocation.publisher import published_url_conflict
    from fleetca.revocation.routes import create_http_app
    from fleetca.signing.authority import issue_server_tls_certificate, server_certificate_covers

    configure_logging(log_level)
    if not existing_state(data_dir):
        console.print(f"{data_dir} is empty: creating a demo issuing CA for {DEMO_DNS_SUFFIX}")
        try:
            initialize(data_dir, "default", NameConstraints.build([DEMO_DNS_SUFFIX]), SystemClock().now(),
                       database_url=database_url)
        except (IssuingCaError, KeyFileError) as exc:
            _fail(str(exc))
    server: dict[str, str] = {"log_level": log_level}
    if listen:
        server["listen"] = listen
    if public_url:
        server["public_url"] = public_url
    if http_listen:
        server["http_listen"] = http_listen
    if http_public_url:
        server["http_public_url"] = http_public_url
    validation: dict[str, object] = {}
    for key, value in (("http01_port", http01_port), ("tlsalpn01_port", tlsalpn01_port),
                       ("dns_resolver", dns_resolver)):
        if value is not None:
            validation[key] = value
    try:
        settings = load_settings(data_dir, server=server, validation=validation or None, database_url=database_url)
        # A data directory copied without its settings would otherwise get a new, empty SQLite database.
        missing = missing_database(settings)
        if missing:
            _fail(missing)
        host, port = parse_host_port(settings.server.listen)
        tls_names = settings.tls_names()

        def renew_credentials() -> None:
            # The server's TLS certificate and the root CRL, each when it nears its end.
            now = SystemClock().now()
            if not server_certificate_covers(settings.tls_certificate_path, tls_names, now):
                settings.tls_certificate_path.parent.mkdir(exist_ok=True)
                issue_server_tls_certificate(tls_names, settings.root_certificate_path, settings.root_key_path,
                                             settings.tls_certificate_path, now)
            ensure_root_crl(settings, now)

        renew_credentials()
        renewal = CredentialRenewal(renew_credentials, settings.server.renewal_check_seconds)
        # Serving a data directory created by an older fleetca brings its schema up to date first.
        migrate(settings.resolved_database_url())
        ctx = build_context(settings)
    except (ValueError, KeyFileError) as exc:
        _fail(str(exc))
        return
    if not ctx.cas:
        _fail(f"no active issuing CA in {data_dir}; create one with `fleetca ca create`")
    conflict = published_url_conflict(ctx.database, ctx.cas, settings.server.http_base_url())
    if conflict:
        _fail(f"{conflict}; give every fleetca process on this database the same --http-public-url "
              "(server.http_public_url)")

    def make_configs(context: AcmeContext) -> list[uvicorn.Config]:
        acme_app = create_app(context)
        # No Server header: it would name the server software to every client.
        # The certificate file contains the key as well (see issue_server_tls_certificate).
        configs = [uvicorn.Config(acme_app, host=host, port=port, ssl_certfile=str(settings.tls_certificate_path),
                                  log_config=None, access_log=False,
                                  log_level=log_level, timeout_graceful_shutdown=5, http=coalescing_protocol(),
                                  server_header=False)]
        if settings.server.http_listen:
            # CRLs and OCSP go over plain HTTP on a second listener, without the ACME routes.
            http_host, http_port = parse_host_port(settings.server.http_listen)
            http_app = create_http_app(acme_app.state.revocation, extra_routes=acme_app.state.publication_routes)
            configs.append(uvicorn.Config(http_app, host=http_host, port=http_port,
                                          lifespan="off", log_config=None, access_log=False, log_level=log_level,
                                          timeout_graceful_shutdown=5, server_header=False))
        return configs

    if workers == 1:
        serve_all(make_configs(ctx), renewal=renewal)
        return

    # Each worker binds its own listening sockets with SO_REUSEPORT, so the
    # kernel spreads new connections over the workers; with one shared socket
    # the first worker to wake accepted a whole burst of connections. Workers
    # build their own database engines, because a connection must not cross a fork.
    ctx.database.dispose()
    addresses = [(host, port)]
    if settings.server.http_listen:
        addresses.append(parse_host_port(settings.server.http_listen))

    def worker() -> None:
        configure_logging(log_level)
        sockets = [listening_socket(address_host, address_port, reuse_port=True)
                   for address_host, address_port in addresses]
        serve_all(make_configs(build_context(settings)), sockets, renewal)

    raise typer.Exit(code=run_workers(workers, worker))


@app.command("db-upgrade")
def db_upgrade(data_dir: Path = DataDirOption,
               database_url: Optional[str] = typer.Option(None, "--database-url", help="SQLAlchemy database URL.")
               ) -> None:
    """Bring the database schema up to date; run it once before starting several servers on one database."""
    settings = load_settings(data_dir, database_url=database_url)
    migrate(settings.resolved_database_url())
    console.print("database schema is up to date")
