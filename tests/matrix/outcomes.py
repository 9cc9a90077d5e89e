"""What one verifier or TLS peer did with one certificate: a short code for the table, and the detail."""

from __future__ import annotations

from dataclasses import dataclass

OK = "ok"
# Rejected because a name is outside the CA's Name Constraints.
OUTSIDE = "outside-nc"
# Rejected because the CA's critical Name Constraints hold a form the verifier does not support.
UNSUPPORTED = "unsupported-nc"
# Chromium's error for a chain its verifier rejects without a more specific code.
CERT_INVALID = "cert-invalid"
# lighttpd failed to load the chain and did not start.
NOT_LOADED = "not-loaded"
# The TLS handshake failed before the client saw the chain.
HANDSHAKE_FAILED = "handshake-failed"
# Not attempted, because the server did not start.
NOT_RUN = "not-run"
# Anything else; never expected, so its detail shows up in the failing assertion.
OTHER = "other"

LEGEND = {
    OK: "verified; over HTTPS, the page body arrived",
    OUTSIDE: "rejected: a name is outside the issuing CA's Name Constraints",
    UNSUPPORTED: "rejected: the issuing CA's critical Name Constraints hold a directoryName, which it does "
                 "not support",
    CERT_INVALID: "Chromium rejected the chain with net::ERR_CERT_INVALID",
    NOT_LOADED: "lighttpd failed to load the chain at start-up",
    HANDSHAKE_FAILED: "the TLS handshake failed on the server side",
    NOT_RUN: "not attempted: the server did not start",
    OTHER: "any other result (see the details)",
}


@dataclass(frozen=True)
class Outcome:
    code: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


def first_line_with(text: str, *needles: str) -> str:
    """The first line of ``text`` that contains any of ``needles``, else its last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if any(needle.lower() in line.lower() for needle in needles):
            return line
    return lines[-1] if lines else ""
