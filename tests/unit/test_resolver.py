"""Address lookups for validation against a DNS server on loopback that answers each name its own way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from fleetca.validation.errors import ValidationFailed
from fleetca.validation.resolver import ADDRESS_TYPES, _address_queries, make_resolver, resolve_addresses


class ScriptedDnsServer(asyncio.DatagramProtocol):
    """A DNS server whose response to an A or AAAA query depends on the first label of the name."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text()
        self.queries.append(f"{name} {dns.rdatatype.to_text(question.rdtype)}")
        label = name.split(".")[0]

        response = dns.message.make_response(query)
        is_a = question.rdtype == dns.rdatatype.A
        if label == "silent":
            return
        if label == "nx":
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif label == "fail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif label == "alias":
            target = "host." + name.split(".", 1)[1]
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", target))
            if is_a:
                response.answer.append(dns.rrset.from_text(target, 60, "IN", "A", "192.0.2.7"))
        elif is_a:
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1"))
        elif label == "dual":
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "AAAA", "2001:db8::1"))
        if label == "truncated":
            # The AAAA response fits in a datagram. The A response does not, so its
            # records are left out and TC is set, and no TCP listener accepts the retry.
            response.answer.clear()
            if is_a:
                response.flags |= dns.flags.TC
            else:
                response.answer.append(dns.rrset.from_text(name, 60, "IN", "AAAA", "2001:db8::2"))
        if label == "sections":
            # What a resolver adds beyond the answer section: an SOA for an empty answer,
            # name servers and their addresses otherwise.
            zone = name.split(".", 1)[1]
            if is_a:
                response.authority.append(dns.rrset.from_text(zone, 60, "IN", "NS", "ns1." + zone))
                response.additional.append(dns.rrset.from_text("ns1." + zone, 60, "IN", "A", "198.51.100.53"))
            else:
                response.authority.append(dns.rrset.from_text(
                    zone, 60, "IN", "SOA", f"ns1.{zone} hostmaster.{zone} 1 7200 900 1209600 60"))

        # Datagrams that arrive before the real response and must be ignored.
        if label == "junk":
            self.transport.sendto(b"\x00not a dns message", addr)
        if label == "otherid":
            impostor = dns.message.make_response(query)
            impostor.id = (query.id + 1) % 65536
            impostor.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "198.51.100.66"))
            self.transport.sendto(impostor.to_wire(), addr)
        if label == "otherquestion":
            # The query's ID, but the question of another name.
            impostor = dns.message.make_query("elsewhere.example.test.", question.rdtype)
            impostor.id = query.id
            impostor.flags |= dns.flags.QR
            impostor.answer.append(dns.rrset.from_text("elsewhere.example.test.", 60, "IN", "A", "198.51.100.67"))
            self.transport.sendto(impostor.to_wire(), addr)
        if label == "refusednoquestion":
            # An error response that left out the question section still
            # answers the query, so the lookup fails at once with its code.
            refused = dns.message.Message(id=query.id)
            refused.flags = dns.flags.QR
            refused.set_rcode(dns.rcode.REFUSED)
            self.transport.sendto(refused.to_wire(), addr)
            return
        if label == "strayrecords":
            # Records of another name beside the name's own, without a CNAME to link them.
            response.answer.append(dns.rrset.from_text("stray.example.test.", 60, "IN", "A", "198.51.100.68"))
        if label.lower() == "mixedcase":
            # A resolver may echo the name in other letter case (DNS 0x20).
            response.question[0].name = dns.name.from_text(name.upper())
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def lookup(loop: asyncio.AbstractEventLoop, name: str, timeout: float = 2.0) -> list[str]:
    async def run() -> list[str]:
        transport, server = await loop.create_datagram_endpoint(ScriptedDnsServer, local_addr=("127.0.0.1", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            resolver = make_resolver(f"127.0.0.1:{port}", timeout)
            return await resolve_addresses(resolver, name)
        finally:
            transport.close()
    return loop.run_until_complete(run())


@pytest.mark.parametrize("name, expected", [
    ("plain.devices.example.test", ["192.0.2.1"]),
    ("dual.devices.example.test", ["2001:db8::1", "192.0.2.1"]),
    ("alias.devices.example.test", ["192.0.2.7"]),
    ("junk.devices.example.test", ["192.0.2.1"]),
    ("otherid.devices.example.test", ["192.0.2.1"]),
    ("sections.devices.example.test", ["192.0.2.1"]),
    ("truncated.devices.example.test", ["2001:db8::2"]),
    ("otherquestion.devices.example.test", ["192.0.2.1"]),
    ("strayrecords.devices.example.test", ["192.0.2.1"]),
    ("MixedCase.devices.example.test", ["192.0.2.1"]),
], ids=["a-only", "ipv6-first", "cname-followed", "garbage-ignored", "other-id-ignored", "authority-and-additional",
        "truncated-type-alone-fails", "other-question-ignored", "other-names-ignored", "question-case-ignored"])
def test_direct_lookup_addresses(loop: asyncio.AbstractEventLoop, name: str, expected: list[str]) -> None:
    assert lookup(loop, name) == expected


@pytest.mark.parametrize("name, detail", [
    ("nx.devices.example.test", "no A or AAAA records found"),
    ("fail.devices.example.test", "A lookup failed: SERVFAIL"),
    ("silent.devices.example.test", "A lookup failed: Timeout"),
    ("refusednoquestion.devices.example.test", "A lookup failed: REFUSED"),
], ids=["nxdomain", "servfail", "no-response", "refused-without-question"])
def test_direct_lookup_failures(loop: asyncio.AbstractEventLoop, name: str, detail: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        lookup(loop, name, timeout=0.5)

    assert caught.value.problem_type == "dns"
    assert detail in caught.value.detail


@pytest.mark.parametrize("name", ["plain.devices.example.test", "MixedCase.devices.example.test",
                                  "xn--bcher-kva.example.test", "a" * 63 + ".example.test"],
                         ids=["plain", "mixed-case", "a-label", "longest-label"])
def test_queries_as_dnspython_renders(name: str) -> None:
    qname = dns.name.from_text(name)
    queries = _address_queries(qname)

    assert len(queries) == len(ADDRESS_TYPES)
    for (query_id, wire), rdtype in zip(queries, ADDRESS_TYPES):
        expected = dns.message.make_query(qname, rdtype, use_edns=False)
        expected.id = query_id
        assert wire == expected.to_wire()
