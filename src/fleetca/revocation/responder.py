"""The OCSP responder (RFC 6960, with the RFC 5019 profile) for every issuing CA.

Signed responses are kept in memory and reused until half of their validity has
passed. Every request still reads the certificate's status from the database,
and a cached response whose status no longer matches is signed anew, so a
revocation made by any process shows at once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from fleetca.ca.registry import IssuingCa
from fleetca.clock import Clock
from fleetca.settings import Settings
from fleetca.signing.ocsp import CertId, OcspSigner, Status, issuer_hashes, unsuccessful_response
from fleetca.storage.database import Database

log = logging.getLogger("fleetca.ocsp")

# CertID hash algorithms accepted in requests; RFC 5019 clients send SHA-1.
SUPPORTED_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class OcspAnswer:
    """A DER OCSP response and, for successful ones, its validity for HTTP caching."""

    der: bytes
    this_update: datetime | None = None
    next_update: datetime | None = None

    @property
    def successful(self) -> bool:
        return self.this_update is not None


@dataclass(frozen=True)
class _Cached:
    answer: OcspAnswer
    status: Status


def responder_directory(settings: Settings, ca_name: str) -> Path:
    """Where the delegated responder keys and certificates of ``ca_name`` are kept."""
    return settings.data_dir / "ocsp" / ca_name


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> OcspAnswer:
    return OcspAnswer(unsuccessful_response(status))


class OcspResponder:
    """Responds to OCSP requests about the certificates of the issuing CAs that one process serves."""

    def __init__(self, settings: Settings, database: Database, cas: dict[str, IssuingCa], clock: Clock) -> None:
        self.settings = settings
        self.database = database
        self.cas = cas
        self.clock = clock
        self._signers: dict[str, OcspSigner] = {}
        self._issuer_hashes: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._cache: OrderedDict[tuple[str, str, int], _Cached] = OrderedDict()

    def signer(self, ca: IssuingCa) -> OcspSigner:
        signer = self._signers.get(ca.name)
        if signer is None:
            signer = OcspSigner(ca.certificate, ca.signer.key_path,
                                delegated=self.settings.ocsp.responder == "delegated",
                                responder_dir=responder_directory(self.settings, ca.name))
            self._signers[ca.name] = signer
        return signer

    def respond(self, ca_name: str, request_der: bytes) -> OcspAnswer:
        """Return the response to one DER OCSP request sent to the responder of ``ca_name``."""
        # Parse: one request per message, which is what RFC 5019 clients send.
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            algorithm = request.hash_algorithm
        except (ValueError, NotImplementedError, UnsupportedAlgorithm):
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if algorithm.name not in SUPPORTED_HASHES:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)

        # A request about another CA's certificate gets "unauthorized" (RFC 6960 §2.3).
        ca = self.cas.get(ca_name)
        if ca is None or (request.issuer_name_hash, request.issuer_key_hash) != self._hashes(ca, algorithm):
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)

        status = self._status(ca, request.serial_number)
        now = self.clock.now()
        key = (ca.name, algorithm.name, request.serial_number)
        cached = self._cache.get(key)
        if cached is not None and cached.status == status and cached.answer.this_update is not None \
                and now < cached.answer.this_update + self.settings.ocsp.validity / 2:
            self._cache.move_to_end(key)
            return cached.answer

        this_update = now.replace(microsecond=0)
        next_update = this_update + self.settings.ocsp.validity
        cert_id = CertId(request.issuer_name_hash, request.issuer_key_hash, request.serial_number, algorithm)
        der = self.signer(ca).sign(cert_id, status, this_update, next_update)
        answer = OcspAnswer(der, this_update, next_update)
        self._remember(key, _Cached(answer, status))
        return answer

    def _hashes(self, ca: IssuingCa, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
        key = (ca.name, algorithm.name)
        if key not in self._issuer_hashes:
            self._issuer_hashes[key] = issuer_hashes(ca.certificate, SUPPORTED_HASHES[algorithm.name]())
        return self._issuer_hashes[key]

    def _status(self, ca: IssuingCa, serial_number: int) -> Status:
        with self.database.transaction() as repo:
            issued = repo.get_certificate_by_serial(format(serial_number, "x"))
        # A serial this CA never issued is "unknown", never "good" (Baseline Requirements §4.9.10).
        if issued is None or issued.ca_name != ca.name:
            return Status(ocsp.OCSPCertStatus.UNKNOWN)
        if issued.revoked_at is not None:
            return Status(ocsp.OCSPCertStatus.REVOKED, issued.revoked_at.replace(microsecond=0),
                          issued.revocation_reason)
        return Status(ocsp.OCSPCertStatus.GOOD)

    def _remember(self, key: tuple[str, str, int], entry: _Cached) -> None:
        limit = self.settings.ocsp.cache_entries
        if limit == 0:
            return
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > limit:
            self._cache.popitem(last=False)
