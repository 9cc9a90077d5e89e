"""Run real, unmodified ACME clients against an ACME directory and collect the certificate.

Each ``run_*`` function starts one client as a subprocess against ``directory_url``.
The client registers an account, agreeing to the terms of service, and orders a
certificate for the DNS name ``name``. The function returns the path of the PEM
chain that the client saved, leaf first. Each client keeps its state (account key,
logs, certificates) in ``workdir/<client>/``. A later call with the same workdir
reuses the account but still requests a new certificate.

Each client trusts only ``ca_bundle`` for the ACME server's HTTPS certificate,
because trust-store and proxy variables inherited from the environment are removed.
A client that fails, times out or saves no chain raises ClientError, whose message
contains the command, exit status and output.

Challenge ports: the ACME server must validate http-01 on ``http01_port`` and
tls-alpn-01 on ``tlsalpn01_port`` of 127.0.0.1, and must resolve ``name`` to
127.0.0.1. Every subprocess runs with a timeout.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .challtestsrv import LOOPBACK, ChallTestSrv
from .http01_responder import Http01Responder

__all__ = [
    "ClientError",
    "DEFAULT_EMAIL",
    "DEFAULT_TIMEOUT_SECONDS",
    "ExternalAccountBinding",
    "run_acme_tiny",
    "run_certbot",
    "run_dehydrated",
    "run_lego",
    "run_uacme",
]

DEFAULT_TIMEOUT_SECONDS = 60.0
# lego 4.9 exits with an error when no e-mail address is given.
DEFAULT_EMAIL = "interop@example.test"
LEGO_CHALLENGES = ("http-01", "dns-01", "tls-alpn-01")

# lego waits this long for the TXT record to show up at the loopback DNS server.
LEGO_DNS_PROPAGATION_TIMEOUT_SECONDS = 20
LEGO_DNS_POLLING_INTERVAL_SECONDS = 1

# The hook script that the Debian package uacme ships. It writes the key
# authorization to $UACME_CHALLENGE_PATH/<token> and declines other challenge types.
UACME_HOOK = Path("/usr/share/uacme/uacme.sh")

# Maximum characters of each output stream quoted in a ClientError.
MAX_QUOTED_OUTPUT = 20_000
KILL_WAIT_SECONDS = 5.0

# Variables that make a client trust other CAs, route through a proxy, or pick up
# a lego or exec-provider setting from the developer's shell.
_DROPPED_VARIABLES = frozenset(
    {
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    }
)
_DROPPED_PREFIXES = ("LEGO_", "EXEC_", "UACME_")


@dataclass(frozen=True)
class ExternalAccountBinding:
    """Credentials that bind a new ACME account to an external account (RFC 8555, 7.3.4)."""

    key_id: str
    # The MAC key in base64url without padding, which is the form every client here
    # accepts.
    hmac_key: str


class ClientError(RuntimeError):
    """An ACME client failed, timed out or saved no certificate chain."""

    def __init__(
        self,
        client: str,
        command: list[str],
        problem: str,
        stdout: str = "",
        stderr: str = "",
        log_excerpts: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.command = command
        self.problem = problem
        self.stdout = stdout
        self.stderr = stderr
        self.log_excerpts = log_excerpts or {}
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [
            f"{self.client} {self.problem}",
            f"command: {shlex.join(self.command)}",
            f"--- stdout ---\n{_tail(self.stdout)}",
            f"--- stderr ---\n{_tail(self.stderr)}",
        ]
        for path, text in self.log_excerpts.items():
            parts.append(f"--- {path} ---\n{_tail(text)}")
        return "\n".join(parts)


@dataclass(frozen=True)
class _CompletedRun:
    client: str
    command: list[str]
    stdout_path: Path
    stderr_path: Path


def run_certbot(
    directory_url: str,
    ca_bundle: Path,
    name: str,
    workdir: Path,
    http01_port: int,
    *,
    email: str | None = None,
    key_type: str | None = None,
    eab: ExternalAccountBinding | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Path:
    """Obtain a certificate with certbot's standalone http-01 server and return fullchain.pem.

    certbot serves http-01 itself on 127.0.0.1:``http01_port``. Without ``email``
    the account has no contact. ``key_type`` is "ecdsa" or "rsa", and None keeps
    certbot's default.
    """
    client_dir = _client_directory(workdir, "certbot")
    config_dir = client_dir / "config"
    logs_dir = client_dir / "logs"
    command = [
        _certbot_executable(),
        "certonly",
        "--non-interactive",
        "--standalone",
        "--preferred-challenges", "http-01",
        "--http-01-address", LOOPBACK,
        "--http-01-port", str(http01_port),
        "--server", directory_url,
        "--agree-tos",
        "--config-dir", str(config_dir),
        "--work-dir", str(client_dir / "work"),
        "--logs-dir", str(logs_dir),
        # A second call for the same name would keep the unexpired certificate.
        "--force-renewal",
        "--domain", name,
    ]
    command += ["--email", email] if email else ["--register-unsafely-without-email"]
    if key_type:
        command += ["--key-type", key_type]
    if eab:
        # One argument each: a base64url key may start with "-", which would read as an option.
        command += [f"--eab-kid={eab.key_id}", f"--eab-hmac-key={eab.hmac_key}"]

    environment = _client_environment(client_dir, REQUESTS_CA_BUNDLE=str(ca_bundle))
    # certbot prints a summary and keeps the HTTP exchange in its debug log.
    debug_log = logs_dir / "letsencrypt.log"
    run = _run("certbot", command, client_dir, environment, "certonly", timeout, [debug_log])
    return _expect_chain(run, config_dir / "live" / name / "fullchain.pem", [debug_log])


def run_lego(
    directory_url: str,
    ca_bundle: Path,
    name: str,
    workdir: Path,
    *,
    challenge: str,
    http01_port: int | None = None,
    tlsalpn01_port: int | None = None,
    dns: ChallTestSrv | None = None,
    email: str = DEFAULT_EMAIL,
    key_type: str | None = None,
    eab: ExternalAccountBinding | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Path:
    """Obtain a certificate with lego and return its bundled ``<name>.crt``.

    ``challenge`` selects the one solver lego may use. For "http-01" and
    "tls-alpn-01" lego serves the challenge itself on 127.0.0.1 at
    ``http01_port`` or ``tlsalpn01_port``. For "dns-01" lego publishes the TXT
    record into ``dns`` through the exec provider and checks it there. ``key_type``
    (for example "ec256" or "rsa2048") sets both the account and the certificate
    key, and None keeps lego's default.
    """
    if challenge not in LEGO_CHALLENGES:
        raise ValueError(f"challenge must be one of {LEGO_CHALLENGES}, got {challenge!r}")
    client_dir = _client_directory(workdir, "lego")
    state_dir = client_dir / "state"
    command = [
        _executable("lego", "lego"),
        "--server", directory_url,
        "--accept-tos",
        "--email", email,
        "--path", str(state_dir),
        "--domains", name,
    ]
    if key_type:
        command += ["--key-type", key_type]
    if eab:
        command += ["--eab", f"--kid={eab.key_id}", f"--hmac={eab.hmac_key}"]
    if dns is not None:
        # Keeps every lookup lego makes on the loopback DNS server.
        command += ["--dns.resolvers", dns.dns_address]
    environment = _client_environment(client_dir, LEGO_CA_CERTIFICATES=str(ca_bundle))

    if challenge == "http-01":
        if http01_port is None:
            raise ValueError("lego with http-01 needs http01_port")
        command += ["--http", "--http.port", f"{LOOPBACK}:{http01_port}"]
    elif challenge == "tls-alpn-01":
        if tlsalpn01_port is None:
            raise ValueError("lego with tls-alpn-01 needs tlsalpn01_port")
        command += ["--tls", "--tls.port", f"{LOOPBACK}:{tlsalpn01_port}"]
    else:
        if dns is None:
            raise ValueError("lego with dns-01 needs dns, the challtestsrv that serves the TXT record")
        # lego's full propagation check looks up the zone's SOA and name servers,
        # and challtestsrv returns NOTIMP for those queries. With the check disabled lego still
        # waits until the resolver above returns the TXT record.
        command += ["--dns", "exec", "--dns.disable-cp"]
        environment.update(
            EXEC_PATH=str(_write_lego_dns_hook(client_dir)),
            EXEC_PROPAGATION_TIMEOUT=str(LEGO_DNS_PROPAGATION_TIMEOUT_SECONDS),
            EXEC_POLLING_INTERVAL=str(LEGO_DNS_POLLING_INTERVAL_SECONDS),
            CHALLTESTSRV_MANAGEMENT_URL=dns.management_url,
        )
    command.append("run")

    run = _run("lego", command, client_dir, environment, f"run-{challenge}", timeout)
    # lego names the files after the first domain, with "*" replaced by "_".
    certificate_name = name.replace("*", "_")
    return _expect_chain(run, state_dir / "certificates" / f"{certificate_name}.crt")


def run_uacme(
    directory_url: str,
    ca_bundle: Path,
    name: str,
    workdir: Path,
    http01_port: int,
    *,
    email: str | None = None,
    key_type: str | None = None,
    eab: ExternalAccountBinding | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Path:
    """Obtain a certificate with uacme and its shipped http-01 hook and return cert.pem.

    The account is created with ``uacme new`` only when the confdir has no account
    key yet. The hook writes into a webroot that a responder serves on
    127.0.0.1:``http01_port``. ``key_type`` is "RSA" or "EC" and applies to new
    keys only. None keeps uacme's default.

    uacme 1.7.4 has no option or variable for a CA file. It trusts what libcurl finds in
    /etc/ssl/certs, so it runs in a private mount namespace where that directory
    contains only ``ca_bundle``. That needs root or unprivileged user namespaces.
    """
    if not UACME_HOOK.is_file():
        raise FileNotFoundError(f"{UACME_HOOK} not found; install the Debian package uacme")
    client_dir = _client_directory(workdir, "uacme")
    conf_dir = client_dir / "conf"
    trust_dir = client_dir / "trust"
    trust_dir.mkdir(exist_ok=True)
    # Debian 12's libcurl3-gnutls reads /etc/ssl/certs as its CA path. The file
    # name also matches the CA file that other libcurl builds read from there.
    shutil.copyfile(ca_bundle, trust_dir / "ca-certificates.crt")

    base_command = [
        _executable("uacme", "uacme"),
        "--verbose",
        "--verbose",
        "--acme-url", directory_url,
        "--confdir", str(conf_dir),
    ]
    if key_type:
        base_command += ["--type", key_type]
    environment = _client_environment(client_dir)

    if not (conf_dir / "private" / "key.pem").exists():
        new_command = base_command + ["--yes"]
        if eab:
            new_command += ["--eab", f"{eab.key_id}:{eab.hmac_key}"]
        new_command += ["new"] + ([email] if email else [])
        new_command = _with_private_trust_store(trust_dir, new_command)
        _run("uacme", new_command, client_dir, environment, "new", timeout)

    webroot = client_dir / "webroot"
    with Http01Responder(webroot, http01_port) as responder:
        environment["UACME_CHALLENGE_PATH"] = str(responder.challenge_directory)
        issue_command = base_command + ["--force", "--hook", str(UACME_HOOK), "issue", name]
        issue_command = _with_private_trust_store(trust_dir, issue_command)
        run = _run("uacme", issue_command, client_dir, environment, "issue", timeout)
    # uacme strips a leading "*." from the directory name.
    return _expect_chain(run, conf_dir / name.removeprefix("*.") / "cert.pem")


def run_dehydrated(
    directory_url: str,
    ca_bundle: Path,
    name: str,
    workdir: Path,
    http01_port: int,
    *,
    email: str | None = None,
    key_algo: str | None = None,
    eab: ExternalAccountBinding | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Path:
    """Obtain a certificate with dehydrated over http-01 and return fullchain.pem.

    dehydrated writes the key authorization into a webroot (its WELLKNOWN
    directory) that a responder serves on 127.0.0.1:``http01_port``. It registers
    with ``--register --accept-terms`` and then runs ``--cron --force`` for
    ``name``. ``key_algo`` is "rsa", "prime256v1" or "secp384r1" for the
    certificate key, and None keeps dehydrated's default.
    """
    client_dir = _client_directory(workdir, "dehydrated")
    base_dir = client_dir / "base"
    base_dir.mkdir(exist_ok=True)
    webroot = client_dir / "webroot"
    responder = Http01Responder(webroot, http01_port)
    # dehydrated checks that BASEDIR and WELLKNOWN exist before it starts.
    responder.challenge_directory.mkdir(parents=True, exist_ok=True)

    settings = {
        "CA": directory_url,
        "BASEDIR": str(base_dir),
        "WELLKNOWN": str(responder.challenge_directory),
        "CHALLENGETYPE": "http-01",
        "CONTACT_EMAIL": email or "",
    }
    if key_algo:
        settings["KEY_ALGO"] = key_algo
    if eab:
        settings["EAB_KID"] = eab.key_id
        settings["EAB_HMAC_KEY"] = eab.hmac_key
    # The config file is sourced by bash, so every value is shell-quoted.
    config_path = client_dir / "config"
    config_path.write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in settings.items()))

    executable = _executable("dehydrated", "dehydrated")
    # dehydrated calls the curl program, which reads CURL_CA_BUNDLE.
    environment = _client_environment(client_dir, CURL_CA_BUNDLE=str(ca_bundle))
    register_command = [executable, "--config", str(config_path), "--register", "--accept-terms"]
    _run("dehydrated", register_command, client_dir, environment, "register", timeout)

    with responder:
        cron_command = [executable, "--config", str(config_path), "--cron", "--force", "--domain", name]
        run = _run("dehydrated", cron_command, client_dir, environment, "cron", timeout)
    return _expect_chain(run, base_dir / "certs" / name / "fullchain.pem")


def run_acme_tiny(
    directory_url: str,
    ca_bundle: Path,
    name: str,
    workdir: Path,
    http01_port: int,
    *,
    csr_with_san: bool = True,
    contact: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Path:
    """Obtain a certificate with acme-tiny over http-01 and return the signed chain.

    The account key (RSA 4096), certificate key (RSA 2048) and CSR are made with
    the openssl commands that acme-tiny's README gives. The CSR always has
    CN=``name``. With ``csr_with_san`` False it has no SAN extension, which is the
    README's single-domain form. acme-tiny writes the key authorization into a
    webroot that a responder serves on 127.0.0.1:``http01_port``. ``contact`` is a
    URI such as "mailto:someone@example.test".

    acme-tiny's own self-check fetches the challenge through the system resolver,
    so it is disabled. The ACME server's validation is the check.
    """
    client_dir = _client_directory(workdir, "acme-tiny")
    openssl = _executable("openssl", "openssl")
    environment = _client_environment(client_dir)

    account_key = client_dir / "account.key"
    if not account_key.exists():
        genrsa_command = [openssl, "genrsa", "-out", str(account_key), "4096"]
        _run("openssl", genrsa_command, client_dir, environment, "genrsa-account", timeout)
    domain_key = client_dir / "domain.key"
    if not domain_key.exists():
        genrsa_command = [openssl, "genrsa", "-out", str(domain_key), "2048"]
        _run("openssl", genrsa_command, client_dir, environment, "genrsa-domain", timeout)
    csr = client_dir / "domain.csr"
    csr_command = [openssl, "req", "-new", "-sha256", "-key", str(domain_key)]
    csr_command += ["-subj", f"/CN={name}", "-out", str(csr)]
    if csr_with_san:
        csr_command += ["-addext", f"subjectAltName=DNS:{name}"]
    _run("openssl", csr_command, client_dir, environment, "req", timeout)

    chain = client_dir / "signed_chain.crt"
    webroot = client_dir / "webroot"
    with Http01Responder(webroot, http01_port) as responder:
        command = [
            _executable("acme-tiny", "acme-tiny"),
            "--account-key", str(account_key),
            "--csr", str(csr),
            "--acme-dir", str(responder.challenge_directory),
            "--directory-url", directory_url,
            "--disable-check",
        ]
        if contact:
            command += ["--contact", contact]
        # acme-tiny uses Python's urllib, whose default context reads SSL_CERT_FILE.
        environment["SSL_CERT_FILE"] = str(ca_bundle)
        run = _run("acme-tiny", command, client_dir, environment, "acme-tiny", timeout, stdout_path=chain)
    return _expect_chain(run, chain)


def _client_directory(workdir: Path, client: str) -> Path:
    client_dir = workdir / client
    client_dir.mkdir(parents=True, exist_ok=True)
    return client_dir


def _executable(program: str, debian_package: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise FileNotFoundError(f"{program} not found on PATH; install the Debian package {debian_package}")
    return path


def _certbot_executable() -> str:
    # certbot is installed into the virtualenv that runs the tests, which need not
    # be on PATH.
    beside_python = Path(sys.executable).with_name("certbot")
    if beside_python.is_file():
        return str(beside_python)
    path = shutil.which("certbot")
    if path is None:
        raise FileNotFoundError(
            f"certbot not found beside {sys.executable} or on PATH; pip-install certbot into the test virtualenv"
        )
    return path


def _client_environment(client_dir: Path, **variables: str) -> dict[str, str]:
    """Return the environment for a client: the inherited one without trust, proxy
    and client settings, with HOME in ``client_dir`` and ``variables`` added."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED_VARIABLES and not key.startswith(_DROPPED_PREFIXES)
    }
    # A separate HOME keeps ~/.curlrc and similar per-user files out of the run.
    home = client_dir / "home"
    home.mkdir(exist_ok=True)
    environment["HOME"] = str(home)
    environment["NO_PROXY"] = environment["no_proxy"] = "*"
    environment.update(variables)
    return environment


