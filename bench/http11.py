"""A small HTTP/1.1 client over one kept-alive TLS connection.

The load generator shares two cores with the server it measures, so every
microsecond it spends per request is taken from the server. This client only
formats a request and parses a status line, headers and a Content-Length or
chunked body. That is all the ACME servers under test send, and it costs less
CPU than a general client such as httpx.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

USER_AGENT = "fleetca-bench/1"
MAX_HEADER_BYTES = 64 * 1024


class HttpError(Exception):
    """The connection failed or the server sent something that is not HTTP/1.1."""


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its values joined by ", "
    body: bytes


class HttpConnection:
    """One keep-alive connection to an origin, reopened when the server closes it."""

    def __init__(self, origin: str, ssl_context: ssl.SSLContext, timeout: float = 30.0) -> None:
        parts = urlsplit(origin)
        if parts.scheme != "https" or parts.hostname is None or parts.port is None:
            raise ValueError(f"origin must look like https://HOST:PORT, not {origin!r}")
        self.origin = f"https://{parts.netloc}"
        self.host = parts.hostname
        self.port = parts.port
        self.host_header = parts.netloc
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.connects = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, url: str, body: bytes = b"",
                      content_type: str | None = None) -> HttpResponse:
        """Send one request; a request on a reused connection that the server had closed is sent again once."""
        path = self._path_of(url)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host_header}", f"User-Agent: {USER_AGENT}",
                "Accept: */*"]
        if content_type:
            head.append(f"Content-Type: {content_type}")
        if body or method == "POST":
            head.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body

        for attempt in (1, 2):
            reused = self._writer is not None
            if not reused:
                try:
                    await self._connect()
                except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
                    raise HttpError(f"{method} {url}: cannot connect: {exc.__class__.__name__}: {exc}") from exc
            try:
                return await asyncio.wait_for(self._exchange(message, method), self.timeout)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, HttpError) as exc:
                self.abort()
                # Only a kept-alive connection that closed before any response byte is
                # retried, because the server cannot have processed that request.
                if attempt == 2 or not reused or not _closed_before_response(exc):
                    raise HttpError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
            except asyncio.TimeoutError as exc:
                self.abort()
                raise HttpError(f"{method} {url}: no response within {self.timeout} s") from exc
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the connection with a TLS close_notify, or drop it if that takes more than a few seconds."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (ConnectionError, ssl.SSLError, asyncio.TimeoutError):
                writer.transport.abort()

    def abort(self) -> None:
        """Drop the connection at once, as after an error that leaves its state unknown."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    def _path_of(self, url: str) -> str:
        if url.startswith("/"):
            return url
        parts = urlsplit(url)
        if f"https://{parts.netloc}" != self.origin:
            raise ValueError(f"{url} is not on this connection's origin {self.origin}")
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl_context, server_hostname=self.host,
                                    limit=MAX_HEADER_BYTES),
            self.timeout)
        self.connects += 1

    async def _exchange(self, message: bytes, method: str) -> HttpResponse:
        assert self._reader is not None and self._writer is not None
        self._writer.write(message)
        await self._writer.drain()

        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise HttpError(f"unexpected status line {lines[0]!r}")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value

        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
        elif "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        else:
            body = await self._reader.read()
            await self.close()
        if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
            await self.close()
        return HttpResponse(status, headers, body)

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        chunks = []
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # Skip trailers up to the blank line that ends the message.
                while (await self._reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(chunks)
            chunks.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)


def _closed_before_response(exc: Exception) -> bool:
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError))


def client_ssl_context(ca_file: str) -> ssl.SSLContext:
    """Return a context that trusts only ``ca_file`` and offers only HTTP/1.1, so every server is measured alike."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context
