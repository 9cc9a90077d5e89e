"""A pebble-challtestsrv process used as the loopback DNS server of an interop run.

The ACME server under test and the clients' own DNS checks both resolve through it,
so no challenge lookup leaves the machine. It returns 127.0.0.1 for every A query,
because the clients' challenge responders listen there. Its own http-01, https-01 and
tls-alpn-01 responders are disabled, because the real clients serve those challenges.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "ChallengePorts",
    "ChallTestSrv",
    "ChallTestSrvError",
    "free_port",
    "start_server_process",
    "stop_server_process",
    "wait_for_tcp_port",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
MANAGEMENT_TIMEOUT_SECONDS = 5.0
FREE_PORT_ATTEMPTS = 20

# The management API is on loopback, so requests to it must not follow a proxy
# configured in the environment.
_DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ChallTestSrvError(RuntimeError):
    """pebble-challtestsrv failed to start or rejected a management request."""


def free_port(*, udp: bool = False) -> int:
    """Return a loopback TCP port that is free now, and also free for UDP if ``udp``.

    The port is released before returning, so another process can take it before
    the caller binds it. Callers that start a server on it must check that the
    server came up.
    """
    for _ in range(FREE_PORT_ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = tcp.getsockname()[1]
            if not udp:
                return port
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
                    datagram.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free loopback port found for TCP and UDP in {FREE_PORT_ATTEMPTS} attempts")


@dataclass(frozen=True)
class ChallengePorts:
    """Loopback ports where clients serve challenge responses and the ACME server validates them."""

    http01: int
    tlsalpn01: int


def wait_for_tcp_port(
    port: int, process: subprocess.Popen[bytes], timeout: float, host: str = LOOPBACK
) -> bool:
    """Wait until ``host:port`` accepts TCP connections while ``process`` runs.

    Returns False if the process exits or the timeout passes first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def start_server_process(
    command: list[str], log_path: Path, environment: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server subprocess with stdout and stderr written to ``log_path``.

    Where util-linux ``setpriv`` exists, the server gets SIGTERM when the test
    process dies without stopping it, so an aborted run leaves no server behind.
    ``setpriv`` replaces itself with the server, so the returned pid is the server's.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment
        )


def stop_server_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Send SIGTERM to ``process`` by its pid, and SIGKILL if it is still running after ``timeout``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class ChallTestSrv:
    """A running pebble-challtestsrv with its DNS server on a free loopback port.

    Use it as a context manager, or call ``start`` and ``stop``. The process output
    goes to ``challtestsrv.log`` in ``workdir``.
    """

    def __init__(self, workdir: Path, *, default_ipv4: str = LOOPBACK) -> None:
        self.workdir = workdir
        self.default_ipv4 = default_ipv4
        self.log_path = workdir / "challtestsrv.log"
        self.dns_port = 0
        self.management_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def dns_address(self) -> str:
        """Address of the DNS server as ``127.0.0.1:PORT``, for UDP and TCP."""
        return f"{LOOPBACK}:{self.dns_port}"

    @property
    def management_url(self) -> str:
        """Base URL of the management HTTP API, without a trailing slash."""
        return f"http://{LOOPBACK}:{self.management_port}"

    @property
    def pid(self) -> int | None:
        """Process id while the server runs, else None."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server and wait until its DNS and management ports accept connections."""
        if self._process is not None:
            raise ChallTestSrvError("pebble-challtestsrv is already running")
        executable = shutil.which("pebble-challtestsrv")
        if executable is None:
            raise ChallTestSrvError(
                "pebble-challtestsrv not found on PATH; install the Debian package pebble"
            )

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dns_port = free_port(udp=True)
        self.management_port = free_port()
        command = [
            executable,
            "-dns01", self.dns_address,
            "-management", f"{LOOPBACK}:{self.management_port}",
            "-http01", "",
            "-https01", "",
            "-tlsalpn01", "",
            "-defaultIPv4", self.default_ipv4,
            # An empty default makes AAAA queries return no records, so a validator
            # never tries ::1, where no client responder listens.
            "-defaultIPv6", "",
        ]
        self._process = start_server_process(command, self.log_path)

        # challtestsrv opens the DNS listeners before the management API, so a
        # management port that accepts connections means both are up.
        for port in (self.dns_port, self.management_port):
            if not wait_for_tcp_port(port, self._process, START_TIMEOUT_SECONDS):
                self.stop()
                raise ChallTestSrvError(
                    f"pebble-challtestsrv did not listen on 127.0.0.1:{port} within "
                    f"{START_TIMEOUT_SECONDS} s; its output:\n{self.read_log()}"
                )

    def stop(self) -> None:
        """Stop the server by its process id, killing it if SIGTERM is not enough."""
        process, self._process = self._process, None
        if process is not None:
            stop_server_process(process, STOP_TIMEOUT_SECONDS)

    def read_log(self) -> str:
        """Return the server's output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def set_txt(self, host: str, value: str) -> None:
        """Add a TXT record ``value`` for ``host``. Earlier values for the host are kept."""
        self._post("/set-txt", {"host": _fqdn(host), "value": value})

    def clear_txt(self, host: str) -> None:
        """Remove every TXT record of ``host``."""
        self._post("/clear-txt", {"host": _fqdn(host)})

    def _post(self, path: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(
            self.management_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with _DIRECT_OPENER.open(request, timeout=MANAGEMENT_TIMEOUT_SECONDS) as response:
            if response.status != 200:
                raise ChallTestSrvError(
                    f"challtestsrv {path} with {body} returned HTTP {response.status}"
                )

    def __enter__(self) -> ChallTestSrv:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _fqdn(host: str) -> str:
    # challtestsrv stores records under the fully qualified name, trailing dot included.
    return host if host.endswith(".") else host + "."
