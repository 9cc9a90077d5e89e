"""The OCSP responder without a server: statuses, signatures, caching and delegated responders."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from fleetca.revocation.responder import OcspResponder
from fleetca.signing.ocsp import RESPONDER_LIFETIME
from tests.revocation.conftest import LocalCa, open_local_ca
from tests.revocation.pkilint_run import ocsp_findings


def make_responder(local: LocalCa) -> OcspResponder:
    return OcspResponder(local.settings, local.database, {local.ca.name: local.ca}, local.clock)


def request_for(local: LocalCa, serial: str, algorithm: hashes.HashAlgorithm = hashes.SHA1()) -> bytes:
    # Built by hash so that it works for serials without a stored DER certificate.
    from fleetca.signing.ocsp import issuer_hashes

    name_hash, key_hash = issuer_hashes(local.ca.certificate, algorithm)
    request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, int(serial, 16),
                                                                algorithm).build()
    return request.public_bytes(serialization.Encoding.DER)


def verify_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    public_key = signer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    public_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm))


def test_statuses_good_revoked_unknown(local_ca: LocalCa, tmp_path: Path) -> None:
    good = local_ca.add_certificate()
    revoked = local_ca.add_certificate()
    local_ca.revoke(revoked, reason=1)
    responder = make_responder(local_ca)
    cases = {
        "ok/good": (good.serial, ocsp.OCSPCertStatus.GOOD),
        "ok/revoked": (revoked.serial, ocsp.OCSPCertStatus.REVOKED),
        "ok/never-issued": ("123456789abcdef", ocsp.OCSPCertStatus.UNKNOWN),
    }
    for name, (serial, expected) in cases.items():
        answer = responder.respond("default", request_for(local_ca, serial))
        response = ocsp.load_der_ocsp_response(answer.der)
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, name
        assert response.certificate_status == expected, name
        assert response.serial_number == int(serial, 16), name
        assert response.next_update_utc - response.this_update_utc <= timedelta(days=10), name
        assert response.responder_key_hash is not None, name
        verify_signature(response, local_ca.ca.certificate)
        assert ocsp_findings(answer.der, tmp_path) == [], name
    response = ocsp.load_der_ocsp_response(responder.respond("default", request_for(local_ca, revoked.serial)).der)
    assert response.revocation_reason == x509.ReasonFlags.key_compromise


def test_sha256_cert_id_is_echoed(local_ca: LocalCa) -> None:
    good = local_ca.add_certificate()
    answer = make_responder(local_ca).respond("default", request_for(local_ca, good.serial, hashes.SHA256()))
    response = ocsp.load_der_ocsp_response(answer.der)
    assert isinstance(response.hash_algorithm, hashes.SHA256)
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD


def test_error_responses(local_ca: LocalCa) -> None:
    other = open_local_ca(local_ca.settings.data_dir.parent / "other")
    good = local_ca.add_certificate()
    responder = make_responder(local_ca)
    cases = {
        "fail/garbage": ("default", b"\x30\x03\x02\x01\x01", ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
        "fail/other-issuer": ("default", request_for(other, good.serial), ocsp.OCSPResponseStatus.UNAUTHORIZED),
        "fail/unknown-ca": ("nosuchca", request_for(local_ca, good.serial), ocsp.OCSPResponseStatus.UNAUTHORIZED),
    }
    for name, (ca_name, der, expected) in cases.items():
        answer = responder.respond(ca_name, der)
        assert not answer.successful, name
        assert ocsp.load_der_ocsp_response(answer.der).response_status == expected, name
    other.database.dispose()


def test_cached_response_reused_until_half_validity(local_ca: LocalCa) -> None:
    good = local_ca.add_certificate()
    responder = make_responder(local_ca)
    first = responder.respond("default", request_for(local_ca, good.serial))

    local_ca.clock.advance(local_ca.settings.ocsp.validity / 2 - timedelta(minutes=1))
    assert responder.respond("default", request_for(local_ca, good.serial)).der == first.der

    local_ca.clock.advance(timedelta(minutes=2))
    renewed = responder.respond("default", request_for(local_ca, good.serial))
    assert renewed.der != first.der
    assert renewed.this_update is not None and first.this_update is not None
    assert renewed.this_update > first.this_update


def test_revocation_replaces_cached_good(local_ca: LocalCa) -> None:
    certificate = local_ca.add_certificate()
    responder = make_responder(local_ca)
    good = ocsp.load_der_ocsp_response(responder.respond("default", request_for(local_ca, certificate.serial)).der)
    assert good.certificate_status == ocsp.OCSPCertStatus.GOOD

    local_ca.revoke(certificate, reason=None)
    answer = responder.respond("default", request_for(local_ca, certificate.serial))

    revoked = ocsp.load_der_ocsp_response(answer.der)
    assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is None


@pytest.fixture
def delegated_ca(tmp_path: Path):  # type: ignore[no-untyped-def]
    local = open_local_ca(tmp_path / "data", ocsp={"responder": "delegated"})
    yield local
    local.database.dispose()


def test_delegated_responder_signs_with_own_certificate(delegated_ca: LocalCa, tmp_path: Path) -> None:
    certificate = delegated_ca.add_certificate()
    answer = make_responder(delegated_ca).respond("default", request_for(delegated_ca, certificate.serial))
    response = ocsp.load_der_ocsp_response(answer.der)

    assert len(response.certificates) == 1
    signer = response.certificates[0]
    assert signer.issuer == delegated_ca.ca.certificate.subject
    delegated_ca.ca.certificate.public_key().verify(
        signer.signature, signer.tbs_certificate_bytes, ec.ECDSA(signer.signature_hash_algorithm))
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert signer.extensions.get_extension_for_class(x509.OCSPNoCheck) is not None
    verify_signature(response, signer)
    assert response.next_update_utc <= signer.not_valid_after_utc
    assert ocsp_findings(answer.der, tmp_path) == []


def test_delegated_responder_rotates_at_half_life(delegated_ca: LocalCa) -> None:
    certificate = delegated_ca.add_certificate()
    first = make_responder(delegated_ca)
    before = ocsp.load_der_ocsp_response(first.respond("default", request_for(delegated_ca, certificate.serial)).der)

    # A second process finds the responder certificate the first one wrote.
    second = make_responder(delegated_ca)
    again = ocsp.load_der_ocsp_response(second.respond("default", request_for(delegated_ca, certificate.serial)).der)
    assert again.certificates[0].serial_number == before.certificates[0].serial_number

    delegated_ca.clock.advance(RESPONDER_LIFETIME / 2 + timedelta(minutes=1))
    after = ocsp.load_der_ocsp_response(first.respond("default", request_for(delegated_ca, certificate.serial)).der)
    assert after.certificates[0].serial_number != before.certificates[0].serial_number
    assert after.next_update_utc <= after.certificates[0].not_valid_after_utc
