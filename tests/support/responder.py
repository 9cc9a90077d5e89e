"""An http-01 responder serving key authorizations from memory, for raw-protocol tests."""

from __future__ import annotations

import http.server
import threading

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


class KeyAuthorizationResponder:
    """Serves ``/.well-known/acme-challenge/<token>`` on 127.0.0.1:port from a dict."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: dict[str, str] = {}
        self.requests: list[str] = []
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                responder.requests.append(self.path)
                token = self.path.removeprefix(CHALLENGE_PREFIX)
                answer = responder.answers.get(token) if self.path.startswith(CHALLENGE_PREFIX) else None
                if answer is None:
                    self.send_error(404)
                    return
                body = answer.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "KeyAuthorizationResponder":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
