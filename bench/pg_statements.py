"""Counting the SQL statements that fleetca sends to PostgreSQL, from the server's own log.

``ALTER DATABASE ... SET log_statement = 'all'`` makes every session of the
benchmark's database log each statement. The count covers the lines appended
to the log file during the timed flows. Logging every statement costs the
PostgreSQL backends CPU, so a run that counts statements is a diagnostic run,
not one to compare CPU with.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

# Debian's pg_ctlcluster sends the server's stderr here, named by the cluster name.
DEBIAN_LOG_DIRECTORY = Path("/var/log/postgresql")
_STATEMENT = re.compile(r"LOG:  (?:statement|execute [^:]*): (?P<sql>.*)$")
_BACKEND_PID = re.compile(r"\[(?P<pid>\d+)\]")
_PREPARE = re.compile(r"^PREPARE\s+(?P<name>\w+)(?:\s*\([^)]*\))?\s+AS\s+(?P<sql>.*)$", re.IGNORECASE | re.DOTALL)
_EXECUTE = re.compile(r"^EXECUTE\s+(?P<name>\w+)", re.IGNORECASE)
# The log has only the first line of a multi-line statement where the prefix is, so a
# SELECT is named by its first column's table ("SELECT accounts.id, ...").
_TABLE = re.compile(r"^(?:SELECT\s+\"?(?P<column_table>\w+)\.|(?:INSERT INTO|UPDATE|DELETE FROM)\s+\"?(?P<table>\w+))",
                    re.IGNORECASE)


class StatementLog:
    """The statements one database's sessions log, counted by kind."""

    def __init__(self, psycopg_module, admin_url: str, database: str) -> None:  # type: ignore[no-untyped-def]
        self.database = database
        with psycopg_module.connect(admin_url, autocommit=True) as conn:
            cluster = conn.execute("SHOW cluster_name").fetchone()[0]
            conn.execute(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
        if not cluster:
            raise RuntimeError("PostgreSQL has no cluster_name, so its log file cannot be found; "
                               "counting statements needs a Debian cluster started by pg_ctlcluster")
        self.path = DEBIAN_LOG_DIRECTORY / f"postgresql-{cluster.replace('/', '-')}.log"
        if not self.path.exists():
            raise RuntimeError(f"PostgreSQL log {self.path} not found; counting statements needs it")
        # Statements are prepared from the first flows on, so the names of
        # prepared statements are read from here, before the timed flows.
        self.start = self.offset()

    def offset(self) -> int:
        return self.path.stat().st_size

    def count_since(self, offset: int) -> tuple[Counter[str], int]:
        """Count the database's statements logged after ``offset`` by kind, such as "SELECT accounts", and its queries.

        A query is one round trip. fleetca sends some statements together in
        one simple query, which the log shows on one line, separated by
        semicolons. The split at each semicolon assumes that no value in
        the query contains one, which holds for the benchmark's flows. An
        ``EXECUTE`` of a prepared statement counts as the statement that its
        backend prepared under that name.
        """
        # The server writes its log asynchronously; give the last lines a moment to land.
        time.sleep(0.5)
        marker = f"@{self.database} LOG:  "
        kinds: Counter[str] = Counter()
        queries = 0
        # backend PID -> prepared statement name -> kind
        prepared: dict[str, dict[str, str]] = {}
        with open(self.path, "rb") as log_file:
            log_file.seek(self.start)
            position = self.start
            for raw in log_file:
                timed = position >= offset
                position += len(raw)
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if marker not in line:
                    continue
                match = _STATEMENT.search(line)
                if not match:
                    continue
                pid = _BACKEND_PID.search(line)
                names = prepared.setdefault(pid.group("pid") if pid else "", {})
                statement_kinds = query_statement_kinds(match.group("sql"), names)
                if timed:
                    queries += 1
                    kinds.update(statement_kinds)
        return kinds, queries


def query_statement_kinds(sql: str, prepared: dict[str, str] | None = None) -> list[str]:
    """Name each statement of one logged query; see :meth:`StatementLog.count_since` for the split.

    ``prepared`` maps the names of the backend's prepared statements to their
    kinds. A PREPARE in the query adds to it, and an EXECUTE is named by it.
    """
    prepared = {} if prepared is None else prepared
    parts = [sql] if ";" not in sql.strip().rstrip(";") else sql.split(";")
    kinds = []
    for part in parts:
        text = part.strip()
        if (match := _PREPARE.match(text)) is not None:
            prepared[match.group("name")] = statement_kind(match.group("sql"))
            kinds.append("PREPARE")
        elif (match := _EXECUTE.match(text)) is not None:
            kinds.append(prepared.get(match.group("name"), "EXECUTE"))
        else:
            kinds.append(statement_kind(part))
    return kinds


def statement_kind(sql: str) -> str:
    """Name a statement by its verb and first table, e.g. "SELECT accounts" or "BEGIN"."""
    text = sql.strip()
    if text in ("", ";"):
        return "; (connection check)"
    verb = text.split(None, 1)[0].upper()
    if verb in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        match = _TABLE.search(text)
        table = match and (match.group("column_table") or match.group("table"))
        return f"{verb} {table}" if table else verb
    if verb == "SET":
        return " ".join(text.split()[:3])
    if verb == "RELEASE":
        return "RELEASE SAVEPOINT"
    return verb
