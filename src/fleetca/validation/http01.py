"""http-01 validation (RFC 8555 §8.3).

fleetca resolves the name itself and connects to each address in turn, IPv6
first, sending the name in the Host header. Redirects are followed by hand so
that each hop is checked: only http and https, only the standard ports (or the
ports configured for tests), at most ``max_redirects`` hops and no loops.
HTTPS targets are fetched without certificate verification, as the RFC allows,
because a device may still have a self-signed certificate.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urljoin, urlsplit

import dns.asyncresolver
import httpx

from fleetca.domain import Identifier
from fleetca.validation.errors import ValidationFailed
from fleetca.validation.resolver import resolve_addresses

MAX_BODY_BYTES = 64 * 1024


class Http01Validator:
    def __init__(self, resolver: dns.asyncresolver.Resolver, port: int, https_port: int,
                 timeout: float, max_redirects: int) -> None:
        self.resolver = resolver
        self.port = port
        self.https_port = https_port
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._http: httpx.AsyncClient | None = None

    async def validate(self, identifier: Identifier, token: str, key_authorization: str) -> None:
        host = _url_host(identifier.value)
        url = f"http://{host}:{self.port}/.well-known/acme-challenge/{token}"
        seen: set[str] = set()
        client = self._client()
        for _ in range(self.max_redirects + 1):
            if url in seen:
                raise ValidationFailed("connection", f"redirect loop at {url}")
            seen.add(url)
            response, content = await self._fetch(client, url)
            if response.is_redirect:
                location = response.headers.get("location", "")
                url = self._check_redirect(url, urljoin(url, location))
                continue
            if response.status_code != 200:
                raise ValidationFailed("unauthorized", f"{url} returned HTTP {response.status_code}, not 200")
            body = content.decode("utf-8", "replace")
            if body.rstrip() != key_authorization:
                raise ValidationFailed("incorrectResponse",
                                       f"{url} returned {body.rstrip()[:100]!r}, not the key authorization")
            return
        raise ValidationFailed("connection", f"more than {self.max_redirects} redirects")

    def _client(self) -> httpx.AsyncClient:
        """Return the one client for all validations, so its TLS context is built once.

        Connections are not kept alive: each validation connects anew, as a
        validation from an unrelated vantage point would.
        """
        if self._http is None:
            self._http = httpx.AsyncClient(verify=False, follow_redirects=False, timeout=self.timeout,
                                           trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))
        return self._http

    async def _fetch(self, client: httpx.AsyncClient, url: str) -> tuple[httpx.Response, bytes]:
        """GET ``url`` from each of its host's addresses until one responds; return the body too."""
        parts = urlsplit(url)
        hostname = parts.hostname or ""
        try:
            addresses = [ipaddress.ip_address(hostname).compressed]
        except ValueError:
            addresses = await resolve_addresses(self.resolver, hostname)
        errors = []
        for address in addresses:
            target = parts._replace(netloc=f"{_url_host(address)}:{parts.port or _default_port(parts.scheme)}")
            headers = {"Host": parts.netloc, "User-Agent": "fleetca-validation", "Accept": "*/*"}
            extensions = {"sni_hostname": hostname} if parts.scheme == "https" else {}
            try:
                request = client.build_request("GET", target.geturl(), headers=headers, extensions=extensions)
                response = await client.send(request, stream=True)
                try:
                    content = await _read_limited(response)
                finally:
                    await response.aclose()
                return response, content
            except httpx.TimeoutException:
                errors.append(f"{address}: timed out")
            except httpx.HTTPError as exc:
                errors.append(f"{address}: {exc.__class__.__name__} {exc}".strip())
        raise ValidationFailed("connection", f"cannot fetch {url}: {'; '.join(errors)}")

    def _check_redirect(self, from_url: str, to_url: str) -> str:
        parts = urlsplit(to_url)
        if parts.scheme not in ("http", "https"):
            raise ValidationFailed("connection", f"{from_url} redirected to unsupported scheme {parts.scheme!r}")
        allowed = {"http": {80, self.port}, "https": {443, self.https_port}}[parts.scheme]
        try:
            port = parts.port or _default_port(parts.scheme)
        except ValueError as exc:
            raise ValidationFailed("connection", f"{from_url} redirected to an invalid URL") from exc
        if port not in allowed:
            raise ValidationFailed("connection", f"{from_url} redirected to port {port}; only 80 and 443 are allowed")
        if not parts.hostname:
            raise ValidationFailed("connection", f"{from_url} redirected to a URL without a host")
        return to_url


async def _read_limited(response: httpx.Response) -> bytes:
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) > MAX_BODY_BYTES:
            break
    return bytes(received[:MAX_BODY_BYTES])


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _url_host(value: str) -> str:
    return f"[{value}]" if ":" in value else value
