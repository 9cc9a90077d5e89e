"""Order finalization: CSR checks and issuance (RFC 8555 §7.4).

The order moves ready -> processing with a conditional update, so of two
concurrent finalize requests exactly one signs. A rejected CSR leaves the order
ready, so the client can send a corrected one. A signer failure leaves it
invalid with an error, never stuck in processing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from starlette.requests import Request
from starlette.responses import Response

from fleetca.acme.accounts import new_id
from fleetca.acme.context import AcmeContext, emit_audit
from fleetca.acme.http import authenticate, json_response
from fleetca.acme.jws import b64url_decode, public_key_thumbprint
from fleetca.acme.lifecycle import problem_json
from fleetca.acme.orders import load_order
from fleetca.acme.problems import AcmeProblem, malformed
from fleetca.acme.urls import Urls
from fleetca.acme.views import order_json
from fleetca.ca.ca_profiles import DOMAIN_VALIDATED_POLICY, br_lifetime_cap
from fleetca.ca.csr import CsrRejected, check_csr_matches_order, load_csr
from fleetca.ca.key_policy import key_type_name
from fleetca.ca.lint import lint_certificate
from fleetca.ca.profiles import CertificateProfile
from fleetca.ca.registry import IssuingCa
from fleetca.domain import IssuedCertificate, Order
from fleetca.revocation import leaf_revocation_fields
from fleetca.signing.issuer import LeafRequest, Linter, SigningRefused

log = logging.getLogger("fleetca.issuance")

# Leaf certificates start this far in the past, so that a device whose clock is
# slightly behind accepts its new certificate at once.
BACKDATE = timedelta(hours=1)


def decode_csr(text: str) -> bytes:
    try:
        return b64url_decode(text, "csr")
    except AcmeProblem as exc:
        raise CsrRejected("'csr' is not valid base64url") from exc


def leaf_request(ctx: AcmeContext, ca: IssuingCa, order: Order, profile: CertificateProfile,
                 public_key: CertificatePublicKeyTypes, now: datetime) -> LeafRequest:
    """Describe the leaf certificate for ``order`` as its CA and profile shape it."""
    if order.not_before is not None:
        not_before = order.not_before
    elif order.not_after is not None:
        # Honour the requested notAfter exactly; backdate only as far as the profile's lifetime allows.
        not_before = max(now - BACKDATE, order.not_after - profile.lifetime)
    else:
        not_before = now - BACKDATE
    not_after = order.not_after or (not_before + profile.lifetime)
    not_after = min(not_after, ca.certificate.not_valid_after_utc)
    policy_oids: tuple[str, ...] = ()
    ca_issuers_url = None
    if ca.is_baseline:
        # BR §6.3.2 caps the validity by the date of issuance, whatever the profile sets.
        not_after = min(not_after, not_before + br_lifetime_cap(now))
        policy_oids = (DOMAIN_VALIDATED_POLICY.dotted_string,)
        http_base = ctx.settings.server.http_base_url()
        ca_issuers_url = f"{http_base}/pki/ca/{ca.name}.crt" if http_base else None
    serial_number = x509.random_serial_number()
    _, crl_url, ocsp_url = leaf_revocation_fields(ctx.settings, ca, profile, serial_number)
    return LeafRequest(public_key=public_key, identifiers=tuple(order.identifiers), not_before=not_before,
                       not_after=not_after, profile=profile, policy_oids=policy_oids, ca_issuers_url=ca_issuers_url,
                       serial_number=serial_number, crl_url=crl_url, ocsp_url=ocsp_url)


def make_linter(ca: IssuingCa) -> Linter:
    """Build the signer's linter: pkilint, with the CA/B server-auth rules for a baseline CA."""
    def lint(der: bytes) -> list[str]:
        return [str(f) for f in lint_certificate(der, serverauth_rules=ca.is_baseline)]
    return lint


