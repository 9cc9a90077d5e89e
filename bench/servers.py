"""Starting and stopping the servers under test and the loopback DNS server.

Every server listens on 127.0.0.1 only, resolves challenge names through the
benchmark's DNS server, and validates http-01 on the responder's port. Each
server gets a fresh work directory (and, for PostgreSQL, a fresh database)
per run, and is stopped by its own PID.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from urllib.request import Request, urlopen

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from http11 import HttpConnection, HttpError, client_ssl_context
from pg_statements import StatementLog
from procstat import process_cpu_seconds

LOOPBACK = "127.0.0.1"
DEVICE_DOMAIN = "devices.example.test"
STARTUP_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 15
# How often the benchmark analyzes its PostgreSQL database when the server's
# autovacuum is off. Autovacuum would analyze a table once a tenth of it
# changed, which on a table that grows from empty comes sooner still.
ANALYZE_EVERY_SECONDS = 10.0

log = logging.getLogger("bench.servers")


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def clean_environment(**extra: str) -> dict[str, str]:
    """Return this process's environment without proxy settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(extra)
    return env


class ManagedProcess:
    """A child process with its output in a log file, stopped by PID."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env or clean_environment(), cwd=cwd, start_new_session=True)
        self.pid = self.process.pid

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status {self.process.returncode} during start-up; "
                               f"its output is in {self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop within %d s of SIGTERM; sending SIGKILL",
                            self.name, self.pid, STOP_TIMEOUT_SECONDS)
                self.process.kill()
                self.process.wait()
        self._log.close()


async def _wait_for_port(port: int, process: ManagedProcess) -> None:
    """Wait until ``process`` accepts TCP connections on ``port`` of the loopback address."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        process.check_running()
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{process.name} did not listen on port {port} within {STARTUP_TIMEOUT_SECONDS} s")


