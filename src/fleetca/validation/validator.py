"""Dispatch of challenge validation to the validator for each challenge type."""

from __future__ import annotations

from typing import Protocol

from fleetca.domain import Identifier
from fleetca.settings import ValidationSettings
from fleetca.validation.dns01 import Dns01Validator
from fleetca.validation.errors import ValidationFailed
from fleetca.validation.http01 import Http01Validator
from fleetca.validation.resolver import make_resolver
from fleetca.validation.tlsalpn01 import TlsAlpn01Validator

CHALLENGE_TYPES = ("http-01", "dns-01", "tls-alpn-01")


class ChallengeValidator(Protocol):
    async def validate(self, identifier: Identifier, token: str, key_authorization: str) -> None: ...


class Validator:
    """Validates challenges of every supported type with shared settings."""

    def __init__(self, settings: ValidationSettings) -> None:
        resolver = make_resolver(settings.dns_resolver, settings.timeout_seconds)
        self.by_type: dict[str, ChallengeValidator] = {
            "http-01": Http01Validator(resolver, settings.http01_port, settings.tlsalpn01_port,
                                       settings.timeout_seconds, settings.max_redirects),
            "dns-01": Dns01Validator(resolver),
            "tls-alpn-01": TlsAlpn01Validator(resolver, settings.tlsalpn01_port, settings.timeout_seconds),
        }

    async def validate(self, challenge_type: str, identifier: Identifier, token: str,
                       key_authorization: str) -> None:
        validator = self.by_type.get(challenge_type)
        if validator is None:
            raise ValidationFailed("malformed", f"challenge type {challenge_type!r} is not supported")
        await validator.validate(identifier, token, key_authorization)
