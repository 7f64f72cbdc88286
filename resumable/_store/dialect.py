"""The few places where the store's SQL differs between DuckDB and PostgreSQL, decided once each.

The row modules (``runs``, ``steps``, ``checkpoints``, ``transitions``, ``rows``, ``schema``,
``lease``, ``liveness``) hold one copy of the SQL, written with ``?`` placeholders, and run it on
any :class:`Connection`: a DuckDB connection as it is, or PostgreSQL's adapter
(``postgres.PgConnection``), which carries :data:`POSTGRES` and turns ``?`` into psycopg's ``%s``.
Where the two databases need different words, the row module asks :func:`dialect_of` for them:

- an upsert (DuckDB's ``INSERT OR REPLACE`` against ``ON CONFLICT ... DO UPDATE``);
- membership in a list parameter (``list_contains(?, x)`` against ``x = ANY(?)``);
- the owners of a run's running steps as one aggregated value (a list of structs against JSON);
- grouping by a run (DuckDB's ``GROUP BY ALL``; PostgreSQL groups by the run's primary key);
- the column types of the DDL (``DOUBLE`` and ``BLOB`` are ``DOUBLE PRECISION`` and ``BYTEA``);
- the value at a group's last row (DuckDB's ``arg_max(value, seq)``, also in migration 7's
  statements, against the first element of an ``array_agg`` ordered the other way);
- whether a table exists (``duckdb_tables()`` against ``information_schema``);
- the clock leases expire by (this host's for a file, the server's for a server store);
- the words of the query views (``views.py``): the JSON type (PostgreSQL's ``jsonb``, which can be
  grouped and compared), seconds since the epoch, a field of a JSON object, a JSON object's
  entries as rows, and a sum of sizes as a whole number (PostgreSQL sums ``bigint`` to ``numeric``);
- locks: DuckDB serializes whole transactions on the file already (one writer; ``filelock``), so
  its lock calls are no-ops; PostgreSQL runs transactions concurrently at READ COMMITTED, so a
  transaction that decides about a run locks the run's row (``FOR UPDATE``) or, for a row that may
  not exist yet, takes a transaction-scoped advisory lock on its name (see docs/scale.md).
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol


class Cursor(Protocol):
    """What a statement returns: its rows, one or all."""

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row, or None."""

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Every remaining row."""


class Connection(Protocol):
    """An open transaction the row modules run their SQL on (``?`` placeholders)."""

    def execute(self, query: str, parameters: Any = None, /) -> Cursor:
        """Run one statement with its parameters."""


_ARG_MAX = re.compile(r"\barg_max\((\w+), (\w+)\)")
_TYPES = ((re.compile(r"\bDOUBLE\b(?! PRECISION)"), "DOUBLE PRECISION"), (re.compile(r"\bBLOB\b"), "BYTEA"))


@dataclass(frozen=True, slots=True)
class Dialect:
    """One database's words for the differences listed in the module docstring."""

    name: str
    group_by_run: str  # after FROM runs r ... : every run's row once
    running_owners: str  # the owners of the run's running steps, each with keys h, p, t
    for_update: str  # appended to a SELECT of the run's row that decides about the run
    exists_table: str  # one parameter, the table's name: count of such tables (0 or 1)
    unnest_lists: bool  # many rows insert fastest as one list parameter per column (DuckDB)

    def upsert(self, table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
        """An INSERT of one row (``?`` for each column) that replaces the row with the same ``key``."""
        names = ", ".join(columns)
        marks = ", ".join("?" * len(columns))
        if self.name == "duckdb":
            return f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})"
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
        return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"

    def in_list(self, column: str) -> str:
        """A condition: ``column`` is one of the values of a list parameter (``?``)."""
        return f"list_contains(?, {column})" if self.name == "duckdb" else f"{column} = ANY(?)"

    def last(self, value: str, order: str) -> str:
        """An aggregate: ``value`` of the group's row with the greatest ``order`` (DuckDB's ``arg_max``)."""
        if self.name == "duckdb":
            return f"arg_max({value}, {order})"
        return f"(array_agg({value} ORDER BY {order} DESC))[1]"

    @property
    def json_type(self) -> str:
        """The type the views give their JSON columns (grouped and compared by value on both)."""
        return "JSON" if self.name == "duckdb" else "JSONB"

    def epoch(self, timestamp: str) -> str:
        """Seconds since the epoch of a timestamp, as a double."""
        if self.name == "duckdb":
            return f"epoch({timestamp})"
        return f"CAST(extract(epoch FROM {timestamp}) AS DOUBLE PRECISION)"

    def seconds_between(self, start: str, end: str) -> str:
        """Seconds from ``start`` to ``end`` in whole milliseconds, as a double (NULL when either is)."""
        if self.name == "duckdb":
            return f"date_diff('millisecond', {start}, {end}) / 1000.0"
        return f"CAST(floor(extract(epoch FROM {end} - {start}) * 1000) / 1000 AS DOUBLE PRECISION)"

    def sum_bytes(self, sizes: str) -> str:
        """The sum of a ``BIGINT`` column as a whole number (DuckDB's ``HUGEINT``, PostgreSQL's ``bigint``)."""
        return f"sum({sizes})" if self.name == "duckdb" else f"CAST(sum({sizes}) AS BIGINT)"

    def json_text(self, value: str, key: str) -> str:
        """The field ``key`` of a JSON object as text (NULL when absent)."""
        if self.name == "duckdb":
            return f"json_extract_string({value}, '$.{key}')"
        return f"({value} ->> '{key}')"

    def json(self, text: str) -> str:
        r"""JSON kept as text, as the views' JSON type.

        PostgreSQL's ``jsonb`` cannot hold a NUL character, which a parameter or an input's shown
        value may contain (JSON's escape ``\u0000``): it reads as a backslash and ``x00`` there, as
        the server store writes a NUL of an error message (``postgres._text``), rather than failing
        every query that touches the row.
        """
        if self.name == "duckdb":
            return f"CAST({text} AS JSON)"
        return rf"CAST(regexp_replace({text}, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\\\x00', 'g') AS JSONB)"

    def json_each(self, text: str) -> str:
        """A table function over a JSON object kept as text: one row per entry, columns ``key`` and ``value``."""
        if self.name == "duckdb":
            return f"json_each({text})"
        return f"jsonb_each({self.json(text)})"

    def ddl(self, statement: str) -> str:
        """A statement of ``schema.MIGRATIONS`` (written in DuckDB's types) in this database's types."""
        if self.name == "duckdb":
            return statement
        for pattern, word in _TYPES:
            statement = pattern.sub(word, statement)
        return _ARG_MAX.sub(lambda m: self.last(m[1], m[2]), statement)

    def clock(self, con: Connection) -> float:
        """Now, in seconds since the epoch, by the clock leases are written and read with.

        A file is shared by processes of hosts that must agree on the time anyway; a server store is
        shared across machines, so its leases go by the one clock every worker reads: the server's.
        """
        if self.name == "duckdb":
            return time.time()
        row = con.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
        assert row is not None
        return float(row[0])

    def lock_name(self, con: Connection, name: str) -> None:
        """Serialize the transactions that name ``name`` (a run to create, the schema) until they end."""
        if self.name != "duckdb":
            con.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [name])


