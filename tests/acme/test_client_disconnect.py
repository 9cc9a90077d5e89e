"""A client that closes its connection before sending the whole request body."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.interop.challtestsrv import ChallengePorts, ChallTestSrv
from tests.support.raw_http import open_partial_post
from tests.support.server import FleetcaServer

BODY = b'{"protected": "e30", "payload": "", "signature": "AAAA"}'
LOG_WAIT_SECONDS = 5.0


def request_events(log: str, path: str) -> list[dict]:
    events = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("message") == "request" and record.get("path") == path:
            events.append(record)
    return events


def test_disconnect_mid_body_logged_malformed(tmp_path: Path, dns_server: ChallTestSrv,
                                                     validation_ports: ChallengePorts) -> None:
    path = "/acme/default/new-account"
    with FleetcaServer(tmp_path / "data", dns_server.dns_address, validation_ports) as server:
        conn = open_partial_post(server, path, BODY, 20)
        conn.close()
        deadline = time.monotonic() + LOG_WAIT_SECONDS
        while not request_events(server.read_log(), path) and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.read_log()

    events = request_events(log, path)
    assert len(events) == 1
    assert events[0]["status"] == 400
    assert events[0]["problem"] == "malformed"
    assert "unhandled error" not in log
    assert "ClientDisconnect" not in log
