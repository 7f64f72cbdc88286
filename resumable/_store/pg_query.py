"""``resumable sql`` on a PostgreSQL store: the same views as on a file, in a READ ONLY transaction.

A query gets a server session of its own (never a pooled one: nothing it sets can outlive it),
opens a transaction, defines the documented views as TEMP views over the store's tables
(``views.define``: one definition for both databases), then makes the transaction READ ONLY
before the user's SQL runs, and rolls it back afterwards. A read-only transaction cannot be made
read-write again once a statement has run, so the query cannot change the store; and it is sent
as one prepared statement, which the server refuses to hold several commands in (no
``COMMIT; DELETE ...``). What a query can read beyond the store is what the connecting role may
read: docs/sql.md says to query as a role that is not a superuser.

The rows come back as the DuckDB store's do: JSON columns as their text, column types by
DuckDB's names, whole numbers PostgreSQL sums to ``numeric`` as integers, times in this host's
time zone; so the CLI prints the same table, CSV and JSON from either store.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.string import TextLoader

from resumable._store.base import QueryResult
from resumable._store.dialect import Connection
from resumable._store.views import TRY_VIEWS, define
from resumable.errors import QueryError

# PostgreSQL's type names as DuckDB spells the same types (``QueryResult.types``).
_TYPES = {
    "bool": "BOOLEAN",
    "int2": "SMALLINT",
    "int4": "INTEGER",
    "int8": "BIGINT",
    "float4": "FLOAT",
    "float8": "DOUBLE",
    "numeric": "DECIMAL",
    "text": "VARCHAR",
    "varchar": "VARCHAR",
    "bpchar": "VARCHAR",
    "name": "VARCHAR",
    "json": "JSON",
    "jsonb": "JSON",
    "timestamptz": "TIMESTAMP WITH TIME ZONE",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
    "time": "TIME",
    "interval": "INTERVAL",
    "bytea": "BLOB",
    "uuid": "UUID",
}
_READ_ONLY = (
    "Queries read the store's views in a read-only transaction; nothing was written. To keep a result, print it "
    "with --csv or --json and redirect the output to a file."
)


def run(conn: psycopg.Connection[Any], con: Connection, sql: str) -> QueryResult:
    """Run the user's SQL over the views on ``conn``, a session of its own, closed here.

    ``con`` is the same session as the row modules use it (``?`` placeholders). The server's
    refusals become :class:`QueryError`.
    """
    try:
        if not sql.strip():
            raise QueryError(sql, "is empty", TRY_VIEWS, engine="PostgreSQL")
        conn.execute("SELECT set_config('TimeZone', %s, false)", [local_zone()])
        schema = conn.execute("SELECT current_schema()").fetchone()
        tables = '"' + str(schema[0] if schema else "public").replace('"', '""') + '"'
        define(con, tables, "pg_temp")
        conn.execute("SET TRANSACTION READ ONLY")
        for name in ("json", "jsonb"):
            conn.adapters.register_loader(name, TextLoader)  # JSON as its text, as DuckDB returns it
        try:
            cursor = psycopg.Cursor(conn)
            cursor.execute(sql.encode(), prepare=True)  # type: ignore[call-overload]
            if cursor.description is None:
                return QueryResult((), (), ())
            columns = tuple(d.name for d in cursor.description)
            types = tuple(_type_name(d.type_display) for d in cursor.description)
            rows = tuple(tuple(_value(v) for v in row) for row in cursor.fetchall())
        except psycopg.Error as exc:
            raise _error(sql, exc) from None
        return QueryResult(columns, types, rows)
    finally:
        conn.close()  # never committed: the views and everything else of the session go with it


@functools.cache
def local_zone() -> str:
    """This host's time zone by name, as the DuckDB store shows times in (DuckDB's own reading of it)."""
    import duckdb

    with duckdb.connect() as con:
        row = con.execute("SELECT current_setting('TimeZone')").fetchone()
    return str(row[0]) if row and row[0] else "UTC"


def _type_name(pg: str) -> str:
    base = pg.split("(", 1)[0].strip()
    if base.endswith("[]"):
        return _type_name(base[:-2]) + "[]"
    if base.startswith("_"):  # an array type's internal name
        return _type_name(base[1:]) + "[]"
    return _TYPES.get(base, base.upper())


def _value(value: Any) -> Any:
    """A whole ``numeric`` (a sum of integers) as an int, as DuckDB returns a ``HUGEINT``."""
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= 0:
            return int(value)
    return value


def _error(sql: str, exc: psycopg.Error) -> QueryError:
    said = _first_line(exc)
    state = exc.sqlstate or ""
    if state == "25006":  # read_only_sql_transaction
        return QueryError(
            sql, "was refused: it changes the store, which queries read in a read-only transaction",
            _READ_ONLY, said, engine="PostgreSQL",
        )  # fmt: skip
    if state == "25001":  # active_sql_transaction: SET TRANSACTION READ WRITE after the views
        return QueryError(sql, "was refused: it changes the transaction's mode", _READ_ONLY, said, engine="PostgreSQL")
    if "multiple commands" in said:
        return QueryError(
            sql, "was refused: it holds several statements; a query is one statement", TRY_VIEWS, said,
            engine="PostgreSQL",
        )  # fmt: skip
    if state == "42501":  # insufficient_privilege
        return QueryError(
            sql, "was refused: the server's role may not do that", TRY_VIEWS, said, engine="PostgreSQL"
        )  # fmt: skip
    return QueryError(sql, "failed", TRY_VIEWS, said, engine="PostgreSQL")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