class DnsServer:
    """pebble-challtestsrv as a DNS server only: every A query gets 127.0.0.1, AAAA gets no answer."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.address = f"{LOOPBACK}:{port}"
        self.management = f"http://{LOOPBACK}:{free_port()}"
        self.process = ManagedProcess("pebble-challtestsrv", [
            "pebble-challtestsrv", "-dns01", self.address, "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-management", self.management.removeprefix("http://"), "-defaultIPv4", LOOPBACK, "-defaultIPv6", "",
        ], workdir / "challtestsrv.log")

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            self.process.check_running()
            try:
                self.query_count("ready.invalid")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pebble-challtestsrv did not start; see {self.process.log_path}")
                await asyncio.sleep(0.1)

    def query_count(self, name: str) -> int:
        """Return how many DNS questions for ``name`` the server has seen."""
        request = Request(f"{self.management}/dns-request-history", data=json.dumps({"host": name}).encode())
        with urlopen(request, timeout=5) as response:
            return len(json.load(response) or [])

    def clear_history(self, name: str) -> None:
        request = Request(f"{self.management}/clear-request-history",
                          data=json.dumps({"host": name, "type": "dns"}).encode())
        with urlopen(request, timeout=5):
            pass

    def stop(self) -> None:
        self.process.stop()


class ServerUnderTest:
    """Common start-up and measurement hooks; subclasses start one kind of server."""

    name = "server"

    def __init__(self, workdir: Path, dns_address: str, http01_port: int) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True)
        self.dns_address = dns_address
        self.http01_port = http01_port
        self.port = free_port()
        self.process: ManagedProcess | None = None
        self.directory_url = ""
        self.ca_file = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def version(self) -> str:
        return ""

    async def start(self) -> None:
        raise NotImplementedError

    def database_cpu_seconds(self) -> dict[int, float]:
        """CPU seconds of database server processes that work for this server, by PID; empty when in-process."""
        return {}

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def cleanup(self) -> None:
        """Remove what :meth:`start` created outside the work directory."""

    async def _wait_for_directory(self, ca_file_ready: bool = True) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        last_error = "no attempt"
        while time.monotonic() < deadline:
            self.process.check_running()
            if ca_file_ready or Path(self.ca_file).exists():
                connection = HttpConnection(self.directory_url, client_ssl_context(self.ca_file), timeout=5)
                try:
                    response = await connection.request("GET", self.directory_url)
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
                except (HttpError, OSError) as exc:
                    last_error = str(exc)
                finally:
                    await connection.close()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not serve {self.directory_url} within {STARTUP_TIMEOUT_SECONDS} s "
                           f"({last_error}); its output is in {self.process.log_path}:\n{self.process.tail()}")


class FleetcaSource:
    """The fleetca source tree to run: a commit exported with git archive, or the work tree as it is.

    A commit is the default so that the numbers belong to code anyone can check
    out, whatever is being edited in the work tree meanwhile.
    """

    def __init__(self, repository: Path, ref: str, workdir: Path, python: str | None = None) -> None:
        # The interpreter that runs fleetca. Any other than the harness's needs
        # fleetca's dependencies installed, as another venv's bin/python has.
        self.python = python or sys.executable
        self._export(repository, ref, workdir)
        if python is not None:
            # Import the server's modules now, so that a missing dependency stops the run before any round.
            check = subprocess.run([python, "-c", "import platform, fleetca.cli.main; print(platform.python_version())"],
                                   capture_output=True, text=True, env=clean_environment(PYTHONPATH=str(self.src)))
            if check.returncode != 0:
                raise RuntimeError(f"{python} failed to import fleetca from {self.src}; use an interpreter with "
                                   f"fleetca's dependencies installed, such as another venv's bin/python:\n"
                                   f"{check.stderr.strip()}")
            version = check.stdout.strip()
            self.label += f"-python{version}"
            self.description += f", on Python {version} ({python})"

    def _export(self, repository: Path, ref: str, workdir: Path) -> None:
        if ref == "worktree":
            self.src = repository / "src"
            self.label = "worktree"
            self.description = f"work tree of {repository} at {_git(repository, 'rev-parse', '--short', 'HEAD')}"
            dirty = _git(repository, "status", "--porcelain", "--", "src")
            if dirty:
                self.description += " with uncommitted changes"
            return
        commit = _git(repository, "rev-parse", "--short", f"{ref}^{{commit}}")
        target = workdir / f"fleetca-{commit}"
        self.src = target / "src"
        self.description = f"commit {commit}"
        self.label = commit
        if target.exists():  # the other source of the run names the same commit
            return
        target.mkdir()
        archive = subprocess.run(["git", "archive", "--format=tar", commit, "src"], cwd=repository,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def _git(repository: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repository, capture_output=True, text=True,
                          check=True).stdout.strip()


class FleetcaServer(ServerUnderTest):
    """fleetca with its default SQLite database in the data directory."""

    name = "fleetca-sqlite"

    def __init__(self, workdir: Path, dns_address: str, http01_port: int, source: "FleetcaSource",
                 workers: int = 1, label: str | None = None) -> None:
        if label is not None:
            # A second source in the same run reports under its own name, e.g. "fleetca-sqlite@1a2b3c4".
            self.name = f"{self.name}@{label}"
        super().__init__(workdir, dns_address, http01_port)
        self.source = source
        self.workers = workers
        self.data_dir = self.workdir / "data"
        self.cpu_profile: Path | None = None

    def profile_cpu(self, output: Path) -> None:
        """Run the server under bench/cpu_sampler.py, which writes its profile to ``output``; call before start."""
        self.cpu_profile = output

    def start_cpu_sampling(self) -> None:
        assert self.process is not None and self.cpu_profile is not None
        self.process.process.send_signal(signal.SIGUSR1)

    async def stop_cpu_sampling(self) -> None:
        assert self.process is not None and self.cpu_profile is not None
        self.cpu_profile.unlink(missing_ok=True)
        self.process.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not self.cpu_profile.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def database_url(self) -> str | None:
        return None

    def version(self) -> str:
        return f"{self.source.description}, {self.workers} worker{'s' if self.workers > 1 else ''}"

    def _command(self, *args: str, profiled: bool = False) -> list[str]:
        if profiled and self.cpu_profile is not None:
            sampler = Path(__file__).with_name("cpu_sampler.py")
            return [self.source.python, str(sampler), str(self.cpu_profile), *args]
        return [self.source.python, "-m", "fleetca", *args]

    async def start(self) -> None:
        env = clean_environment(PYTHONPATH=str(self.source.src))
        url_args = ["--database-url", url] if (url := self.database_url()) else []
        init = subprocess.run(self._command("init", "--data-dir", str(self.data_dir), "--permit-dns", DEVICE_DOMAIN,
                                            *url_args),
                              capture_output=True, text=True, env=env)
        if init.returncode != 0:
            raise RuntimeError(f"fleetca init failed with status {init.returncode}:\n{init.stderr}")
        self.process = ManagedProcess(self.name, self._command(
            "serve", "--data-dir", str(self.data_dir), "--listen", f"{LOOPBACK}:{self.port}",
            "--http01-port", str(self.http01_port), "--tlsalpn01-port", str(free_port()),
            "--dns-resolver", self.dns_address, *url_args,
            *(["--workers", str(self.workers)] if self.workers > 1 else []), profiled=True,
        ), self.workdir / "server.log", env=env)
        self.directory_url = f"https://{LOOPBACK}:{self.port}/acme/default/directory"
        self.ca_file = str(self.data_dir / "root.pem")
        await self._wait_for_directory()


class FleetcaPostgresServer(FleetcaServer):
    """fleetca on a PostgreSQL database created for this run and dropped afterwards."""

    name = "fleetca-postgres"

    def __init__(self, workdir: Path, dns_address: str, http01_port: int, source: "FleetcaSource",
                 postgres_admin_url: str, workers: int = 1, label: str | None = None,
                 round_trip_ms: float = 0.0) -> None:
        super().__init__(workdir, dns_address, http01_port, source, workers, label)
        import psycopg

        self._psycopg = psycopg
        self.admin_url = postgres_admin_url
        self.database = f"fleetca_bench_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self._created = True
        self.statement_log: StatementLog | None = None
        # With a round trip time, fleetca reaches the database through bench/delay_proxy.py.
        self.round_trip_ms = round_trip_ms
        self._proxy: ManagedProcess | None = None
        self._proxy_port = free_port() if round_trip_ms > 0 else 0
        self._analyzer: Analyzer | None = None

    def log_statements(self) -> None:
        """Have PostgreSQL log every statement of this database, to count them; call before start."""
        self.statement_log = StatementLog(self._psycopg, self.admin_url, self.database)

    def database_url(self) -> str:
        if not self._proxy_port:
            return self._direct_url()
        base, _, _ = self.admin_url.rpartition("/")
        scheme, _, rest = base.partition("://")
        user, _, _ = rest.rpartition("@")
        return f"{scheme}://{user + '@' if user else ''}{LOOPBACK}:{self._proxy_port}/{self.database}"

    def _direct_url(self) -> str:
        """Return the URL of the round's database on the PostgreSQL server itself, not through the delay proxy."""
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{self.database}"

    async def start(self) -> None:
        if self._proxy_port:
            upstream = self._psycopg.conninfo.conninfo_to_dict(self.admin_url)
            self._proxy = ManagedProcess("delay-proxy", [
                sys.executable, str(Path(__file__).with_name("delay_proxy.py")),
                "--listen-port", str(self._proxy_port),
                "--upstream", f"{upstream.get('host', LOOPBACK)}:{upstream.get('port', 5432)}",
                "--round-trip-ms", str(self.round_trip_ms),
            ], self.workdir / "delay-proxy.log")
            await _wait_for_port(self._proxy_port, self._proxy)
        await super().start()
        if not self.autovacuum_enabled():
            self._analyzer = Analyzer(self._psycopg, self._direct_url(), ANALYZE_EVERY_SECONDS)

    def autovacuum_enabled(self) -> bool:
        with self._psycopg.connect(self.admin_url, autocommit=True) as conn:
            return _autovacuum_on(conn)

    def stop(self) -> None:
        if self._analyzer is not None:
            self._analyzer.stop()
            self._analyzer = None
        super().stop()
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None

    def database_cpu_seconds(self) -> dict[int, float]:
        with self._psycopg.connect(self.admin_url, autocommit=True) as conn:
            pids = [row[0] for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,))]
        return {pid: process_cpu_seconds(pid) for pid in pids}

    def version(self) -> str:
        with self._psycopg.connect(self.admin_url, autocommit=True) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]
            autovacuum = _autovacuum_on(conn)
        link = f", reached through a proxy adding {self.round_trip_ms:g} ms per round trip" if self._proxy_port else ""
        analyze = "" if autovacuum else (
            f", autovacuum off so the benchmark runs ANALYZE every {ANALYZE_EVERY_SECONDS:g} s")
        return f"{super().version()}, PostgreSQL {server.split()[0]}{link}{analyze}"

    def cleanup(self) -> None:
        if self._created:
            with self._psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            self._created = False


