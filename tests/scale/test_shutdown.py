"""Stopping a serving process with SIGTERM, as an orchestrator or a load balancer's drain does."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.raw_http import open_partial_post, read_response
from tests.support.server import FleetcaServer

# A JWS whose header is an empty object: the server responds with a problem document.
MALFORMED_JWS = b'{"protected": "e30", "payload": "", "signature": "AAAA"}'
SENT_BEFORE_SIGNAL = 20
EXIT_TIMEOUT_SECONDS = 15.0


def test_sigterm_lets_open_request_finish(tmp_path: Path, dns_server: ChallTestSrv,
                                          validation_ports: ChallengePorts) -> None:
    # The plain-HTTP listener is on, so the process runs two servers: the one
    # with no open connection stops first, and the other must still respond.
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
