"""The problem type table against the registries of RFC 8555 §6.7, RFC 9773 and draft-ietf-acme-profiles."""

from __future__ import annotations

import pytest

from fleetca.acme.problems import PROBLEM_STATUS, AcmeProblem, Subproblem

# RFC 8555 §6.7 table, in the RFC's order.
RFC8555_TYPES = [
    "accountDoesNotExist", "alreadyRevoked", "badCSR", "badNonce", "badPublicKey", "badRevocationReason",
    "badSignatureAlgorithm", "caa", "compound", "connection", "dns", "externalAccountRequired",
    "incorrectResponse", "invalidContact", "malformed", "orderNotReady", "rateLimited", "rejectedIdentifier",
    "serverInternal", "tls", "unauthorized", "unsupportedContact", "unsupportedIdentifier", "userActionRequired",
]


def test_problem_table_covers_rfc_registry() -> None:
    missing = [t for t in RFC8555_TYPES if t not in PROBLEM_STATUS]
    assert missing == []


def test_problem_table_has_only_registered_types() -> None:
    extra = set(PROBLEM_STATUS) - set(RFC8555_TYPES)
    assert extra == {"alreadyReplaced", "invalidProfile"}


@pytest.mark.parametrize(("problem_type", "status"), [
    ("badNonce", 400), ("unauthorized", 403), ("orderNotReady", 403), ("rateLimited", 429),
    ("serverInternal", 500), ("alreadyReplaced", 409),
])
def test_problem_status(problem_type: str, status: int) -> None:
    assert AcmeProblem(problem_type, "x").status == status


def test_problem_json_with_subproblems() -> None:
    problem = AcmeProblem("rejectedIdentifier", "refused",
                          subproblems=[Subproblem("rejectedIdentifier", "outside", {"type": "dns", "value": "a.b"})])
    body = problem.to_json()
    assert body["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
    assert body["status"] == 400
    assert body["subproblems"][0]["identifier"] == {"type": "dns", "value": "a.b"}


def test_unknown_problem_type_raises() -> None:
    with pytest.raises(ValueError):
        AcmeProblem("notAType", "x")
