"""SQL on the database driver itself: statements built once, a connection pool and one transaction.

SQLAlchemy defines the schema (``tables.py``) and Alembic migrates it, but the
request path runs its statements on the driver connection (``sqlite3`` or
psycopg 3). Through SQLAlchemy's execution path a statement cost several times
what the statement itself cost on SQLite, and a certificate takes dozens of
them (docs/performance.md has the profile).

Values are stored the way SQLAlchemy's column types store them, so rows written
through either path read back the same through both:

- SQLite keeps a ``DateTime`` as text ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, a
  ``JSON`` value as its JSON text and a ``Boolean`` as 0 or 1;
- PostgreSQL keeps them as ``timestamptz``, ``json`` and ``boolean``, and each
  connection sets its time zone to UTC.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson
from sqlalchemy import JSON, Boolean, Column, DateTime, Table
from sqlalchemy.dialects import postgresql

# Exceptions that a unique or foreign-key violation raises, per driver.
try:
    import psycopg
    from psycopg import generators as psycopg_generators
    from psycopg import waiting as psycopg_waiting
    from psycopg.types.json import Json, set_json_dumps, set_json_loads

    INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
except ImportError:  # pragma: no cover - psycopg is a dependency, but SQLite needs nothing else
    psycopg = None  # type: ignore[assignment]
    INTEGRITY_ERRORS = (sqlite3.IntegrityError,)

logger = logging.getLogger(__name__)

Converter = Callable[[Any], Any]
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# The maximum number of statements that one PostgreSQL connection prepares.
# Statements whose text varies per call (an inlined limit, say) run as plain
# literals once a connection has prepared this many.
MAX_PREPARED_PER_CONNECTION = 256


def _kind(column: Column) -> str:
    if isinstance(column.type, DateTime):
        return "datetime"
    if isinstance(column.type, JSON):
        return "json"
    if isinstance(column.type, Boolean):
        return "bool"
    return ""


def _sqlite_write_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}")


def _sqlite_read_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _sqlite_write_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _sqlite_read_json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def _sqlite_write_bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _sqlite_read_bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _postgres_write_json(value: Any) -> Any:
    return None if value is None else Json(value)


def _postgres_read_datetime(value: datetime | None) -> datetime | None:
    # The session time zone is UTC, so psycopg returns UTC already; this only
    # normalises the tzinfo object.
    return None if value is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Dialect:
    """The placeholder style of one driver and its converters for each column kind."""

    name: str
    placeholder: str
    writers: dict[str, Converter]
    readers: dict[str, Converter]

    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


SQLITE = Dialect(
    "sqlite", "?",
    writers={"datetime": _sqlite_write_datetime, "json": _sqlite_write_json, "bool": _sqlite_write_bool},
    readers={"datetime": _sqlite_read_datetime, "json": _sqlite_read_json, "bool": _sqlite_read_bool},
)
POSTGRES = Dialect(
    "postgresql", "%s",
    writers={"json": _postgres_write_json},
    readers={"datetime": _postgres_read_datetime},
)


class Statement:
    """One SQL text with ``?`` placeholders, the columns its parameters and results belong to, and per-dialect forms.

    The columns decide how each parameter is written and each result value is
    read. The text must not contain a literal ``?`` or ``%``.
    """

    __slots__ = ("text", "params", "result", "_compiled")

    def __init__(self, text: str, params: Sequence[Column] = (), result: Sequence[Column] = ()) -> None:
        self.text = text
        self.params = tuple(params)
        self.result = tuple(result)
        self._compiled: dict[str, tuple[str, list[Converter | None], list[tuple[int, Converter]]]] = {}

    def table_name(self) -> str:
        """Return the table that this INSERT, UPDATE or DELETE writes."""
        words = self.text.split(None, 3)
        return words[2] if words[0] in ("INSERT", "DELETE") else words[1]

    def compiled(self, dialect: Dialect) -> tuple[str, list[Converter | None], list[tuple[int, Converter]]]:
        form = self._compiled.get(dialect.name)
        if form is None:
            writers = [dialect.writers.get(_kind(c)) for c in self.params]
            readers = [(n, dialect.readers[_kind(c)]) for n, c in enumerate(self.result) if _kind(c) in dialect.readers]
            form = (dialect.sql(self.text), writers, readers)
            self._compiled[dialect.name] = form
        return form


def column_list(columns: Iterable[Column]) -> str:
    return ", ".join(c.name for c in columns)


def select_by(table: Table, *where: Column, columns: Sequence[Column] | None = None, suffix: str = "") -> Statement:
    """SELECT ``columns`` (all by default) of ``table`` WHERE each ``where`` column equals a parameter."""
    columns = list(table.columns) if columns is None else list(columns)
    condition = " AND ".join(f"{c.name} = ?" for c in where)
    text = f"SELECT {column_list(columns)} FROM {table.name}" + (f" WHERE {condition}" if where else "") + suffix
    return Statement(text, where, columns)


def insert_into(table: Table, columns: Sequence[Column] | None = None, suffix: str = "") -> Statement:
    """INSERT one row of ``columns`` (all but autoincrement keys by default) into ``table``."""
    if columns is None:
        columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is True)]
    placeholders = ", ".join("?" for _ in columns)
    return Statement(f"INSERT INTO {table.name} ({column_list(columns)}) VALUES ({placeholders}){suffix}", columns)


def defaults_filled(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` plus the Python-side scalar default of each column left out, as SQLAlchemy's INSERT adds them."""
    filled = dict(values)
    for column in table.columns:
        if column.name not in filled and column.default is not None and column.default.is_scalar:
            filled[column.name] = column.default.arg
    return filled


