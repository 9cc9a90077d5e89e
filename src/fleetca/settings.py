"""Typed settings, read from ``DATA_DIR/fleetca.toml``, then ``FLEETCA_*`` variables, then CLI flags.

Later sources win: a command-line flag overrides an environment variable, which
overrides the file. Nested groups use ``__`` in variable names, for example
``FLEETCA_VALIDATION__HTTP01_PORT=5002``.
"""

from __future__ import annotations

import contextvars
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

SETTINGS_FILE = "fleetca.toml"
# Listen addresses that mean every address of the machine, not a name clients use.
WILDCARD_ADDRESSES = ("0.0.0.0", "::")
_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("fleetca_toml_path", default=None)


def parse_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """Split "HOST:PORT" or "[v6]:PORT"; raise ValueError with the expected form."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if sep else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"{value!r} has no port; expected HOST:PORT")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port in {value!r}; expected HOST:PORT with a port from 1 to 65535")
    return host, int(port_text)


class ServerSettings(BaseModel):
    listen: str = "127.0.0.1:8443"
    public_url: str | None = Field(
        default=None, description="Base URL clients use, e.g. https://acme.vendor.example; defaults to https://LISTEN")
    log_level: str = "info"
    http_listen: str | None = Field(
        default="127.0.0.1:8080",
        description="HOST:PORT of the plain-HTTP listener that serves CRLs and OCSP; None turns it off")
    http_public_url: str | None = Field(
        default=None,
        description="Base URL that certificates name for CRLs and OCSP, e.g. http://pki.vendor.example; "
                    "defaults to http://HTTP_LISTEN. Every process on one database must use the same value.")
    renewal_check_seconds: float = Field(
        default=3600, gt=0, le=86400,
        description="How often a running server checks whether its TLS certificate or the root CRL nears its end")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("http_listen")
    @classmethod
    def _check_http_listen(cls, value: str | None) -> str | None:
        if value:
            parse_host_port(value)
        return value or None

    @field_validator("http_public_url")
    @classmethod
    def _check_http_public_url(cls, value: str | None) -> str | None:
        # RFC 5280 §4.2.1.13 and the Baseline Requirements want CRLs and OCSP over
        # plain HTTP, so that checking a certificate does not depend on TLS.
        if value and not value.startswith("http://"):
            raise ValueError(f"http_public_url must start with http://, not {value!r}")
        return value.rstrip("/") if value else None

    def http_base_url(self) -> str | None:
        """Base URL for CRL and OCSP pointers, or None when there is no plain-HTTP listener."""
        if self.http_public_url:
            return self.http_public_url
        if not self.http_listen:
            return None
        host, port = parse_host_port(self.http_listen)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = parse_host_port(self.listen)
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{port}"


class ValidationSettings(BaseModel):
    http01_port: int = Field(default=80, ge=1, le=65535)
    tlsalpn01_port: int = Field(default=443, ge=1, le=65535)
    dns_resolver: str | None = Field(default=None, description="HOST:PORT of the resolver; the system's when unset")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_redirects: int = Field(default=10, ge=0, le=20)
    total_timeout_seconds: float = Field(default=60.0, gt=0, le=600, description=(
        "longest time one validation may take across its DNS lookups, addresses and redirects; a challenge "
        "in processing for longer than this (plus a margin) is taken up again by another process"))

    @field_validator("dns_resolver")
    @classmethod
    def _check_resolver(cls, value: str | None) -> str | None:
        if value:
            parse_host_port(value, default_port=53)
        return value


class LifetimeSettings(BaseModel):
    order_hours: float = Field(default=24, gt=0, le=24 * 30)
    pending_authorization_hours: float = Field(default=24, gt=0, le=24 * 30)
    valid_authorization_hours: float = Field(default=24 * 7, gt=0, le=24 * 30)
    certificate_hours: float = Field(default=24 * 7, ge=1, le=24 * 398)

    @property
    def order(self) -> timedelta:
        return timedelta(hours=self.order_hours)

    @property
    def pending_authorization(self) -> timedelta:
        return timedelta(hours=self.pending_authorization_hours)

    @property
    def valid_authorization(self) -> timedelta:
        return timedelta(hours=self.valid_authorization_hours)

    @property
    def certificate(self) -> timedelta:
        return timedelta(hours=self.certificate_hours)


# The maximum number of CRL shards of an issuing CA. Shard numbers run from 0 to one less.
MAX_CRL_SHARDS = 4096


class CrlSettings(BaseModel):
    """CRL sharding and publication."""

    shards: int = Field(default=128, ge=1, le=MAX_CRL_SHARDS,
                        description="CRL shards per issuing CA for new certificates; existing ones keep theirs")
    validity_hours: float = Field(default=96, ge=1, le=240,
                                  description="nextUpdate minus thisUpdate; the Baseline Requirements allow 10 days")
    regenerate_hours: float = Field(default=6, gt=0, le=24 * 7,
                                    description="every shard is signed anew at least this often")
    check_seconds: float = Field(default=30, ge=1, le=600,
                                 description="how often each process looks for new revocations and due shards")

    @model_validator(mode="after")
    def _check_regenerate_before_expiry(self) -> "CrlSettings":
        if self.regenerate_hours * 2 > self.validity_hours:
            raise ValueError("crl.regenerate_hours must be at most half of crl.validity_hours, so that a "
                             "failed run can be retried before relying parties see an expired CRL")
        return self

    @property
    def validity(self) -> timedelta:
        return timedelta(hours=self.validity_hours)

    @property
    def regenerate(self) -> timedelta:
        return timedelta(hours=self.regenerate_hours)


class OcspSettings(BaseModel):
    """The OCSP responder."""

    responder: Literal["ca", "delegated"] = Field(
        default="ca", description="'ca' signs responses with the issuing CA key; 'delegated' with a responder "
                                  "certificate that the issuing CA certifies and fleetca rotates")
    validity_hours: float = Field(default=72, ge=8, le=240,
                                  description="nextUpdate minus thisUpdate of a response (8 hours to 10 days)")
    max_age_seconds: int = Field(default=3600, ge=0, le=86400,
                                 description="Cache-Control max-age of a response, capped by its nextUpdate")
    cache_entries: int = Field(default=100_000, ge=0, le=10_000_000,
                               description="signed responses kept in memory per process for reuse")

    @property
    def validity(self) -> timedelta:
        return timedelta(hours=self.validity_hours)


class AriSettings(BaseModel):
    """ACME Renewal Information (RFC 9773)."""

    retry_after_seconds: int = Field(default=6 * 3600, ge=60, le=86400,
                                     description="Retry-After of renewalInfo responses, in seconds: how often clients check")


class Settings(BaseSettings):
    """All settings of one fleetca installation."""

    model_config = SettingsConfigDict(env_prefix="FLEETCA_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in DATA_DIR when unset")
    database_prepared_statements: bool = Field(
        default=True, description="Prepare PostgreSQL statements once per connection. Turn off behind a "
                                  "connection pooler that moves a client between server connections "
                                  "(PgBouncer in transaction or statement mode)")
    default_ca: str = "default"
    server: ServerSettings = ServerSettings()
    validation: ValidationSettings = ValidationSettings()
    lifetimes: LifetimeSettings = LifetimeSettings()
    crl: CrlSettings = CrlSettings()
    ocsp: OcspSettings = OcspSettings()
    ari: AriSettings = AriSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_path.get()
        if path is not None and path.exists():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fleetca.db').resolve()}"

    def _tls_stem(self) -> str:
        # One file pair per listen address, so that processes that share a
        # data directory but listen on different addresses never replace each
        # other's certificate.
        host, port = parse_host_port(self.server.listen)
        return "server-" + "".join(c if c.isalnum() or c in ".-" else "_" for c in host) + f"-{port}"

    @property
    def tls_certificate_path(self) -> Path:
        """Return the file with the ACME server's TLS certificate, the root after it, and its key."""
        return self.data_dir / "tls" / f"{self._tls_stem()}.pem"

    def tls_names(self) -> list[str]:
        """Return the host names and addresses the ACME server's TLS certificate must name.

        They are the public URL's host, which clients and a load balancer that
        passes TLS through connect to, and the listen address unless it is a
        wildcard. A wildcard address with no public URL falls back to the
        loopback names.
        """
        listen_host, _ = parse_host_port(self.server.listen)
        public_host = urlsplit(self.server.base_url()).hostname
        names: list[str] = []
        for host in (listen_host, public_host):
            if host and host not in names and host not in WILDCARD_ADDRESSES:
                names.append(host)
        return names or ["localhost"]

    @property
    def root_certificate_path(self) -> Path:
        return self.data_dir / "root.pem"

    @property
    def root_key_path(self) -> Path:
        return self.data_dir / "keys" / "root.key.pem"


