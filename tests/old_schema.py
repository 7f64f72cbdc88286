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


# Undoing migration 8 (fencing tokens), in SQL both stores run (``store_sql.execute``).
UNDO_MIGRATION_8 = (
    "ALTER TABLE runs DROP COLUMN owner_generation",
    "ALTER TABLE steps DROP COLUMN owner_generation",
    "ALTER TABLE leases DROP COLUMN generation",
    "DROP SEQUENCE lease_generation",
)


def drop_migration_8(con: duckdb.DuckDBPyConnection) -> None:
    """Remove what migration 8 added (the caller sets the version it pretends to be)."""
    for statement in UNDO_MIGRATION_8:
        con.execute(statement)
