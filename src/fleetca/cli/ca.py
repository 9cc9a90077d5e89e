"""``fleetca ca``: create, import, inspect and configure issuing CAs and their certificate profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from fleetca.ca.ca_profiles import BASELINE, CA_PROFILES, EMBEDDED, STRICT, IssuingCaSpec, br_lifetime_cap
from fleetca.ca.constraints import NameConstraints
from fleetca.ca.issuing import IssuingCaError, add_issuing_ca, import_issuing_ca
from fleetca.ca.key_policy import KEY_TYPES
from fleetca.ca.patterns import normalize_pattern, pattern_identifier
from fleetca.ca.profiles import EKU_CHOICES, CertificateProfile
from fleetca.cli.durations import parse_duration
from fleetca.clock import SystemClock
from fleetca.cli.opening import DatabaseUrlOption, open_data_dir
from fleetca.storage.database import Database

ca_app = typer.Typer(help="Manage issuing CAs.", no_args_is_help=True)
profile_app = typer.Typer(help="Manage the certificate profiles of an issuing CA.", no_args_is_help=True)
ca_app.add_typer(profile_app, name="profile")

console = Console(stderr=True)
DataDirOption = typer.Option(Path("fleetca-data"), "--data-dir", help="fleetca data directory.")

CA_PROFILE_HELP = (
    "Constraint profile of the CA certificate. "
    f"'{STRICT}' (default): critical Name Constraints with DNS and IP subtrees; OpenSSL, GnuTLS, wolfSSL and "
    "pyca/cryptography verify it, mbedTLS 2.28 refuses to load it. "
    f"'{BASELINE}': follows the CA/Browser Forum Baseline Requirements for a technically constrained TLS "
    "subordinate CA (critical constraints with a directoryName subtree, DV policy, CRL and AIA); pkilint's CA/B "
    "linter accepts it, but pyca/cryptography refuses a critical constraint holding a directoryName and mbedTLS "
    "2.28 refuses any critical Name Constraints. "
    f"'{EMBEDDED}': the same DNS and IP constraints marked non-critical, for the widest verifier support "
    "(mbedTLS-based device web servers load it); verifiers that understand the extension still enforce it."
)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def _load_row(database: Database, name: str) -> dict[str, Any]:
    with database.transaction() as repo:
        row = repo.get_issuing_ca(name)
    if row is None:
        _fail(f"no issuing CA named {name!r}; see `fleetca ca list`")
    assert row is not None
    return row


def _save_config(database: Database, name: str, config: dict[str, Any], event: str, details: dict[str, Any]) -> None:
    with database.transaction() as repo:
        repo.update_issuing_ca(name, config=config)
        repo.audit(SystemClock().now(), event, name, details)


@ca_app.command("create")
def create(
    name: str = typer.Argument(..., help="CA name; it appears in the ACME URL /acme/NAME/directory."),
    data_dir: Path = DataDirOption,
    database_url: Optional[str] = DatabaseUrlOption,
    permit_dns: list[str] = typer.Option([], "--permit-dns", help="Permitted DNS suffix. Repeat for several."),
    permit_ip: list[str] = typer.Option([], "--permit-ip", help="Permitted IP range (CIDR). Repeat for several."),
    profile: str = typer.Option(STRICT, "--profile", help=CA_PROFILE_HELP),
    organization: str = typer.Option("fleetca", "--organization", help="Organization name in the CA subject."),
    country: Optional[str] = typer.Option(None, "--country", help="Two-letter country code in the CA subject; "
                                          "required by the baseline profile."),
    external: bool = typer.Option(False, "--external", help="Write a CSR for an outside (public or partner) root "
                                  "to sign instead of signing with the private root; the CA serves nothing until "
                                  "`fleetca ca import`."),
    http_public_url: Optional[str] = typer.Option(None, "--http-public-url", help="Base URL (http://...) where "
                                                  "relying parties fetch the root CRL and certificate; the baseline "
                                                  "profile writes it into the CA certificate. Defaults to "
                                                  "server.http_public_url from the settings."),
) -> None:
    """Create an issuing CA, signed by the private root or, with --external, by an outside root."""
    settings, database = open_data_dir(data_dir, database_url)
    http_base = (http_public_url or settings.server.http_public_url or "").rstrip("/") or None
    if profile == BASELINE and http_base is None:
        _fail("the baseline profile writes the root's CRL and certificate URLs into the CA certificate; "
              "pass --http-public-url http://pki.vendor.example (or set server.http_public_url)")
    if http_base is not None and not http_base.startswith("http://"):
        _fail(f"--http-public-url must start with http://, not {http_base!r}")
    try:
        spec = IssuingCaSpec(
            name=name, profile=profile, organization=organization, country=country,
            constraints=NameConstraints.build(permit_dns, permit_ip),
            crl_url=f"{http_base}/pki/root.crl" if http_base and profile == BASELINE else None,
            ca_issuers_url=f"{http_base}/pki/root.crt" if http_base and profile == BASELINE else None,
        )
        lifetime = settings.lifetimes.certificate
        if profile == BASELINE:
            lifetime = min(lifetime, br_lifetime_cap(SystemClock().now()))
        path = add_issuing_ca(settings, database, spec, SystemClock().now(), external=external,
                              certificate_lifetime=lifetime)
    except (ValueError, IssuingCaError) as exc:
        _fail(str(exc))
        return
    if external:
        console.print(f"wrote CSR {path}; have the outside root sign it, then run "
                      f"`fleetca ca import {name} CERT.pem CHAIN.pem --data-dir {data_dir}`")
    else:
        console.print(f"created issuing CA {name} ({profile}, {spec.constraints.describe()}): {path}")
        console.print(f"ACME directory: {settings.server.base_url()}/acme/{name}/directory (restart servers)")


@ca_app.command("import")
def import_certificate(
    name: str = typer.Argument(..., help="The pending CA created with --external."),
    certificate: Path = typer.Argument(..., help="PEM certificate the outside root signed."),
    chain: Optional[Path] = typer.Argument(None, help="PEM chain up to and including the outside root."),
    data_dir: Path = DataDirOption,
    database_url: Optional[str] = DatabaseUrlOption,
) -> None:
    """Install the signed certificate of an external CA after checking key, CA flag, constraints, EKU and chain."""
    settings, database = open_data_dir(data_dir, database_url)
    try:
        cert = import_issuing_ca(settings, database, name, certificate.read_bytes(),
                                 chain.read_bytes() if chain else b"", SystemClock().now())
    except (OSError, IssuingCaError) as exc:
        _fail(str(exc))
        return
    console.print(f"imported {cert.subject.rfc4514_string()} issued by {cert.issuer.rfc4514_string()}; "
                  f"CA {name} is active (restart servers)")


@ca_app.command("list")
def list_cas(data_dir: Path = DataDirOption, database_url: Optional[str] = DatabaseUrlOption) -> None:
    """List the issuing CAs with their status, profile and constraints."""
    settings, database = open_data_dir(data_dir, database_url)
    with database.transaction() as repo:
        rows = repo.list_issuing_cas()
    table = Table("name", "status", "profile", "permitted DNS", "permitted IP", "directory")
    for row in rows:
        constraints = row["config"]["constraints"]
        table.add_row(row["name"], row["status"], row["config"].get("ca_profile", STRICT),
                      ", ".join(constraints["permitted_dns"]) or "-", ", ".join(constraints["permitted_ips"]) or "-",
                      f"{settings.server.base_url()}/acme/{row['name']}/directory")
    Console().print(table)


@ca_app.command("show")
def show(name: str, data_dir: Path = DataDirOption, database_url: Optional[str] = DatabaseUrlOption) -> None:
    """Print an issuing CA's settings as JSON, then its certificate (or pending CSR) as PEM."""
    _, database = open_data_dir(data_dir, database_url)
    row = _load_row(database, name)
    print(json.dumps({"name": row["name"], "status": row["status"], "config": row["config"]}, indent=2))
    print((row["certificate_pem"] or "") + (row["chain_pem"] or "") or row["csr_pem"], end="")