def load_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Load settings for ``data_dir``; ``overrides`` are nested dicts from CLI flags."""
    token = _toml_path.set(data_dir / SETTINGS_FILE)
    try:
        return Settings(data_dir=data_dir, **{k: v for k, v in overrides.items() if v is not None})
    finally:
        _toml_path.reset(token)


def write_settings_file(data_dir: Path, database_url: str | None = None) -> Path:
    """Write a commented settings file with the defaults, for operators to edit."""
    path = data_dir / SETTINGS_FILE
    db_line = f'database_url = "{database_url}"' if database_url else '# database_url = "postgresql://user@host/db"'
    path.write_text(
        "# fleetca settings. FLEETCA_* environment variables and command-line flags override these.\n"
        f"{db_line}\n"
        "# Set to false behind PgBouncer in transaction or statement mode.\n"
        "# database_prepared_statements = true\n"
        'default_ca = "default"\n\n'
        "[server]\n"
        'listen = "127.0.0.1:8443"\n'
        '# public_url = "https://acme.vendor.example"\n'
        "# Plain-HTTP listener for CRLs and OCSP. Certificates name http_public_url, so every\n"
        "# fleetca process on one database must be given the same value.\n"
        '# http_listen = "127.0.0.1:8080"\n'
        '# http_public_url = "http://pki.vendor.example"\n\n'
        "[validation]\n"
        "http01_port = 80\n"
        "tlsalpn01_port = 443\n"
        '# dns_resolver = "127.0.0.1:53"\n\n'
        "[lifetimes]\n"
        "order_hours = 24\n"
        "pending_authorization_hours = 24\n"
        "valid_authorization_hours = 168\n"
        "certificate_hours = 168\n\n"
        "[crl]\n"
        "# shards = 128\n"
        "# validity_hours = 96\n"
        "# regenerate_hours = 6\n"
        "# check_seconds = 30\n\n"
        "[ocsp]\n"
        '# responder = "ca"\n'
        "# validity_hours = 72\n\n"
        "[ari]\n"
        "# retry_after_seconds = 21600\n"
    )
    return path
