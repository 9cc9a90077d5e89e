"""The benchmark's delay proxy: bytes arrive intact, in order, and each round trip takes the added time."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parents[2] / "bench" / "delay_proxy.py"
ROUND_TRIP_MS = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback TCP server that sends every byte back, one connection at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                while data := connection.recv(65536):
                    connection.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield port
    listener.close()


@pytest.fixture
def proxy_port(echo_port: int) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(PROXY), "--listen-port", str(port),
                                "--upstream", f"127.0.0.1:{echo_port}", "--round-trip-ms", str(ROUND_TRIP_MS)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        assert chunk, "the proxy closed the connection early"
        data += chunk
    return data


def test_proxy_delays_each_round_trip(proxy_port: int) -> None:
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as connection:
        round_trips = []
        for n in range(5):
            message = bytes([n]) * 100
            started = time.perf_counter()
            connection.sendall(message)
            echoed = receive_exactly(connection, len(message))
            round_trips.append((time.perf_counter() - started) * 1000)
            assert echoed == message

    assert min(round_trips) >= ROUND_TRIP_MS
    assert max(round_trips) < ROUND_TRIP_MS + 200  # wide, for a loaded CI machine


def test_proxy_keeps_large_streams_intact(proxy_port: int) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, more than one read of the proxy
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as connection:
        sender = threading.Thread(target=connection.sendall, args=(payload,))
        sender.start()
        echoed = receive_exactly(connection, len(payload))
        sender.join()

    assert echoed == payload


def test_proxy_rejects_remote_upstream() -> None:
    result = subprocess.run([sys.executable, str(PROXY), "--listen-port", str(free_port()),
                             "--upstream", "192.0.2.1:5432", "--round-trip-ms", "1"],
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert "must be on loopback" in result.stderr
