"""CRL shard assignment and the CRL and OCSP URLs that leaf certificates carry.

A certificate's shard is fixed when it is issued and stored with it, so changing
the shard count later only affects new certificates. The shard URL is written
into the certificate and repeated byte for byte in the shard's
issuingDistributionPoint, so both are built by :func:`crl_url` from the same
setting. Changing ``server.http_public_url`` therefore strands the certificates
issued before the change until they expire.
"""

from __future__ import annotations

import hashlib

from fleetca.ca.profiles import CertificateProfile
from fleetca.ca.registry import IssuingCa
from fleetca.settings import Settings


def shard_for_serial(serial_number: int, shard_count: int) -> int:
    """Spread serials evenly over ``shard_count`` shards, whatever structure the serial has."""
    digest = hashlib.sha256(serial_number.to_bytes(20, "big")).digest()
    return int.from_bytes(digest[:8], "big") % shard_count


def crl_url(http_base: str, ca_name: str, shard: int) -> str:
    return f"{http_base}/crl/{ca_name}/{shard}.crl"


def ocsp_url(http_base: str, ca_name: str) -> str:
    return f"{http_base}/ocsp/{ca_name}"


def leaf_revocation_fields(settings: Settings, ca: IssuingCa, profile: CertificateProfile,
                           serial_number: int) -> tuple[int, str | None, str | None]:
    """Return (crl_shard, crl_url, ocsp_url) for a new leaf certificate of ``ca``.

    The URLs are None when the profile leaves the pointer out or when no
    plain-HTTP listener is configured; the shard is assigned in every case, so a
    later revocation still lands in a CRL.
    """
    shard = shard_for_serial(serial_number, settings.crl.shards)
    http_base = settings.server.http_base_url()
    if http_base is None:
        return shard, None, None
    crl = crl_url(http_base, ca.name, shard) if profile.crl_distribution_point else None
    ocsp = ocsp_url(http_base, ca.name) if profile.ocsp else None
    return shard, crl, ocsp
