"""The documented views of ``resumable sql`` and ``resumable.connect()``, and the read-only query path.

A query runs on a connection of its own that opened the store file read-only. Before the user's
SQL sees it, the connection gets TEMP views over the store's tables (``runs``, ``steps``,
``attempts``, ``events``, ``checkpoints`` without the bytes, ``inputs``, ``parameters``; their
columns are documented in docs/sql.md and stay stable across versions, unlike the tables), then
DuckDB's external access is switched off and the configuration locked: the query can read the
store and nothing else. It cannot write a file (``COPY ... TO``), read one (``read_csv``,
``glob``), attach a database or install or load an extension, and it cannot switch that back on.

States are as every reader shows them: a running step whose owner is gone reads as
``interrupted`` (``liveness.py``), computed when the query runs; nothing is written.

The views are defined once (:func:`definitions`) for both stores; the words DuckDB and PostgreSQL
spell differently come from the dialect. A PostgreSQL store runs its queries through
``pg_query.py``, which defines the same views the same way (:func:`define`) and then makes its
transaction read-only instead of switching DuckDB's settings.
"""

from __future__ import annotations

import duckdb

from resumable._store.base import QueryResult
from resumable._store.dialect import Connection, Dialect, dialect_of
from resumable._store.liveness import dead_owners
from resumable._store.numbering import numbered_events
from resumable.errors import QueryError


def definitions(sql: Dialect, tables: str, views: str) -> dict[str, str]:
    """The views' bodies in ``sql``'s words: ``tables`` qualifies the store's tables, ``views`` the views.

    The views shadow the tables' names, so each names the tables (and the other views) in full.
    One definition for both databases; where their SQL differs, the dialect supplies the words.
    """
    step_state = f"""CASE WHEN s.state = 'running' AND EXISTS (
        SELECT 1 FROM {views}._dead_owners d
        WHERE d.host IS NOT DISTINCT FROM s.owner_host AND d.pid IS NOT DISTINCT FROM s.owner_pid
          AND d.started IS NOT DISTINCT FROM s.owner_started) THEN 'interrupted' ELSE s.state END"""
    json = sql.json_type
    return {
        "steps": f"""
        SELECT s.run_id, r.pipeline, s.step, s.seq, {step_state} AS state, s.attempts,
               s.started_at, s.finished_at, s.duration_s, s.output_bytes,
               {sql.json("s.outputs")} AS outputs, s.error, coalesce(s.effect, false) AS effect,
               coalesce(s.key_generation, 1) AS key_generation, s.owner_host, s.owner_pid, s.source,
               coalesce(s.executions, 1) AS executions
        FROM {tables}.steps s JOIN {tables}.runs r USING (run_id)""",
        "runs": f"""
        SELECT *, {sql.epoch("updated_at")} - {sql.epoch("created_at")} AS duration_s FROM (
        SELECT r.run_id, r.pipeline,
               CASE WHEN count(s.step) = 0 THEN 'empty'
                    WHEN bool_or(s.state = 'running') THEN 'running'
                    WHEN bool_or(s.state = 'failed') THEN 'failed'
                    WHEN bool_or(s.state = 'interrupted') THEN 'interrupted'
                    WHEN bool_and(s.state = 'completed') THEN 'completed'
                    ELSE 'pending' END AS state,
               r.created_at,
               coalesce((SELECT max(e.happened_at) FROM {tables}.events e WHERE e.run_id = r.run_id),
                        r.created_at) AS updated_at,
               {sql.json("r.params")} AS params,
               count(s.step) AS steps,
               count(s.step) FILTER (WHERE s.state = 'completed') AS completed,
               count(s.step) FILTER (WHERE s.state = 'failed') AS failed,
               count(s.step) FILTER (WHERE s.state = 'interrupted') AS interrupted,
               count(s.step) FILTER (WHERE s.state = 'running') AS running,
               count(s.step) FILTER (WHERE s.state = 'pending') AS pending,
               coalesce(sum(s.duration_s), 0) AS step_time_s,
               coalesce((SELECT {sql.sum_bytes("c.size")} FROM {tables}.checkpoints c WHERE c.run_id = r.run_id), 0)
                   AS stored_bytes,
               r.forked_from, r.forked_at
        FROM {tables}.runs r LEFT JOIN {views}.steps s USING (run_id)
        GROUP BY r.run_id, r.pipeline, r.created_at, r.params, r.forked_from, r.forked_at) AS per_run""",
        "events": f"""
        SELECT e.seq, e.run_id, r.pipeline, e.step, e.happened_at, e.transition, e.source AS from_state,
               e.target AS to_state, e.attempt, e.host, e.pid, e.detail, e.execution
        FROM ({numbered_events(f"{tables}.events")}) e JOIN {tables}.runs r USING (run_id)""",
        "attempts": f"""
        SELECT run_id, pipeline, step, attempt, happened_at AS started_at, ended_at AS finished_at,
               {sql.seconds_between("happened_at", "ended_at")} AS duration_s,
               coalesce(outcome, CASE WHEN st.state = 'interrupted' THEN 'interrupted' ELSE 'running' END) AS outcome,
               CASE WHEN outcome = 'failed' THEN end_detail END AS error, host, pid, execution
        FROM (
            SELECT e.*, lead(e.happened_at) OVER w AS ended_at, lead(e.to_state) OVER w AS outcome,
                   lead(e.detail) OVER w AS end_detail
            FROM {views}.events e
            WINDOW w AS (PARTITION BY e.run_id, e.step ORDER BY e.seq)
        ) a LEFT JOIN {views}.steps st USING (run_id, pipeline, step)
        WHERE a.to_state = 'running'""",
        "checkpoints": f"""
        SELECT c.run_id, r.pipeline, c.step, c.name, c.kind, c.codec, c.size, c.data IS NOT NULL AS inline,
               c.file, c.digest, c.signature IS NOT NULL AS signed, c.created_at
        FROM {tables}.checkpoints c JOIN {tables}.runs r USING (run_id)""",
        "inputs": f"""
        SELECT s.run_id, r.pipeline, s.step, i.key AS name,
               {sql.json_text("i.value", "origin")} AS origin,
               {sql.json_text("i.value", "shown")} AS shown,
               coalesce(CAST({sql.json_text("i.value", "weak")} AS BOOLEAN), false) AS weak
        FROM {tables}.steps s JOIN {tables}.runs r USING (run_id), {sql.json_each("s.inputs")} i
        WHERE s.inputs IS NOT NULL""",
        "parameters": f"""
        SELECT r.run_id, r.pipeline, p.key AS name, CAST(p.value AS {json}) AS value
        FROM {tables}.runs r, {sql.json_each("r.params")} p""",
    }


