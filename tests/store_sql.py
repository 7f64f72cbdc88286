"""Raw SQL on a test's store, whichever it is (a DuckDB file or a PostgreSQL URL): for setting up states.

Tests use it to stage what another host or an older version would have written; everything else
goes through the Store seam. Statements use ``?`` placeholders, as the store's own modules do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def execute(location: str | Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement in its own committed transaction; returns its rows (none for a write)."""
    location = str(location)
    if location.startswith(("postgresql://", "postgres://")):
        import psycopg

        from resumable._store.dialect import pyformat

        with psycopg.connect(location, autocommit=True) as conn:
            cursor = conn.execute(pyformat(sql), list(params))  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []
    import duckdb

    with duckdb.connect(location) as con:
        cursor = con.execute(sql, list(params))
        return cursor.fetchall() if cursor.description else []
