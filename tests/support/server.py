"""A fleetca server run as a real subprocess, the way an operator runs it.

Each instance has its own data directory and loopback port; challenge
validation resolves names through the test's pebble-challtestsrv.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from contextlib import closing
import sys
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from tests.support.databases import backend, drop_postgres_database, new_database_url
from tests.interop.challtestsrv import (
    ChallengePorts,
    free_port,
    start_server_process,
    stop_server_process,
    wait_for_tcp_port,
)

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
DEVICE_SUFFIX = "devices.example.test"


class FleetcaError(RuntimeError):
    """fleetca failed to initialise or start; the message carries its output."""


def run_fleetca(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the fleetca CLI in a subprocess and return its completed process."""
    result = subprocess.run([sys.executable, "-m", "fleetca", *args], capture_output=True, text=True,
                            timeout=120, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise FleetcaError(f"fleetca {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


class FleetcaServer:
    """One fleetca data directory and, while started, its serving process."""

    def __init__(self, data_dir: Path, dns_address: str, ports: ChallengePorts, *,
                 permit_dns: tuple[str, ...] = (DEVICE_SUFFIX,), permit_ip: tuple[str, ...] = (),
                 database_url: str | None = None, ca_name: str = "default",
                 http_public_url: str | None = None, env: dict[str, str] | None = None,
                 public_url: str | None = None, serve_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.serve_args = serve_args
        self.dns_address = dns_address
        self.ports = ports
        self.permit_dns = permit_dns
        self.permit_ip = permit_ip
        # With FLEETCA_TEST_DATABASE=postgresql every server gets a new PostgreSQL database.
        self._owns_database = database_url is None and backend() == "postgresql"
        self.database_url = database_url or new_database_url()
        self.public_url = public_url
        self.ca_name = ca_name
        self.port = 0
        # The plain-HTTP listener for CRLs and OCSP.
        self.http_port = 0
        self.http_public_url = http_public_url
        self.env = env
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._engine: Engine | None = None

    @property
    def root_pem(self) -> Path:
        return self.data_dir / "root.pem"

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def http_base_url(self) -> str:
        return self.http_public_url or f"http://127.0.0.1:{self.http_port}"

    def directory_url(self, ca_name: str | None = None) -> str:
        return f"{self.base_url}/acme/{ca_name or self.ca_name}/directory"

    def init(self) -> None:
        args = ["init", "--data-dir", str(self.data_dir), "--ca", self.ca_name]
        for suffix in self.permit_dns:
            args += ["--permit-dns", suffix]
        for network in self.permit_ip:
            args += ["--permit-ip", network]
        if self.database_url:
            args += ["--database-url", self.database_url]
        run_fleetca(*args)

    def start(self) -> None:
        if self._process is not None:
            raise FleetcaError("fleetca is already running")
        self.port = self.port or free_port()
        self.http_port = self.http_port or free_port()
        command = [sys.executable, "-m", "fleetca", "serve", "--data-dir", str(self.data_dir),
                   "--listen", f"127.0.0.1:{self.port}",
                   "--http01-port", str(self.ports.http01), "--tlsalpn01-port", str(self.ports.tlsalpn01),
                   "--dns-resolver", self.dns_address, "--http-listen", f"127.0.0.1:{self.http_port}"]
        if self.http_public_url:
            command += ["--http-public-url", self.http_public_url]
        if self.database_url:
            command += ["--database-url", self.database_url]
        if self.public_url:
            command += ["--public-url", self.public_url]
        command += list(self.serve_args)
        with self.log_path.open("ab") as log:
            log.write(b"--- start ---\n")
        environment = {**os.environ, **self.env} if self.env else None
        self._process = start_server_process(command, self.log_path.with_suffix(".current.log"), environment)
        if not (wait_for_tcp_port(self.port, self._process, START_TIMEOUT_SECONDS)
                and wait_for_tcp_port(self.http_port, self._process, START_TIMEOUT_SECONDS)):
            output = self.read_log()
            self.stop()
            raise FleetcaError(f"fleetca did not listen on 127.0.0.1:{self.port}:\n{output}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_server_process(process, STOP_TIMEOUT_SECONDS)
            current = self.log_path.with_suffix(".current.log")
            if current.exists():
                with self.log_path.open("ab") as log:
                    log.write(current.read_bytes())

    def send_signal(self, signum: int) -> None:
        assert self._process is not None, "fleetca is not running"
        self._process.send_signal(signum)

    def wait_for_exit(self, timeout: float) -> int:
        """Wait for the serving process to end on its own and return its exit status."""
        assert self._process is not None, "fleetca is not running"
        return self._process.wait(timeout=timeout)

    def sibling(self, name: str) -> "FleetcaServer":
        """A second server process on the same data directory and database, with its own ports.

        It names itself by this server's public URL, so a client may send the same
        signed request to either process, as behind a load balancer.
        """
        other = FleetcaServer(self.data_dir, self.dns_address, self.ports, permit_dns=self.permit_dns,
                              permit_ip=self.permit_ip, database_url=self.database_url, ca_name=self.ca_name,
                              http_public_url=self.http_base_url, env=self.env,
                              public_url=self.public_url or self.base_url)
        other.log_path = self.data_dir.parent / f"{self.data_dir.name}-{name}-serve.log"
        return other

    def _database_engine(self) -> Engine:
        """Return the engine for the server's database URL, made on first use."""
        assert self.database_url is not None
        if self._engine is None:
            self._engine = create_engine(self.database_url.replace("postgresql://", "postgresql+psycopg://"),
                                         pool_size=1)
        return self._engine

    def query(self, sql: str, **params: object) -> list[tuple]:
        """Run a read-only SQL query on the server's database, SQLite or PostgreSQL."""
        if self.database_url:
            with self._database_engine().connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql), params)]
        uri = f"{(self.data_dir / 'fleetca.db').resolve().as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, **params: object) -> None:
        """Run one writing SQL statement on the server's database, as an operator's script would."""
        if self.database_url:
            with self._database_engine().begin() as conn:
                conn.execute(text(sql), params)
            return
        with closing(sqlite3.connect(self.data_dir / "fleetca.db", timeout=10)) as conn, conn:
            conn.execute(sql, params)

    def table_names(self) -> list[str]:
        if self.database_url:
            rows = self.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        else:
            rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        return sorted(row[0] for row in rows)

    # Tables that background jobs change on their own schedule, not requests.
    BACKGROUND_TABLES = ("used_nonces", "job_leases", "crl_shards")

    def snapshot(self, skip: tuple[str, ...] = BACKGROUND_TABLES) -> dict[str, list[tuple]]:
        """Every row of every table but ``skip``, for comparing stored state before and after."""
        return {name: sorted(self.query(f'SELECT * FROM "{name}"'), key=repr)
                for name in self.table_names() if name not in skip}

    def drop_database(self) -> None:
        """Drop the PostgreSQL database this server created, if any."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._owns_database and self.database_url:
            drop_postgres_database(self.database_url)
            self._owns_database = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def read_log(self) -> str:
        current = self.log_path.with_suffix(".current.log")
        return current.read_text(errors="replace") if current.exists() else ""

    def __enter__(self) -> "FleetcaServer":
        self.init()
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.drop_database()
