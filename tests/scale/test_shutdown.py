"""Stopping a serving process with SIGTERM, as an orchestrator or a load balancer's drain does."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from pathlib import Path

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.server import FleetcaServer

# A JWS whose header is an empty object: the server answers it with a problem document.
MALFORMED_JWS = b'{"protected": "e30", "payload": "", "signature": "AAAA"}'
SENT_BEFORE_SIGNAL = 20
EXIT_TIMEOUT_SECONDS = 15.0


def open_partial_post(server: FleetcaServer, path: str, body: bytes, sent: int) -> ssl.SSLSocket:
    """Send a POST's headers and the first ``sent`` bytes of its body, leaving the request open."""
    context = ssl.create_default_context(cafile=str(server.root_pem))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/jose+json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    conn.sendall(head + body[:sent])
    return conn


def read_response(conn: ssl.SSLSocket) -> tuple[int, dict[str, str]]:
    """Read until the end of the response headers; return the status and the headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {name.strip().lower(): value.strip()
               for name, value in (line.split(":", 1) for line in lines[1:])}
    return status, headers


def test_sigterm_lets_open_request_finish(tmp_path: Path, dns_server: ChallTestSrv,
                                          validation_ports: ChallengePorts) -> None:
    # The plain-HTTP listener is on, so the process runs two servers: the one
    # with no open connection stops first, and the other must still answer.
    with FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports) as server:
        conn = open_partial_post(server, "/acme/default/new-account", MALFORMED_JWS, SENT_BEFORE_SIGNAL)
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        conn.sendall(MALFORMED_JWS[SENT_BEFORE_SIGNAL:])
        status, headers = read_response(conn)
        conn.close()
        exit_status = server.wait_for_exit(EXIT_TIMEOUT_SECONDS)
        log = server.read_log()

    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert exit_status == 0
    assert "Application shutdown complete" in log
    assert "CancelledError" not in log