#: The order docs/sql.md lists them in.
VIEW_NAMES = ("runs", "steps", "attempts", "events", "checkpoints", "inputs", "parameters")


def define(con: Connection, tables: str, views: str) -> None:
    """Create the TEMP views (and the dead owners they read) on ``con``; nothing of the store is written.

    The owners of running steps that are gone are found first, while ``steps`` still names the table.
    """
    sql = dialect_of(con)
    dead = dead_owners(con)
    con.execute(sql.ddl("CREATE TEMP TABLE _dead_owners (host VARCHAR, pid INTEGER, started DOUBLE)"))
    for key in dead:
        con.execute(f"INSERT INTO {views}._dead_owners VALUES (?, ?, ?)", list(key))
    for name, body in definitions(sql, tables, views).items():
        con.execute(f"CREATE TEMP VIEW {name} AS {body}")


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Define the views on a read-only connection, then switch off external access and lock the settings."""
    row = con.execute("SELECT current_database()").fetchone()
    assert row is not None
    db = '"' + str(row[0]).replace('"', '""') + '"'
    define(con, f"{db}.main", "temp.main")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> QueryResult:
    """Run the user's SQL on a prepared connection; DuckDB's refusals become :class:`QueryError`."""
    if not sql.strip():
        raise QueryError(sql, "is empty", TRY_VIEWS)
    try:
        cursor = con.execute(sql)
        if cursor.description is None:
            return QueryResult((), (), ())
        columns = tuple(d[0] for d in cursor.description)
        types = tuple(str(d[1]) for d in cursor.description)
        rows = tuple(tuple(r) for r in cursor.fetchall())
    except duckdb.PermissionException as exc:
        raise QueryError(sql, _refusal(sql, str(exc)), _OUTSIDE, _first_line(str(exc))) from None
    except duckdb.Error as exc:
        raise QueryError(sql, _failure(exc), TRY_VIEWS, _first_line(str(exc))) from None
    return QueryResult(columns, types, rows)


TRY_VIEWS = "Query the views " + ", ".join(VIEW_NAMES) + " (their columns are listed in docs/sql.md)."
_OUTSIDE = (
    "Queries read the store's views and nothing else; nothing was written. To keep a result, print it with "
    "--csv or --json and redirect the output to a file."
)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _refusal(sql: str, text: str) -> str:
    words = sql.split(maxsplit=1)
    first = words[0].upper() if words else ""
    if first in {"INSTALL", "LOAD", "FORCE"} or "extension" in text.lower():
        return "was refused: it installs or loads a DuckDB extension"
    if first == "ATTACH":
        return "was refused: it attaches another database"
    if first in {"COPY", "EXPORT"}:
        return "was refused: it copies data to or from a file"
    return "was refused: it reads a file outside the store"


def _failure(exc: duckdb.Error) -> str:
    text = str(exc)
    if "configuration has been locked" in text:
        return "was refused: it changes DuckDB's settings, which are locked for queries"
    if "read-only" in text.lower() or "read only" in text.lower():
        return "was refused: it changes the store, which queries open read-only"
    return "failed"
