"""DNS lookups for challenge validation, through a configurable resolver."""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import dns.exception
import dns.resolver

from fleetca.settings import parse_host_port
from fleetca.validation.errors import ValidationFailed


def make_resolver(address: str | None, timeout: float) -> dns.asyncresolver.Resolver:
    """Build a resolver that queries ``address`` ("HOST:PORT"), or the system's resolvers when None."""
    if address:
        host, port = parse_host_port(address, default_port=53)
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout
    resolver.timeout = timeout
    # A validation must use current data, never a response cached from an earlier attempt.
    resolver.cache = None
    return resolver


async def resolve_addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """Return the name's IPv6 then IPv4 addresses, raising ValidationFailed(dns) when there are none."""
    answers = await asyncio.gather(*(_lookup(resolver, name, rdtype) for rdtype in ("AAAA", "A")))
    addresses = [address for found, _ in answers for address in found]
    failures = [failure for _, failure in answers if failure]
    if not addresses:
        detail = "; ".join(failures) if failures else "no A or AAAA records found"
        raise ValidationFailed("dns", f"cannot resolve {name}: {detail}")
    return addresses


async def _lookup(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> tuple[list[str], str | None]:
    """Addresses of one record type, or the reason the lookup failed; no records is not a failure."""
    try:
        answer = await resolver.resolve(name, rdtype)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [], None
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
        return [], f"{rdtype} lookup failed: {exc.__class__.__name__}"
    return [record.address for record in answer], None
