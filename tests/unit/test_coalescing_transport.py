"""The transport below the HTTPS server, which joins the writes of one event-loop iteration."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

import pytest

from fleetca.revocation.listener import _CoalescingTransport
from tests.support.server import FleetcaServer


class RecordingTransport:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def run_one_iteration(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


def test_writes_of_one_iteration_joined(loop: asyncio.AbstractEventLoop) -> None:
    below = RecordingTransport()
    transport = _CoalescingTransport(below, loop)  # type: ignore[arg-type]

    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    before = list(below.writes)
    run_one_iteration(loop)
    transport.write(b"next")
    run_one_iteration(loop)

    assert before == []
    assert below.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"]


def test_close_sends_pending_writes_first(loop: asyncio.AbstractEventLoop) -> None:
    below = RecordingTransport()
    transport = _CoalescingTransport(below, loop)  # type: ignore[arg-type]

    transport.write(b"last response")
    transport.close()
    run_one_iteration(loop)

    assert below.writes == [b"last response"]
    assert below.closed is True


def test_writes_to_closing_transport_dropped(loop: asyncio.AbstractEventLoop) -> None:
    below = RecordingTransport()
    transport = _CoalescingTransport(below, loop)  # type: ignore[arg-type]

    transport.write(b"too late")
    below.closed = True
    run_one_iteration(loop)

    assert below.writes == []


def test_other_attributes_reach_transport_below(loop: asyncio.AbstractEventLoop) -> None:
    transport = _CoalescingTransport(RecordingTransport(), loop)  # type: ignore[arg-type]

    assert transport.get_extra_info("peername") == "info:peername"


# Requests whose responses have a body: a resource, and a problem document.
ONE_RECORD_REQUESTS = {
    "directory": ("GET", "directory", b"", 200),
    "malformed-jws": ("POST", "new-account", b"{not a JWS", 400),
}


@pytest.mark.parametrize("case", sorted(ONE_RECORD_REQUESTS))
def test_response_arrives_in_one_tls_record(shared_fleetca: FleetcaServer, case: str) -> None:
    method, resource, body, status = ONE_RECORD_REQUESTS[case]
    # One recv of a TLS socket returns the data of at most one record, so a
    # response whose headers and body were written apart would need two.
    context = ssl.create_default_context(cafile=str(shared_fleetca.root_pem))
    request = (f"{method} /acme/{shared_fleetca.ca_name}/{resource} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: application/jose+json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", shared_fleetca.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request)
            first = tls.recv(65536)

    head, _, received = first.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\nserver:" not in head.lower()
    assert length > 0
    assert len(received) == length