class Session:
    """One open transaction on a driver connection."""

    __slots__ = ("connection", "dialect", "cursor")

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect
        # One cursor per connection, reused for every statement: creating a
        # psycopg cursor per statement cost about a quarter of a one-row SELECT.
        self.cursor = connection.fleetca_cursor

    def execute(self, statement: Statement, params: Sequence[Any] = ()) -> Any:
        """Run ``statement`` and return the cursor, whose result is valid until the next statement."""
        self.cursor.execute(*self._bound(statement, params))
        return self.cursor

    def _bound(self, statement: Statement, params: Sequence[Any]) -> tuple[str, list[Any]]:
        """Return the statement's text in this dialect and its parameters written for the driver."""
        text, writers, _ = statement.compiled(self.dialect)
        return text, [value if write is None else write(value) for write, value in zip(writers, params, strict=True)]

    def rows(self, statement: Statement, params: Sequence[Any] = ()) -> list[list[Any]]:
        """Run a query and return its rows with each value read back into its Python type."""
        return self._read_rows(statement, self.execute(statement, params))

    def row_counts_then_rows(self, writes: Sequence[tuple[Statement, Sequence[Any]]], query: Statement,
                             params: Sequence[Any] = ()) -> tuple[list[int], list[list[Any]]]:
        """Run ``writes`` in order, then ``query``, and return each write's row count and the query's rows.

        Each statement reads the changes of those before it. On PostgreSQL
        they all go out in one query (:class:`PostgresSession`).
        """
        counts = [self.rowcount(statement, values) for statement, values in writes]
        return counts, self.rows(query, params)

    def _read_rows(self, statement: Statement, cursor: Any) -> list[list[Any]]:
        readers = statement.compiled(self.dialect)[2]
        rows = [list(row) for row in cursor.fetchall()]
        if readers:
            for row in rows:
                for n, read in readers:
                    row[n] = read(row[n])
        return rows

    def first(self, statement: Statement, params: Sequence[Any] = ()) -> list[Any] | None:
        rows = self.rows(statement, params)
        return rows[0] if rows else None

    def scalars(self, statement: Statement, params: Sequence[Any] = ()) -> list[Any]:
        return [row[0] for row in self.rows(statement, params)]

    def rowcount(self, statement: Statement, params: Sequence[Any] = ()) -> int:
        return self.execute(statement, params).rowcount

    def defer(self, statement: Statement, params: Sequence[Any] = (), *,
              on_unique_violation: Callable[[], Exception] | None = None,
              on_not_null_violation: Callable[[], Exception] | None = None) -> None:
        """Run a statement whose result the caller does not read, now or with a later one of the transaction.

        A PostgreSQL transaction sends deferred statements together with the
        next statement or the COMMIT (:class:`PostgresSession`). An error
        of a deferred statement is therefore raised by a later call. A unique
        or NOT NULL violation in its table then raises ``on_unique_violation()``
        or ``on_not_null_violation()`` instead. Here, on SQLite and outside a
        transaction, the statement runs at once.
        """
        try:
            self.execute(statement, params)
        except INTEGRITY_ERRORS as exc:
            raise_instead = on_not_null_violation if _is_not_null_violation(exc) else on_unique_violation
            if raise_instead is None:
                raise
            raise raise_instead() from None

    def flush(self) -> None:
        """Do nothing, because this session runs each deferred statement at once."""

    def commit_with_next_statement(self) -> None:
        """Let the next statement carry the COMMIT, where that saves a round trip (PostgreSQL).

        The caller then runs that one statement and no other, and its outcome
        is committed whatever it is. Here the transaction commits as usual.
        """

    def commit(self) -> None:
        self.connection.commit()

    def savepoint_violates_integrity(self, statement: Statement, params: Sequence[Any]) -> bool:
        """Run ``statement`` inside a savepoint; True when it broke a constraint and was rolled back alone."""
        self.connection.execute("SAVEPOINT fleetca_statement")
        try:
            self.execute(statement, params)
        except INTEGRITY_ERRORS:
            self.connection.execute("ROLLBACK TO SAVEPOINT fleetca_statement")
            self.connection.execute("RELEASE SAVEPOINT fleetca_statement")
            return True
        self.connection.execute("RELEASE SAVEPOINT fleetca_statement")
        return False