@ca_app.command("configure")
def configure(
    name: str,
    data_dir: Path = DataDirOption,
    database_url: Optional[str] = DatabaseUrlOption,
    external_account_required: Optional[bool] = typer.Option(
        None, "--external-account-required/--no-external-account-required",
        help="Require an External Account Binding for new accounts."),
    wildcards: Optional[bool] = typer.Option(None, "--wildcards/--no-wildcards", help="Allow wildcard names."),
    ip_identifiers: Optional[bool] = typer.Option(None, "--ip-identifiers/--no-ip-identifiers",
                                                  help="Allow IP address identifiers."),
    allow: Optional[list[str]] = typer.Option(None, "--allow", help="Allowed name pattern (NAME, *.ZONE for one "
                                              "label below ZONE, **.ZONE for any depth, ip:CIDR); replaces the "
                                              "list. Pass --allow '' to clear it."),
    deny: Optional[list[str]] = typer.Option(None, "--deny", help="Denied name pattern, same forms; replaces "
                                             "the list. Denied wins over allowed."),
    max_identifiers: Optional[int] = typer.Option(None, "--max-identifiers", min=1, max=1000,
                                                  help="Maximum identifiers in one order."),
    lint: Optional[bool] = typer.Option(None, "--lint/--no-lint", help="Lint every certificate with pkilint "
                                        "before the CA key signs it, and refuse it on any error."),
) -> None:
    """Change an issuing CA's issuance policy and settings; running servers pick them up when restarted."""
    _, database = open_data_dir(data_dir, database_url)
    row = _load_row(database, name)
    constraints = NameConstraints.from_json(row["config"]["constraints"])
    changes: dict[str, Any] = {}
    try:
        for key, value in (("external_account_required", external_account_required), ("allow_wildcards", wildcards),
                           ("allow_ip_identifiers", ip_identifiers), ("max_identifiers", max_identifiers),
                           ("lint", lint)):
            if value is not None:
                changes[key] = value
        for key, patterns in (("allowed_patterns", allow), ("denied_patterns", deny)):
            if patterns is not None:
                normalized = [normalize_pattern(p) for p in patterns if p]
                outside = [p for p in normalized if not constraints.permits(pattern_identifier(p))]
                if outside:
                    raise ValueError(f"patterns outside the CA's constraints: {', '.join(outside)}")
                changes[key] = normalized
    except ValueError as exc:
        _fail(str(exc))
    _save_config(database, name, {**row["config"], **changes}, "ca.configured", {"changes": changes})
    console.print(f"issuing CA {name}: {changes or 'no changes'}")