async def finalize(request: Request, ctx: AcmeContext, ca: IssuingCa, urls: Urls) -> Response:
    auth = await authenticate(request, ctx, ca, urls, nonce_in_handler_transaction=True)
    assert auth.account is not None
    order_id = request.path_params["id"]
    payload = auth.payload()
    now = ctx.now()

    # The order must exist, belong to the account and be ready (§7.4).
    current = await load_order(ctx, order_id, auth.account.id, now)
    if current.status != "ready":
        raise AcmeProblem("orderNotReady", f"order is {current.status}, not ready; it cannot be finalized now")

    # Check the CSR before taking the order out of ready, so a refused CSR can be corrected.
    csr_text = payload.get("csr")
    if not isinstance(csr_text, str):
        raise malformed("finalize needs 'csr', the base64url DER of a PKCS#10 request")
    try:
        csr = load_csr(decode_csr(csr_text))
        check_csr_matches_order(csr, current.identifiers)
    except CsrRejected as exc:
        raise AcmeProblem("badCSR", str(exc)) from exc
    csr_key = csr.public_key()
    profile = ca.profiles.get(current.profile or ca.default_profile) or ca.profiles[ca.default_profile]
    key_type = key_type_name(csr_key)
    if key_type not in profile.key_types:
        raise AcmeProblem("badCSR", f"profile {profile.name} does not certify {key_type} keys; "
                                    f"use one of {', '.join(profile.key_types)}")
    csr_thumbprint = public_key_thumbprint(csr_key)
    async with ctx.database.transaction_async(durable=False) as repo:
        auth.record_nonce(repo)
        # If the order does not move, only the used nonce is committed, as it would be anyway.
        repo.commit_with_next_statement()
        if csr_thumbprint is None:
            started = repo.transition_order(order_id, "ready", "processing")
        else:
            started = repo.start_processing_order(order_id, ca.name, csr_thumbprint)
    if not started:
        if csr_thumbprint is not None:
            with ctx.database.read() as repo:
                if repo.find_account_by_key(ca.name, csr_thumbprint) is not None:
                    raise AcmeProblem("badCSR", "the CSR's public key is an account key; use a separate key")
        raise AcmeProblem("orderNotReady", "order is being finalized by another request")

    # Sign; any failure here must leave the order invalid rather than processing.
    try:
        request = leaf_request(ctx, ca, current, profile, csr_key, now)
        linter = make_linter(ca) if ca.lint_before_signing else None
        certificate = ca.signer.sign_leaf(request, lint=linter)
    except Exception as exc:
        detail = str(exc) if isinstance(exc, SigningRefused) else "signing failed with an internal error"
        log.exception("signing failed for order %s", order_id)
        error = problem_json("serverInternal", f"certificate was not issued: {detail}", 500)
        async with ctx.database.transaction_async(durable=True) as repo:
            repo.transition_order(order_id, "processing", "invalid", error=error)
            repo.audit(ctx.now(), "certificate.refused", ca.name, {"order": order_id, "detail": detail})
            failed = repo.get_order(order_id)
        assert failed is not None
        return json_response(order_json(failed, urls), 200, {"Location": urls.order(order_id)})

    issued = IssuedCertificate(
        id=new_id(), serial=format(certificate.serial_number, "x"), ca_name=ca.name, account_id=auth.account.id,
        order_id=order_id, der=certificate.public_bytes(serialization.Encoding.DER),
        not_before=certificate.not_valid_before_utc, not_after=certificate.not_valid_after_utc,
        profile=profile.name, revoked_at=None, revocation_reason=None, eab_key_id=auth.account.eab_key_id,
        crl_shard=leaf_revocation_fields(ctx.settings, ca, profile, certificate.serial_number)[0])
    audit_details = {"serial": issued.serial, "account": auth.account.id, "order": order_id,
                     "identifiers": [i.value for i in current.identifiers], "profile": profile.name,
                     "not_after": issued.not_after.isoformat()}
    # The only durable commit of a normal flow. SQLite's and PostgreSQL's logs
    # are written in order, so it also makes every earlier commit of the flow durable.
    async with ctx.database.transaction_async(durable=True) as repo:
        repo.add_certificate(issued, now)
        repo.defer_transition_order(order_id, "processing", "valid", certificate_id=issued.id)
        repo.audit(now, "certificate.issued", ca.name, audit_details)
    emit_audit("certificate.issued", ca.name, audit_details)
    current.status, current.certificate_id = "valid", issued.id
    return json_response(order_json(current, urls), 200, {"Location": urls.order(order_id)})
