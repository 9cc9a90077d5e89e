"""Revocation and renewal at fleet scale: sharded CRLs, the OCSP responder and their schedule.

``shards`` assigns each certificate its CRL shard and URLs at issuance,
``publisher`` signs the shards under a database lease so that one process at a
time does it, ``responder`` responds to OCSP requests, ``routes`` serves both over
plain HTTP, and ``operator`` carries out ``fleetca revoke`` and ``renew-now``.
"""

from fleetca.revocation.shards import leaf_revocation_fields

__all__ = ["leaf_revocation_fields"]