class PostgresSession(Session):
    """A PostgreSQL session that sends its deferred statements with the next one, in one round trip.

    In a transaction, BEGIN waits in the queue with the deferred statements.
    The next statement whose result the caller reads goes out behind them in
    one simple query, and so does the COMMIT. The COMMIT can also travel with
    a statement that the caller marks as the transaction's last
    (:meth:`commit_with_next_statement`). Take a newOrder transaction of
    BEGIN, five INSERTs and COMMIT on fleetca's schema, run 1,500 times
    against the local server. As seven round trips it cost about 840 µs of
    CPU in the client and the backend together, and as one query about 400 µs.

    Outside a transaction (``transaction=False``), the deferred statements and
    the next one still share a query, which PostgreSQL runs as one implicit
    transaction, and :meth:`flush` sends what is left.

    Every statement, queued or not, goes out as a simple query with its
    values as SQL literals (:class:`PostgresLiterals`). A statement used
    before on the connection goes as an ``EXECUTE`` of its prepared form
    (:meth:`_prepared`).
    The connection is in autocommit mode, so that BEGIN is the one this class
    sends.
    """

    __slots__ = ("_queue", "_begun", "_transaction", "_conflicts", "_early_commit", "_commit_next", "_committed")

    def __init__(self, connection: Any, dialect: Dialect, *, transaction: bool = True,
                 early_commit: bool = True) -> None:
        super().__init__(connection, dialect)
        self._queue: list[str] = ["BEGIN"] if transaction else []
        # True once BEGIN went out, or from the start outside a transaction.
        self._begun = not transaction
        self._transaction = transaction
        # (table name, whether a NOT NULL violation) -> the exception that a
        # unique or NOT NULL violation in one of its deferred rows raises.
        self._conflicts: dict[tuple[str, bool], Callable[[], Exception]] = {}
        # Whether commit_with_next_statement may send COMMIT from the calling
        # thread. It is False where the COMMIT waits for the disk, so it must run in a thread.
        self._early_commit = early_commit and transaction
        self._commit_next = False
        self._committed = False

    def defer(self, statement: Statement, params: Sequence[Any] = (), *,
              on_unique_violation: Callable[[], Exception] | None = None,
              on_not_null_violation: Callable[[], Exception] | None = None) -> None:
        self._check_open()
        self._queue.append(self._literal(statement, params))
        table = statement.table_name()
        if on_unique_violation is not None:
            self._conflicts[(table, False)] = on_unique_violation
        if on_not_null_violation is not None:
            self._conflicts[(table, True)] = on_not_null_violation

    def execute(self, statement: Statement, params: Sequence[Any] = ()) -> Any:
        self._check_open()
        if self._commit_next:
            self._committed = True
            return self._send(self._literal(statement, params), "COMMIT")
        return self._send(self._literal(statement, params))

    def commit_with_next_statement(self) -> None:
        if self._early_commit:
            self._commit_next = True

    def row_counts_then_rows(self, writes: Sequence[tuple[Statement, Sequence[Any]]], query: Statement,
                             params: Sequence[Any] = ()) -> tuple[list[int], list[list[Any]]]:
        self._check_open()
        for statement, values in writes:
            self._queue.append(self._literal(statement, values))
        trailing = ""
        if self._commit_next:
            self._committed = True
            trailing = "COMMIT"
        counts: list[int] = []
        cursor = self._send(self._literal(query, params), trailing, counted=len(writes), counts=counts)
        return counts, self._read_rows(query, cursor)

    def _check_open(self) -> None:
        if self._committed:
            raise RuntimeError("the transaction was committed with its last statement; open a new one")

    def flush(self) -> None:
        """Send the deferred statements now. A BEGIN with nothing after it stays queued."""
        if self._begun and self._queue or len(self._queue) > 1:
            self._send("")

    def commit(self) -> None:
        if self._committed:
            return
        if self._begun or len(self._queue) > 1:
            self._send("COMMIT")

    async def commit_async(self) -> None:
        """Send the COMMIT, behind the statements still queued, and wait for it on the event loop.

        This is for a COMMIT that waits for the disk. A thread would keep
        the event loop free too, but the benchmark's CPU per certificate was
        about 2 % higher with the COMMIT handed to a thread and back
        (docs/performance.md). If the wait is cancelled, the connection is
        closed, because it may still be busy with the query.
        """
        if self._committed or not (self._begun or len(self._queue) > 1):
            return
        self._committed = True
        query, _, conflicts = self._take_queue("", "COMMIT")
        pgconn = self.connection.pgconn
        try:
            pgconn.send_query(query.encode())
            results = await psycopg_waiting.wait_async(psycopg_generators.execute(pgconn), pgconn.socket)
        except BaseException:
            self.connection.close()
            raise
        for result in results:
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                raise self._failure(psycopg.errors.error_from_result(result, encoding=self.connection.info.encoding),
                                    conflicts)

    def savepoint_violates_integrity(self, statement: Statement, params: Sequence[Any]) -> bool:
        self._check_open()
        if self._queue:
            self._send("")
        return super().savepoint_violates_integrity(statement, params)

    def _literal(self, statement: Statement, params: Sequence[Any]) -> str:
        text, values = self._bound(statement, params)
        execute = self._prepared(statement, text)
        return self.connection.fleetca_literals.query(execute or text, values)

    def _prepared(self, statement: Statement, text: str) -> str | None:
        """Return an EXECUTE of ``statement`` prepared on this connection, with ``%s`` for its values, or None.

        A statement travels as text in a simple query, so PostgreSQL would
        parse and plan it anew each time. Prepared once per connection,
        it is sent as ``EXECUTE name(values)`` instead. Take a transaction of an
        INSERT, a SELECT, two UPDATEs and a used-nonce INSERT, sent as one
        query 3,000 times to the local server. The backend spent about 200 µs
        of CPU per run on it this way, against 275 µs with literal statements.

        PREPARE goes out as its own query, and only while the server has no
        transaction open on this connection, so that a failed PREPARE cannot
        abort one. A statement first used inside a transaction is sent as a
        literal, and prepared before the connection's next statement outside
        one. A statement that PREPARE rejects is always sent as a literal.
        """
        # Statement text -> its EXECUTE, or None when PREPARE rejected it.
        prepared: dict[str, str | None] | None = getattr(self.connection, "fleetca_prepared", None)
        if prepared is None:
            return None
        # Statement text -> the statement, for those used inside a transaction
        # before this connection prepared them.
        waiting: dict[str, Statement] = self.connection.fleetca_waiting_to_prepare
        in_transaction = self._begun and self._transaction
        if waiting and not in_transaction:
            while waiting:
                waiting_text, waiting_statement = waiting.popitem()
                if waiting_text not in prepared and len(prepared) < MAX_PREPARED_PER_CONNECTION:
                    self._prepare(prepared, waiting_statement, waiting_text)
        execute = prepared.get(text, "")
        if execute != "":
            return execute
        if len(prepared) >= MAX_PREPARED_PER_CONNECTION:
            return None
        if in_transaction:
            if len(prepared) + len(waiting) < MAX_PREPARED_PER_CONNECTION:
                waiting[text] = statement
            return None
        return self._prepare(prepared, statement, text)

    def _prepare(self, prepared: dict[str, str | None], statement: Statement, text: str) -> str | None:
        """Prepare ``statement`` on the server and return its EXECUTE with ``%s`` for its values, or None."""
        name = f"fleetca_{len(prepared) + 1}"
        parts = text.split("%s")
        numbered = "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, start=1))
        error = self._prepare_on_server(f"PREPARE {name} AS {numbered}")
        if isinstance(error, (psycopg.errors.IndeterminateDatatype, psycopg.errors.DatatypeMismatch)):
            # A parameter that PostgreSQL cannot type from its context, or
            # types as text (the value of a subquery's select list, say),
            # takes its column's type.
            types = ", ".join(_postgres_type(column) for column in statement.params)
            error = self._prepare_on_server(f"PREPARE {name} ({types}) AS {numbered}")
        if isinstance(error, psycopg.OperationalError):
            # The PREPARE was cancelled or ran out of resources, so the
            # statement goes as a literal this time and a later use tries again.
            logger.warning("PREPARE failed, so the statement is sent as literal SQL this time",
                           extra={"statement": text, "error": str(error)})
            return None
        if error is not None:
            return self._not_prepared(prepared, text, error)
        values = ", ".join(["%s"] * (len(parts) - 1))
        execute = f"EXECUTE {name}({values})" if values else f"EXECUTE {name}"
        prepared[text] = execute
        return execute

    def _prepare_on_server(self, command: str) -> Exception | None:
        """Run a PREPARE and return the error it raised, or None.

        An error that broke the connection is raised instead.
        """
        try:
            self.connection.execute(command, prepare=False)
        except psycopg.DatabaseError as exc:
            if self.connection.broken:
                raise
            return exc
        return None

    @staticmethod
    def _not_prepared(prepared: dict[str, str | None], text: str, error: Exception) -> None:
        logger.warning("cannot prepare a statement, so it is sent as literal SQL",
                       extra={"statement": text, "error": str(error)})
        prepared[text] = None

    def _send(self, last: str, trailing: str = "", *, counted: int = 0, counts: list[int] | None = None) -> Any:
        """Send the queue, ``last`` and ``trailing`` as one query, and leave the cursor on the result of ``last``.

        The row counts of the ``counted`` statements queued last before
        ``last`` are appended to ``counts``.
        """
        query, results_before_last, conflicts = self._take_queue(last, trailing)
        try:
            self.cursor.execute(query, prepare=False)
        except psycopg.Error as exc:
            failure = self._failure(exc, conflicts)
            if failure is exc:
                raise
            raise failure from None
        for n in range(results_before_last):
            if counts is not None and n >= results_before_last - counted:
                counts.append(self.cursor.rowcount)
            self.cursor.nextset()
        return self.cursor

    def _take_queue(self, last: str, trailing: str) -> tuple[str, int, dict[tuple[str, bool], Callable[[], Exception]]]:
        """Empty the queue into one query that ends with ``last`` and ``trailing``.

        Return the query's text, the number of statements before ``last``,
        and the exceptions that its deferred statements registered.
        """
        queue = self._queue
        if last:
            queue.append(last)
        results_before_last = len(queue) - 1
        if trailing:
            queue.append(trailing)
        # BEGIN leaves the queue with the first query, even one that fails,
        # because the rollback of a failed transaction ends it on the server.
        self._queue = []
        self._begun = True
        conflicts, self._conflicts = self._conflicts, {}
        return ";".join(queue), results_before_last, conflicts

    def _failure(self, error: Exception, conflicts: dict[tuple[str, bool], Callable[[], Exception]]) -> Exception:
        """Return the exception to raise for a query that failed with ``error``.

        A unique or NOT NULL violation in the table of a deferred statement
        that registered an exception gives that exception. A prepared
        statement may be gone (a pooler gave this client another server
        session) or return another type (a migration altered a column). Then
        the connection is closed first. The pool drops it, and the next
        transaction prepares its statements on a new one.
        """
        if isinstance(error, (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation)):
            raise_instead = conflicts.get((error.diag.table_name or "", _is_not_null_violation(error)))
            if raise_instead is not None:
                return raise_instead()
        elif isinstance(error, (psycopg.errors.InvalidSqlStatementName, psycopg.errors.FeatureNotSupported)):
            self.connection.close()
        return error


