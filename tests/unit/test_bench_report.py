"""The benchmark's arithmetic: percentiles, pooled rounds, targets, the comparison and memory tables."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from dataclasses import replace
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import _worker_counts  # noqa: E402
from pg_statements import query_statement_kinds  # noqa: E402
from procstat import largest_resident_bytes, resident_bytes  # noqa: E402
from report import Measurement, combine, comparison_table, memory_table, statements_table, target_lines  # noqa: E402


def measurement(server: str, *, issued: int = 100, wall: float = 1.0, cpu: float = 0.5, database: float = 0.0,
                latencies: list[float] | None = None,
                memory: list[tuple[int, float, float]] | None = None) -> Measurement:
    return Measurement(
        server=server, version="test", issued=issued, failed=0, wall_seconds=wall,
        latencies_ms=latencies if latencies is not None else [10.0] * issued,
        server_cpu_seconds=cpu, database_cpu_seconds=database, peak_rss_bytes=50 * 2**20,
        generator_cpu_seconds=0.1, requests=8 * issued, connects=16, bad_nonce_retries=0,
        responder_answers=issued, responder_rejects=0, dns_queries=2 * issued, certificates_checked=issued,
        load_average=0.1, other_cpu_seconds=0.0, dns_cpu_seconds=0.0, memory_samples=memory or [])


@pytest.mark.parametrize(("percentile", "expected"), [
    pytest.param(50, 50.0, id="median-is-the-50th-of-100"),
    pytest.param(99, 99.0, id="p99-is-the-99th-of-100"),
    pytest.param(100, 100.0, id="p100-is-the-largest"),
    pytest.param(1, 1.0, id="p1-is-the-smallest"),
])
def test_percentile_nearest_rank(percentile: float, expected: float) -> None:
    latencies = [float(n) for n in range(100, 0, -1)]  # unordered on purpose
    assert measurement("pebble", latencies=latencies).latency_percentile_ms(percentile) == expected


def test_combine_adds_rounds() -> None:
    first = measurement("fleetca-sqlite", issued=100, wall=2.0, cpu=0.4)
    second = measurement("fleetca-sqlite", issued=300, wall=2.0, cpu=1.6)
    pooled = combine([first, second])
    assert pooled.issued == 400
    assert pooled.certificates_per_second == 100.0
    assert pooled.cpu_ms_per_certificate() == pytest.approx(5.0)
    assert pooled.round_rates == [50.0, 150.0]


@pytest.mark.parametrize(("fleetca_cpu", "fleetca_wall", "cpu_verdict", "rate_verdict"), [
    pytest.param(0.3, 0.4, "met", "met", id="less-cpu-and-twice-the-rate"),
    pytest.param(0.5, 0.4, "met", "met", id="equal-cpu-counts-as-met"),
    pytest.param(0.6, 0.4, "not met", "met", id="more-cpu"),
    pytest.param(0.3, 0.6, "met", "not met", id="under-twice-the-rate"),
])
def test_target_verdicts(fleetca_cpu: float, fleetca_wall: float, cpu_verdict: str, rate_verdict: str) -> None:
    # Pebble: 5 ms per certificate. Caddy: 100 certificates/s, so the rate target is 200/s.
    runs = [measurement("fleetca-sqlite", cpu=fleetca_cpu, wall=fleetca_wall),
            measurement("pebble", cpu=0.5), measurement("caddy", wall=1.0)]
    lines = target_lines(runs)
    assert lines[0].endswith(f": {cpu_verdict}")
    assert lines[1].endswith(f": {rate_verdict}")


def test_target_database_cpu_counts() -> None:
    runs = [measurement("fleetca-postgres", cpu=0.4, database=0.2), measurement("pebble", cpu=0.5)]
    assert target_lines(runs) == [
        "fleetca-postgres: CPU per certificate 6.0 ms, target at most Pebble's 5.0 ms: not met"]


def test_memory_table_flat_and_growing() -> None:
    # 20 samples, 1,000 flows apart, at 2 ms of CPU per flow. The growing run adds
    # 1 MiB per 10,000 flows throughout. The flat one grows only in its first half.
    flat = [(n * 1000, 100.0 + min(n, 10) * 0.5, n * 2.0) for n in range(1, 21)]
    growing = [(n * 1000, 100.0 + n * 0.1, n * 2.0) for n in range(1, 21)]
    table = memory_table([measurement("fleetca-sqlite", memory=flat), measurement("fleetca-postgres", memory=growing)])
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert len(rows) == 2
    flat_row, growing_row = rows
    assert flat_row[1:7] == ["20000", "20", "100.5", "105.0", "105.0", "+0.00"]
    assert growing_row[6] == "+1.00"
    assert flat_row[7] == "2.00"
    assert flat_row[8].rstrip(" |") == "2.00"


def test_memory_table_cpu_drift() -> None:
    # CPU per flow doubles from 2 to 4 ms between the first and the last tenth.
    samples = [(n * 1000, 100.0, n * 2.0 if n <= 10 else 20.0 + (n - 10) * 4.0) for n in range(1, 21)]
    row = memory_table([measurement("fleetca-sqlite", memory=samples)]).splitlines()[2].split(" | ")
    assert row[7] == "2.00"
    assert row[8].rstrip(" |") == "4.00"


def test_memory_table_short_last_interval() -> None:
    # The final sample comes 30 flows after the one before it, with the CPU
    # read in 10 ms ticks: 0.04 s for those 30 flows would read as 1.33 ms each.
    samples = [(n * 1000, 100.0, n * 2.0) for n in range(1, 15)] + [(14_030, 100.0, 28.04)]
    row = memory_table([measurement("fleetca-sqlite", memory=samples)]).splitlines()[2].split(" | ")
    assert row[7] == "2.00"
    assert row[8].rstrip(" |") == "1.99"  # 4.04 s over the last 2,030 flows


def test_memory_table_too_few_samples() -> None:
    samples = [(n * 1000, 100.0, n * 2.0) for n in range(1, 5)]
    assert memory_table([measurement("caddy", memory=samples)]).startswith("(too few memory samples")


def test_comparison_table_pools_rounds() -> None:
    rounds = [measurement("fleetca-sqlite", cpu=0.8), measurement("fleetca-sqlite@abc1234", cpu=0.7),
              measurement("fleetca-sqlite@abc1234", cpu=0.9), measurement("fleetca-sqlite", cpu=1.2),
              measurement("pebble", cpu=0.5)]
    rows = comparison_table(rounds).splitlines()[2:]
    assert rows == ["| fleetca-sqlite | abc1234 | 8.00 12.00 | 7.00 9.00 | 0.800 |"]


def test_comparison_table_without_pairs() -> None:
    assert comparison_table([measurement("fleetca-sqlite")]).startswith("(nothing to compare")


def test_rounds_alternate_sources() -> None:
    from harness import runs_of_round

    base, other = SimpleNamespace(label="aaa"), SimpleNamespace(label="bbb")
    servers = ["fleetca-sqlite", "pebble"]
    first = [(name, source.label, label) for name, source, label in runs_of_round(servers, 1, base, other)]
    second = [(name, source.label, label) for name, source, label in runs_of_round(servers, 2, base, other)]
    assert first == [("fleetca-sqlite", "aaa", None), ("fleetca-sqlite", "bbb", "bbb"), ("pebble", "aaa", None)]
    assert second == [("fleetca-sqlite", "bbb", "bbb"), ("fleetca-sqlite", "aaa", None), ("pebble", "aaa", None)]
    assert [run[0] for run in runs_of_round(servers, 1, base, None)] == servers


def _interpreter_script(path: Path, command: str) -> str:
    path.write_text(f"#!/bin/sh\nexec {command} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def other_python(tmp_path: Path) -> str:
    """Another path that runs this interpreter with its packages, as another venv's bin/python would."""
    return _interpreter_script(tmp_path / "python", sys.executable)


