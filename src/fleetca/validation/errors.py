"""The error a failed challenge validation reports (RFC 8555 §8, §6.7)."""

from __future__ import annotations


class ValidationFailed(Exception):
    """Validation failed with an ACME problem type such as connection, dns, tls or incorrectResponse."""

    def __init__(self, problem_type: str, detail: str) -> None:
        super().__init__(f"{problem_type}: {detail}")
        self.problem_type = problem_type
        self.detail = detail
