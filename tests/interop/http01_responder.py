"""A plain HTTP server for http-01 key authorizations that a client wrote into a webroot.

uacme (through its hook), dehydrated and acme-tiny only write the file
``<webroot>/.well-known/acme-challenge/<token>`` and expect a web server to publish
it. This responder is that web server, on a loopback port, for the duration of one
client run.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["CHALLENGE_PATH", "Http01Responder"]

CHALLENGE_PATH = "/.well-known/acme-challenge/"


class _ChallengeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files under the challenge path only and records each request."""

    server: _ResponderServer

    def do_GET(self) -> None:
        if self._is_challenge_path():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._is_challenge_path():
            super().do_HEAD()

    def _is_challenge_path(self) -> bool:
        if self.path.startswith(CHALLENGE_PATH):
            return True
        self.send_error(404, "only /.well-known/acme-challenge/ is served")
        return False

    def log_message(self, format: str, *args: object) -> None:
        # The default writes to stderr. Keeping the lines lets a test report
        # what the ACME server requested.
        with self.server.lock:
            self.server.request_log.append(format % args)


class _ResponderServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: functools.partial) -> None:
        super().__init__(address, handler)
        self.lock = threading.Lock()
        self.request_log: list[str] = []


class Http01Responder:
    """Serves ``webroot`` over plain HTTP on ``host:port`` while running.

    Use it as a context manager, or call ``start`` and ``stop``. ``start`` raises
    OSError if the port is taken.
    """

    def __init__(self, webroot: Path, port: int, host: str = "127.0.0.1") -> None:
        self.webroot = webroot
        self.port = port
        self.host = host
        self._server: _ResponderServer | None = None
        self._thread: threading.Thread | None = None
        self._request_log: list[str] = []

    @property
    def challenge_directory(self) -> Path:
        """Directory where a client writes key authorization files named by token."""
        return self.webroot / CHALLENGE_PATH.strip("/")

    @property
    def request_log(self) -> list[str]:
        """Access log lines of the requests served so far, oldest first."""
        if self._server is None:
            return list(self._request_log)
        with self._server.lock:
            return list(self._server.request_log)

    def start(self) -> None:
        """Create the challenge directory and start serving in a background thread."""
        if self._server is not None:
            raise RuntimeError(f"http-01 responder on {self.host}:{self.port} is already running")
        self.challenge_directory.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_ChallengeRequestHandler, directory=str(self.webroot))
        self._server = _ResponderServer((self.host, self.port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name=f"http01-responder-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.lock:
            self._request_log = list(server.request_log)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Http01Responder:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