@pytest.mark.parametrize("argv, comparing", [
    ([], False),
    (["--compare-ref", "HEAD~1"], True),
    (["--compare-python", "OTHER"], True),
    (["--compare-ref", "HEAD", "--compare-python", "OTHER"], True),
], ids=["none", "commit", "interpreter", "same-commit-other-interpreter"])
def test_comparison_options(argv: list[str], comparing: bool, other_python: str) -> None:
    from harness import parse_args

    argv = [other_python if arg == "OTHER" else arg for arg in argv]
    assert parse_args(argv).comparing is comparing


@pytest.mark.parametrize("argv", [
    ["--compare-ref", "HEAD"],
    ["--compare-python", sys.executable],
    ["--compare-ref", "HEAD", "--compare-python", sys.executable],
    ["--compare-python", "/nonexistent/python3"],
], ids=["same-commit", "same-interpreter", "same-both", "missing-interpreter"])
def test_comparison_options_rejected(argv: list[str]) -> None:
    from harness import parse_args

    with pytest.raises(SystemExit):
        parse_args(argv)


def test_source_on_another_interpreter(tmp_path: Path, other_python: str) -> None:
    from servers import FleetcaServer, FleetcaSource

    repository = Path(__file__).resolve().parents[2]
    other = FleetcaSource(repository, "worktree", tmp_path, python=other_python)
    default = FleetcaSource(repository, "worktree", tmp_path)
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert (default.python, default.label) == (sys.executable, "worktree")
    assert (other.python, other.label) == (other_python, f"worktree-python{version}")
    assert other.description == f"{default.description}, on Python {version} ({other_python})"
    server = FleetcaServer(tmp_path / "server", "127.0.0.1:53", 80, other)
    assert server._command("serve")[:3] == [other_python, "-m", "fleetca"]