@profile_app.command("set")
def set_profile(
    ca: str = typer.Argument(..., help="Issuing CA name."),
    profile: str = typer.Argument(..., help="Profile name, as clients select it in newOrder."),
    data_dir: Path = DataDirOption,
    database_url: Optional[str] = DatabaseUrlOption,
    description: str = typer.Option("", "--description", help="Shown to clients in the directory's meta.profiles."),
    lifetime: str = typer.Option("7d", "--lifetime", help="Certificate lifetime in hours or days, e.g. 24h or 7d."),
    eku: list[str] = typer.Option(list(EKU_CHOICES), "--eku", help="serverAuth and/or clientAuth. Repeat."),
    key_type: list[str] = typer.Option(list(KEY_TYPES), "--key-type", help=f"Allowed CSR key types: "
                                       f"{', '.join(KEY_TYPES)}. Repeat."),
    common_name: Optional[bool] = typer.Option(None, "--common-name/--no-common-name",
                                               help="Copy the first DNS name into the subject CN; by default yes, "
                                               "except on a baseline CA, whose leaves carry no CN."),
    crl: bool = typer.Option(True, "--crl/--no-crl", help="Name the CRL shard in each certificate; only "
                             "profiles of 7 days or less may leave it out."),
    ocsp: bool = typer.Option(False, "--ocsp/--no-ocsp", help="Name the OCSP responder in each certificate."),
    default: bool = typer.Option(False, "--default", help="Use this profile when newOrder names none."),
) -> None:
    """Add or replace a certificate profile of an issuing CA."""
    _, database = open_data_dir(data_dir, database_url)
    row = _load_row(database, ca)
    config = dict(row["config"])
    try:
        duration = parse_duration(lifetime)
        if config.get("ca_profile") == BASELINE:
            cap = br_lifetime_cap(SystemClock().now())
            if duration > cap:
                raise ValueError(f"the Baseline Requirements allow at most {cap.days} days today")
            if common_name:
                raise ValueError("leaves of a baseline CA carry no CN (its directoryName constraint forbids one); "
                                 "pass --no-common-name")
        if common_name is None:
            common_name = config.get("ca_profile") != BASELINE
        new = CertificateProfile(name=profile, description=description or f"certificates valid for {lifetime}",
                                 lifetime=duration, eku=tuple(eku), key_types=tuple(key_type),
                                 common_name_from_first_name=common_name, crl_distribution_point=crl, ocsp=ocsp)
    except ValueError as exc:
        _fail(str(exc))
        return
    profiles = [p for p in config["profiles"] if p["name"] != profile] + [new.to_json()]
    config["profiles"] = profiles
    if default:
        config["default_profile"] = profile
    _save_config(database, ca, config, "ca.profile.set", {"profile": new.to_json(), "default": default})
    console.print(f"issuing CA {ca}: profile {profile} saved" + (" as the default" if default else ""))


@profile_app.command("remove")
def remove_profile(ca: str, profile: str, data_dir: Path = DataDirOption,
                   database_url: Optional[str] = DatabaseUrlOption) -> None:
    """Remove a certificate profile; the default profile cannot be removed."""
    _, database = open_data_dir(data_dir, database_url)
    row = _load_row(database, ca)
    config = dict(row["config"])
    if config.get("default_profile") == profile:
        _fail(f"{profile} is the default profile; make another one the default first")
    if not any(p["name"] == profile for p in config["profiles"]):
        _fail(f"issuing CA {ca} has no profile {profile!r}")
    config["profiles"] = [p for p in config["profiles"] if p["name"] != profile]
    _save_config(database, ca, config, "ca.profile.removed", {"profile": profile})
    console.print(f"issuing CA {ca}: profile {profile} removed")

