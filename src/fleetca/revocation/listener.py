"""Running the HTTPS ACME server and the plain-HTTP CRL/OCSP server in one process.

Both uvicorn servers share one event loop. uvicorn would install its signal
handlers once per server, each replacing the other's, so they are switched off
here and one handler stops both servers together.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import uvicorn


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve_all`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_all(configs: list[uvicorn.Config]) -> None:
    servers = [_QuietServer(config) for config in configs]

    def stop() -> None:
        for server in servers:
            # A second signal skips the graceful wait, as uvicorn does on its own.
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        # When one server stops (or fails to bind its port), the others stop too.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*tasks)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve_all(configs: list[uvicorn.Config]) -> None:
    """Serve every config until SIGINT or SIGTERM, or until one of them fails to start.

    The event loop is uvloop when it is installed, as uvicorn itself would choose.
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_all(configs))
    else:
        uvloop.run(_serve_all(configs))