class PostgresLiterals:
    """The writer of statements with their values as SQL literals, for one PostgreSQL connection.

    libpq quotes strings (``PQescapeLiteral``) and byte strings
    (``PQescapeByteaConn``), through psycopg's ``pq.Escaping``. Integers,
    booleans, NULL, timestamps and JSON values have fixed forms, the same as
    psycopg's. Any other type goes through psycopg's ``ClientCursor.mogrify``.
    A statement of six values cost about 2.6 µs of CPU this way against 9.5 µs
    through ``mogrify`` (20,000 runs), and a certificate takes about 40
    statements.
    """

    __slots__ = ("_escaping", "_cursor", "_templates")

    def __init__(self, connection: Any) -> None:
        self._escaping = psycopg.pq.Escaping(connection.pgconn)
        self._cursor = psycopg.ClientCursor(connection)
        # Statement text -> its pieces between the ``%s`` placeholders, or
        # None for a text that only mogrify may write (a ``%`` of its own).
        self._templates: dict[str, list[str] | None] = {}

    def query(self, text: str, values: Sequence[Any]) -> str:
        """Return ``text`` with each ``%s`` replaced by the next value, written as a literal."""
        pieces = self._templates.get(text, False)
        if pieces is False:
            pieces = _template_pieces(text)
            if len(self._templates) < MAX_PREPARED_PER_CONNECTION:
                self._templates[text] = pieces
        if pieces is None or len(pieces) != len(values) + 1:
            return self._cursor.mogrify(text, values)
        out = [pieces[0]]
        for value, piece in zip(values, pieces[1:]):
            write = _LITERAL_WRITERS.get(type(value))
            out.append(write(self, value) if write is not None else self._cursor.mogrify("%s", (value,)))
            out.append(piece)
        return "".join(out)

    def string(self, value: str) -> str:
        # PQescapeLiteral stops at a NUL character and would cut the value
        # short. PostgreSQL's text types cannot contain one either.
        if "\0" in value:
            raise psycopg.DataError("invalid text value: PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return self._escaping.escape_literal(value.encode()).decode()

    def json(self, value: Any) -> str:
        return self.string(orjson.dumps(value.obj).decode()) + "::json"

    def bytes(self, value: bytes) -> str:
        return f"'{self._escaping.escape_bytea(value).decode()}'::bytea"


def _template_pieces(text: str) -> list[str] | None:
    pieces = text.split("%s")
    return None if any("%" in piece for piece in pieces) else pieces


def _literal_datetime(_: PostgresLiterals, value: datetime) -> str:
    # A naive value becomes a timestamp without a time zone, as in psycopg's literal.
    return f"'{value.isoformat(' ')}'::{'timestamptz' if value.tzinfo is not None else 'timestamp'}"


_LITERAL_WRITERS: dict[type, Callable[[PostgresLiterals, Any], str]] = {
    str: PostgresLiterals.string,
    bytes: PostgresLiterals.bytes,
    int: lambda _, value: str(value) if value >= 0 else f" {value}",
    bool: lambda _, value: "true" if value else "false",
    type(None): lambda _, value: "NULL",
    datetime: _literal_datetime,
}
if psycopg is not None:
    _LITERAL_WRITERS[Json] = PostgresLiterals.json


def _postgres_type(column: Column) -> str:
    """Return the PostgreSQL type of a column without a length, so that a longer value is compared, not rejected."""
    return _TYPE_LENGTH.sub("", column.type.compile(dialect=postgresql.dialect()))


_TYPE_LENGTH = re.compile(r"\(\d+(?:,\s*\d+)?\)")


def _is_not_null_violation(error: Exception) -> bool:
    if isinstance(error, sqlite3.IntegrityError):
        return error.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_NOTNULL
    return psycopg is not None and isinstance(error, psycopg.errors.NotNullViolation)


class _SqliteConnection(sqlite3.Connection):
    """A sqlite3 connection that can carry the cursor its sessions reuse."""

    fleetca_cursor: sqlite3.Cursor


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///PATH`` URL."""
    return url.split(":///", 1)[1]


def dialect_for(url: str) -> Dialect:
    return SQLITE if url.startswith("sqlite") else POSTGRES


def connector_for(url: str, *, durable: bool, prepared_statements: bool = True) -> Callable[[], Any]:
    """A function that opens one driver connection for ``url``.

    ``durable=False`` skips waiting for the disk at commit. A SQLite
    statement waits up to SQLITE_BUSY_TIMEOUT_SECONDS for a lock held by
    another connection before it fails with SQLITE_BUSY. PostgreSQL
    connections are in autocommit mode, so each statement outside a
    :class:`PostgresSession` transaction is its own transaction. SQLite connections
    are in autocommit mode outside an explicit BEGIN. ``prepared_statements=False``
    makes PostgresSession send every statement as literal SQL.
    """
    if url.startswith("sqlite"):
        path = sqlite_path(url)

        def connect_sqlite() -> sqlite3.Connection:
            # isolation_level=None turns off the module's own BEGIN, so the
            # transaction helpers below send the only BEGIN.
            connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS, check_same_thread=False,
                                         isolation_level=None, factory=_SqliteConnection)
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL makes each commit durable across power loss. NORMAL skips the
            # fsync of a commit, so the commit survives a process crash but not a
            # power loss. Only the used-nonce table is written that way.
            connection.execute("PRAGMA synchronous=" + ("FULL" if durable else "NORMAL"))
            connection.execute("PRAGMA foreign_keys=ON")
            connection.fleetca_cursor = connection.cursor()
            return connection

        return connect_sqlite

    conninfo = "postgresql://" + url.split("://", 1)[1]
    options = "-c timezone=UTC" + ("" if durable else " -c synchronous_commit=off")

    def connect_postgres() -> Any:
        # With synchronous_commit off, a commit returns before the WAL reaches
        # disk, and a crash loses at most the last few hundred milliseconds of
        # such commits.
        # psycopg's own statement preparation is off, because after a rollback
        # it deallocates every prepared statement of the connection, including
        # those that PostgresSession prepared.
        connection = psycopg.connect(conninfo, autocommit=True, options=options, prepare_threshold=None,
                                     client_encoding="UTF8")
        # JSON columns are written and read with orjson, as on SQLite.
        set_json_dumps(orjson.dumps, connection)
        set_json_loads(orjson.loads, connection)
        connection.fleetca_cursor = connection.cursor()
        connection.fleetca_literals = PostgresLiterals(connection)
        if prepared_statements:
            connection.fleetca_prepared = {}
            connection.fleetca_waiting_to_prepare = {}
        return connection

    return connect_postgres