def _autovacuum_on(connection: object) -> bool:
    return connection.execute("SHOW autovacuum").fetchone()[0] == "on"  # type: ignore[attr-defined]


class Analyzer:
    """A thread that runs ANALYZE on one database at a fixed interval until stopped.

    With autovacuum off, PostgreSQL never gathers statistics on the tables
    that a run fills, and its plans stay those of empty tables: full scans
    that grow with every certificate. The backend that runs ANALYZE is one
    of the database's, so its CPU counts in the server's.
    """

    def __init__(self, psycopg: object, url: str, interval: float) -> None:
        self._psycopg = psycopg
        self._url = url
        self._interval = interval
        self._stopped = threading.Event()
        self.runs = 0
        self._thread = threading.Thread(target=self._run, name="analyze", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._psycopg.connect(self._url, autocommit=True) as conn:  # type: ignore[attr-defined]
                while not self._stopped.wait(self._interval):
                    conn.execute("ANALYZE")
                    self.runs += 1
        except Exception as exc:  # the database went away at the end of the round
            if not self._stopped.is_set():
                log.warning("ANALYZE of the benchmark database failed: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=STOP_TIMEOUT_SECONDS)


class PebbleServer(ServerUnderTest):
    """Pebble from Debian's package, with the settings that turn off its deliberate slowness and errors."""

    name = "pebble"
    ENVIRONMENT = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}

    def version(self) -> str:
        return "Debian " + _debian_version("pebble")

    async def start(self) -> None:
        self.ca_file, cert_path, key_path = _write_tls_files(self.workdir)
        config = {"pebble": {
            "listenAddress": f"{LOOPBACK}:{self.port}",
            "managementListenAddress": f"{LOOPBACK}:{free_port()}",
            "certificate": cert_path, "privateKey": key_path,
            "httpPort": self.http01_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        config_path = self.workdir / "pebble-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        self.process = ManagedProcess(self.name, ["pebble", "-config", str(config_path),
                                                  "-dnsserver", self.dns_address],
                                      self.workdir / "server.log", env=clean_environment(**self.ENVIRONMENT))
        self.directory_url = f"https://{LOOPBACK}:{self.port}/dir"
        await self._wait_for_directory()


class CaddyServer(ServerUnderTest):
    """Caddy's acme_server (smallstep's ACME engine) on a local CA, served over HTTPS by Caddy itself.

    Caddy 2.6.2 has no setting for the resolver or port of http-01 validation:
    smallstep's validator connects to port 80 and resolves names with Go's
    system resolver, which reads /etc/resolv.conf. Caddy therefore runs in a
    private mount namespace where /etc/resolv.conf names only the benchmark's
    DNS server, which must listen on port 53, and the responder must listen on
    port 80. The machine's own /etc/resolv.conf is not changed.
    """

    name = "caddy"

    def version(self) -> str:
        return "Debian " + _debian_version("caddy")

    async def start(self) -> None:
        host, _, port = self.dns_address.rpartition(":")
        if port != "53" or self.http01_port != 80:
            raise RuntimeError("Caddy validates http-01 only on port 80 and resolves names only through a DNS "
                               "server on port 53; run with --dns-port 53 --http01-port 80")
        resolv_conf = self.workdir / "resolv.conf"
        resolv_conf.write_text(f"nameserver {host}\noptions attempts:2 timeout:2\n")
        storage = self.workdir / "storage"
        config_path = self.workdir / "caddy.json"
        config_path.write_text(json.dumps(self._config(storage), indent=2))
        env = clean_environment(HOME=str(self.workdir), XDG_DATA_HOME=str(self.workdir / "data"),
                                XDG_CONFIG_HOME=str(self.workdir / "config"), GODEBUG="netdns=go")
        # unshare execs sh, which execs caddy, so the PID stays Caddy's.
        self.process = ManagedProcess(self.name, [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount --bind "$1" /etc/resolv.conf && exec caddy run --config "$2"',
            "sh", str(resolv_conf), str(config_path),
        ], self.workdir / "server.log", env=env)
        self.directory_url = f"https://{LOOPBACK}:{self.port}/acme/local/directory"
        self.ca_file = str(storage / "pki" / "authorities" / "local" / "root.crt")
        await self._wait_for_directory(ca_file_ready=False)

    def _config(self, storage: Path) -> dict:
        return {
            "admin": {"disabled": True},
            "storage": {"module": "file_system", "root": str(storage)},
            "apps": {
                "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
                "tls": {"automation": {"policies": [
                    {"subjects": [LOOPBACK], "issuers": [{"module": "internal", "ca": "local"}]},
                ]}},
                "http": {
                    # Nothing may listen on port 80, where the http-01 responder is.
                    "http_port": free_port(),
                    "servers": {"acme": {
                        "listen": [f"{LOOPBACK}:{self.port}"],
                        "routes": [{
                            "match": [{"host": [LOOPBACK]}],
                            "handle": [{"handler": "acme_server", "ca": "local"}],
                            "terminal": True,
                        }],
                        "automatic_https": {"disable_redirects": True},
                    }},
                },
            },
        }


def _debian_version(package: str) -> str:
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown version"


def _write_tls_files(directory: Path) -> tuple[str, str, str]:
    """Write a throw-away CA and a certificate for 127.0.0.1 it signed; return (CA, cert, key) paths."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetca bench TLS root")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(LOOPBACK))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "tls-ca.pem", directory / "tls-cert.pem", directory / "tls-key.pem")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(paths[0]), str(paths[1]), str(paths[2])


def missing_programs(names: list[str]) -> list[str]:
    return [name for name in names if shutil.which(name) is None]