def test_source_without_fleetca_rejected(tmp_path: Path) -> None:
    from servers import FleetcaSource

    # The base interpreter outside this venv, with -I so that PYTHONPATH is ignored, cannot import fleetca.
    isolated = _interpreter_script(tmp_path / "isolated-python", f"{os.path.realpath(sys.executable)} -I")
    with pytest.raises(RuntimeError, match="failed to import fleetca"):
        FleetcaSource(Path(__file__).resolve().parents[2], "worktree", tmp_path, python=isolated)


def test_resident_bytes_of_this_process() -> None:
    own = resident_bytes(os.getpid())
    assert own > 10 * 2**20  # a Python process with pytest loaded
    assert largest_resident_bytes(os.getpid()) >= own


def test_resident_bytes_of_exited_process() -> None:
    assert resident_bytes(2**22 + 12345) == 0  # above PID_MAX_LIMIT (2**22), so no process has it


@pytest.mark.parametrize(("query", "kinds"), [
    ("SELECT id, ca_name FROM accounts WHERE id = $1", ["SELECT"]),
    ("SELECT a.id, c.id FROM authorizations a JOIN challenges c ON c.authorization_id = a.id", ["SELECT a"]),
    ("BEGIN;INSERT INTO used_nonces (nonce, expires) VALUES ('n', '2026-12-05');"
     "SELECT id FROM authorizations WHERE id = 'x'", ["BEGIN", "INSERT used_nonces", "SELECT"]),
    ("INSERT INTO audit_events (at) VALUES ('2026-12-05');COMMIT", ["INSERT audit_events", "COMMIT"]),
    (";", ["; (connection check)"]),
])
def test_logged_query_split_into_statements(query: str, kinds: list[str]) -> None:
    assert query_statement_kinds(query) == kinds


def test_executed_statement_named_as_prepared() -> None:
    prepared: dict[str, str] = {}
    queries = [
        "PREPARE fleetca_3 (character varying, timestamp with time zone) AS "
        "INSERT INTO used_nonces (nonce, expires) VALUES ($1, $2)",
        "PREPARE fleetca_4 AS UPDATE orders SET status = $1 WHERE id = $2",
        "BEGIN;EXECUTE fleetca_3('n1', '2026-12-05'::timestamptz);EXECUTE fleetca_4('ready', 'o1');"
        "EXECUTE fleetca_9('x');COMMIT",
    ]

    kinds = [query_statement_kinds(query, prepared) for query in queries]

    assert kinds[0] == ["PREPARE"]
    assert kinds[1] == ["PREPARE"]
    assert kinds[2] == ["BEGIN", "INSERT used_nonces", "UPDATE orders", "EXECUTE", "COMMIT"]
    assert prepared == {"fleetca_3": "INSERT used_nonces", "fleetca_4": "UPDATE orders"}


def test_statements_table_counts_queries() -> None:
    counted = measurement("fleetca-postgres", issued=10)
    counted.database_statements = {"BEGIN": 20, "INSERT used_nonces": 30, "COMMIT": 20}
    counted.database_queries = 40

    table = statements_table([counted, measurement("pebble")])

    assert table.splitlines()[0] == "fleetca-postgres: 7.0 SQL statements in 4.0 queries (round trips) per certificate"
    assert "| INSERT used_nonces | 3.0 |" in table
    assert "pebble" not in table


@pytest.mark.parametrize("text, expected", [
    ("2", {"sqlite": 2, "postgres": 2}),
    ("sqlite=1,postgres=2", {"sqlite": 1, "postgres": 2}),
    ("postgres=3", {"sqlite": 1, "postgres": 3}),
], ids=["both", "each", "one-named"])
def test_worker_counts_parsed(text: str, expected: dict[str, int]) -> None:
    assert _worker_counts(text) == expected


@pytest.mark.parametrize("text", ["0", "mysql=2", "sqlite=two", "sqlite=0"],
                         ids=["zero", "unknown-database", "not-a-number", "zero-named"])
def test_worker_counts_rejected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _worker_counts(text)


@pytest.mark.parametrize("failures, reruns, attempts, failed_kept", [
    ([0], 1, 1, 0),
    ([32, 0], 1, 2, 1),
    ([32, 5], 1, 2, 1),
    ([32, 7, 0], 2, 3, 2),
    ([32], 0, 1, 0),
], ids=["no-failure", "failure-then-success", "failure-twice", "two-reruns", "reruns-off"])
def test_round_run_again_after_failures(failures: list[int], reruns: int, attempts: int, failed_kept: int) -> None:
    import asyncio

    from harness import measure_round

    calls: list[int] = []

    async def attempt(number: int) -> Measurement:
        calls.append(number)
        return replace(measurement("pebble", issued=300 - failures[number]), failed=failures[number])

    result, failed = asyncio.run(measure_round(attempt, reruns))
    assert calls == list(range(attempts))
    assert result.failed == failures[attempts - 1]
    assert [m.failed for m in failed] == failures[:failed_kept]
