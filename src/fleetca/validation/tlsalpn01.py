"""tls-alpn-01 validation (RFC 8737, and RFC 8738 §6 for IP addresses).

fleetca connects offering exactly the ``acme-tls/1`` protocol with the
identifier as SNI (the reverse-DNS name for an IP address), and checks that the
self-signed certificate names exactly that identifier and carries a critical
acmeIdentifier extension with the SHA-256 digest of the key authorization.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import ssl

import dns.asyncresolver
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from fleetca.domain import Identifier
from fleetca.validation.errors import ValidationFailed
from fleetca.validation.resolver import resolve_addresses

ALPN_PROTOCOL = "acme-tls/1"
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ALPN_PROTOCOL])
    return context


class TlsAlpn01Validator:
    def __init__(self, resolver: dns.asyncresolver.Resolver, port: int, timeout: float) -> None:
        self.resolver = resolver
        self.port = port
        self.timeout = timeout
        self._context = _client_context()

    async def validate(self, identifier: Identifier, token: str, key_authorization: str) -> None:
        if identifier.type == "ip":
            address = ipaddress.ip_address(identifier.value)
            addresses, sni = [identifier.value], address.reverse_pointer
        else:
            addresses, sni = await resolve_addresses(self.resolver, identifier.value), identifier.value
        errors: list[str] = []
        for address in addresses:
            try:
                der = await self._handshake(address, sni)
            except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
                errors.append(f"{address}: {exc.__class__.__name__} {exc}".strip())
                continue
            self._check_certificate(der, identifier, key_authorization)
            return
        raise ValidationFailed("connection" if not any("SSL" in e for e in errors) else "tls",
                               f"cannot complete a TLS handshake with {identifier.value} port {self.port}: "
                               + "; ".join(errors))

    async def _handshake(self, address: str, sni: str) -> bytes:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, self.port, ssl=self._context, server_hostname=sni),
            timeout=self.timeout)
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object.selected_alpn_protocol() != ALPN_PROTOCOL:
                raise ValidationFailed("tls", f"server did not negotiate the {ALPN_PROTOCOL} ALPN protocol")
            der = ssl_object.getpeercert(binary_form=True)
            if not der:
                raise ValidationFailed("tls", "server sent no certificate")
            return der
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), timeout=2)
            except (OSError, ssl.SSLError, asyncio.TimeoutError):
                pass

    def _check_certificate(self, der: bytes, identifier: Identifier, key_authorization: str) -> None:
        try:
            cert = x509.load_der_x509_certificate(der)
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            acme_ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        except x509.ExtensionNotFound as exc:
            raise ValidationFailed("unauthorized", f"challenge certificate lacks an extension: {exc}") from None
        except ValueError as exc:
            raise ValidationFailed("tls", f"challenge certificate cannot be parsed: {exc}") from None
        names = list(san)
        if identifier.type == "ip":
            expected: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(identifier.value))
        else:
            expected = x509.DNSName(identifier.value)
        if len(names) != 1 or names[0] != expected:
            raise ValidationFailed("unauthorized",
                                   f"challenge certificate must name exactly {identifier.value} in its SAN")
        if not acme_ext.critical:
            raise ValidationFailed("unauthorized", "acmeIdentifier extension must be critical")
        digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
        value = acme_ext.value.value if isinstance(acme_ext.value, x509.UnrecognizedExtension) else b""
        if value != b"\x04\x20" + digest:
            raise ValidationFailed("unauthorized", "acmeIdentifier extension does not match the key authorization")
