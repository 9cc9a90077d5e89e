"""HTTPS peers for the matrix: lighttpd serving a chain, and curl and headless Chromium fetching a page.

lighttpd listens on a free loopback port with one TLS module (mod_mbedtls,
mod_wolfssl or mod_openssl). The clients trust only the fleetca root and reach
the device name on 127.0.0.1 through a resolver override, so no lookup leaves
the machine.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.interop.challtestsrv import (
    free_port,
    start_server_process,
    stop_server_process,
    wait_for_tcp_port,
)
from tests.matrix.outcomes import (
    CERT_INVALID,
    HANDSHAKE_FAILED,
    NOT_LOADED,
    OK,
    OTHER,
    OUTSIDE,
    Outcome,
    first_line_with,
)

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
CLIENT_TIMEOUT_SECONDS = 60
TLS_MODULES = ("mod_mbedtls", "mod_wolfssl", "mod_openssl")

# Flags for Debian's Chromium run headless as root on a machine without a network:
# no sandbox (root), no GPU, and none of the background fetches that would fail.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server",
)
CHROMIUM_LOAD_FAILED = re.compile(r"Page load failed: (net::ERR_[A-Z_]+)")
# Chromium errors that end the connection during the handshake, before any certificate check.
CHROMIUM_HANDSHAKE_ERRORS = ("net::ERR_CONNECTION_CLOSED", "net::ERR_CONNECTION_RESET", "net::ERR_SSL_PROTOCOL_ERROR")

# lighttpd starts each error-log line with "YYYY-MM-DD HH:MM:SS: ".
LOG_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}: ")

CURL_PEER_VERIFICATION_FAILED = 60
CURL_HANDSHAKE_FAILED = 35


class ToolMissing(RuntimeError):
    """A program the matrix runs is not installed."""


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} not found on PATH; run scripts/install-deps to install the Debian packages")
    return path


def page_body(marker: str) -> str:
    return f"<!doctype html><title>fleetca matrix</title><p id=\"marker\">{html.escape(marker)}</p>\n"


class Lighttpd:
    """lighttpd serving ``chain_pem`` with one TLS module on 127.0.0.1, with a page containing ``marker``.

    ``start`` returns None when the server listens, or a NOT_LOADED outcome with
    the reason when lighttpd exits first, as it does when its TLS library cannot
    parse the chain.
    """

    def __init__(self, workdir: Path, module: str, chain_pem: bytes, key_pem: bytes, marker: str) -> None:
        if module not in TLS_MODULES:
            raise ValueError(f"unknown lighttpd TLS module {module!r}: expected one of {', '.join(TLS_MODULES)}")
        self.workdir = workdir
        self.module = module
        self.port = 0
        self.error_log = workdir / "error.log"
        self.output_log = workdir / "output.log"
        self._log_offset = 0
        self._process: subprocess.Popen[bytes] | None = None

        document_root = workdir / "www"
        document_root.mkdir(parents=True, exist_ok=True)
        (document_root / "index.html").write_text(page_body(marker))
        (workdir / "chain.pem").write_bytes(chain_pem)
        key = workdir / "key.pem"
        key.write_bytes(key_pem)
        key.chmod(0o600)

    def _config(self) -> str:
        return "\n".join([
            f'server.modules = ("{self.module}")',
            f'server.document-root = "{self.workdir / "www"}"',
            'server.bind = "127.0.0.1"',
            f"server.port = {self.port}",
            f'server.errorlog = "{self.error_log}"',
            'index-file.names = ("index.html")',
            'mimetype.assign = (".html" => "text/html")',
            'ssl.engine = "enable"',
            f'ssl.pemfile = "{self.workdir / "chain.pem"}"',
            f'ssl.privkey = "{self.workdir / "key.pem"}"',
            "",
        ])

    def start(self) -> Outcome | None:
        self.port = free_port()
        config = self.workdir / "lighttpd.conf"
        config.write_text(self._config())
        command = [require_program("lighttpd"), "-D", "-f", str(config)]
        self._process = start_server_process(command, self.output_log)
        if wait_for_tcp_port(self.port, self._process, START_TIMEOUT_SECONDS):
            self._log_offset = self._error_log_size()
            return None
        self.stop()
        reason = first_line_with(self.read_logs(), "failed", "error")
        return Outcome(NOT_LOADED, self._clean(reason))

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_server_process(process, STOP_TIMEOUT_SECONDS)

    def _error_log_size(self) -> int:
        return self.error_log.stat().st_size if self.error_log.exists() else 0

    def read_logs(self) -> str:
        parts = [path.read_text(errors="replace") for path in (self.error_log, self.output_log) if path.exists()]
        return "\n".join(parts)

    def new_errors(self) -> str:
        """Distinct error-log lines written since the last call (or since start), without timestamps."""
        if not self.error_log.exists():
            return ""
        with self.error_log.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        self._log_offset += len(text.encode())
        lines = [self._clean(line) for line in text.splitlines() if line.strip()]
        return "; ".join(dict.fromkeys(lines))

    def _clean(self, line: str) -> str:
        """A log line without its timestamp and with paths relative to the work directory."""
        return LOG_TIMESTAMP.sub("", line.strip()).replace(f"{self.workdir}/", "")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def with_server_errors(outcome: Outcome, server: Lighttpd) -> Outcome:
    """Add what the server logged to the detail of a failed fetch."""
    if outcome.code == OK:
        server.new_errors()
        return outcome
    errors = server.new_errors()
    return Outcome(outcome.code, f"{outcome.detail}; server: {errors}" if errors else outcome.detail)


def curl_fetch(root: Path, name: str, port: int, marker: str, *, status_request: bool = False) -> Outcome:
    """GET https://NAME:PORT/ with curl, trusting only ``root``, NAME resolving to 127.0.0.1.

    With ``status_request`` curl requests a stapled OCSP response, as Chromium does.
    """
    command = [require_program("curl"), "--silent", "--show-error", "--noproxy", "*", "--cacert", str(root),
               "--resolve", f"{name}:{port}:127.0.0.1", "--max-time", "20", f"https://{name}:{port}/"]
    if status_request:
        command.append("--cert-status")
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_SECONDS)
    if result.returncode == 0 and marker in html.unescape(result.stdout):
        return Outcome(OK)
    error = first_line_with(result.stderr, "curl:")
    if result.returncode == CURL_PEER_VERIFICATION_FAILED and "subtree violation" in result.stderr:
        return Outcome(OUTSIDE, error)
    if result.returncode == CURL_HANDSHAKE_FAILED:
        return Outcome(HANDSHAKE_FAILED, error)
    return Outcome(OTHER, f"exit {result.returncode}: {error or result.stdout[:200]}")


class Chromium:
    """Headless Chromium with a HOME of its own whose NSS database trusts only the fleetca root."""

    def __init__(self, workdir: Path, root: Path) -> None:
        self.executable = require_program("chromium")
        certutil = require_program("certutil")
        self.workdir = workdir
        self.home = workdir / "home"
        nssdb = self.home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True, exist_ok=True)
        database = f"sql:{nssdb}"
        for command in ([certutil, "-d", database, "-N", "--empty-password"],
                        [certutil, "-d", database, "-A", "-t", "C,,", "-n", "fleetca", "-i", str(root)]):
            subprocess.run(command, check=True, capture_output=True, timeout=CLIENT_TIMEOUT_SECONDS)

    def version(self) -> str:
        result = subprocess.run([self.executable, "--version"], check=False, capture_output=True, text=True,
                                timeout=CLIENT_TIMEOUT_SECONDS, env=self._environment())
        return result.stdout.strip()

    def _environment(self) -> dict[str, str]:
        return {"HOME": str(self.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}

    def fetch(self, name: str, port: int, marker: str) -> Outcome:
        """Load https://NAME:PORT/ and look for ``marker`` in the page's DOM."""
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix="profile-") as profile:
            result = subprocess.run(
                [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                 f"--host-resolver-rules=MAP {name} 127.0.0.1", "--dump-dom", f"https://{name}:{port}/"],
                check=False, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_SECONDS,
                env=self._environment())
        if marker in html.unescape(result.stdout):
            return Outcome(OK)
        failure = CHROMIUM_LOAD_FAILED.search(result.stderr)
        if failure is None:
            return Outcome(OTHER, f"exit {result.returncode}, no page and no load error: {result.stdout[:200]}")
        error = failure.group(1)
        if error == "net::ERR_CERT_INVALID":
            return Outcome(CERT_INVALID, error)
        if error == "net::ERR_CERT_NAME_CONSTRAINT_VIOLATION":
            return Outcome(OUTSIDE, error)
        if error in CHROMIUM_HANDSHAKE_ERRORS:
            return Outcome(HANDSHAKE_FAILED, error)
        return Outcome(OTHER, error)
