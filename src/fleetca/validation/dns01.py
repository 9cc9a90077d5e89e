"""dns-01 validation (RFC 8555 §8.4).

The TXT records at ``_acme-challenge.<name>`` are looked up through the
configured resolver, which follows CNAMEs, so a delegation of the record to
another zone works. Any one record equal to the expected digest is enough.
"""

from __future__ import annotations

import hashlib

import dns.asyncresolver
import dns.exception
import dns.resolver

from fleetca.acme.jws import b64url_encode
from fleetca.domain import Identifier
from fleetca.validation.errors import ValidationFailed


def expected_txt(key_authorization: str) -> str:
    return b64url_encode(hashlib.sha256(key_authorization.encode("ascii")).digest())


class Dns01Validator:
    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def validate(self, identifier: Identifier, token: str, key_authorization: str) -> None:
        if identifier.type != "dns":
            raise ValidationFailed("malformed", "dns-01 cannot validate an IP address identifier")
        name = "_acme-challenge." + identifier.value.removeprefix("*.")
        try:
            answer = await self.resolver.resolve(name, "TXT")
        except dns.resolver.NXDOMAIN:
            raise ValidationFailed("incorrectResponse", f"no TXT record at {name} (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            raise ValidationFailed("incorrectResponse", f"no TXT record at {name}") from None
        except dns.resolver.NoNameservers:
            raise ValidationFailed("dns", f"TXT lookup of {name} failed: SERVFAIL or refused") from None
        except dns.exception.Timeout:
            raise ValidationFailed("dns", f"TXT lookup of {name} timed out") from None
        expected = expected_txt(key_authorization)
        found = [b"".join(record.strings).decode("ascii", "replace") for record in answer]
        if expected not in found:
            shown = ", ".join(repr(v[:60]) for v in found[:5])
            raise ValidationFailed("incorrectResponse", f"TXT records at {name} ({shown}) do not match")
