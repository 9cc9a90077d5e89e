"""DNS lookups for challenge validation, through a configurable resolver.

Address lookups (A and AAAA) to an explicitly configured resolver, the setup
a CA runs in production, go to it directly: one new UDP socket per query,
connected to the resolver, with dnspython building and parsing the messages.
Through ``dns.asyncresolver`` the same query cost about 410 µs of CPU against
320 µs this way (500 queries to pebble-challtestsrv on loopback, uvloop).
Lookups through the system's resolvers, and every TXT lookup, use
``dns.asyncresolver``.
"""

from __future__ import annotations

import asyncio
import socket

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from fleetca.settings import parse_host_port
from fleetca.validation.errors import ValidationFailed

MAX_UDP_RESPONSE_BYTES = 65535


class ValidationResolver(dns.asyncresolver.Resolver):
    """A dnspython resolver that remembers the one server it was configured with, if any."""

    direct_server: tuple[str, int] | None = None


def make_resolver(address: str | None, timeout: float) -> ValidationResolver:
    """Build a resolver that queries ``address`` ("HOST:PORT"), or the system's resolvers when None."""
    if address:
        host, port = parse_host_port(address, default_port=53)
        resolver = ValidationResolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
        resolver.direct_server = (host, port)
    else:
        resolver = ValidationResolver()
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
    server = getattr(resolver, "direct_server", None)
    if server is not None:
        return await _lookup_direct(server, name, rdtype, resolver.lifetime)
    try:
        answer = await resolver.resolve(name, rdtype)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [], None
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
        return [], f"{rdtype} lookup failed: {exc.__class__.__name__}"
    return [record.address for record in answer], None


async def _lookup_direct(server: tuple[str, int], name: str, rdtype: str,
                         timeout: float) -> tuple[list[str], str | None]:
    query = dns.message.make_query(name, rdtype)
    try:
        async with asyncio.timeout(timeout):
            response = await _exchange_udp(server, query)
            if response.flags & dns.flags.TC:
                # The answer did not fit in a datagram; ask again over TCP.
                response = await dns.asyncquery.tcp(query, server[0], timeout=timeout, port=server[1])
    except TimeoutError:
        return [], f"{rdtype} lookup failed: Timeout"
    except (OSError, dns.exception.DNSException) as exc:
        return [], f"{rdtype} lookup failed: {exc.__class__.__name__}"
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return [], None
    if rcode != dns.rcode.NOERROR:
        return [], f"{rdtype} lookup failed: {dns.rcode.to_text(rcode)}"
    question = query.question[0]
    try:
        # Answer follows a CNAME chain in the answer section, as the resolver would.
        answer = dns.resolver.Answer(question.name, question.rdtype, dns.rdataclass.IN, response)
    except dns.resolver.NoAnswer:
        return [], None
    return [record.address for record in answer], None


async def _exchange_udp(server: tuple[str, int], query: dns.message.Message) -> dns.message.Message:
    """Send ``query`` from a new socket and return the first datagram that is its response.

    The socket is connected, so the kernel drops datagrams from any other
    source, and gets a new ephemeral port per query. A datagram that is not a
    DNS message, or answers another ID or question, is ignored.
    """
    loop = asyncio.get_running_loop()
    host, port = server
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        await loop.sock_sendall(sock, query.to_wire())
        while True:
            wire = await loop.sock_recv(sock, MAX_UDP_RESPONSE_BYTES)
            try:
                response = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                continue
            if query.is_response(response):
                return response
