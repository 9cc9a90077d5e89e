"""Running the HTTPS ACME server and the plain-HTTP CRL/OCSP server in one process.

Both uvicorn servers share one event loop. uvicorn would install its signal
handlers once per server, each replacing the other's, so they are switched off
here and one handler stops both servers together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

log = logging.getLogger("fleetca.server")


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve_all`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class CredentialRenewal:
    """A task that renews the server's credentials while it runs, and reloads its TLS certificate file when it changes.

    ``renew`` re-issues what nears its end, and runs every ``every_seconds``.
    Several worker processes share one certificate file, so each reloads the
    file whenever its modification time changes, whichever process wrote it.
    """

    def __init__(self, renew: Callable[[], None], every_seconds: float) -> None:
        self.renew = renew
        self.every_seconds = every_seconds

    async def run(self, configs: list[uvicorn.Config]) -> None:
        loaded = {config.ssl_certfile: _modified(config.ssl_certfile) for config in configs if config.ssl_certfile}
        while True:
            await asyncio.sleep(self.every_seconds)
            try:
                self.renew()
                for config in configs:
                    if config.ssl is None or not config.ssl_certfile:
                        continue
                    modified = _modified(config.ssl_certfile)
                    if modified != loaded.get(config.ssl_certfile):
                        config.ssl.load_cert_chain(config.ssl_certfile)
                        loaded[config.ssl_certfile] = modified
                        log.info("loaded a new TLS certificate from %s", config.ssl_certfile)
            except Exception:
                log.exception("renewing the server's TLS certificate or the root CRL failed; will retry")


def _modified(path: str | os.PathLike[str]) -> int:
    return os.stat(path).st_mtime_ns


async def _serve_all(configs: list[uvicorn.Config], sockets: list[socket.socket] | None = None,
                     renewal: CredentialRenewal | None = None) -> None:
    servers = [_QuietServer(config) for config in configs]

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    def on_signal() -> None:
        # A second signal skips the graceful wait, as uvicorn does on its own.
        # Only a signal may do that: when one server has stopped after the
        # first signal, the others must still finish their open requests.
        for server in servers:
            if server.should_exit:
                server.force_exit = True
        stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if sockets is None:
        tasks = [asyncio.create_task(server.serve()) for server in servers]
    else:
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in zip(servers, sockets)]
    renewing = loop.create_task(renewal.run(configs)) if renewal is not None else None
    try:
        # When one server stops (or fails to bind its port), the others stop too.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*tasks)
    finally:
        if renewing is not None:
            renewing.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


class _CoalescingTransport:
    """A transport that joins the writes of one event-loop iteration into one write of the transport below.

    uvicorn writes a response's status line and headers, then its body,
    as two writes. Over TLS each write becomes a record of its own, a system
    call and a TCP segment, and the client needs two reads. Joined, the
    benchmark's server CPU per certificate fell by about 9 % (docs/performance.md).
    """

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def coalescing_protocol() -> type | str:
    """Return uvicorn's httptools protocol with :class:`_CoalescingTransport` below it, or "auto" without httptools."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is missing, so uvicorn picks h11 as usual
        return "auto"

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    return CoalescingHttpToolsProtocol


def serve_all(configs: list[uvicorn.Config], sockets: list[socket.socket] | None = None,
              renewal: CredentialRenewal | None = None) -> None:
    """Serve every config until SIGINT or SIGTERM, or until one of them fails to start.

    With ``sockets`` (one per config, already listening) the servers accept on
    them instead of binding their own, as worker processes do. The event loop
    is uvloop when it is installed, as uvicorn itself would choose.
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_all(configs, sockets, renewal))
    else:
        uvloop.run(_serve_all(configs, sockets, renewal))


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind and listen on ``host:port``; with ``reuse_port`` several processes may bind the same address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def run_workers(count: int, worker: Callable[[], None]) -> int:
    """Fork ``count`` processes that each run ``worker``; return an exit status.

    The parent only supervises: SIGINT and SIGTERM go to every worker, and when
    one worker exits the others are stopped too, so a broken worker is never
    silently left out of the pool.
    """
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                worker()
            except BaseException:  # the worker's own logging has reported it
                status = 1
            os._exit(status)
        pids.append(pid)

    remaining = set(pids)
    stopping: set[int] = set()

    def forward(signum: int, _frame: object) -> None:
        # A signal from the operator reaches every worker; a second one makes
        # them skip the graceful wait, as uvicorn does on its own.
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
            stopping.add(pid)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    status = 0
    while remaining:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        status = status or os.waitstatus_to_exitcode(wait_status)
        # One worker gone stops the others, each signalled once so they stop gracefully.
        for other in remaining - stopping:
            with contextlib.suppress(ProcessLookupError):
                os.kill(other, signal.SIGTERM)
            stopping.add(other)
    return status
