"""Per-server measurements and the tables printed at the end of a run."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

FLEETCA_SERVERS = ("fleetca-sqlite", "fleetca-postgres")
PEERS = ("pebble", "caddy")


@dataclass
class Measurement:
    """Counts, times and CPU use of one server's timed phase."""

    server: str
    version: str
    issued: int
    failed: int
    wall_seconds: float
    latencies_ms: list[float] = field(repr=False)
    server_cpu_seconds: float
    database_cpu_seconds: float
    peak_rss_bytes: int
    generator_cpu_seconds: float
    requests: int
    connects: int
    bad_nonce_retries: int
    responder_answers: int
    responder_rejects: int
    dns_queries: int
    certificates_checked: int
    load_average: float  # 1-minute load average just before the server started
    other_cpu_seconds: float  # CPU of the kernel and every process not listed here during the timed phase
    dns_cpu_seconds: float
    database_statements: dict[str, int] = field(default_factory=dict)  # by kind, when counted
    database_queries: int = 0  # round trips that carried those statements
    # (flows finished, MiB resident in the server's largest process, server CPU seconds so far),
    # sampled during the timed flows
    memory_samples: list[tuple[int, float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    round_rates: list[float] = field(default_factory=list)  # certificates/s of each round, when combined

    @property
    def certificates_per_second(self) -> float:
        return self.issued / self.wall_seconds if self.wall_seconds else 0.0

    def latency_percentile_ms(self, percentile: float) -> float:
        """Nearest-rank percentile of the flow latencies of issued certificates."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        rank = max(1, -(-len(ordered) * percentile // 100))
        return ordered[int(rank) - 1]

    def cpu_ms_per_certificate(self, include_database: bool = True) -> float:
        if not self.issued:
            return float("nan")
        seconds = self.server_cpu_seconds + (self.database_cpu_seconds if include_database else 0.0)
        return seconds * 1000 / self.issued

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(certificates_per_second=self.certificates_per_second,
                    p50_ms=self.latency_percentile_ms(50), p99_ms=self.latency_percentile_ms(99),
                    cpu_ms_per_certificate=self.cpu_ms_per_certificate())
        return data


def combine(rounds: list[Measurement]) -> Measurement:
    """Pool the rounds of one server: counts, times and CPU add up, latencies are merged, RSS is the maximum."""
    first = rounds[0]
    return Measurement(
        server=first.server, version=first.version,
        issued=sum(r.issued for r in rounds), failed=sum(r.failed for r in rounds),
        wall_seconds=sum(r.wall_seconds for r in rounds),
        latencies_ms=[ms for r in rounds for ms in r.latencies_ms],
        server_cpu_seconds=sum(r.server_cpu_seconds for r in rounds),
        database_cpu_seconds=sum(r.database_cpu_seconds for r in rounds),
        peak_rss_bytes=max(r.peak_rss_bytes for r in rounds),
        generator_cpu_seconds=sum(r.generator_cpu_seconds for r in rounds),
        requests=sum(r.requests for r in rounds), connects=sum(r.connects for r in rounds),
        bad_nonce_retries=sum(r.bad_nonce_retries for r in rounds),
        responder_answers=sum(r.responder_answers for r in rounds),
        responder_rejects=sum(r.responder_rejects for r in rounds),
        dns_queries=sum(r.dns_queries for r in rounds),
        certificates_checked=sum(r.certificates_checked for r in rounds),
        load_average=max(r.load_average for r in rounds),
        other_cpu_seconds=sum(r.other_cpu_seconds for r in rounds),
        dns_cpu_seconds=sum(r.dns_cpu_seconds for r in rounds),
        database_statements=dict(sum((Counter(r.database_statements) for r in rounds), Counter())),
        database_queries=sum(r.database_queries for r in rounds),
        errors=[e for r in rounds for e in r.errors],
        round_rates=[r.certificates_per_second for r in rounds],
    )


def results_table(measurements: list[Measurement]) -> str:
    header = ("| server | issued | failed | certs/s | certs/s per round | p50 ms | p99 ms | server CPU ms/cert "
              "| of which DB | server core use | "
              "peak RSS MiB | generator CPU ms/cert | generator core use | DNS server core use | rest of machine core use "
              "| requests/cert "
              "| DNS queries/cert |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for m in measurements:
        issued = max(m.issued, 1)
        lines.append(
            f"| {m.server} | {m.issued} | {m.failed} | {m.certificates_per_second:.1f} "
            f"| {' '.join(f'{rate:.0f}' for rate in m.round_rates) or '-'} "
            f"| {m.latency_percentile_ms(50):.0f} | {m.latency_percentile_ms(99):.0f} "
            f"| {m.cpu_ms_per_certificate():.1f} | {m.database_cpu_seconds * 1000 / issued:.1f} "
            f"| {100 * (m.server_cpu_seconds + m.database_cpu_seconds) / m.wall_seconds:.0f}% "
            f"| {m.peak_rss_bytes / 2**20:.0f} | {m.generator_cpu_seconds * 1000 / issued:.1f} "
            f"| {100 * m.generator_cpu_seconds / m.wall_seconds:.0f}% "
            f"| {100 * m.dns_cpu_seconds / m.wall_seconds:.0f}% | {100 * m.other_cpu_seconds / m.wall_seconds:.0f}% "
            f"| {m.requests / issued:.1f} | {m.dns_queries / issued:.1f} |")
    return "\n".join(lines)


def statements_table(measurements: list[Measurement]) -> str:
    """Per-certificate counts of the SQL statements each server sent to PostgreSQL, by kind."""
    lines = []
    for m in measurements:
        if not m.database_statements or not m.issued:
            continue
        total = sum(m.database_statements.values())
        lines += [f"{m.server}: {total / m.issued:.1f} SQL statements in {m.database_queries / m.issued:.1f} "
                  "queries (round trips) per certificate", "",
                  "| statement | per cert |", "|---|---|"]
        ordered = sorted(m.database_statements.items(), key=lambda item: -item[1])
        lines += [f"| {kind} | {count / m.issued:.1f} |" for kind, count in ordered]
        lines.append("")
    return "\n".join(lines)


def comparison_table(rounds: list[Measurement]) -> str:
    """Tabulate the CPU per certificate of each fleetca server from its two sources, by round and pooled.

    A compared run is named ``SERVER@LABEL`` (see bench/run --compare-ref and --compare-python).
    The ratio is the compared source's CPU per certificate divided by the
    other's, so below 1 means the compared source costs less.
    """
    lines = ["| server | compared with | CPU ms/cert per round | compared CPU ms/cert per round | pooled ratio |",
             "|---|---|---|---|---|"]
    for name in FLEETCA_SERVERS:
        base = [r for r in rounds if r.server == name and r.issued]
        for other in dict.fromkeys(r.server for r in rounds if r.server.startswith(f"{name}@")):
            compared = [r for r in rounds if r.server == other and r.issued]
            if not base or not compared:
                continue
            ratio = combine(compared).cpu_ms_per_certificate() / combine(base).cpu_ms_per_certificate()
            lines.append(f"| {name} | {other.split('@', 1)[1]} "
                         f"| {' '.join(f'{r.cpu_ms_per_certificate():.2f}' for r in base)} "
                         f"| {' '.join(f'{r.cpu_ms_per_certificate():.2f}' for r in compared)} | {ratio:.3f} |")
    return "\n".join(lines) if len(lines) > 2 else "(nothing to compare: no fleetca run of both sources issued)"


def memory_table(rounds: list[Measurement]) -> str:
    """Tabulate each round's server memory over its timed flows, its growth in the second half, and CPU drift.

    The CPU columns compare the server's CPU per certificate in the first and
    the last tenth of the flows (at least), to show a cost that grows with the run.
    """
    lines = ["| server | flows | samples | MiB after the first sample | MiB at the end | peak MiB "
             "| MiB per 10,000 flows, second half | CPU ms/cert, first tenth | CPU ms/cert, last tenth |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in rounds:
        samples = m.memory_samples
        if len(samples) < 10:
            continue
        half = [(s[0], s[1]) for s in samples if s[0] >= samples[-1][0] / 2]
        slope = _slope(half) * 10_000 if len(half) >= 2 else float("nan")
        # The tenths count flows, not samples: the last sample, taken when the
        # flows end, can follow the one before it by a fraction of a second,
        # too short for the CPU time's 10 ms ticks.
        tenth = (samples[-1][0] - samples[0][0]) / 10
        first_end = next(s for s in samples if s[0] >= samples[0][0] + tenth)
        last_start = next(s for s in reversed(samples) if s[0] <= samples[-1][0] - tenth)
        first = _cpu_ms_per_flow(samples[0], first_end)
        last = _cpu_ms_per_flow(last_start, samples[-1])
        lines.append(f"| {m.server} | {samples[-1][0]} | {len(samples)} | {samples[0][1]:.1f} | {samples[-1][1]:.1f} "
                     f"| {max(s[1] for s in samples):.1f} | {slope:+.2f} | {first:.2f} | {last:.2f} |")
    return "\n".join(lines) if len(lines) > 2 else "(too few memory samples: lower --memory-every or raise --count)"


def _cpu_ms_per_flow(start: tuple[int, float, float], end: tuple[int, float, float]) -> float:
    flows = end[0] - start[0]
    return (end[2] - start[2]) * 1000 / flows if flows > 0 else float("nan")


def _slope(points: list[tuple[int, float]]) -> float:
    """Return the least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(p[0] for p in points) / n
    mean_y = sum(p[1] for p in points) / n
    spread = sum((p[0] - mean_x) ** 2 for p in points)
    return sum((p[0] - mean_x) * (p[1] - mean_y) for p in points) / spread if spread else 0.0


def ratios_table(measurements: list[Measurement]) -> str:
    """fleetca's certificates per second and CPU per certificate, each divided by each peer's."""
    by_name = {m.server: m for m in measurements}
    peers = [by_name[p] for p in PEERS if p in by_name and by_name[p].issued]
    fleetca = [by_name[f] for f in FLEETCA_SERVERS if f in by_name and by_name[f].issued]
    if not peers or not fleetca:
        return "(no ratios: a fleetca run and a peer run with issued certificates are both needed)"
    header = "| fleetca run | " + " | ".join(
        f"certs/s ÷ {p.server} | CPU/cert ÷ {p.server}" for p in peers) + " |"
    lines = [header, "|---|" + "---|---|" * len(peers)]
    for f in fleetca:
        cells = []
        for p in peers:
            cells.append(f"{f.certificates_per_second / p.certificates_per_second:.2f}")
            cells.append(f"{f.cpu_ms_per_certificate() / p.cpu_ms_per_certificate():.2f}")
        lines.append(f"| {f.server} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(measurements: list[Measurement]) -> list[str]:
    """State whether each fleetca run meets: CPU/cert at most Pebble's, certs/s at least twice Caddy's."""
    by_name = {m.server: m for m in measurements}
    lines = []
    for name in FLEETCA_SERVERS:
        f = by_name.get(name)
        if f is None or not f.issued:
            continue
        if "pebble" in by_name and by_name["pebble"].issued:
            pebble = by_name["pebble"].cpu_ms_per_certificate()
            verdict = "met" if f.cpu_ms_per_certificate() <= pebble else "not met"
            lines.append(f"{name}: CPU per certificate {f.cpu_ms_per_certificate():.1f} ms, "
                         f"target at most Pebble's {pebble:.1f} ms: {verdict}")
        if "caddy" in by_name and by_name["caddy"].issued:
            caddy = by_name["caddy"].certificates_per_second
            verdict = "met" if f.certificates_per_second >= 2 * caddy else "not met"
            lines.append(f"{name}: {f.certificates_per_second:.1f} certificates/s, "
                         f"target at least twice Caddy's {caddy:.1f}/s = {2 * caddy:.1f}/s: {verdict}")
    return lines