# Counts forks into this process, so that a pool notices a fork without a
# getpid system call on every checkout.
_process_generation = 0


def _count_fork() -> None:
    global _process_generation
    _process_generation += 1


os.register_at_fork(after_in_child=_count_fork)


class ConnectionPool:
    """Idle driver connections of this process, reused across transactions.

    A forked worker must not use its parent's connections, because both
    processes would then talk on one socket or one SQLite file handle. After a
    fork the pool starts empty and keeps the inherited connections referenced,
    so that garbage collection never closes them under the parent.
    """

    def __init__(self, connect: Callable[[], Any], *, max_idle: int = 16) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._process = _process_generation
        self._inherited: list[Any] = []

    def acquire(self) -> Any:
        with self._lock:
            if self._process != _process_generation:
                self._inherited.extend(self._idle)
                self._idle = []
                self._process = _process_generation
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def release(self, connection: Any) -> None:
        with self._lock:
            if self._process == _process_generation and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def discard(self, connection: Any) -> None:
        """Close a connection that failed, and the idle ones, which likely lost the same server."""
        with self._lock:
            idle, self._idle = self._idle, []
        for stale in [connection, *idle]:
            try:
                stale.close()
            except Exception:  # closing a dead connection may raise anything the driver raises
                pass

    def dispose(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            if self._process != _process_generation:
                self._inherited.extend(idle)  # the parent's to close
                return
        for connection in idle:
            connection.close()


def _is_broken(connection: Any) -> bool:
    return bool(getattr(connection, "broken", False) or getattr(connection, "closed", False))


def release_after_failure(pool: ConnectionPool, connection: Any) -> None:
    """Roll back a failed transaction and return its connection, or discard the connection if it is broken."""
    try:
        connection.rollback()
    except Exception:  # the connection is gone; discard it below
        pass
    if _is_broken(connection):
        pool.discard(connection)
    else:
        pool.release(connection)


def open_transaction(pool: ConnectionPool, dialect: Dialect) -> Iterator[Session]:
    """Yield a :class:`Session` in a new write transaction, committed when the body returns, rolled back if it raises.

    On SQLite the transaction starts with BEGIN IMMEDIATE, which takes the
    write lock up front, so two writers queue on the busy timeout instead of
    failing later with "database is locked". On PostgreSQL a
    :class:`PostgresSession` sends BEGIN with the first statement.
    """
    connection = pool.acquire()
    try:
        if dialect is SQLITE:
            connection.execute("BEGIN IMMEDIATE")
            session = Session(connection, dialect)
        else:
            session = PostgresSession(connection, dialect)
        yield session
        session.commit()
    except BaseException:
        release_after_failure(pool, connection)
        raise
    pool.release(connection)


_RESTORE_BUSY_TIMEOUT = f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}"


