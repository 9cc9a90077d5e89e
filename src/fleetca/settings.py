"""Typed settings, read from ``DATA_DIR/fleetca.toml``, then ``FLEETCA_*`` variables, then CLI flags.

Later sources win: a command-line flag overrides an environment variable, which
overrides the file. Nested groups use ``__`` in variable names, for example
``FLEETCA_VALIDATION__HTTP01_PORT=5002``.
"""

from __future__ import annotations

import contextvars
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

SETTINGS_FILE = "fleetca.toml"
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

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_host_port(value)
        return value

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


class Settings(BaseSettings):
    """All settings of one fleetca installation."""

    model_config = SettingsConfigDict(env_prefix="FLEETCA_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in DATA_DIR when unset")
    default_ca: str = "default"
    server: ServerSettings = ServerSettings()
    validation: ValidationSettings = ValidationSettings()
    lifetimes: LifetimeSettings = LifetimeSettings()

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

    @property
    def tls_certificate_path(self) -> Path:
        return self.data_dir / "tls" / "server.pem"

    @property
    def tls_key_path(self) -> Path:
        return self.data_dir / "tls" / "server.key"

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
        'default_ca = "default"\n\n'
        "[server]\n"
        'listen = "127.0.0.1:8443"\n'
        '# public_url = "https://acme.vendor.example"\n\n'
        "[validation]\n"
        "http01_port = 80\n"
        "tlsalpn01_port = 443\n"
        '# dns_resolver = "127.0.0.1:53"\n\n'
        "[lifetimes]\n"
        "order_hours = 24\n"
        "pending_authorization_hours = 24\n"
        "valid_authorization_hours = 168\n"
        "certificate_hours = 168\n"
    )
    return path
