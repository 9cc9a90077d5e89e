"""The tls-alpn-01 responder that fleetca validates against, with knobs for the faults a test needs.

It listens on 127.0.0.1 at the port the fleetca under test validates on,
completes tls-alpn-01 handshakes and records the SNI name, the ALPN protocols
and the TLS version that the validator offered in its ClientHello. The http-01
responder is ``tests.support.responder.HttpResponder``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from tests.support.responder import write_self_signed

ACME_TLS_ALPN = "acme-tls/1"
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
# How long a responder waits for a validator's bytes before it gives up on a connection.
SOCKET_TIMEOUT_SECONDS = 5.0
CLIENT_HELLO_MAX_BYTES = 16 * 1024


def general_name(identifier: str) -> x509.GeneralName:
    """Return the SAN entry for a DNS name or an IP address in text form."""
    try:
        return x509.IPAddress(ipaddress.ip_address(identifier))
    except ValueError:
        return x509.DNSName(identifier)


@dataclass
class ClientHello:
    """The parts of a TLS ClientHello that tls-alpn-01 (RFC 8737 §3) constrains."""

    server_name: str | None
    alpn_protocols: list[str]
    supported_versions: list[int] = field(default_factory=list)


def parse_client_hello(record: bytes) -> ClientHello:
    """Parse the SNI, ALPN and supported_versions extensions out of one TLS handshake record."""
    if len(record) < 9 or record[0] != 0x16 or record[5] != 0x01:
        raise ValueError("not a TLS ClientHello record")

    # Skip the fixed part and the variable-length lists up to the extensions (RFC 8446 §4.1.2).
    position = 5 + 4 + 2 + 32  # record header, handshake header, legacy_version, random
    session_id_length = record[position]
    position += 1 + session_id_length
    (cipher_suites_length,) = struct.unpack_from(">H", record, position)
    position += 2 + cipher_suites_length
    compression_length = record[position]
    position += 1 + compression_length
    (extensions_length,) = struct.unpack_from(">H", record, position)
    position += 2
    end = position + extensions_length

    hello = ClientHello(server_name=None, alpn_protocols=[])
    while position + 4 <= end:
        extension_type, length = struct.unpack_from(">HH", record, position)
        data = record[position + 4:position + 4 + length]
        position += 4 + length
        if extension_type == 0:  # server_name
            name_length = struct.unpack_from(">H", data, 3)[0]
            hello.server_name = data[5:5 + name_length].decode("ascii")
        elif extension_type == 16:  # application_layer_protocol_negotiation
            offset = 2
            while offset < len(data):
                protocol_length = data[offset]
                hello.alpn_protocols.append(data[offset + 1:offset + 1 + protocol_length].decode("ascii"))
                offset += 1 + protocol_length
        elif extension_type == 43:  # supported_versions
            count = data[0] // 2
            hello.supported_versions = [struct.unpack_from(">H", data, 1 + 2 * i)[0] for i in range(count)]
    return hello


@dataclass
class ChallengeCertificate:
    """How the tls-alpn-01 certificate for one identifier is made, faults included."""

    identifier: str
    key_authorization: str
    critical: bool = True
    extra_names: tuple[str, ...] = ()
    wrong_digest: bool = False
    with_extension: bool = True


class TlsAlpnResponder:
    """Complete tls-alpn-01 handshakes on 127.0.0.1:``port`` with the certificate registered for the SNI name.

    With ``offer_alpn`` False the responder negotiates no ALPN protocol at all,
    as a TLS server that does not know tls-alpn-01 would.
    """

    def __init__(self, port: int, workdir: Path, *, offer_alpn: bool = True) -> None:
        self.port = port
        self.workdir = workdir
        self.offer_alpn = offer_alpn
        self.hellos: list[ClientHello] = []
        self.negotiated_versions: list[str] = []
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.05)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def add_certificate(self, spec: ChallengeCertificate) -> None:
        """Serve a challenge certificate for ``spec.identifier``, under its SNI name (reverse-DNS for an IP)."""
        digest = hashlib.sha256(spec.key_authorization.encode()).digest()
        if spec.wrong_digest:
            digest = hashlib.sha256(b"not the key authorization").digest()
        extensions: list[tuple[x509.ExtensionType, bool]] = []
        if spec.with_extension:
            extensions.append((x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest), spec.critical))
        names = [general_name(spec.identifier)] + [general_name(n) for n in spec.extra_names]
        stem = f"alpn-{len(self._contexts)}"
        certificate, key = write_self_signed(names, spec.identifier, self.workdir, stem, extensions)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        if self.offer_alpn:
            context.set_alpn_protocols([ACME_TLS_ALPN])
        self._contexts[sni_name(spec.identifier)] = context

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        connection.settimeout(SOCKET_TIMEOUT_SECONDS)
        try:
            hello = parse_client_hello(_peek_first_record(connection))
            self.hellos.append(hello)
            context = self._contexts.get(hello.server_name or "")
            if context is None:
                return
            with context.wrap_socket(connection, server_side=True) as tls:
                self.negotiated_versions.append(tls.version() or "")
                # The validator closes the connection once it has read the certificate.
                tls.recv(1)
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            connection.close()

    def __enter__(self) -> TlsAlpnResponder:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stopping.set()
        self._listener.close()
        self._thread.join(timeout=SOCKET_TIMEOUT_SECONDS)


def sni_name(identifier: str) -> str:
    """Return the SNI name tls-alpn-01 uses: the name itself, or the reverse-DNS name of an IP (RFC 8738 §6)."""
    try:
        return ipaddress.ip_address(identifier).reverse_pointer
    except ValueError:
        return identifier


def _peek_first_record(connection: socket.socket) -> bytes:
    """Return the first TLS record without consuming it, so the TLS handshake can still read it."""
    deadline = time.monotonic() + SOCKET_TIMEOUT_SECONDS
    data = b""
    while time.monotonic() < deadline:
        data = connection.recv(CLIENT_HELLO_MAX_BYTES, socket.MSG_PEEK)
        if not data:
            break
        if len(data) >= 5:
            needed = 5 + struct.unpack_from(">H", data, 3)[0]
            if len(data) >= needed:
                return data[:needed]
        time.sleep(0.01)
    raise ValueError("no complete TLS record arrived")