DUCKDB = Dialect(
    name="duckdb",
    group_by_run="GROUP BY ALL",
    running_owners="list({'h': s.owner_host, 'p': s.owner_pid, 't': s.owner_started}) "
    "FILTER (WHERE s.state = 'running')",
    for_update="",
    exists_table="SELECT count(*) FROM duckdb_tables() WHERE table_name = ?",
    unnest_lists=True,
)
POSTGRES = Dialect(
    name="postgresql",
    group_by_run="GROUP BY r.run_id",
    running_owners="json_agg(json_build_object('h', s.owner_host, 'p', s.owner_pid, 't', s.owner_started)) "
    "FILTER (WHERE s.state = 'running')",
    for_update=" FOR UPDATE",
    exists_table="SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() "
    "AND table_name = ?",
    unnest_lists=False,
)


def dialect_of(con: Connection) -> Dialect:
    """The dialect of an open connection: PostgreSQL's adapter says so, anything else is DuckDB."""
    found = getattr(con, "dialect", None)
    return found if isinstance(found, Dialect) else DUCKDB


@functools.lru_cache(maxsize=512)
def pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` as ``%%``), outside quotes and comments."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(sql):
        ch = sql[i]
        if quote is None and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
            continue
        if ch == "%":
            out.append("%%")
        elif quote is None and ch == "?":
            out.append("%s")
        else:
            out.append(ch)
            if quote is None and ch in "'\"":
                quote = ch
            elif ch == quote:
                quote = None
        i += 1
    return "".join(out)
