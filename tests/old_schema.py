"""Making a store look as an older resumable left it, for the migration tests."""

from __future__ import annotations

import duckdb

# What migration 6 (forks) added.
MIGRATION_6_COLUMNS = (
    ("runs", "forked_from"), ("runs", "forked_at"), ("checkpoints", "generation"),
    ("steps", "checkpoint_run"), ("steps", "checkpoint_generation"),
)  # fmt: skip


def drop_migration_6(con: duckdb.DuckDBPyConnection) -> None:
    """Remove what migration 6 added (the caller sets the version it pretends to be)."""
    for table, column in MIGRATION_6_COLUMNS:
        con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
