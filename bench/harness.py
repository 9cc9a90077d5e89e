"""Drive fleetca, Pebble and Caddy with the same device load and print what each cost.

Run it through ``bench/run``, which installs the Debian packages it needs.
For each server in turn: start it fresh, run ``--warmup`` untimed flows, then
``--count`` timed flows with ``--concurrency`` workers, sample the server's
CPU time before and after the timed flows, check every certificate, stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acme_client import make_devices
from loadgen import LoadResult, run_load
from procstat import largest_resident_bytes, machine_busy_seconds, peak_rss_bytes, tree_cpu_seconds
from profiling import PySpyRecorder, summarize
from report import (
    FLEETCA_SERVERS,
    Measurement,
    combine,
    comparison_table,
    memory_table,
    ratios_table,
    results_table,
    statements_table,
    target_lines,
)
from responder import Http01Responder
from servers import (
    DEVICE_DOMAIN,
    LOOPBACK,
    CaddyServer,
    DnsServer,
    FleetcaSource,
    FleetcaPostgresServer,
    FleetcaServer,
    PebbleServer,
    ServerUnderTest,
    missing_programs,
)

ALL_SERVERS = ("fleetca-sqlite", "fleetca-postgres", "pebble", "caddy")
log = logging.getLogger("bench")


# Devices whose DNS questions are counted after a run; the count is scaled to all devices.
DNS_COUNT_SAMPLE = 1000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="timed device flows per server (default 300)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="device flows in progress at once (default 16)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every server this many times, in turns, and pool the results (default 1)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed flows before the timed ones (default: the concurrency)")
    parser.add_argument("--servers", default=",".join(ALL_SERVERS),
                        help=f"comma-separated servers to run, in order (default {','.join(ALL_SERVERS)})")
    parser.add_argument("--time-limit", type=float, default=600,
                        help="seconds after which no new flow starts, per server and phase (default 600)")
    parser.add_argument("--rerun-failed", type=int, default=1, metavar="N",
                        help="run a server's round again, up to N times, when some of its flows failed. The "
                             "report lists each such round and leaves it out of the results (default 1)")
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="seconds to wait, before each server, for 5 quiet seconds in a row in which other "
                             "processes use under 10%% of a core (default 60)")

    parser.add_argument("--dns-port", type=int, default=53,
                        help="loopback UDP/TCP port of the DNS server; Caddy needs 53 (default 53)")
    parser.add_argument("--http01-port", type=int, default=80,
                        help="loopback port of the http-01 responder; Caddy needs 80 (default 80)")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL URL of a role that may create databases; a fresh database is "
                             "created next to it for each run and dropped afterwards")
    parser.add_argument("--postgres-round-trip-ms", type=float, default=0.0, metavar="MS",
                        help="connect fleetca to PostgreSQL through bench/delay_proxy.py, which adds MS "
                             "milliseconds to each round trip, as a database on another machine would "
                             "(default 0: connect directly)")
    parser.add_argument("--fleetca-workers", type=_worker_counts, default={"sqlite": 1, "postgres": 1},
                        metavar="N|sqlite=N,postgres=M",
                        help="server processes fleetca runs (serve --workers), for both databases or for each "
                             "(default 1)")
    parser.add_argument("--fleetca-ref", default="HEAD",
                        help="git commit of fleetca to run, exported with git archive, or 'worktree' for the "
                             "work tree's src/ as it is (default HEAD)")

    parser.add_argument("--compare-ref", metavar="REF",
                        help="also run each fleetca server from this commit (or 'worktree') in every round, "
                             "next to the --fleetca-ref one and in alternating order, and print the two CPU "
                             "costs side by side. Use it to judge a change smaller than the spread between runs")
    parser.add_argument("--compare-python", metavar="PATH",
                        help="also run each fleetca server on this Python interpreter, which must import "
                             "fleetca's dependencies (another venv's bin/python, say), as --compare-ref does "
                             "with a commit. With --compare-ref too, the compared server runs that commit on "
                             "this interpreter")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="profile fleetca during its timed flows into DIR: NAME.roundN.cpu.txt samples CPU "
                             "time from inside the server, NAME.roundN.wall.txt is py-spy's wall-clock profile, "
                             "and each has a -summary.txt; the numbers of such a run include the profilers' "
                             "overhead and are not for comparison")
    parser.add_argument("--pg-statements", action="store_true",
                        help="count the SQL statements fleetca-postgres sends, from PostgreSQL's log; logging "
                             "them costs CPU, so such a run is not for comparison")
    parser.add_argument("--memory-every", type=float, default=0.0, metavar="SECONDS",
                        help="every SECONDS of the timed flows, sample the resident memory of the server's "
                             "largest process and the server's CPU time, then print how both changed over the "
                             "run (default: off)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory with server logs")

    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(ALL_SERVERS)
    if unknown:
        parser.error(f"unknown server(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_SERVERS)}")
    if args.count < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--count, --concurrency and --rounds must be at least 1")
    if args.rerun_failed < 0:
        parser.error("--rerun-failed must be 0 or more")
    if args.warmup is None:
        args.warmup = args.concurrency
    if args.compare_python is not None and not (os.path.isfile(args.compare_python)
                                                and os.access(args.compare_python, os.X_OK)):
        parser.error(f"--compare-python {args.compare_python} is not an executable file")
    args.comparing = args.compare_ref is not None or args.compare_python is not None
    if args.comparing:
        same_commit = (args.compare_ref or args.fleetca_ref) == args.fleetca_ref
        same_python = args.compare_python is None or os.path.abspath(args.compare_python) == os.path.abspath(
            sys.executable)
        if same_commit and same_python:
            parser.error("the compared fleetca is the same commit on the same interpreter as the first")
    return args


def _worker_counts(text: str) -> dict[str, int]:
    """Parse ``--fleetca-workers``: one count for both databases, or ``sqlite=N,postgres=M``."""
    if text.isdigit():
        counts = {"sqlite": int(text), "postgres": int(text)}
    else:
        counts = {"sqlite": 1, "postgres": 1}
        for part in text.split(","):
            database, _, count = part.partition("=")
            if database.strip() not in counts or not count.strip().isdigit():
                raise argparse.ArgumentTypeError(f"{part!r} is not sqlite=N or postgres=N")
            counts[database.strip()] = int(count)
    if min(counts.values()) < 1:
        raise argparse.ArgumentTypeError("a worker count must be at least 1")
    return counts


def make_server(name: str, args: argparse.Namespace, workdir: Path, dns_address: str,
                source: FleetcaSource, label: str | None = None) -> ServerUnderTest:
    if name == "fleetca-sqlite":
        return FleetcaServer(workdir, dns_address, args.http01_port, source, workers=args.fleetca_workers["sqlite"],
                             label=label)
    if name == "fleetca-postgres":
        return FleetcaPostgresServer(workdir, dns_address, args.http01_port, source, args.postgres_url,
                                     workers=args.fleetca_workers["postgres"], label=label,
                                     round_trip_ms=args.postgres_round_trip_ms)
    if name == "pebble":
        return PebbleServer(workdir, dns_address, args.http01_port)
    return CaddyServer(workdir, dns_address, args.http01_port)


def check_certificates(load: LoadResult) -> list[str]:
    """Check that each issued leaf names exactly its device and carries the key of the device's CSR."""
    problems = []
    for flow in load.issued:
        assert flow.certificate_pem is not None
        leaf = x509.load_pem_x509_certificates(flow.certificate_pem)[0]
        try:
            names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        csr_key = x509.load_der_x509_csr(flow.device.csr_der).public_key()
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if names != [flow.device.name]:
            problems.append(f"{flow.device.name}: certificate names {names}")
        elif leaf.public_key().public_bytes(*spki) != csr_key.public_bytes(*spki):
            problems.append(f"{flow.device.name}: certificate key differs from the CSR key")
    return problems


