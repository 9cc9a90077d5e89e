"""ACME problem documents (RFC 8555 §6.7, RFC 7807).

Domain code raises :class:`AcmeProblem`; only the HTTP layer turns it into an
``application/problem+json`` response. The detail text goes to the client, so it
must never carry internal state such as stack traces or SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

URN_PREFIX = "urn:ietf:params:acme:error:"

# Problem type -> HTTP status. The types are the RFC 8555 §6.7 registry plus the
# ones added by RFC 9773 (ARI) and draft-ietf-acme-profiles.
PROBLEM_STATUS: dict[str, int] = {
    "accountDoesNotExist": 400,
    "alreadyReplaced": 409,
    "alreadyRevoked": 400,
    "badCSR": 400,
    "badNonce": 400,
    "badPublicKey": 400,
    "badRevocationReason": 400,
    "badSignatureAlgorithm": 400,
    "caa": 403,
    "compound": 403,
    "connection": 400,
    "dns": 400,
    "externalAccountRequired": 400,
    "incorrectResponse": 400,
    "invalidContact": 400,
    "invalidProfile": 400,
    "malformed": 400,
    "orderNotReady": 403,
    "rateLimited": 429,
    "rejectedIdentifier": 400,
    "serverInternal": 500,
    "tls": 400,
    "unauthorized": 403,
    "unsupportedContact": 400,
    "unsupportedIdentifier": 400,
    "userActionRequired": 403,
}


@dataclass
class Subproblem:
    """A problem about one identifier inside a compound problem (RFC 8555 §6.7.1)."""

    type: str
    detail: str
    identifier: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"type": URN_PREFIX + self.type, "detail": self.detail, "identifier": self.identifier}


@dataclass
class AcmeProblem(Exception):
    """An ACME error meant for the client, carrying its problem type and HTTP status."""

    type: str
    detail: str
    status: int = 0
    subproblems: list[Subproblem] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in PROBLEM_STATUS:
            raise ValueError(f"unknown ACME problem type {self.type!r}")
        if not self.status:
            self.status = PROBLEM_STATUS[self.type]
        Exception.__init__(self, f"{self.type}: {self.detail}")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": URN_PREFIX + self.type, "detail": self.detail, "status": self.status}
        if self.subproblems:
            body["subproblems"] = [s.to_json() for s in self.subproblems]
        body.update(self.extra)
        return body


def malformed(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail)


def unauthorized(detail: str, status: int = 0) -> AcmeProblem:
    return AcmeProblem("unauthorized", detail, status=status)


def not_found(detail: str) -> AcmeProblem:
    # RFC 8555 has no "not found" type; Boulder and Pebble send malformed with 404.
    return AcmeProblem("malformed", detail, status=404)


def method_not_allowed(detail: str, allow: str = "POST") -> AcmeProblem:
    """405 with the Allow header RFC 9110 §15.5.6 requires, listing the methods that do work."""
    return AcmeProblem("malformed", detail, status=405, headers={"Allow": allow})
