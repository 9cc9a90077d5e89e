"""HTTP/1.1 over TLS by hand, for requests that a client library would not send: a body cut short."""

from __future__ import annotations

import socket
import ssl

from tests.support.server import FleetcaServer


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
    """Read until the end of the response headers, and return the status and the headers."""
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
