"""A TCP proxy on loopback that delays every byte by a fixed time, to stand in for a network link.

The benchmark puts it between fleetca and PostgreSQL to show what a database
on another machine costs. The kernel's netem queueing discipline would do
this without a proxy, but only where the kernel has the sch_netem module,
which the machines of these benchmarks lack.

Each direction of a connection has a receiving thread, which stamps each chunk
with the time it is due, and a sending thread, which sleeps until then. A
round trip through the proxy therefore takes at least ``--round-trip-ms``, plus
the proxy's own time to pass the bytes on and to wake its threads. Measured
with psycopg's ``SELECT 1`` against a local PostgreSQL on 2 cores: 0.09 ms
per round trip directly, 0.17 ms through the proxy at 0 ms and 0.77 ms at
0.5 ms.

    python bench/delay_proxy.py --listen-port 55432 --upstream 127.0.0.1:5432 --round-trip-ms 0.5
"""

from __future__ import annotations

import argparse
import queue
import socket
import threading
import time

LOOPBACK = "127.0.0.1"


def _pump(source: socket.socket, destination: socket.socket, delay: float) -> None:
    """Copy bytes from ``source`` to ``destination``, each chunk ``delay`` seconds after it arrived."""
    pending: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            pending.put((time.monotonic() + delay, data))
            if not data:
                return

    def send() -> None:
        while True:
            due, data = pending.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    destination.shutdown(socket.SHUT_WR)
                    return
                destination.sendall(data)
            except OSError:
                return

    for target in (receive, send):
        threading.Thread(target=target, daemon=True).start()


def serve(listen_port: int, upstream: tuple[str, int], round_trip: float) -> None:
    listener = socket.create_server((LOOPBACK, listen_port))
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(upstream)
        for connection in (client, server):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _pump(client, server, round_trip / 2)
        _pump(server, client, round_trip / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True, help="port to listen on, on 127.0.0.1")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to, on a loopback address")
    parser.add_argument("--round-trip-ms", type=float, required=True,
                        help="milliseconds added to each round trip, half in each direction")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    if not host.startswith("127.") and host not in ("localhost", "::1"):
        parser.error(f"--upstream must be on loopback, not {host}")
    serve(args.listen_port, (host, int(port)), args.round_trip_ms / 1000)


if __name__ == "__main__":
    main()
