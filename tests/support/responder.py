"""An http-01 responder that fleetca validates against, serving a table of routes from memory.

It listens on 127.0.0.1 at the port the fleetca under test validates on, over
plain HTTP or over TLS with a self-signed certificate.
"""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CHALLENGE_PATH = "/.well-known/acme-challenge/"


@dataclass
class Route:
    """What the http-01 responder returns for one path."""

    status: int = 200
    body: str = ""
    location: str | None = None
    delay_seconds: float = 0.0


@dataclass
class SeenRequest:
    path: str
    host: str


def write_self_signed(names: list[x509.GeneralName], common_name: str, directory: Path, stem: str,
                 extensions: list[tuple[x509.ExtensionType, bool]] = ()) -> tuple[Path, Path]:
    """Write a self-signed P-256 certificate and its key as PEM files; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    certificate = builder.sign(key, hashes.SHA256())
    certificate_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return certificate_path, key_path


class HttpResponder:
    """Serves http-01 routes on 127.0.0.1:``port``, over TLS with a self-signed certificate when ``tls_dir`` is set.

    A path without a route gets 404. Every request is recorded with its Host header.
    """

    def __init__(self, port: int, *, tls_dir: Path | None = None) -> None:
        self.port = port
        self.routes: dict[str, Route] = {}
        self.requests: list[SeenRequest] = []
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                responder.requests.append(SeenRequest(self.path, self.headers.get("Host", "")))
                route = responder.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                if route.delay_seconds:
                    time.sleep(route.delay_seconds)
                body = route.body.encode()
                self.send_response(route.status)
                if route.location is not None:
                    self.send_header("Location", route.location)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        if tls_dir is not None:
            certificate, key = write_self_signed([x509.DNSName("localhost")], "self-signed responder", tls_dir,
                                            "https-responder")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate, key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def serve_key_authorization(self, token: str, key_authorization: str) -> None:
        self.routes[CHALLENGE_PATH + token] = Route(body=key_authorization)

    def __enter__(self) -> HttpResponder:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
