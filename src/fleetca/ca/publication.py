"""Publication of CA certificates and the root's CRL over plain HTTP (RFC 5280 §4.2.2.1, §4.2.1.13).

The baseline CA profile points its Authority Information Access and CRL
distribution point here, and so do leaf certificates of baseline CAs:

- ``/pki/root.crt``: the private root, DER (``application/pkix-cert``)
- ``/pki/root.crl``: the root's CRL, DER (``application/pkix-crl``)
- ``/pki/ca/NAME.crt``: an issuing CA certificate, DER
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fleetca.settings import Settings
from fleetca.signing.authority import sign_root_crl

log = logging.getLogger("fleetca.publication")
ROOT_CRL_FILE = "root.crl"
# The root CRL is signed anew when it has less than this left before nextUpdate.
ROOT_CRL_RENEW_BEFORE = timedelta(days=30)


def root_crl_path(settings: Settings) -> Path:
    return settings.data_dir / ROOT_CRL_FILE


def ensure_root_crl(settings: Settings, now: datetime) -> bool:
    """Sign a new root CRL when there is none or it nears its nextUpdate; True when one was signed.

    The CRL number is the signing time in seconds, so it increases across
    processes and restarts without shared state.
    """
    # NOTE: the root CRL lives in the data directory, not the database, so
    # machines behind one load balancer that re-sign it at different times
    # serve different CRLs (docs/operations.md, "Several machines").
    path = root_crl_path(settings)
    if path.exists():
        current = x509.load_der_x509_crl(path.read_bytes())
        next_update = current.next_update_utc
        if next_update is not None and next_update - now > ROOT_CRL_RENEW_BEFORE:
            return False
    crl = sign_root_crl(settings.root_certificate_path, settings.root_key_path, int(now.timestamp()), now)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    temporary.replace(path)
    log.info("signed the root CRL", extra={"event": {"crl_number": int(now.timestamp())}})
    return True


def publication_routes(settings: Settings, ca_certificates: dict[str, x509.Certificate]) -> list[Route]:
    """Routes serving the root certificate, the root CRL and each issuing CA certificate."""
    root_der = x509.load_pem_x509_certificate(settings.root_certificate_path.read_bytes()).public_bytes(
        serialization.Encoding.DER)

    async def root_certificate(request: Request) -> Response:
        return Response(root_der, media_type="application/pkix-cert")

    async def root_crl(request: Request) -> Response:
        path = root_crl_path(settings)
        if not path.exists():
            return Response("the root CRL has not been signed yet\n", status_code=404, media_type="text/plain")
        return Response(path.read_bytes(), media_type="application/pkix-crl")

    async def issuing_ca_certificate(request: Request) -> Response:
        certificate = ca_certificates.get(request.path_params["name"])
        if certificate is None:
            return Response("no such issuing CA\n", status_code=404, media_type="text/plain")
        return Response(certificate.public_bytes(serialization.Encoding.DER), media_type="application/pkix-cert")

    return [
        Route("/pki/root.crt", root_certificate, methods=["GET", "HEAD"]),
        Route("/pki/root.crl", root_crl, methods=["GET", "HEAD"]),
        Route("/pki/ca/{name}.crt", issuing_ca_certificate, methods=["GET", "HEAD"]),
    ]