async def begin_sqlite_write(pool: ConnectionPool) -> sqlite3.Connection:
    """Take SQLite's write lock with BEGIN IMMEDIATE on a connection from ``pool``, yielding while it is busy.

    BEGIN IMMEDIATE runs with the busy timeout turned off, so a taken lock
    fails at once instead of sleeping the event loop's thread. The timeout is
    restored for the statements that follow. The first retry follows a bare
    yield, the next ones wait 1 ms and then twice as long each time up to 10
    ms. After 30 seconds the SQLITE_BUSY error is raised, as the busy timeout
    would.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SQLITE_BUSY_TIMEOUT_SECONDS
    delay = 0.0
    while True:
        connection = pool.acquire()
        try:
            connection.execute("PRAGMA busy_timeout=0")
            try:
                connection.execute("BEGIN IMMEDIATE")
            finally:
                connection.execute(_RESTORE_BUSY_TIMEOUT)
            return connection
        except sqlite3.OperationalError as exc:
            release_after_failure(pool, connection)
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or loop.time() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(max(delay * 2, 0.001), 0.01)


def sync_sqlite_wal(database_path: str) -> None:
    """Flush SQLite's write-ahead log to disk, which makes every commit already in it durable.

    This is the step that ``synchronous=FULL`` adds to each commit in WAL mode.
    Done after a ``synchronous=NORMAL`` commit, it happens after the write lock
    is released, so other writers proceed meanwhile. Frames that a checkpoint
    already moved into the database file were synced by that checkpoint.
    """
    descriptor = os.open(database_path + "-wal", os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class WalSyncer:
    """A thread that flushes one SQLite database's write-ahead log for the coroutines waiting on it.

    A waiter has committed before it queues, and each flush starts after the
    thread has taken every waiter queued so far, so one flush makes all of
    their commits durable. Handing a flush to this thread and back cost about
    35 µs of CPU, against 53 to 61 µs through ``asyncio.to_thread`` (5,000 runs
    on uvloop). A forked process starts its own thread on its first flush.
    """

    def __init__(self, database_path: str) -> None:
        self._path = database_path
        # The process generation that started the thread, and the thread's queue.
        self._started: tuple[int, queue.SimpleQueue[_Waiter | None]] | None = None
        self._lock = threading.Lock()

    async def sync(self) -> None:
        """Return once every commit made before the call is on disk.

        If the flush fails, raise an exception of the flush's OSError class,
        or a RuntimeError for any other error, with the flush's error as its cause.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting().put((loop, future))
        await future

    def close(self) -> None:
        """Stop this process's thread once it has served the waiters queued so far."""
        with self._lock:
            started, self._started = self._started, None
        if started is not None and started[0] == _process_generation:
            started[1].put(None)

    def _waiting(self) -> queue.SimpleQueue[_Waiter | None]:
        started = self._started
        if started is not None and started[0] == _process_generation:
            return started[1]
        with self._lock:
            started = self._started
            if started is None or started[0] != _process_generation:
                waiting: queue.SimpleQueue[_Waiter | None] = queue.SimpleQueue()
                # The thread starts before it is recorded, so one that fails to start is tried again on the next flush.
                threading.Thread(target=self._flush_forever, args=(waiting,), name="fleetca-wal-sync",
                                 daemon=True).start()
                started = self._started = (_process_generation, waiting)
            return started[1]

    def _flush_forever(self, waiting: queue.SimpleQueue[_Waiter | None]) -> None:
        while True:
            batch = [waiting.get()]
            while True:
                try:
                    batch.append(waiting.get_nowait())
                except queue.Empty:
                    break
            waiters = [waiter for waiter in batch if waiter is not None]
            if waiters:
                error: Exception | None = None
                try:
                    sync_sqlite_wal(self._path)
                except Exception as exc:  # every waiter receives it, and the thread keeps running
                    error = exc
                for loop, future in waiters:
                    try:
                        loop.call_soon_threadsafe(_settle_flush, future, error)
                    except RuntimeError:
                        pass  # the waiter's event loop has closed
            if len(waiters) < len(batch):  # close() queued its stop mark
                return


def _settle_flush(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # the waiter was cancelled
        return
    if error is None:
        future.set_result(None)
        return
    # A new exception per waiter, so that the waiters' tracebacks do not pile up on one object.
    if isinstance(error, OSError):
        failure: Exception = OSError(error.errno, error.strerror, error.filename, None, error.filename2)
    else:
        failure = RuntimeError(f"flushing the write-ahead log failed: {error!r}")
    failure.__cause__ = error
    future.set_exception(failure)