QUIET_SECONDS = 5
QUIET_CORE_SHARE = 0.1


async def wait_for_quiet_machine(max_wait: float) -> None:
    """Wait up to ``max_wait`` seconds for 5 seconds in a row in which other processes use under 10 % of one core."""
    deadline = time.monotonic() + max_wait
    quiet_since = time.monotonic()
    while True:
        busy_before, own_before = machine_busy_seconds(), _own_cpu_seconds()
        await asyncio.sleep(1.0)
        busy = machine_busy_seconds() - busy_before - (_own_cpu_seconds() - own_before)
        if busy >= QUIET_CORE_SHARE:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_SECONDS:
            return
        if time.monotonic() > deadline:
            log.warning("other processes still use %.0f%% of a core after %.0f s of waiting; measuring anyway",
                        100 * busy, max_wait)
            return


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def measure(server: ServerUnderTest, args: argparse.Namespace, dns: DnsServer,
                  responder: Http01Responder) -> Measurement:
    await wait_for_quiet_machine(args.quiet_wait)
    load_average = os.getloadavg()[0]
    tag = secrets.token_hex(3)
    warmup_devices = make_devices(f"w{tag}", args.warmup, DEVICE_DOMAIN)
    devices = make_devices(tag, args.count, DEVICE_DOMAIN)

    await server.start()
    log.info("%s: serving %s (pid %d); %d warm-up flows", server.name, server.directory_url, server.pid,
             args.warmup)
    if args.warmup:
        warmup = await run_load(server.directory_url, server.ca_file, warmup_devices, args.concurrency, responder,
                                args.time_limit)
        if warmup.failed:
            log.warning("%s: %d warm-up flows failed, the first with %s", server.name, len(warmup.failed),
                        warmup.failed[0].error)

    recorder = None
    if isinstance(server, FleetcaServer) and server.cpu_profile is not None:
        recorder = PySpyRecorder(server.pid, server.cpu_profile.with_name(
            server.cpu_profile.name.replace(".cpu.txt", ".wall.txt")))
        server.start_cpu_sampling()
    responder.counts.reset()
    log.info("%s: %d timed flows, %d at a time", server.name, args.count, args.concurrency)
    statement_log = server.statement_log if isinstance(server, FleetcaPostgresServer) else None
    log_offset = statement_log.offset() if statement_log else 0
    database_before = server.database_cpu_seconds()
    cpu_before = tree_cpu_seconds(server.pid)
    machine_before = machine_busy_seconds()
    dns_before = tree_cpu_seconds(dns.process.pid)
    memory: list[tuple[int, float, float]] = []

    def sample_memory(flows_done: int) -> None:
        memory.append((flows_done, largest_resident_bytes(server.pid) / 2**20,
                       tree_cpu_seconds(server.pid) + sum(server.database_cpu_seconds().values())))

    load = await run_load(server.directory_url, server.ca_file, devices, args.concurrency, responder,
                          args.time_limit, watch=sample_memory if args.memory_every > 0 else None,
                          watch_every=args.memory_every)
    machine_after = machine_busy_seconds()
    dns_cpu = tree_cpu_seconds(dns.process.pid) - dns_before
    cpu_after = tree_cpu_seconds(server.pid)
    database_after = server.database_cpu_seconds()
    if recorder is not None:
        assert isinstance(server, FleetcaServer) and server.cpu_profile is not None
        recorder.stop()
        await server.stop_cpu_sampling()
        for profile in (server.cpu_profile, recorder.output):
            summary = profile.with_name(profile.name.replace(".txt", "-summary.txt"))
            summary.write_text(summarize(profile, 30, len(load.issued)) + "\n")
            log.info("%s: profile summary in %s", server.name, summary)
    rss = peak_rss_bytes(server.pid)
    statements, queries = statement_log.count_since(log_offset) if statement_log else ({}, 0)

    server_cpu = cpu_after - cpu_before
    database_cpu = sum(cpu - database_before.get(pid, 0.0) for pid, cpu in database_after.items())
    other_cpu = max(0.0, machine_after - machine_before - server_cpu - database_cpu - load.generator_cpu_seconds
                    - dns_cpu)
    errors = [f"{f.device.name}: {f.error}" for f in load.failed]
    if load.stopped_early:
        errors.append(f"stopped after the time limit of {args.time_limit:.0f} s or more than {args.concurrency} "
                      f"failed flows in a row; {load.unstarted} flows never started")
    errors += check_certificates(load)
    # The DNS server's history is searched per name, at a cost that grows with
    # its length, so a long run counts the queries of an even sample of devices.
    sample = devices[::max(1, len(devices) // DNS_COUNT_SAMPLE)]
    dns_queries = round(sum(dns.query_count(d.name) for d in sample) * len(devices) / len(sample))
    return Measurement(
        server=server.name, version=server.version(), issued=len(load.issued), failed=len(load.failed),
        wall_seconds=load.wall_seconds, latencies_ms=[f.seconds * 1000 for f in load.issued],
        server_cpu_seconds=server_cpu, database_cpu_seconds=database_cpu,
        peak_rss_bytes=rss, generator_cpu_seconds=load.generator_cpu_seconds,
        requests=sum(f.requests for f in load.issued), connects=load.connects,
        bad_nonce_retries=load.bad_nonce_retries, responder_answers=responder.counts.answered,
        responder_rejects=responder.counts.wrong_host + responder.counts.unknown, dns_queries=dns_queries,
        certificates_checked=len(load.issued), load_average=load_average, other_cpu_seconds=other_cpu,
        dns_cpu_seconds=dns_cpu, database_statements=dict(statements), database_queries=queries,
        memory_samples=memory,
        errors=errors,
    )


def machine_description() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (f"{os.cpu_count()} cores ({model}), {memory_kib / 2**20:.0f} GiB memory, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()} "
            f"({os.path.realpath(sys.executable)})")


async def run(args: argparse.Namespace) -> tuple[list[Measurement], list[tuple[int, Measurement]]]:
    needed = ["pebble-challtestsrv"] + [p for s, p in (("pebble", "pebble"), ("caddy", "caddy"),
                                                       ("caddy", "unshare")) if s in args.servers]
    missing = missing_programs(needed)
    if missing:
        raise SystemExit(f"missing programs: {', '.join(missing)}; bench/run installs them with apt-get")

    workdir = Path(tempfile.mkdtemp(prefix="fleetca-bench-"))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    log.info("work directory %s; machine: %s", workdir, machine_description())
    source = FleetcaSource(Path(__file__).resolve().parent.parent, args.fleetca_ref, workdir)
    log.info("fleetca: %s", source.description)
    compared = None
    if args.comparing:
        try:
            compared = FleetcaSource(Path(__file__).resolve().parent.parent, args.compare_ref or args.fleetca_ref,
                                     workdir, python=args.compare_python)
        except RuntimeError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise SystemExit(str(exc)) from None
        log.info("fleetca to compare: %s", compared.description)
    dns = DnsServer(workdir, args.dns_port)
    responder = Http01Responder(LOOPBACK, args.http01_port)
    measurements: list[Measurement] = []
    rerun: list[tuple[int, Measurement]] = []
    completed = False
    try:
        await dns.wait_ready()
        await responder.start()
        for round_number in range(1, args.rounds + 1):
            for name, server_source, label in runs_of_round(args.servers, round_number, source, compared):
                attempt = functools.partial(run_server, args, workdir, dns, responder, name, server_source, label,
                                            round_number)
                measurement, failed_attempts = await measure_round(attempt, args.rerun_failed)
                measurements.append(measurement)
                rerun.extend((round_number, failed) for failed in failed_attempts)
        completed = True
    finally:
        await responder.stop()
        dns.stop()
        if args.keep or not completed or any(m.errors for m in measurements) or rerun:
            log.info("logs kept in %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return measurements, rerun


async def run_server(args: argparse.Namespace, workdir: Path, dns: DnsServer, responder: Http01Responder,
                     name: str, source: FleetcaSource, label: str | None, round_number: int,
                     attempt: int) -> Measurement:
    """Start one server fresh, measure its timed flows, and stop it.

    ``attempt`` is 0 for a round's first run and counts the runs after it.
    """
    again = f"-again{attempt}" if attempt else ""
    server = make_server(name, args, workdir / f"round{round_number}{again}", dns.address, source, label)
    if args.profile and isinstance(server, FleetcaServer):
        server.profile_cpu(args.profile.resolve() / f"{server.name}.round{round_number}{again}.cpu.txt")
    if args.pg_statements and isinstance(server, FleetcaPostgresServer):
        server.log_statements()
    try:
        result = await measure(server, args, dns, responder)
    finally:
        server.stop()
        server.cleanup()
    log.info("%s, round %d: %d issued, %d failed, %.1f certificates/s, %.1f ms CPU per certificate "
             "(1-minute load average before the run: %.2f)", result.server, round_number, result.issued,
             result.failed, result.certificates_per_second, result.cpu_ms_per_certificate(), result.load_average)
    for error in result.errors[:5]:
        log.warning("%s: %s", result.server, error)
    return result


async def measure_round(attempt: Callable[[int], Awaitable[Measurement]],
                        reruns: int) -> tuple[Measurement, list[Measurement]]:
    """Measure one server's round, and again up to ``reruns`` times while flows fail.

    Return the last attempt and the failed ones before it. Pebble 2.4.0
    sent no response for 30 seconds in one round of several benchmark runs
    (docs/performance.md lists them), and such a round's rate and CPU per
    certificate would decide the ratios. Each attempt starts a fresh server.
    """
    failed: list[Measurement] = []
    number = 0
    while True:
        result = await attempt(number)
        if not result.failed or number >= reruns:
            return result, failed
        failed.append(result)
        log.warning("%s: %d flows failed; running the round again with a fresh server", result.server,
                    result.failed)
        number += 1


def runs_of_round(servers: list[str], round_number: int, source: FleetcaSource,
                  compared: FleetcaSource | None) -> list[tuple[str, FleetcaSource, str | None]]:
    """List the servers of one round in order: each fleetca server once per source, the compared one labelled.

    The two sources of a fleetca server run back to back, and swap places every
    round, so that a machine that slows down during the run favours neither.
    """
    runs: list[tuple[str, FleetcaSource, str | None]] = []
    for name in servers:
        pair = [(name, source, None)]
        if compared is not None and name in FLEETCA_SERVERS:
            pair.append((name, compared, compared.label))
            if round_number % 2 == 0:
                pair.reverse()
        runs += pair
    return runs


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rounds, rerun = asyncio.run(run(args))
    names = list(dict.fromkeys(r.server for r in rounds))
    measurements = [combine([r for r in rounds if r.server == name]) for name in names]

    print()
    print(f"bench/run {' '.join(argv)}")
    print(f"started {started}; machine: {machine_description()}")
    print(f"{args.count} timed flows per server and round, concurrency {args.concurrency}, {args.warmup} warm-up "
          f"flows, {args.rounds} round(s)")
    for m in measurements:
        print(f"  {m.server}: {m.version}; highest 1-minute load average before a round: {m.load_average:.2f}")
    for round_number, failed in rerun:
        print(f"  {failed.server}, round {round_number}: {failed.failed} flows failed and {failed.issued} issued, "
              f"so the round was run again; it is left out below")
    print()
    print(results_table(measurements))
    print()
    print(ratios_table(measurements))
    print()
    if args.pg_statements:
        print(statements_table(measurements))
    if args.comparing:
        print(comparison_table(rounds))
        print()
    if args.memory_every > 0:
        print(memory_table(rounds))
        print()
    for line in target_lines(measurements):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"command": ["bench/run", *argv], "machine": machine_description(),
                                         "started": started, "rounds": [m.to_json() for m in rounds],
                                         "rounds_run_again": [{"round": number, **failed.to_json()}
                                                              for number, failed in rerun],
                                         "pooled": [m.to_json() for m in measurements]},
                                        indent=2))
    return 1 if any(m.errors for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
