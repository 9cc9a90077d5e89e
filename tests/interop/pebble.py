"""A Pebble process, the reference ACME server that the interop harness is proven on.

Pebble (the Let's Encrypt test CA) is used in place of fleetca until fleetca can
serve a directory. It listens on loopback only, resolves names through a given DNS server,
and validates http-01 and tls-alpn-01 on the ports given here, where the clients
listen.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path
from types import TracebackType

from .challtestsrv import (
    LOOPBACK,
    free_port,
    start_server_process,
    stop_server_process,
    wait_for_tcp_port,
)
from .tls import make_server_tls

__all__ = ["Pebble", "PebbleError"]

START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 5.0

# Pebble's defaults make clients robust, but they make a test run slow and
# random: validation sleeps up to 15 s, 5 % of good nonces are rejected, and half
# of the valid authorizations are reused so no challenge is solved at all.
PEBBLE_TEST_ENVIRONMENT = {
    "PEBBLE_VA_NOSLEEP": "1",
    "PEBBLE_WFE_NONCEREJECT": "0",
    "PEBBLE_AUTHZREUSE": "0",
}


class PebbleError(RuntimeError):
    """Pebble failed to start, or a request to it failed."""


class Pebble:
    """A running Pebble with a fresh HTTPS certificate, on free loopback ports.

    ``ca_bundle`` is the PEM file that clients must trust to reach
    ``directory_url``. Pebble's own issuing root changes on every start and is
    available from ``issuing_root_pem``. With ``eab_mac_keys`` (key id to MAC key
    in base64url without padding) Pebble requires external account binding for
    every new account.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        dns_address: str,
        http01_port: int,
        tlsalpn01_port: int,
        eab_mac_keys: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.dns_address = dns_address
        self.http01_port = http01_port
        self.tlsalpn01_port = tlsalpn01_port
        self.eab_mac_keys = dict(eab_mac_keys or {})
        self.log_path = workdir / "pebble.log"
        self.config_path = workdir / "pebble-config.json"
        self.acme_port = 0
        self.management_port = 0
        self.ca_bundle = workdir / "tls" / "ca.pem"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def directory_url(self) -> str:
        """URL of the ACME directory resource."""
        return f"https://{LOOPBACK}:{self.acme_port}/dir"

    @property
    def pid(self) -> int | None:
        """Process id while Pebble runs, else None."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Write the config, start Pebble and wait until it serves the directory."""
        if self._process is not None:
            raise PebbleError("Pebble is already running")
        executable = shutil.which("pebble")
        if executable is None:
            raise PebbleError("pebble not found on PATH; install the Debian package pebble")

        tls = make_server_tls(self.workdir / "tls")
        self.ca_bundle = tls.ca_bundle
        self.acme_port = free_port()
        self.management_port = free_port()
        config = {
            "pebble": {
                "listenAddress": f"{LOOPBACK}:{self.acme_port}",
                "managementListenAddress": f"{LOOPBACK}:{self.management_port}",
                "certificate": str(tls.certificate),
                "privateKey": str(tls.private_key),
                "httpPort": self.http01_port,
                "tlsPort": self.tlsalpn01_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": bool(self.eab_mac_keys),
            }
        }
        if self.eab_mac_keys:
            config["pebble"]["externalAccountMACKeys"] = self.eab_mac_keys
        self.config_path.write_text(json.dumps(config, indent=2))

        command = [executable, "-config", str(self.config_path), "-dnsserver", self.dns_address]
        self._process = start_server_process(
            command, self.log_path, {**os.environ, **PEBBLE_TEST_ENVIRONMENT}
        )

        if not wait_for_tcp_port(self.acme_port, self._process, START_TIMEOUT_SECONDS):
            self.stop()
            raise PebbleError(
                f"Pebble did not listen on {LOOPBACK}:{self.acme_port} within "
                f"{START_TIMEOUT_SECONDS} s; its output:\n{self.read_log()}"
            )
        # Fetching the directory proves that the TLS files and ca_bundle match.
        try:
            self.fetch(self.directory_url)
        except PebbleError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Pebble by its process id, killing it if SIGTERM is not enough."""
        process, self._process = self._process, None
        if process is not None:
            stop_server_process(process, STOP_TIMEOUT_SECONDS)

    def read_log(self) -> str:
        """Return Pebble's output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def issuing_root_pem(self) -> bytes:
        """Fetch the root certificate that Pebble's issued chains lead to."""
        return self.fetch(f"https://{LOOPBACK}:{self.management_port}/roots/0")

    def fetch(self, url: str) -> bytes:
        """GET ``url`` from Pebble over HTTPS, trusting ``ca_bundle`` only."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        try:
            with opener.open(url, timeout=REQUEST_TIMEOUT_SECONDS) as response:
                return response.read()
        except OSError as error:
            raise PebbleError(f"GET {url} failed: {error}; Pebble output:\n{self.read_log()}") from error

    def __enter__(self) -> Pebble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
