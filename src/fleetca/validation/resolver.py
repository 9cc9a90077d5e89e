"""DNS lookups for challenge validation, through a configurable resolver."""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.resolver

from fleetca.settings import parse_host_port
from fleetca.validation.errors import ValidationFailed


def make_resolver(address: str | None, timeout: float) -> dns.asyncresolver.Resolver:
    """A resolver that asks ``address`` ("HOST:PORT"), or the system's resolvers when None."""
    if address:
        host, port = parse_host_port(address, default_port=53)
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout
    resolver.timeout = timeout
    # A validation must see current data, never an answer cached from an earlier attempt.
    resolver.cache = None
    return resolver


async def resolve_addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """Return the name's IPv6 then IPv4 addresses, raising ValidationFailed(dns) when there are none."""
    addresses: list[str] = []
    failures: list[str] = []
    for rdtype in ("AAAA", "A"):
        try:
            answer = await resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            failures.append(f"{rdtype} lookup failed: {exc.__class__.__name__}")
            continue
        addresses.extend(r.address for r in answer)
    if not addresses:
        detail = "; ".join(failures) if failures else "no A or AAAA records found"
        raise ValidationFailed("dns", f"cannot resolve {name}: {detail}")
    return addresses