def _with_private_trust_store(trust_dir: Path, command: list[str]) -> list[str]:
    """Wrap ``command`` to run in a new mount namespace with ``trust_dir`` mounted on /etc/ssl/certs."""
    unshare = _executable("unshare", "util-linux")
    namespace_options = ["--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        # NOTE: this path is untested; it needs unprivileged user namespaces.
        namespace_options.insert(0, "--map-root-user")
    script = 'mount --bind "$1" /etc/ssl/certs && shift && exec "$@"'
    return [unshare, *namespace_options, "/bin/sh", "-c", script, "sh", str(trust_dir), *command]


def _write_lego_dns_hook(client_dir: Path) -> Path:
    """Write the executable that lego's exec provider runs, which calls lego_dns_hook.py."""
    hook_script = Path(__file__).with_name("lego_dns_hook.py")
    wrapper = client_dir / "lego-dns-hook"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(hook_script))} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _run(
    client: str,
    command: list[str],
    client_dir: Path,
    environment: dict[str, str],
    step: str,
    timeout: float,
    log_files: list[Path] | None = None,
    *,
    stdout_path: Path | None = None,
) -> _CompletedRun:
    """Run one client step with output saved to ``<step>.stdout.log`` and ``<step>.stderr.log``.

    Raises ClientError on a non-zero exit status or when ``timeout`` seconds pass,
    after killing the process.
    """
    stdout_path = stdout_path or client_dir / f"{step}.stdout.log"
    stderr_path = client_dir / f"{step}.stderr.log"
    run = _CompletedRun(client, command, stdout_path, stderr_path)

    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command, cwd=client_dir, env=environment, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=KILL_WAIT_SECONDS)

    if returncode is None:
        raise _client_error(run, f"timed out after {timeout} s in step {step!r}", log_files)
    if returncode != 0:
        raise _client_error(run, f"failed with exit status {returncode} in step {step!r}", log_files)
    return run


def _expect_chain(run: _CompletedRun, chain_path: Path, log_files: list[Path] | None = None) -> Path:
    """Return ``chain_path`` if it contains a PEM certificate, else raise ClientError."""
    try:
        text = chain_path.read_text(errors="replace")
    except FileNotFoundError:
        raise _client_error(run, f"exited 0 but wrote no certificate chain at {chain_path}", log_files) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise _client_error(run, f"exited 0 but {chain_path} contains no PEM certificate", log_files)
    return chain_path


def _client_error(run: _CompletedRun, problem: str, log_files: list[Path] | None) -> ClientError:
    excerpts = {str(path): _read(path) for path in log_files or [] if path.is_file()}
    return ClientError(
        run.client,
        run.command,
        problem,
        stdout=_read(run.stdout_path),
        stderr=_read(run.stderr_path),
        log_excerpts=excerpts,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str) -> str:
    if len(text) <= MAX_QUOTED_OUTPUT:
        return text
    return f"[first {len(text) - MAX_QUOTED_OUTPUT} characters cut]\n" + text[-MAX_QUOTED_OUTPUT:]
