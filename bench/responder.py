"""The load generator's http-01 responder (RFC 8555 §8.3), in the generator's own event loop.

It returns the key authorization that the device flow registered for TOKEN
to GET /.well-known/acme-challenge/TOKEN, but only when the Host header names
that device. A 200 therefore shows that the server resolved the device's name
and connected to this responder. Connections stay open for further requests
unless the validator sends "Connection: close".
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
READ_TIMEOUT_SECONDS = 10

log = logging.getLogger("bench.responder")


@dataclass
class ResponderCounts:
    answered: int = 0     # 200 with a key authorization
    wrong_host: int = 0   # known token, but the Host header named another device
    unknown: int = 0      # token not registered, or not a challenge path

    def reset(self) -> None:
        self.answered = self.wrong_host = self.unknown = 0


class Http01Responder:
    """Serves key authorizations registered with :meth:`add` until :meth:`remove`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.counts = ResponderCounts()
        self._answers: dict[str, tuple[str, bytes]] = {}  # token -> (device name, key authorization)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, backlog=1024)
        except OSError as exc:
            raise RuntimeError(f"http-01 responder cannot listen on {self.host}:{self.port}: {exc}; "
                               "free the port or choose another with --http01-port") from exc

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def add(self, token: str, name: str, key_authorization: str) -> None:
        self._answers[token] = (name, key_authorization.encode("ascii"))

    def remove(self, token: str) -> None:
        self._answers.pop(token, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
                keep_alive = self._answer(head, writer)
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # The event loop is shutting down with a validator's connection still open.
            pass
        finally:
            writer.close()

    def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        method, path, version = (lines[0].split(" ") + ["", "", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"

        status, body = b"404 Not Found", b"no such token\n"
        entry = self._answers.get(path[len(CHALLENGE_PREFIX):]) if path.startswith(CHALLENGE_PREFIX) else None
        host = _strip_port(headers.get("host", "")).rstrip(".").lower()
        if entry is None or method not in ("GET", "HEAD"):
            self.counts.unknown += 1
        elif host != entry[0]:
            self.counts.wrong_host += 1
            log.warning("http-01 request for %s came with Host %r", entry[0], host)
        else:
            self.counts.answered += 1
            status, body = b"200 OK", entry[1]
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                     + str(len(body)).encode() + (b"\r\n\r\n" if keep_alive else b"\r\nConnection: close\r\n\r\n")
                     + (body if method != "HEAD" else b""))
        return keep_alive


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host
