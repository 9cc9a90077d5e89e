"""ACME Renewal Information (RFC 9773): the renewalInfo resource and newOrder "replaces".

Suggested windows are spread over the fleet: each certificate's window starts at
a point between one half and three quarters of its lifetime, chosen by a hash
of its serial, so certificates issued in the same minute renew over many hours
instead of all at once. A revoked certificate, or one that an operator moved
with ``fleetca renew-now``, gets a window that ends at that moment, which tells
clients to renew at their next check (RFC 9773 §4.2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime, timedelta

from cryptography import x509
from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme.context import AcmeContext
from fleetca.acme.http import json_response
from fleetca.acme.problems import AcmeProblem, malformed, method_not_allowed, not_found, unauthorized
from fleetca.acme.revocation import certificate_identifiers
from fleetca.acme.urls import Urls
from fleetca.acme.views import rfc3339
from fleetca.ca.registry import IssuingCa
from fleetca.domain import Identifier, IssuedCertificate
from fleetca.storage.repository import Repository

# The part of a certificate's lifetime in which its regular window starts and ends.
WINDOW_REGION = (0.5, 0.75)
# Width of a regular window, as a fraction of the lifetime: 7 hours for 7 days.
WINDOW_WIDTH = 1 / 24
# Width of a window that requests renewal now. It ends at the moment renewal became due.
IMMEDIATE_WIDTH = timedelta(minutes=1)
MAX_CERT_ID_LENGTH = 200


def renewal_info_url(urls: Urls) -> str:
    """Return the directory's "renewalInfo" URL; a certID path segment follows it."""
    return f"{urls.root}/renewal-info"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))


def serial_der_bytes(serial_number: int) -> bytes:
    """Return the contents of the serial's DER INTEGER, with a leading zero byte when the top bit is set."""
    return serial_number.to_bytes(serial_number.bit_length() // 8 + 1, "big")


def cert_id(key_identifier: bytes, serial_number: int) -> str:
    """Return the ARI certID: base64url(AKI keyIdentifier) "." base64url(serial)."""
    return f"{_b64url(key_identifier)}.{_b64url(serial_der_bytes(serial_number))}"


def parse_cert_id(text: str) -> tuple[bytes, int]:
    """Split a certID into (AKI keyIdentifier, serial number); raise malformed when it is not one.

    A serial sent without the leading zero byte that DER requires for a set top
    bit is read as the same positive number, because several deployed clients
    build the certID that way.
    """
    if len(text) > MAX_CERT_ID_LENGTH or text.count(".") != 1:
        raise malformed("a certID is base64url(keyIdentifier) '.' base64url(serial number)")
    key_part, serial_part = text.split(".")
    try:
        key_identifier = _b64url_decode(key_part)
        serial_bytes = _b64url_decode(serial_part)
    except (ValueError, binascii.Error) as exc:
        raise malformed("both parts of a certID must be base64url") from exc
    serial_number = int.from_bytes(serial_bytes, "big")
    if not key_identifier or serial_number <= 0:
        raise malformed("the certID has an empty key identifier or a serial number that is not positive")
    return key_identifier, serial_number


def spread_fraction(serial: str) -> float:
    """Return a number in [0, 1) that is fixed for the serial and uniform over many serials."""
    digest = hashlib.sha256(serial.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def suggested_window(certificate: IssuedCertificate) -> tuple[datetime, datetime]:
    """Return (start, end) of the certificate's suggested renewal window."""
    if certificate.revoked_at is not None:
        return certificate.revoked_at - IMMEDIATE_WIDTH, certificate.revoked_at

    lifetime = certificate.not_after - certificate.not_before
    width = lifetime * WINDOW_WIDTH
    earliest = certificate.not_before + lifetime * WINDOW_REGION[0]
    room = lifetime * (WINDOW_REGION[1] - WINDOW_REGION[0]) - width
    start = earliest + room * spread_fraction(certificate.serial)
    end = start + width

    if certificate.renew_from is not None and certificate.renew_from < end:
        return certificate.renew_from - IMMEDIATE_WIDTH, certificate.renew_from
    return start, end


def _aki_key_identifier(der: bytes) -> bytes | None:
    try:
        aki = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return None
    return aki.value.key_identifier


async def renewal_info(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    """Return the suggested window of one certificate (GET, unauthenticated), with Retry-After on every response."""
    retry_after = {"Retry-After": str(ctx.settings.ari.retry_after_seconds)}
    try:
        if request.method != "GET":
            raise method_not_allowed("renewalInfo is read with GET", allow="GET")
        key_identifier, serial_number = parse_cert_id(request.path_params["cert_id"])

        # The certID must name a certificate of this issuing CA, by its key identifier and serial.
        ca_key_identifier = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        async with ctx.database.transaction_async(durable=True) as repo:
            issued = repo.get_certificate_by_serial(format(serial_number, "x"))
        if issued is None or issued.ca_name != ca.name or key_identifier != ca_key_identifier:
            raise not_found("no certificate of this CA has that certID")
    except AcmeProblem as problem:
        problem.headers.update(retry_after)
        raise

    start, end = suggested_window(issued)
    body = {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}
    return json_response(body, 200, retry_after)


def check_replaces(repo: Repository, account_id: str, replaces: object, identifiers: list[Identifier],
                   now: datetime) -> str:
    """Check a newOrder "replaces" value (RFC 9773 §5) and return the replaced certificate's id.

    The certificate must have been issued to the same account, share at least one
    identifier with the order, and not be replaced already by another order that
    is still pending, ready, processing or valid (409 alreadyReplaced).
    """
    if not isinstance(replaces, str):
        raise malformed("'replaces' must be a certID string")
    key_identifier, serial_number = parse_cert_id(replaces)
    issued = repo.get_certificate_by_serial(format(serial_number, "x"))
    if issued is None or _aki_key_identifier(issued.der) != key_identifier:
        raise malformed(f"'replaces' names no certificate issued here: {replaces}")
    if issued.account_id != account_id:
        raise unauthorized("'replaces' names a certificate issued to another account")

    ordered = {(i.type, i.value) for i in identifiers}
    certified = {(i.type, i.value) for i in certificate_identifiers(x509.load_der_x509_certificate(issued.der))}
    if not ordered & certified:
        raise malformed("the order shares no identifier with the certificate it replaces")

    if issued.replaced_by_order is not None:
        previous = repo.get_order(issued.replaced_by_order)
        still_live = previous is not None and (
            previous.status in ("processing", "valid")
            or (previous.status in ("pending", "ready") and previous.expires > now))
        if still_live:
            raise AcmeProblem("alreadyReplaced",
                              f"certificate {issued.serial} is already replaced by order {issued.replaced_by_order}")
    return issued.id


def mark_replaced(repo: Repository, certificate_id: str, order_id: str, now: datetime | None = None) -> None:
    """Record ``order_id`` as the replacement of the certificate, in the transaction that adds the order.

    Raises alreadyReplaced when a concurrent order marked it first, which rolls back
    that transaction.
    """
    if not repo.mark_certificate_replaced(certificate_id, order_id, now or datetime.now(UTC)):
        raise AcmeProblem("alreadyReplaced", "the certificate was replaced by another order meanwhile")
