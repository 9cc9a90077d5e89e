"""Certificate revocation through ACME (RFC 8555 §7.6).

A revocation request is authorised when it is signed by the account that
obtained the certificate, by an account that has valid authorizations for all
of the certificate's identifiers, or by the certificate's own key (jwk form).
"""

from __future__ import annotations

from cryptography import x509
from jwcrypto import jwk
from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme.context import AcmeContext, emit_audit
from fleetca.acme.http import authenticate
from fleetca.acme.jws import b64url_decode
from fleetca.acme.problems import AcmeProblem, malformed, unauthorized
from fleetca.acme.urls import Urls
from fleetca.ca.registry import IssuingCa
from fleetca.domain import Identifier

# RFC 5280 §5.3.1 reasons a subscriber may give: unspecified, keyCompromise,
# affiliationChanged, superseded, cessationOfOperation. The others are for the CA.
ALLOWED_REASONS = (0, 1, 3, 4, 5)


def certificate_identifiers(cert: x509.Certificate) -> list[Identifier]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [Identifier("dns", n) for n in san.get_values_for_type(x509.DNSName)]
    names += [Identifier("ip", a.compressed) for a in san.get_values_for_type(x509.IPAddress)]
    return names


async def revoke_cert(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls, jwk_allowed=True)
    payload = auth.payload()
    der = b64url_decode(payload.get("certificate"), "certificate")
    reason = payload.get("reason")
    if reason is not None and (not isinstance(reason, int) or isinstance(reason, bool)):
        raise malformed("'reason' must be an integer revocation reason code")
    if reason is not None and reason not in ALLOWED_REASONS:
        raise AcmeProblem("badRevocationReason",
                          f"reason {reason} is not accepted; use one of {', '.join(map(str, ALLOWED_REASONS))}",
                          extra={"allowedReasons": list(ALLOWED_REASONS)})
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise malformed("'certificate' is not a DER-encoded X.509 certificate") from exc

    serial = format(cert.serial_number, "x")
    now = ctx.now()
    async with ctx.database.transaction_async(durable=True) as repo:
        issued = repo.get_certificate_by_serial(serial)
        if issued is None or issued.der != der or issued.ca_name != ca.name:
            raise AcmeProblem("malformed", "this certificate was not issued by this CA", status=404)

        # Who may revoke: the certificate key, the issuing account, or an account
        # with valid authorizations for every identifier in the certificate.
        if auth.account is None:
            if jwk.JWK.from_pyca(cert.public_key()).thumbprint() != auth.key.thumbprint():
                raise unauthorized("the JWS key is not the certificate's key")
            requester = "certificate-key"
        elif auth.account.id == issued.account_id:
            requester = auth.account.id
        else:
            for ident in certificate_identifiers(cert):
                wildcard = ident.value.startswith("*.")
                base = Identifier(ident.type, ident.value.removeprefix("*."))
                if repo.find_reusable_authorization(auth.account.id, base, wildcard, now) is None:
                    raise unauthorized("the account neither obtained this certificate nor has valid "
                                       f"authorizations for all of its identifiers ({ident.value} missing)")
            requester = auth.account.id

        if issued.revoked_at is not None or not repo.revoke_certificate(issued.id, now, reason):
            raise AcmeProblem("alreadyRevoked", f"certificate {serial} is already revoked")
        details = {"serial": serial, "reason": reason, "requester": requester}
        repo.audit(now, "certificate.revoked", ca.name, details)
    emit_audit("certificate.revoked", ca.name, details)
    return Response(status_code=200)

